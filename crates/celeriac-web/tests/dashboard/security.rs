//! The guard: no way in without a token, viewers read but may not act, actions must come
//! from the dashboard's own pages, the security headers, and the bind refusal.

use crate::common::{serve, OPERATOR, VIEWER};
use celeriac::QueueAdmin;
use celeriac_web::dashboard::{Auth, Role};
use celeriac_web::Dashboard;
use reqwest::header;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_person_is_sent_to_sign_in_and_a_client_is_refused() {
    let d = serve().await;
    let page = d
        .http
        .get(format!("{}/queues", d.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), 303);
    assert_eq!(
        page.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/login?next=%2Fqueues")
    );
    let api = d
        .http
        .get(format!("{}/api/v1/overview", d.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(api.status(), 401);
    let (status, _) = d
        .get_as("not-a-token-at-all-0000", "/api/v1/overview")
        .await;
    assert_eq!(status, 401, "a wrong token opens nothing");
    // The sign-in page and the static files need no token.
    let login = d
        .http
        .get(format!("{}/login", d.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(login.status(), 200);
    let js = d
        .http
        .get(format!("{}/static/dashboard.js", d.base))
        .send()
        .await
        .expect("answers");
    assert_eq!(js.status(), 200);
    let csp = js
        .headers()
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe"),
        "{csp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_but_may_not_act() {
    let d = serve().await;
    let (status, body) = d.get_as(VIEWER, "/api/v1/overview").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = d
        .post_as(
            VIEWER,
            "/api/v1/queues/default/pause",
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap_or_default()
        .contains("viewers may not act"));
    let (_, html) = d.get_as(VIEWER, "/").await;
    assert!(
        html.contains(r#"<span class="who">viewer"#),
        "the page says who reads it"
    );
}

/// Signs in with `token` through the form; returns the session cookie.
async fn sign_in(d: &crate::common::Served, token: &str) -> String {
    let res = d
        .http
        .post(format!("{}/login", d.base))
        .form(&[("token", token), ("next", "/queues")])
        .send()
        .await
        .expect("answers");
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/queues")
    );
    let cookie = res
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    cookie.split(';').next().unwrap_or_default().to_string()
}

/// The page's token, from a page served with `cookie`.
async fn csrf_of(d: &crate::common::Served, cookie: &str) -> String {
    let html = d
        .http
        .get(format!("{}/", d.base))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("a page");
    let at = html
        .find("data-csrf=\"")
        .expect("the page carries its token")
        + 11;
    html[at..].split('"').next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_action_needs_the_pages_token_and_the_same_site() {
    let d = serve().await;
    let bad = d
        .http
        .post(format!("{}/login", d.base))
        .form(&[("token", "wrong-token-0123456789"), ("next", "/")])
        .send()
        .await
        .expect("answers");
    assert!(bad
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|l| l.contains("failed=1")));
    assert!(bad.headers().get(header::SET_COOKIE).is_none());

    let cookie = sign_in(&d, OPERATOR).await;
    let csrf = csrf_of(&d, &cookie).await;
    assert_eq!(csrf.len(), 64);
    let pause = |fields: Vec<(&'static str, String)>, site: &'static str| {
        d.http
            .post(format!("{}/api/v1/queues/default/pause", d.base))
            .header(header::COOKIE, cookie.clone())
            .header("sec-fetch-site", site)
            .form(&fields)
            .send()
    };
    // Without the token, with another token, and from another site: refused.
    let none = pause(vec![("back", "/".into())], "same-origin")
        .await
        .expect("answers");
    assert_eq!(none.status(), 403);
    let other = pause(vec![("csrf", "0".repeat(64))], "same-origin")
        .await
        .expect("answers");
    assert_eq!(other.status(), 403);
    let cross = pause(vec![("csrf", csrf.clone())], "cross-site")
        .await
        .expect("answers");
    assert_eq!(cross.status(), 403);
    assert!(!d
        .app
        .backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .any(|s| s.paused));
    // With it, from the dashboard's own page: through the guard (whatever the action says).
    let ok = pause(
        vec![("csrf", csrf.clone()), ("back", "/queues".into())],
        "same-origin",
    )
    .await
    .expect("answers");
    assert_ne!(ok.status(), 403, "the guard let it through");
    assert_ne!(ok.status(), 401);

    // Signing out ends the session.
    let out = d
        .http
        .post(format!("{}/logout", d.base))
        .header(header::COOKIE, cookie.clone())
        .form(&[("csrf", csrf)])
        .send()
        .await
        .expect("answers");
    assert_eq!(out.status(), 303);
    let after = d
        .http
        .get(format!("{}/", d.base))
        .header(header::COOKIE, cookie)
        .send()
        .await
        .expect("answers");
    assert_eq!(after.status(), 303, "the old session opens nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bind_off_loopback_needs_authentication() {
    let (app, _dir) = crate::common::app().await;
    let open = Dashboard::new(app.clone());
    let anywhere = "0.0.0.0:7777".parse().expect("an address");
    let err = open.check_bind(anywhere).expect_err("refused");
    assert!(err.contains("CELERIAC_DASHBOARD_TOKEN"), "{err}");
    assert!(open
        .check_bind("127.0.0.1:7777".parse().expect("an address"))
        .is_ok());
    assert!(open
        .check_bind("[::1]:7777".parse().expect("an address"))
        .is_ok());
    let served = open
        .clone()
        .serve("0.0.0.0:0".parse().expect("an address"), Default::default())
        .await
        .expect_err("serve refuses too");
    assert_eq!(served.kind(), std::io::ErrorKind::PermissionDenied);
    let guarded = open.auth(Auth::none().token(Role::Viewer, VIEWER).expect("long"));
    assert!(guarded.check_bind(anywhere).is_ok());
}

#[test]
fn tokens_from_the_environment_are_checked_and_never_shown() {
    let short =
        Auth::from_vars(|name| (name == "CELERIAC_DASHBOARD_TOKEN").then(|| "hunter2".to_string()))
            .expect_err("too short");
    let text = short.to_string();
    assert!(text.contains("CELERIAC_DASHBOARD_TOKEN"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let auth = Auth::from_vars(|name| match name {
        "CELERIAC_DASHBOARD_TOKEN" => Some(OPERATOR.to_string()),
        "CELERIAC_DASHBOARD_VIEWER_TOKEN" => Some(VIEWER.to_string()),
        _ => None,
    })
    .expect("long enough");
    assert!(auth.is_configured());
    let debug = format!("{auth:?}");
    assert!(
        !debug.contains(OPERATOR) && debug.contains("operator"),
        "{debug}"
    );
    assert!(!Auth::from_vars(|_| None).expect("none").is_configured());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_under_a_prefix_every_link_and_page_keeps_it() {
    let (app, _dir) = crate::common::app().await;
    crate::common::enqueue(&app, "emails", "mail.send", serde_json::json!({}), 1).await;
    let auth = Auth::none().token(Role::Operator, OPERATOR).expect("long");
    let router =
        axum::Router::new().nest("/admin", Dashboard::new(app.clone()).auth(auth).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let base = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");

    let page = http
        .get(format!("{base}/admin"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("answers");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("a page");
    assert!(html.contains(r#"href="/admin/queues/emails""#), "{html}");
    assert!(
        html.contains(r#"<a class="brand" href="/admin">"#),
        "{html}"
    );
    assert!(html.contains(r#"href="/admin?period=7d""#), "{html}");
    assert!(html.contains(r#"src="/admin/static/dashboard.js""#));
    assert!(html.contains(r#"data-live="/admin/live/overview""#));

    // Signing in, and a refusal, load the dashboard's own files from under the prefix too.
    let login = http
        .get(format!("{base}/admin/login"))
        .send()
        .await
        .expect("answers")
        .text()
        .await
        .expect("a page");
    assert!(
        login.contains(r#"href="/admin/static/dashboard.css""#),
        "{login}"
    );
    assert!(login.contains(r#"action="/admin/login""#), "{login}");
    let refused = http
        .post(format!("{base}/admin/api/v1/queues/emails/pause"))
        .bearer_auth(OPERATOR)
        .header("sec-fetch-site", "cross-site")
        .form(&[("back", "/")])
        .send()
        .await
        .expect("answers");
    assert_eq!(refused.status(), 403);
    let body = refused.text().await.expect("a page");
    assert!(
        body.contains(r#"href="/admin/static/dashboard.css""#),
        "{body}"
    );

    // A form posted without a session (a restart ended it) is sent to sign in.
    let lost = http
        .post(format!("{base}/admin/api/v1/queues/emails/pause"))
        .form(&[("back", "/queues/emails")])
        .send()
        .await
        .expect("answers");
    assert_eq!(lost.status(), 303);
    assert_eq!(
        lost.headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/admin/login?next=%2F")
    );
    assert!(!app
        .backend()
        .stats()
        .await
        .expect("stats")
        .iter()
        .any(|s| s.paused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_settings_page_names_the_store_and_the_guard_but_no_secret() {
    let d = serve().await;
    let s = d.json("/api/v1/settings").await;
    assert_eq!(s["backend"], "sqlite");
    assert_eq!(s["auth"], serde_json::json!(["operator", "viewer"]));
    assert_eq!(s["role"], "operator");
    assert!(
        s["store"]
            .as_str()
            .unwrap_or_default()
            .starts_with("sqlite://"),
        "{s}"
    );
    let (status, html) = d.get_as(VIEWER, "/settings").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("tokens for operator and viewer, you read as viewer"),
        "{html}"
    );
    for secret in [OPERATOR, VIEWER] {
        assert!(!html.contains(secret) && !s.to_string().contains(secret));
    }
}
