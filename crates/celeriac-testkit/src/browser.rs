//! A headless Chromium for tests: [`Browser`].

use crate::server::parent_death_wrapper;
use std::fmt::Display;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long `chromedriver` may take from spawn to answering `/status` with `ready`.
const DRIVER_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long opening the session (starting Chromium) may take.
const SESSION_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Browser::click`], [`Browser::fill`] and [`Browser::text_of`] wait for their
/// element to appear.
const ELEMENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The WebDriver page-load and script timeouts of the session.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// The least time one look of a polling helper gets, however little of its timeout is left.
const LOOK_TIMEOUT_FLOOR: Duration = Duration::from_secs(2);
/// How often the polling helpers look again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Printed by `chromedriver --port=0` once it listens.
const PORT_LINE: &str = "started successfully on port ";

/// The Chromium flags of every session (plus `--user-data-dir`).
const CHROMIUM_ARGS: &[&str] = &[
    "--headless=new",
    // Containers and CI usually run as root, where the sandbox cannot start.
    "--no-sandbox",
    "--disable-gpu",
    // /dev/shm is tiny in containers; Chromium crashes when it fills up.
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-extensions",
];

const INSTALL_HINT: &str = "install Debian's `chromium` and `chromium-driver` \
     (apt-get install -y --no-install-recommends chromium chromium-driver; scripts/test does this)";

/// A headless Chromium session, driven over WebDriver ([`fantoccini`]) through a
/// `chromedriver` process of its own.
///
/// Every [`Browser`] runs its own `chromedriver` on a free loopback port, in its own process
/// group, with a fresh temporary Chromium profile, so tests can run in parallel. Dropping the
/// handle kills `chromedriver` and the Chromium it started, also when a test panics;
/// [`Browser::close`] ends the WebDriver session cleanly first.
///
/// The binaries come from Debian's `chromium` and `chromium-driver` packages (`scripts/test`
/// installs them); `CHROMEDRIVER` and `CHROMIUM` point at others. A missing binary is an error,
/// never a silent skip.
///
/// The helpers return `Err(String)` with a readable message; [`client`](Browser::client)
/// gives the full [`fantoccini::Client`] for anything else.
///
/// ```no_run
/// # async fn demo() -> Result<(), String> {
/// use std::time::Duration;
/// use celeriac_testkit::Browser;
///
/// let browser = Browser::start().await?;
/// browser.goto("http://127.0.0.1:8080/").await?;
/// browser.click("#refresh").await?;
/// browser.wait_for_text("#status", "ok", Duration::from_secs(5)).await?;
/// let png = browser.screenshot("status-ok").await?;
/// println!("screenshot at {}", png.display());
/// browser.close().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Browser {
    // Dropped before `driver`, which kills the processes and removes the profile.
    client: Client,
    driver: Driver,
}

