//! The headless-browser harness (`celeriac_testkit::Browser`) against a tiny local page: a
//! click runs an external script that changes a text, a screenshot lands as a PNG in the
//! artifacts directory, a page under `Content-Security-Policy: script-src 'self'` still runs
//! its own external script (and not an inline one), and two browsers run side by side.
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/test installs them); without them
//! these tests fail, they do not skip.

use std::time::{Duration, Instant};

use axum::http::header;
use axum::routing::get;
use axum::Router;
use celeriac_testkit::Browser;

const WAIT: Duration = Duration::from_secs(10);

const PAGE: &str = r#"<!doctype html>
<html>
<head><meta charset="utf-8"><title>harness</title></head>
<body>
<p id="message">before</p>
<p id="loaded">not loaded</p>
<p id="inline">inline blocked</p>
<input id="name" value="old">
<button id="go" type="button">Go</button>
<script>document.getElementById("inline").textContent = "inline ran";</script>
<script src="/app.js"></script>
</body>
</html>
"#;

const SCRIPT: &str = r#"
document.getElementById("loaded").textContent = "external ran";
document.getElementById("go").addEventListener("click", () => {
  if (!window.confirm("really?")) { return; }
  const name = document.getElementById("name").value;
  document.getElementById("message").textContent = "after click, hello " + name;
});
"#;

/// Serves `/` (no CSP), `/csp` (`script-src 'self'`) and `/app.js` on a free loopback port;
/// returns the base URL.
async fn serve() -> String {
    let router = Router::new()
        .route(
            "/",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
        .route(
            "/csp",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (header::CONTENT_SECURITY_POLICY, "script-src 'self'"),
                    ],
                    PAGE,
                )
            }),
        )
        .route(
            "/app.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve the page");
    });
    format!("http://{addr}")
}

async fn start() -> Browser {
    let started = Instant::now();
    let browser = Browser::start().await.unwrap_or_else(|e| panic!("{e}"));
    eprintln!("browser ready in {:?}", started.elapsed());
    browser
}

#[tokio::test(flavor = "multi_thread")]
async fn click_runs_the_external_script_and_screenshot_is_a_png() {
    let base = serve().await;
    let browser = start().await;

    browser
        .goto(&format!("{base}/"))
        .await
        .expect("open the page");
    browser
        .wait_for_text("#loaded", "external ran", WAIT)
        .await
        .expect("the external script ran");
    assert_eq!(browser.text_of("#message").await.expect("text"), "before");

    browser.fill("#name", "celeriac").await.expect("fill");
    browser.accept_confirms().await.expect("accept confirms");
    browser.click("#go").await.expect("click");
    let text = browser
        .wait_for_text("#message", "after click", WAIT)
        .await
        .expect("the click changed the text");
    assert_eq!(text, "after click, hello celeriac");

    let title = browser.execute("return document.title;").await.expect("js");
    assert_eq!(title.as_str(), Some("harness"));
    assert_eq!(browser.client().title().await.expect("title"), "harness");

    let path = browser
        .screenshot("browser-harness-after-click")
        .await
        .expect("screenshot");
    assert!(path.ends_with("screenshots/browser-harness-after-click.png"));
    let png = std::fs::read(&path).expect("the screenshot file exists");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        path.display()
    );

    let error = browser
        .wait_for_text("#message", "never there", Duration::from_millis(300))
        .await
        .expect_err("the text never appears");
    assert!(
        error.contains("after click, hello celeriac"),
        "the error shows the last text seen: {error}"
    );

    browser.close().await.expect("close the session");
}

// The default single-threaded test runtime works too.
#[tokio::test]
async fn csp_script_src_self_still_runs_the_external_script() {
    let base = serve().await;
    let browser = start().await;

    browser
        .goto(&format!("{base}/csp"))
        .await
        .expect("open the page");
    browser
        .wait_for_text("#loaded", "external ran", WAIT)
        .await
        .expect("the same-origin script ran under the CSP");
    // The policy is in force: the inline script was refused.
    assert_eq!(
        browser.text_of("#inline").await.expect("text"),
        "inline blocked"
    );

    browser.accept_confirms().await.expect("accept confirms");
    browser.click("#go").await.expect("click");
    browser
        .wait_for_text("#message", "after click, hello old", WAIT)
        .await
        .expect("the click handler ran under the CSP");

    browser.close().await.expect("close the session");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_browsers_run_side_by_side() {
    let base = serve().await;
    let (a, b) = tokio::join!(start(), start());
    assert_ne!(a.driver_port(), b.driver_port());

    let url = format!("{base}/");
    let (ra, rb) = tokio::join!(a.goto(&url), b.goto(&url));
    ra.expect("browser a opens the page");
    rb.expect("browser b opens the page");
    a.fill("#name", "a").await.expect("fill a");
    b.fill("#name", "b").await.expect("fill b");
    for browser in [&a, &b] {
        browser.accept_confirms().await.expect("accept confirms");
        browser.click("#go").await.expect("click");
    }
    a.wait_for_text("#message", "hello a", WAIT)
        .await
        .expect("a sees its own input");
    b.wait_for_text("#message", "hello b", WAIT)
        .await
        .expect("b sees its own input");

    // One closed cleanly, the other just dropped: both must go away.
    a.close().await.expect("close a");
    drop(b);
}
