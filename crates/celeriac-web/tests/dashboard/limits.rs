//! The rate limits page: real rate limiters over the SQLite file deciding, publishing their
//! figures to the store (once, and from the periodic task), two instances of one limiter
//! summed, the most denied keys first, and who may read them.

use crate::common::{serve, Served, VIEWER};
use celeriac::limit::{Algorithm, Quota, RateLimiter};
use celeriac::{AnyBackend, ManualClock};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The limiters' frozen time: the fixed windows never roll over during a test.
const T0: i64 = 1_700_000_000_000;

const EVERY: Duration = Duration::from_secs(10);

/// A limiter named `name` over the dashboard's store: `per_hour` calls per key in a fixed
/// window.
fn limiter(d: &Served, name: &str, per_hour: u32) -> RateLimiter<AnyBackend> {
    RateLimiter::builder(d.app.backend().clone())
        .name(name)
        .quota(Quota::per_hour(per_hour).with_algorithm(Algorithm::FixedWindow))
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("a limiter")
}

/// Checks `key` `n` times; how many were allowed.
async fn check(l: &RateLimiter<AnyBackend>, key: &str, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if l.check(key).await.expect("a decision").allow {
            allowed += 1;
        }
    }
    allowed
}

/// The row of `limiter` in the twin.
fn row<'a>(v: &'a Value, limiter: &str) -> &'a Value {
    v["limiters"]
        .as_array()
        .expect("limiters")
        .iter()
        .find(|l| l["limiter"] == limiter)
        .unwrap_or_else(|| panic!("no row for {limiter}: {v}"))
}

/// The sampled keys of a row, with their counts.
fn keys(row: &Value) -> Vec<(String, u64)> {
    row["top_denied"]
        .as_array()
        .expect("top_denied")
        .iter()
        .map(|k| {
            (
                k["key"].as_str().expect("a key").to_string(),
                k["count"].as_u64().expect("a count"),
            )
        })
        .collect()
}

