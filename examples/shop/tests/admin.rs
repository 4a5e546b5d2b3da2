//! `/admin`: the dashboard and `/admin/metrics` behind the admin token, over real HTTP.
//! Without the token a person is sent to sign in and a client gets a 401; with it (as a
//! bearer token, or the session cookie of a sign-in) both answer, and the metrics carry
//! Celeriac's names. Without a token, the service refuses to listen off loopback.

// `Shop::open`'s future is deep.
#![recursion_limit = "256"]

mod common;

use shop::http::{self, HttpOptions};
use shop::shop::Shop;
use std::net::SocketAddr;
use std::path::Path;

const TOKEN: &str = "admin-token-for-tests-0123456789";

/// The shop of these tests: the store and the database in `dir`, 40 products.
async fn open_shop(dir: &Path) -> Shop {
    let store = common::sqlite_url(&dir.join("celeriac.db"));
    common::open_shop(&store, dir, "admin-test", 40, 100).await
}

/// `GET url` with the admin token as a bearer.
async fn get_with_token(client: &reqwest::Client, url: String) -> reqwest::Response {
    client
        .get(url)
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("answers")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_needs_the_token_and_metrics_carry_celeriac_names() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let shop = open_shop(dir.path()).await;
    let opts = HttpOptions {
        admin_token: Some(TOKEN.to_string()),
        ..HttpOptions::default()
    };
    let base = common::serve(http::router(shop, opts).await.expect("the router")).await;
    let client = client();

    // Some traffic first, so the limiter and the cache have something to count.
    for _ in 0..3 {
        let r = common::get_books(&client, &base, "k1").await;
        assert_eq!(r.status(), 200);
    }

    // Without the token: a person is sent to sign in, a client is refused.
    let page = client
        .get(format!("{base}/admin"))
        .send()
        .await
        .expect("answers");
    assert!(
        page.status().is_redirection(),
        "the dashboard without a token: {}",
        page.status()
    );
    let to = page
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("a location");
    assert!(to.starts_with("/admin/login"), "sent to sign in: {to}");
    for path in ["/admin/api/v1/overview", "/admin/metrics"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 401, "{path} without a token");
        let r = client
            .get(format!("{base}{path}"))
            .bearer_auth("wrong-token-wrong-token-wrong")
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }

    // With the token as a bearer.
    let r = get_with_token(&client, format!("{base}/admin")).await;
    assert_eq!(r.status(), 200, "the dashboard with the token");
    let html = r.text().await.expect("a page");
    assert!(html.contains("/admin/"), "links under /admin");
    let r = get_with_token(&client, format!("{base}/admin/api/v1/overview")).await;
    assert_eq!(r.status(), 200);
    let r = get_with_token(&client, format!("{base}/admin/metrics")).await;
    assert_eq!(r.status(), 200, "the metrics with the token");
    let text = r.text().await.expect("text");
    for name in [
        "celeriac_build_info",
        "celeriac_rate_limit_decisions_total",
        "limiter=\"api\"",
    ] {
        assert!(text.contains(name), "{name} in /admin/metrics:\n{text}");
    }

    // The dashboard's Rate limits page shows the API's limiter (published at once, then
    // every 10 s), with the decisions made above.
    let limits: serde_json::Value = common::get_json(
        client
            .get(format!("{base}/admin/api/v1/limits?name=shop"))
            .bearer_auth(TOKEN),
    )
    .await;
    let shown = limits.to_string();
    assert!(shown.contains("\"api\""), "the limiter `api`: {shown}");
    // The trailing slash of the spec's `/admin/` reaches the dashboard too.
    let r = get_with_token(&client, format!("{base}/admin/")).await;
    assert!(
        r.status() == 200 || r.status().is_redirection(),
        "/admin/: {}",
        r.status()
    );

    // With the session cookie of a sign-in.
    let login = client
        .post(format!("{base}/admin/login"))
        .form(&[("token", TOKEN), ("next", "/")])
        .send()
        .await
        .expect("answers");
    assert!(login.status().is_redirection(), "{}", login.status());
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string();
    for path in ["/admin", "/admin/metrics"] {
        let r = client
            .get(format!("{base}{path}"))
            .header("cookie", &cookie)
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 200, "{path} with the session");
    }

    // /admin is not rate limited, and needs no API key.
    for _ in 0..120 {
        let r = get_with_token(&client, format!("{base}/admin/metrics")).await;
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_admin_is_open_on_loopback_only() {
    let public: SocketAddr = "0.0.0.0:8080".parse().expect("an address");
    let loopback: SocketAddr = "127.0.0.1:8080".parse().expect("an address");
    let open = HttpOptions::default();
    let refused = http::check_bind(public, &open).expect_err("off loopback without a token");
    assert!(
        refused.to_string().contains("CELERIAC_DASHBOARD_TOKEN"),
        "{refused}"
    );
    http::check_bind(loopback, &open).expect("loopback without a token");
    let guarded = HttpOptions {
        admin_token: Some(TOKEN.to_string()),
        ..HttpOptions::default()
    };
    http::check_bind(public, &guarded).expect("off loopback with a token");
    let short = HttpOptions {
        admin_token: Some("too-short".to_string()),
        ..HttpOptions::default()
    };
    let e = http::check_bind(loopback, &short).expect_err("a short token");
    assert!(
        !e.to_string().contains("too-short"),
        "never shows the token: {e}"
    );

    // Served on loopback without a token: open.
    let dir = tempfile::tempdir().expect("a temporary folder");
    let shop = open_shop(dir.path()).await;
    let base = common::serve(http::router(shop, open).await.expect("the router")).await;
    let client = client();
    for path in ["/admin", "/admin/metrics"] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("answers");
        assert_eq!(r.status(), 200, "{path} on loopback without a token");
    }
}