impl Browser {
    /// Starts `chromedriver` on a free loopback port and opens a session with a headless
    /// Chromium using a fresh temporary profile.
    ///
    /// `chromedriver` is `$CHROMEDRIVER`, else the one on `PATH`, else
    /// `/usr/bin/chromedriver`; Chromium is `$CHROMIUM`, else `chromium` on `PATH`, else
    /// `/usr/bin/chromium`. Fails (with install instructions) when either is missing, and with
    /// `chromedriver`'s log when it or Chromium does not come up in time.
    pub async fn start() -> Result<Browser, String> {
        let chromedriver = find_binary("CHROMEDRIVER", "chromedriver")?;
        let chromium = find_binary("CHROMIUM", "chromium")?;
        let driver = Driver::spawn(&chromedriver).await?;

        let profile = driver.dir.path().join("profile");
        std::fs::create_dir(&profile)
            .map_err(|e| format!("creating the Chromium profile {}: {e}", profile.display()))?;
        let binary = chromium_launcher(driver.dir.path(), &chromium)?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|&a| a.to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": binary.to_string_lossy(),
                "args": args,
                // Start on about:blank: the default first tab, the New Tab Page, can take
                // seconds to load on a busy machine and every first command waits for it.
                "prefs": {
                    "session": { "restore_on_startup": 4, "startup_urls": ["about:blank"] },
                },
            },
            "timeouts": {
                "pageLoad": PAGE_TIMEOUT.as_secs() * 1000,
                "script": PAGE_TIMEOUT.as_secs() * 1000,
            },
        });
        let capabilities: Capabilities = match capabilities {
            Value::Object(map) => map,
            _ => return Err("the session capabilities are not a JSON object".to_owned()),
        };

        let url = format!("http://127.0.0.1:{}", driver.port);
        let mut builder = ClientBuilder::new(HttpConnector::new());
        builder.capabilities(capabilities);
        let client = match tokio::time::timeout(SESSION_TIMEOUT, builder.connect(&url)).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(driver.error(&format!(
                    "opening a headless Chromium session ({}) failed: {e}",
                    chromium.display()
                )))
            }
            Err(_) => {
                return Err(driver.error(&format!(
                    "opening a headless Chromium session ({}) took more than {SESSION_TIMEOUT:?}",
                    chromium.display()
                )))
            }
        };
        Ok(Browser { client, driver })
    }

    /// The underlying WebDriver client, for everything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The port `chromedriver` listens on (on `127.0.0.1`).
    pub fn driver_port(&self) -> u16 {
        self.driver.port
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> Result<(), String> {
        self.client.goto(url).await.map_err(failed("goto", url))
    }

    /// The rendered text of the first element matching the CSS selector `css`, waiting up to
    /// 10 s for such an element to appear.
    pub async fn text_of(&self, css: &str) -> Result<String, String> {
        let element = self.element(css).await?;
        element
            .text()
            .await
            .map_err(failed("reading the text of", css))
    }

    /// Waits until the text of the first element matching `css` contains `needle` and returns
    /// that text. Polls until `timeout` (monotonic clock), looking at least once; a look in
    /// flight may overrun `timeout` by up to 2 s. The error tells the last text seen and, if
    /// the last look failed, why.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut last_text: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // A busy machine may take a while to answer one look; a hung browser must not
            // stretch the wait much beyond `timeout`.
            let attempt = tokio::time::timeout(remaining.max(LOOK_TIMEOUT_FLOOR), async {
                let element = self.client.find(Locator::Css(css)).await?;
                element.text().await
            });
            let problem = match attempt.await {
                Ok(Ok(text)) if text.contains(needle) => return Ok(text),
                Ok(Ok(text)) => {
                    last_text = Some(text);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("a WebDriver call did not return in time".to_owned()),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let seen = match &last_text {
                    Some(text) => format!("last text seen: {text:?}"),
                    None => "no text seen".to_owned(),
                };
                let problem = problem.map_or(String::new(), |p| format!("; last look: {p}"));
                return Err(format!(
                    "`{css}` did not contain {needle:?} within {timeout:?}; {seen}{problem}"
                ));
            }
            tokio::time::sleep(remaining.min(POLL_INTERVAL)).await;
        }
    }

    /// Clicks the first element matching `css`, waiting up to 10 s for it to appear.
    pub async fn click(&self, css: &str) -> Result<(), String> {
        let element = self.element(css).await?;
        element.click().await.map_err(failed("clicking", css))
    }

    /// Clears the form field matching `css` (waiting up to 10 s for it) and types `value`.
    pub async fn fill(&self, css: &str, value: &str) -> Result<(), String> {
        let element = self.element(css).await?;
        element.clear().await.map_err(failed("clearing", css))?;
        element
            .send_keys(value)
            .await
            .map_err(failed("typing into", css))
    }

    /// Runs `js` as the body of a function in the page and returns its `return` value
    /// (`null` without one). Runs even where the page's Content-Security-Policy forbids
    /// inline scripts.
    pub async fn execute(&self, js: &str) -> Result<Value, String> {
        self.client
            .execute(js, Vec::new())
            .await
            .map_err(failed("executing", js))
    }

    /// Makes `window.confirm` answer yes, so actions behind a confirmation dialog proceed.
    /// Lasts until the next navigation: call it again after each [`goto`](Browser::goto) or
    /// page load.
    pub async fn accept_confirms(&self) -> Result<(), String> {
        self.execute("window.confirm = () => true;").await.map(drop)
    }

    /// Saves a PNG screenshot of the viewport as `<name>.png` in the artifacts directory and
    /// returns its path: `$CELERIAC_ARTIFACTS/screenshots/`, else
    /// `<target dir>/celeriac-artifacts/screenshots/` (`$CARGO_TARGET_DIR`, else the cargo
    /// target directory holding the test binary, else `target`). Characters other than
    /// ASCII letters, digits, `-`, `_` and `.` in `name` become `_`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, String> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(failed("taking screenshot", name))?;
        let dir = screenshots_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(screenshot_file_name(name));
        std::fs::write(&path, png).map_err(|e| format!("writing {}: {e}", path.display()))?;
        Ok(path)
    }

    /// Ends the WebDriver session (Chromium quits), then stops `chromedriver` and removes the
    /// profile. Dropping the handle instead kills both processes.
    pub async fn close(self) -> Result<(), String> {
        let Browser { client, driver } = self;
        let closed = tokio::time::timeout(PAGE_TIMEOUT, client.close()).await;
        driver.stop().await;
        match closed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("ending the WebDriver session: {e}")),
            Err(_) => Err(format!(
                "ending the WebDriver session took more than {PAGE_TIMEOUT:?}"
            )),
        }
    }

    /// The first element matching `css`, polling up to [`ELEMENT_TIMEOUT`].
    async fn element(&self, css: &str) -> Result<fantoccini::elements::Element, String> {
        let deadline = Instant::now() + ELEMENT_TIMEOUT;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let attempt = tokio::time::timeout(
                remaining.max(LOOK_TIMEOUT_FLOOR),
                self.client.find(Locator::Css(css)),
            );
            let last_error = match attempt.await {
                Ok(Ok(element)) => return Ok(element),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "a WebDriver call that did not return in time".to_owned(),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!(
                    "no element matches `{css}` after {ELEMENT_TIMEOUT:?}: {last_error}"
                ));
            }
            tokio::time::sleep(remaining.min(POLL_INTERVAL)).await;
        }
    }
}

