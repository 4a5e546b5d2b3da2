//! The distributed rate limiter around a real store: short-circuit, shadow mode, overrides,
//! bad settings, and the failure modes with a Redis that is down or hangs.

use celeriac::clock::Clock;
use celeriac::clock::StoreClock;
use celeriac::embedded::SqliteBackend;
use celeriac::limit::{stats, Algorithm, FailMode, Quota, RateLimiter, Source};
use celeriac::redis::RedisBackend;
use celeriac::{Error, ManualClock};
use celeriac_testkit::RedisServer;
mod counts;

use counts::Counts;
use std::sync::Arc;
use std::time::Duration;

const T0: i64 = 1_700_000_000_000;

async fn sqlite() -> Arc<SqliteBackend> {
    Arc::new(SqliteBackend::memory().await.expect("sqlite"))
}

#[tokio::test]
async fn keys_over_their_limit_are_denied_locally_until_their_retry_after() {
    let clock = ManualClock::new(T0);
    let limiter = RateLimiter::builder(sqlite().await)
        .quota(Quota::per_minute(1))
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("limiter");
    let v = limiter.check("u").await.expect("check");
    assert!(v.allow && v.source == Source::Store);
    let v = limiter.check("u").await.expect("check");
    assert!(!v.allow && v.source == Source::Store);
    assert_eq!(v.decision.retry_after, Some(Duration::from_secs(60)));
    let v = limiter.check("u").await.expect("check");
    assert_eq!((v.allow, v.source), (false, Source::ShortCircuit));
    clock.advance(Duration::from_secs(30));
    let v = limiter.check("u").await.expect("check");
    assert_eq!((v.allow, v.source), (false, Source::ShortCircuit));
    assert_eq!(v.decision.retry_after, Some(Duration::from_secs(30)));
    assert!(limiter.check("other").await.expect("check").allow);
    clock.advance(Duration::from_secs(30));
    let v = limiter.check("u").await.expect("check");
    assert_eq!(
        (v.allow, v.source),
        (true, Source::Store),
        "back to the store"
    );
}

#[tokio::test]
async fn shadow_mode_decides_and_counts_but_never_denies() {
    let limiter = RateLimiter::builder(sqlite().await)
        .quota(Quota::per_minute(1))
        .shadow(true)
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("limiter");
    assert!(limiter.check("u").await.expect("check").decision.allowed);
    for _ in 0..3 {
        let v = limiter.check("u").await.expect("check");
        assert!(v.allow, "shadow mode lets it through");
        assert!(!v.decision.allowed, "but says it would have been denied");
    }
}

#[tokio::test]
async fn overrides_give_keys_their_own_quotas() {
    let limiter = RateLimiter::builder(sqlite().await)
        .quota(Quota::per_minute(1))
        .override_key("vip", vec![Quota::per_minute(60).burst(2)])
        .override_with(|key| {
            key.starts_with("gold:")
                .then(|| Arc::from(vec![Quota::per_minute(60).burst(1)]))
        })
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("limiter");
    let allowed = |key: &'static str| {
        let limiter = limiter.clone();
        async move {
            let mut n = 0;
            while limiter.check(key).await.expect("check").allow {
                n += 1;
            }
            n
        }
    };
    assert_eq!(allowed("basic").await, 1);
    assert_eq!(allowed("vip").await, 3);
    assert_eq!(allowed("gold:7").await, 2);
    assert_eq!(limiter.quotas_for("vip")[0].limit(), 60);
}

#[tokio::test]
async fn bad_settings_and_keys_are_clear_errors() {
    let store = sqlite().await;
    let setting = |e: Error| match e {
        Error::Config { setting, .. } => setting,
        other => panic!("expected a config error, got {other}"),
    };
    let build = |q: Vec<Quota>| {
        q.into_iter()
            .fold(RateLimiter::builder(store.clone()), |b, q| b.quota(q))
            .build()
            .map(|_| ())
    };
    assert_eq!(setting(build(vec![]).expect_err("no quota")), "rate limit");
    assert_eq!(
        setting(build(vec![Quota::per_minute(0)]).expect_err("zero")),
        "rate limit"
    );
    assert_eq!(
        setting(build(vec![Quota::new(3, Duration::ZERO)]).expect_err("zero window")),
        "rate limit"
    );
    let e = build(vec![Quota::per_minute(1), Quota::per_hour(9)]).expect_err("names");
    assert!(e.to_string().contains("named `default`"), "{e}");
    let e = RateLimiter::builder(store.clone())
        .quota(Quota::per_minute(1))
        .timeout(Duration::ZERO)
        .build()
        .expect_err("zero timeout");
    assert_eq!(setting(e), "rate limit timeout");
    let limiter = RateLimiter::builder(store)
        .quota(Quota::per_minute(1))
        .build()
        .expect("limiter");
    assert_eq!(
        setting(limiter.check("").await.expect_err("empty")),
        "rate limit key"
    );
    let long = "x".repeat(4096);
    assert_eq!(
        setting(limiter.check(&long).await.expect_err("long")),
        "rate limit key"
    );
    assert_eq!(
        setting(limiter.check_cost("k", 5).await.expect_err("cost")),
        "rate limit cost"
    );
}