/// The HTML of the table row of `limiter`.
fn html_row<'a>(html: &'a str, limiter: &str) -> &'a str {
    html.split(&format!(r#"<tr data-limiter="{limiter}">"#))
        .nth(1)
        .and_then(|r| r.split("</tr>").next())
        .unwrap_or_else(|| panic!("no row for {limiter}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn decisions_and_the_most_denied_keys_are_shown_summed_over_instances() {
    let d = serve().await;
    let store = d.app.backend().clone();
    let first = limiter(&d, "api", 3);
    assert_eq!(check(&first, "user:hot", 10).await, 3);
    assert_eq!(check(&first, "ip:203.0.113.7", 5).await, 3);
    assert_eq!(check(&first, "user:a", 2).await, 2);
    let login = limiter(&d, "login", 1);
    assert_eq!(check(&login, "<b>eve</b>", 2).await, 1);
    // Precondition: the limiter counted what it decided.
    let own = first.stats().counts;
    assert_eq!((own.allowed, own.denied), (8, 9));

    let (status, html) = d.get("/limits?name=shop").await;
    assert_eq!(status, 200);
    assert!(
        html.contains("has published figures yet"),
        "nothing before publishing"
    );

    first
        .publish_stats_now(&*store, "shop", EVERY)
        .await
        .expect("published");
    login
        .publish_stats_now(&*store, "shop", EVERY)
        .await
        .expect("published");
    let v = d.json("/api/v1/limits?name=shop").await;
    assert_eq!(v["app"], "shop");
    let names: Vec<&str> = v["limiters"]
        .as_array()
        .expect("limiters")
        .iter()
        .map(|l| l["limiter"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["api", "login"]);
    let api = row(&v, "api");
    assert_eq!(api["instances"], 1);
    assert_eq!(
        (api["allowed"].as_u64(), api["denied"].as_u64()),
        (Some(8), Some(9))
    );
    assert_eq!(
        keys(api),
        [
            ("user:hot".to_string(), 7),
            ("ip:203.0.113.7".to_string(), 2)
        ]
    );
    assert_eq!(v["history"]["available"], false);

    // A second instance of the limiter, publishing from its periodic task: the same store
    // window, so the hot key is denied there at once.
    let second = limiter(&d, "api", 3);
    assert_eq!(check(&second, "user:hot", 3).await, 0);
    assert_eq!(check(&second, "user:b", 1).await, 1);
    let task = second
        .publish_stats(store.clone(), "shop", EVERY)
        .expect("publishing");
    let deadline = Instant::now() + Duration::from_secs(15);
    let v = loop {
        let v = d.json("/api/v1/limits?name=shop").await;
        if row(&v, "api")["instances"] == 2 {
            break v;
        }
        assert!(Instant::now() < deadline, "the second instance: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    task.abort();
    let api = row(&v, "api");
    assert_eq!(api["allowed"], 9);
    assert_eq!(api["denied"], 12);
    assert_eq!(api["shadow_denied"], 0);
    assert_eq!(
        api["short_circuited"], 9,
        "6 + 1 in the first, 2 in the second"
    );
    assert_eq!(api["store_errors"], 0);
    assert_eq!(api["store_paused"], 0);
    assert_eq!(api["decisions"], 21);
    let ratio = api["denial_ratio"].as_f64().expect("a ratio");
    assert!((ratio - 12.0 / 21.0).abs() < 1e-9, "{ratio}");
    assert_eq!(api["quotas"][0], "3/1h; algorithm=fixed_window");
    assert_eq!(
        keys(api),
        [
            ("user:hot".to_string(), 10),
            ("ip:203.0.113.7".to_string(), 2)
        ]
    );

    let (status, html) = d.get("/limits?name=shop").await;
    assert_eq!(status, 200);
    let tr = html_row(&html, "api");
    assert!(tr.contains(r#"<td class="num allowed">9</td>"#), "{tr}");
    assert!(tr.contains(r#"<td class="num denied">12</td>"#), "{tr}");
    assert!(tr.contains("57.1 %"), "{tr}");
    let denied = html
        .split(r#"<table class="denied-keys" data-limiter="api">"#)
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the api's denied keys");
    let hot = denied.find("user:hot").expect("the hot key");
    let ip = denied.find("ip:203.0.113.7").expect("the other key");
    assert!(hot < ip, "most denied first: {denied}");
    assert!(denied.contains("<td class=\"num\">10"), "{denied}");
    // Keys are text, never markup.
    assert!(html.contains("&lt;b&gt;eve&lt;/b&gt;"));
    assert!(!html.contains("<b>eve</b>"));
    assert!(html.contains("Sampled"));
    assert!(html.contains("count from each live instance's start"));
    assert!(html.contains("Decisions over time"));
    assert!(html.contains(r#"href="/limits""#), "in the navigation");

    // A viewer reads them; a request without a token does not.
    let (status, html) = d.get_as(VIEWER, "/limits?name=shop").await;
    assert_eq!(status, 200);
    assert!(html.contains("user:hot"));
    let (status, body) = d.get_as(VIEWER, "/api/v1/limits?name=shop").await;
    assert_eq!(status, 200);
    assert!(body.contains("user:hot"));
    for path in ["/limits?name=shop", "/api/v1/limits?name=shop"] {
        let res = d
            .http
            .get(format!("{}{path}", d.base))
            .send()
            .await
            .expect("answers");
        assert_ne!(res.status().as_u16(), 200, "{path} without a token");
        let body = res.text().await.expect("a body");
        assert!(!body.contains("user:hot"), "{path}: {body}");
    }
}

#[tokio::test]
async fn another_application_name_shows_nothing_and_a_bad_one_is_refused() {
    let d = serve().await;
    let l = limiter(&d, "api", 1);
    assert_eq!(check(&l, "k", 2).await, 1);
    l.publish_stats_now(&**d.app.backend(), "shop", EVERY)
        .await
        .expect("published");
    // The default name is the caches' default, `celeriac`.
    let v = d.json("/api/v1/limits").await;
    assert_eq!(v["app"], "celeriac");
    assert_eq!(v["limiters"], serde_json::json!([]));
    assert_eq!(
        row(&d.json("/api/v1/limits?name=shop").await, "api")["denied"],
        1
    );
    let (status, body) = d.get("/api/v1/limits?name=a:b").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = d.get("/limits?name=%7Bx%7D").await;
    assert_eq!(status, 400);
}