/// Maps a WebDriver error to "`what` `target`: error".
fn failed<'a, E: Display>(what: &'static str, target: &'a str) -> impl FnOnce(E) -> String + 'a {
    move |e| format!("{what} `{target}`: {e}")
}

/// A running `chromedriver`, in a process group of its own (Chromium joins it), with the
/// temporary directory holding its log and the Chromium profile.
#[derive(Debug)]
struct Driver {
    /// `None` once it has been stopped and reaped.
    child: Option<Child>,
    /// Its process group, which is its pid.
    group: Option<Pid>,
    port: u16,
    dir: TempDir,
}

impl Driver {
    /// Spawns `chromedriver --port=0` and waits until it reports its port and answers
    /// `/status` with `ready`.
    async fn spawn(exe: &Path) -> Result<Driver, String> {
        let dir = tempfile::Builder::new()
            .prefix("celeriac-browser-")
            .tempdir()
            .map_err(|e| format!("creating a temporary directory for the browser: {e}"))?;
        let log_path = dir.path().join("chromedriver.log");
        let log =
            File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log_path.display()))?;

        let mut command = match parent_death_wrapper() {
            // Killed with the test process, even when that is SIGKILLed (no Drop runs).
            Some(setpriv) => {
                let mut c = Command::new(setpriv);
                c.args(["--pdeathsig", "KILL", "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command
            // Port 0: it picks a free port itself and prints it, so parallel tests never race.
            .arg("--port=0")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            // Its own process group, which Chromium inherits: Drop kills them together.
            .process_group(0)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("starting {}: {e}", exe.display()))?;
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw);
        let mut driver = Driver {
            child: Some(child),
            group,
            port: 0,
            dir,
        };

        let deadline = Instant::now() + DRIVER_READY_TIMEOUT;
        loop {
            if let Some(reason) = driver.exited() {
                return Err(driver.error(&format!("{} {reason}", exe.display())));
            }
            if driver.port == 0 {
                driver.port = parse_port(&driver.log()).unwrap_or(0);
            }
            if driver.port != 0 && status_ready(driver.port).await {
                return Ok(driver);
            }
            if Instant::now() >= deadline {
                let what = if driver.port == 0 {
                    "did not report its port"
                } else {
                    "did not answer /status with ready"
                };
                return Err(driver.error(&format!(
                    "{} {what} within {DRIVER_READY_TIMEOUT:?}",
                    exe.display()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Why the process is gone, or `None` while it runs.
    fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => None,
            Some(Ok(Some(status))) => Some(format!("exited ({status})")),
            Some(Err(e)) => Some(format!("could not be waited for: {e}")),
            None => Some("is not running".to_owned()),
        }
    }

    fn log(&self) -> String {
        let bytes = std::fs::read(self.dir.path().join("chromedriver.log")).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// `message` with `chromedriver`'s log appended.
    fn error(&self, message: &str) -> String {
        format!(
            "{message}\n--- chromedriver log ---\n{}",
            self.log().trim_end()
        )
    }

    /// Kills the process group and reaps `chromedriver`.
    async fn stop(mut self) {
        self.kill_group();
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    fn kill_group(&self) {
        // Only while the leader is unreaped: its pid (the group id) cannot be reused before.
        if let (Some(group), Some(_)) = (self.group, &self.child) {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.kill_group();
        if let Some(child) = self.child.as_mut() {
            // kill_on_drop does the same; tokio reaps it in the background.
            let _ = child.start_kill();
        }
    }
}

/// The port from `chromedriver --port=0`'s "ChromeDriver was started successfully on port N."
fn parse_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(PORT_LINE)? + PORT_LINE.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

/// Whether `GET /status` on `127.0.0.1:port` answers `"ready": true`.
async fn status_ready(port: u16) -> bool {
    let request = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        // chromedriver keeps the connection open despite `Connection: close`: read up to the
        // end of the body its Content-Length announces.
        let mut response = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&chunk[..n]);
            if http_response_complete(&response) {
                break;
            }
        }
        Ok::<_, std::io::Error>(response)
    };
    match tokio::time::timeout(Duration::from_secs(2), request).await {
        Ok(Ok(response)) => {
            let text = String::from_utf8_lossy(&response);
            let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            compact.starts_with("HTTP/1.1200") && compact.contains("\"ready\":true")
        }
        _ => false,
    }
}

/// Whether `response` holds the headers and the whole body their Content-Length announces.
fn http_response_complete(response: &[u8]) -> bool {
    let Some(header_end) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&response[..header_end]);
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|length| response.len() >= header_end + 4 + length)
}

/// `$<var>` (which must exist), else `name` on `PATH`, else `/usr/bin/<name>`.
fn find_binary(var: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{var}={} is not an executable file; unset it or {INSTALL_HINT}",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join(name));
    on_path
        .chain([Path::new("/usr/bin").join(name)])
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("{name} not found (${var}, PATH, /usr/bin/{name}); {INSTALL_HINT}"))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What `chromedriver` starts as Chromium: with `setpriv`, a script in `dir` that execs
/// `chromium` with a parent-death signal, so that Chromium dies with `chromedriver` even when
/// the test process is SIGKILLed and no Drop runs (it would linger otherwise); else `chromium`.
fn chromium_launcher(dir: &Path, chromium: &Path) -> Result<PathBuf, String> {
    let Some(setpriv) = parent_death_wrapper() else {
        return Ok(chromium.to_path_buf());
    };
    let quote = |path: &Path| format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\nexec {} --pdeathsig KILL -- {} \"$@\"\n",
        quote(setpriv),
        quote(chromium)
    );
    let path = dir.join("chromium");
    std::fs::write(&path, script)
        .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| format!("writing the Chromium launcher {}: {e}", path.display()))?;
    Ok(path)
}