async fn redis_limiter(
    server: &RedisServer,
    mode: FailMode,
    fallback: bool,
) -> RateLimiter<RedisBackend> {
    let url = format!(
        "{}?response_timeout_ms=2000&connect_timeout_ms=200",
        server.url()
    );
    let store = Arc::new(RedisBackend::connect(&url).await.expect("redis"));
    RateLimiter::builder(store)
        .quota(Quota::per_minute(1))
        .fail_mode(mode)
        .local_fallback(fallback)
        .timeout(Duration::from_millis(200))
        .clock(Arc::new(ManualClock::new(T0)))
        .build()
        .expect("limiter")
}

#[tokio::test]
async fn a_store_that_is_down_follows_the_failure_mode() {
    let mut server = RedisServer::start().await.expect("redis-server");
    let open = redis_limiter(&server, FailMode::Open, true).await;
    let bare = redis_limiter(&server, FailMode::Open, false).await;
    let closed = redis_limiter(&server, FailMode::Closed, true).await;
    assert_eq!(open.check("up").await.expect("check").source, Source::Store);
    server.kill();
    let v = open.check("k").await.expect("fail-open");
    assert_eq!((v.allow, v.source), (true, Source::Fallback));
    let v = open.check("k").await.expect("fail-open");
    assert_eq!(
        (v.allow, v.source),
        (false, Source::Fallback),
        "the local fallback enforces the quota meanwhile"
    );
    for _ in 0..3 {
        let v = bare.check("k").await.expect("fail-open");
        assert_eq!((v.allow, v.source), (true, Source::FailedOpen));
    }
    let v = closed.check("k").await.expect("fail-closed");
    assert_eq!((v.allow, v.source), (false, Source::FailedClosed));
    assert!(v.decision.retry_after.is_some());
}

#[tokio::test]
async fn a_store_that_hangs_times_out_into_the_failure_mode() {
    let server = RedisServer::start().await.expect("redis-server");
    let open = redis_limiter(&server, FailMode::Open, true).await;
    let closed = redis_limiter(&server, FailMode::Closed, true).await;
    assert_eq!(open.check("up").await.expect("check").source, Source::Store);
    assert_eq!(
        closed.check("up").await.expect("check").source,
        Source::Store
    );
    server.pause();
    let v = open.check("k").await.expect("fail-open");
    let w = closed.check("k").await.expect("fail-closed");
    server.resume();
    assert_eq!((v.allow, v.source), (true, Source::Fallback));
    assert_eq!((w.allow, w.source), (false, Source::FailedClosed));
}

#[tokio::test]
async fn decisions_and_store_errors_are_counted() {
    let counts = Counts::by("outcome");
    let store = sqlite().await;
    let (limiter, shadow) = metrics::with_local_recorder(&counts, || {
        let build = |shadow| {
            RateLimiter::builder(store.clone())
                .name(if shadow { "shadow" } else { "enforced" })
                .quota(Quota::per_minute(1))
                .shadow(shadow)
                .short_circuit(false, 1)
                .clock(Arc::new(ManualClock::new(T0)))
                .build()
                .expect("limiter")
        };
        (build(false), build(true))
    });
    for _ in 0..3 {
        limiter.check("a").await.expect("check");
        shadow.check("b").await.expect("check");
    }
    let d = "celeriac_rate_limit_decisions_total";
    // Both limiters share the counters here (the recorder ignores the limiter label).
    assert_eq!(counts.get(&format!("{d}:allowed")), 2);
    assert_eq!(counts.get(&format!("{d}:denied")), 2);
    assert_eq!(counts.get(&format!("{d}:shadow_denied")), 2);
    // The limiter's own figures count the same decisions, each limiter apart.
    let (mine, theirs) = (limiter.stats(), shadow.stats());
    assert_eq!((mine.limiter.as_str(), mine.instances), ("enforced", 1));
    assert_eq!(
        (
            mine.counts.allowed,
            mine.counts.denied,
            mine.counts.shadow_denied
        ),
        (1, 2, 0)
    );
    assert_eq!(
        (
            theirs.counts.allowed,
            theirs.counts.denied,
            theirs.counts.shadow_denied
        ),
        (1, 0, 2)
    );
    assert!(theirs.shadow && !mine.shadow);
    assert_eq!(mine.top_denied.len(), 1);
    assert_eq!(
        (mine.top_denied[0].key.as_str(), mine.top_denied[0].count),
        ("a", 2)
    );
    assert_eq!(
        (
            theirs.top_denied[0].key.as_str(),
            theirs.top_denied[0].count
        ),
        ("b", 2),
        "shadow denials are sampled too"
    );

    let mut server = RedisServer::start().await.expect("redis-server");
    let url = format!("{}?connect_timeout_ms=200", server.url());
    let redis = Arc::new(RedisBackend::connect(&url).await.expect("redis"));
    let failing = metrics::with_local_recorder(&counts, || {
        RateLimiter::builder(redis)
            .quota(Quota::per_minute(5))
            .timeout(Duration::from_millis(200))
            .build()
            .expect("limiter")
    });
    server.kill();
    failing.check("c").await.expect("fail-open");
    assert_eq!(counts.get("celeriac_rate_limit_store_errors_total:"), 1);
    let figures = failing.stats();
    assert_eq!(figures.counts.store_errors, 1);
    assert_eq!(
        figures.counts.allowed, 1,
        "the fallback decided the call and counted it"
    );
}

