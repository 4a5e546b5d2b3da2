//! Driving oha (one process per route class and instance, one thread each) and reading back
//! every request it made from its `--db-url` SQLite file.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The oha release this runner is written against.
pub(crate) const OHA_VERSION: &str = "1.16.0";

/// How to install it where the scripts look.
pub(crate) fn install_hint() -> String {
    format!(
        "oha {OHA_VERSION} is required: cargo install --locked oha --version {OHA_VERSION} \
         --root ~/.cache/celeriac/tools (or give --oha PATH / SHOP_LOAD_OHA)"
    )
}

/// Finds oha: the given path, `$PATH`, or `~/.cache/celeriac/tools/bin/oha`; checks its version.
pub(crate) fn find(given: Option<&Path>) -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = given {
        candidates.push(p.to_path_buf());
    }
    if let Ok(tools) = std::env::var("CELERIAC_TOOLS") {
        candidates.push(PathBuf::from(tools).join("bin/oha"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/celeriac/tools/bin/oha"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            candidates.push(d.join("oha"));
        }
    }
    for c in candidates {
        if !c.is_file() {
            continue;
        }
        let out = std::process::Command::new(&c).arg("--version").output();
        if let Ok(out) = out {
            let v = String::from_utf8_lossy(&out.stdout);
            if v.contains(OHA_VERSION) {
                return Ok(c);
            }
        }
    }
    bail!("{}", install_hint())
}

/// A class of requests sent by one oha process to one instance.
#[derive(Clone, Debug)]
pub(crate) struct Class {
    /// `browse`, `order`, `update`, `overlimit`, ...
    pub(crate) route: &'static str,
    /// The instance's name.
    pub(crate) instance: String,
    /// Arrival rate (requests/s); `None`: closed loop (as fast as `conns` allow).
    pub(crate) rate: Option<f64>,
    /// A `rand_regex` pattern of the URL.
    pub(crate) url_regex: String,
    pub(crate) method: &'static str,
    /// A file of request bodies, one per line (chosen at random).
    pub(crate) bodies: Option<PathBuf>,
    pub(crate) conns: usize,
}

/// One request as oha recorded it, on the runner's wall clock.
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub(crate) route: &'static str,
    /// When it was sent, Unix ms.
    pub(crate) sent_ms: f64,
    /// When its answer ended, Unix ms.
    pub(crate) end_ms: f64,
    /// Latency, ms (from the scheduled start, corrected for coordinated omission).
    pub(crate) lat_ms: f64,
    pub(crate) status: u16,
    pub(crate) key: String,
}

/// One finished oha process.
pub(crate) struct Outcome {
    pub(crate) class: Class,
    pub(crate) recs: Vec<Rec>,
    /// oha's errors (connection refused, timeouts...), by message.
    pub(crate) errors: Vec<(String, u64)>,
}

/// A running oha process.
pub(crate) struct Running {
    class: Class,
    child: tokio::process::Child,
    started_ms: f64,
    db: PathBuf,
    json: PathBuf,
    log: PathBuf,
}

pub(crate) fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Escapes the regex metacharacters of a literal, except `.`: oha makes every `.` of a
/// `--rand-regex-url` pattern literal itself (and would break an escaped one).
pub(crate) fn lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\+*?()|[]{}^$#".contains(c) {
            o.push('\\');
        }
        o.push(c);
    }
    o
}

/// Starts oha for `class` for `secs` seconds, writing into `dir`.
pub(crate) fn spawn(oha: &Path, class: Class, secs: f64, dir: &Path, tag: &str) -> Result<Running> {
    let base = dir.join(format!("oha-{tag}-{}-{}", class.route, class.instance));
    let db = base.with_extension("db");
    let json = base.with_extension("json");
    let log = base.with_extension("log");
    let _ = std::fs::remove_file(&db);
    let mut cmd = tokio::process::Command::new(oha);
    cmd.arg("-z")
        .arg(format!("{}ms", (secs * 1000.0).round() as u64))
        .arg("-w")
        .arg("-c")
        .arg(class.conns.to_string())
        .arg("--no-tui")
        .arg("--output-format")
        .arg("json")
        .arg("-o")
        .arg(&json)
        .arg("--db-url")
        .arg(&db)
        .arg("--worker-threads")
        .arg("1")
        .arg("-t")
        .arg("10s")
        .arg("--rand-regex-url")
        .arg("-m")
        .arg(class.method);
    if let Some(rate) = class.rate {
        cmd.arg("-q")
            .arg(format!("{rate:.3}"))
            .arg("--latency-correction");
    }
    if let Some(b) = &class.bodies {
        cmd.arg("-Z").arg(b).arg("-T").arg("application/json");
    }
    cmd.arg(&class.url_regex);
    let logf = std::fs::File::create(&log)?;
    cmd.stdout(std::process::Stdio::null())
        .stderr(logf)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started_ms = now_ms();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", oha.display()))?;
    Ok(Running {
        class,
        child,
        started_ms,
        db,
        json,
        log,
    })
}

impl Running {
    /// Waits for it and reads what it recorded.
    pub(crate) async fn finish(mut self) -> Result<Outcome> {
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .context("oha did not finish within 120 s of its end")??;
        if !status.success() {
            bail!(
                "oha ({} on {}) failed: {status}\n{}",
                self.class.route,
                self.class.instance,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        let mut errors = Vec::new();
        if let Ok(text) = std::fs::read_to_string(&self.json) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                if let Some(m) = v.get("errorDistribution").and_then(|e| e.as_object()) {
                    for (k, n) in m {
                        errors.push((k.clone(), n.as_u64().unwrap_or(0)));
                    }
                }
            }
        }
        let recs = read_db(&self.db, self.started_ms, self.class.route)?;
        Ok(Outcome {
            class: self.class,
            recs,
            errors,
        })
    }
}

/// The api_key of a URL.
pub(crate) fn key_of(url: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix("api_key="))
        .unwrap_or("")
        .to_string()
}

fn read_db(db: &Path, started_ms: f64, route: &'static str) -> Result<Vec<Rec>> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let conn =
        rusqlite::Connection::open(db).with_context(|| format!("opening {}", db.display()))?;
    let mut st = conn.prepare("SELECT url, start, end, duration, status FROM oha")?;
    let rows = st.query_map([], |r| {
        let url: String = r.get(0)?;
        let start: f64 = r.get(1)?;
        let end: f64 = r.get(2)?;
        let duration: f64 = r.get(3)?;
        let status: i64 = r.get(4)?;
        Ok(Rec {
            route,
            sent_ms: started_ms + start * 1000.0,
            end_ms: started_ms + end * 1000.0,
            lat_ms: duration * 1000.0,
            status: u16::try_from(status).unwrap_or(0),
            key: key_of(&url),
        })
    })?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?);
    }
    out.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    Ok(out)
}

/// Writes request bodies, one per line.
pub(crate) fn write_bodies(path: &Path, lines: &[String]) -> Result<()> {
    std::fs::write(path, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", path.display()))
}