/// `$CELERIAC_ARTIFACTS/screenshots`, else `<target dir>/celeriac-artifacts/screenshots`.
fn screenshots_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CELERIAC_ARTIFACTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("screenshots");
    }
    target_dir().join("celeriac-artifacts").join("screenshots")
}

/// `$CARGO_TARGET_DIR`, else the nearest ancestor of the running test binary that cargo
/// marked as a target directory (it holds `CACHEDIR.TAG`), else `target`.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .find(|dir| dir.join("CACHEDIR.TAG").is_file())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// `name` made safe as a file name, with `.png` appended unless it is there.
fn screenshot_file_name(name: &str) -> String {
    let mut file: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let file_trimmed = file.trim_start_matches('.');
    if file_trimmed.is_empty() {
        file = "screenshot".to_owned();
    } else if file_trimmed.len() != file.len() {
        file = file_trimmed.to_owned();
    }
    if !file.ends_with(".png") {
        file.push_str(".png");
    }
    file
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_line_is_parsed() {
        let log = "Starting ChromeDriver 156.0 on port 0\n\
                   Only local connections are allowed.\n\
                   ChromeDriver was started successfully on port 35615.\n";
        assert_eq!(parse_port(log), Some(35615));
        assert_eq!(parse_port("Starting ChromeDriver on port 0\n"), None);
    }

    #[test]
    fn http_response_is_complete_at_content_length() {
        let head = "HTTP/1.1 200 OK\r\nContent-Length:14\r\nContent-Type:application/json\r\n\r\n";
        assert!(!http_response_complete(head.as_bytes()));
        assert!(!http_response_complete(
            format!("{head}{{\"ready\":").as_bytes()
        ));
        assert!(http_response_complete(
            format!("{head}{{\"ready\":true}}").as_bytes()
        ));
        assert!(!http_response_complete(b"HTTP/1.1 200 OK\r\nContent-Le"));
    }

    #[test]
    fn screenshot_names_stay_in_the_directory() {
        assert_eq!(screenshot_file_name("after click"), "after_click.png");
        assert_eq!(screenshot_file_name("done.png"), "done.png");
        assert_eq!(screenshot_file_name("../../etc/x"), "_.._etc_x.png");
        assert_eq!(screenshot_file_name(".."), "screenshot.png");
        assert_eq!(screenshot_file_name(""), "screenshot.png");
    }
}