#[tokio::test]
async fn figures_published_to_the_store_are_summed_over_instances() {
    let store = sqlite().await;
    let build = || {
        RateLimiter::builder(store.clone())
            .name("api")
            .quota(Quota::per_hour(2).with_algorithm(Algorithm::FixedWindow))
            .clock(Arc::new(ManualClock::new(T0)))
            .build()
            .expect("limiter")
    };
    let (first, second) = (build(), build());
    assert_ne!(first.instance(), second.instance());
    for _ in 0..6 {
        first.check("user:hot").await.expect("check");
    }
    for _ in 0..3 {
        first.check("ip:10.0.0.1").await.expect("check");
    }
    // The store's window is shared: the second instance is denied the hot key at once.
    for _ in 0..2 {
        second.check("user:hot").await.expect("check");
    }
    second.check("user:new").await.expect("check");
    let c = first.stats().counts;
    assert_eq!((c.allowed, c.denied, c.short_circuited), (4, 5, 3));

    let every = Duration::from_secs(10);
    let now = || store.fleet_clock().now_ms();
    assert!(stats::limiters(&*store, "shop", now())
        .await
        .expect("read")
        .is_empty());
    first
        .publish_stats_now(&*store, "shop", every)
        .await
        .expect("published");
    // The periodic publication writes at once, then every interval.
    let task = second
        .publish_stats(store.clone(), "shop", every)
        .expect("publishing");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let summed = loop {
        let s = stats::read(&*store, "shop", "api", now())
            .await
            .expect("read");
        if s.instances == 2 {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "not published: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    task.abort();
    assert_eq!(
        stats::limiters(&*store, "shop", now()).await.expect("read"),
        vec!["api".to_string()]
    );
    assert_eq!(
        (summed.counts.allowed, summed.counts.denied),
        (5, 7),
        "{summed:?}"
    );
    assert_eq!(summed.counts.denial_ratio(), Some(7.0 / 12.0));
    assert_eq!(
        summed.quotas,
        vec!["2/1h; algorithm=fixed_window".to_string()]
    );
    let top: Vec<(&str, u64)> = summed
        .top_denied
        .iter()
        .map(|k| (k.key.as_str(), k.count))
        .collect();
    assert_eq!(top, vec![("user:hot", 6), ("ip:10.0.0.1", 1)]);
    // Another application's name sees nothing; a name that would break the keys is refused.
    let other = stats::read(&*store, "other", "api", now())
        .await
        .expect("read");
    assert_eq!((other.instances, other.counts.decisions()), (0, 0));
    let e = first
        .publish_stats_now(&*store, "a:b", every)
        .await
        .expect_err("bad app name");
    assert!(matches!(e, Error::Config { .. }), "{e}");
    assert!(first
        .publish_stats(store.clone(), "shop", Duration::ZERO)
        .is_err());
}

#[tokio::test]
async fn publication_stops_when_the_limiter_is_dropped() {
    let store = sqlite().await;
    let limiter = RateLimiter::builder(store.clone())
        .quota(Quota::per_minute(1))
        .build()
        .expect("limiter");
    let task = limiter
        .publish_stats(store, "shop", Duration::from_millis(50))
        .expect("publishing");
    drop(limiter);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the task ends with the limiter")
        .expect("it did not panic");
}
