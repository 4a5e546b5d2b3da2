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

/// A limiter named `name` on `server` deciding 3 calls a minute per key (fixed window, a
/// clock that stands still), with the given failure mode and pause; its `metrics` counters go
/// to `counts`.
async fn pausing_limiter(
    server: &RedisServer,
    name: &str,
    mode: FailMode,
    pause: Duration,
    counts: &Counts,
) -> RateLimiter<RedisBackend> {
    let url = format!(
        "{}?response_timeout_ms=2000&connect_timeout_ms=200",
        server.url()
    );
    let store = Arc::new(RedisBackend::connect(&url).await.expect("redis"));
    metrics::with_local_recorder(counts, || {
        RateLimiter::builder(store)
            .name(name)
            .quota(Quota::per_minute(3).with_algorithm(Algorithm::FixedWindow))
            .fail_mode(mode)
            .timeout(Duration::from_millis(200))
            .store_pause(pause)
            .pause_after(2)
            .short_circuit(false, 1)
            .clock(Arc::new(ManualClock::new(T0)))
            .build()
            .expect("limiter")
    })
}

/// Kills `server` and checks that it is down: no process, and its port refuses connections.
async fn kill(server: &mut RedisServer) {
    server.kill();
    assert_eq!(server.pid(), None, "redis-server is gone");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", server.port())).await;
    assert!(refused.is_err(), "redis-server's port refuses connections");
}

#[tokio::test]
async fn a_store_that_keeps_failing_is_paused_and_the_failure_mode_decides_at_once() {
    let counts = Counts::by("limiter");
    let mut server = RedisServer::start().await.expect("redis-server");
    // A pause far longer than this test: every call after the opening ones falls inside it.
    let long = Duration::from_secs(600);
    let open = pausing_limiter(&server, "open", FailMode::Open, long, &counts).await;
    let closed = pausing_limiter(&server, "closed", FailMode::Closed, long, &counts).await;
    for limiter in [&open, &closed] {
        let v = limiter.check("up").await.expect("check");
        assert_eq!(
            (v.allow, v.source),
            (true, Source::Store),
            "the store answers"
        );
    }
    kill(&mut server).await;

    // The first two calls ask the store and fail (the local fallback decides them).
    for n in 1..=2 {
        let v = open.check("k").await.expect("fail-open");
        assert_eq!((v.allow, v.source), (true, Source::Fallback));
        let c = open.stats().counts;
        assert_eq!((c.store_errors, c.store_paused), (n, 0), "call {n} asked");
    }
    // Then the store is paused: the fallback decides without asking it, and still enforces
    // the quota (the third call of `k` is its last).
    let v = open.check("k").await.expect("fail-open");
    assert_eq!((v.allow, v.source), (true, Source::Fallback));
    for _ in 0..2 {
        let v = open.check("k").await.expect("fail-open");
        assert_eq!(
            (v.allow, v.source),
            (false, Source::Fallback),
            "over the quota"
        );
        assert!(v.decision.retry_after.is_some());
    }
    // A key first seen during the pause gets its limit, then is denied.
    let mut allowed = Vec::new();
    for _ in 0..5 {
        let v = open.check("fresh").await.expect("fail-open");
        assert_eq!(v.source, Source::Fallback);
        allowed.push(v.allow);
    }
    assert_eq!(allowed, [true, true, true, false, false]);
    let c = open.stats().counts;
    assert_eq!(c.store_errors, 2, "no store call during the pause: {c:?}");
    assert_eq!(c.store_paused, 3 + 5, "{c:?}");
    assert_eq!((c.allowed, c.denied), (1 + 3 + 3, 2 + 2), "{c:?}");
    assert_eq!(counts.get("celeriac_rate_limit_store_errors_total:open"), 2);
    assert_eq!(counts.get("celeriac_rate_limit_store_paused_total:open"), 8);

    // Fail-closed: denied while the store fails, then denied at once during the pause.
    for n in 1..=4_u64 {
        let v = closed.check("k").await.expect("fail-closed");
        assert_eq!((v.allow, v.source), (false, Source::FailedClosed));
        assert_eq!(v.decision.retry_after, Some(Duration::from_secs(1)));
        let c = closed.stats().counts;
        assert_eq!(
            (c.store_errors, c.store_paused),
            (n.min(2), n.saturating_sub(2)),
            "call {n}"
        );
    }
    assert_eq!(
        counts.get("celeriac_rate_limit_store_paused_total:closed"),
        2
    );
}

/// Log lines written by `tracing` (at info level and above) in this test binary, for a test
/// to read (by its limiter's name: the tests run at once).
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl Logs {
    /// The process's logs, captured from the first call on. A global subscriber: a scoped one
    /// (`set_default`) misses events whose call site another test's thread saw first.
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            tracing::subscriber::set_global_default(
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::INFO)
                    .with_ansi(false)
                    .with_writer(move || writer.clone())
                    .finish(),
            )
            .expect("the only subscriber of this binary");
            tracing::callsite::rebuild_interest_cache();
            logs
        })
        .clone()
    }

    /// The lines with all of `texts`.
    fn lines_with(&self, texts: &[&str]) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("logs"))
            .lines()
            .filter(|l| texts.iter().all(|t| l.contains(t)))
            .map(str::to_string)
            .collect()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("logs").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn after_the_pause_one_call_probes_the_store_and_its_answer_ends_the_pause() {
    let logs = Logs::capture();
    let opening = ["limiter=probed", "rate limit store fails"];
    let counts = Counts::by("limiter");
    let mut server = RedisServer::start().await.expect("redis-server");
    let pause = Duration::from_secs(1);
    let limiter = pausing_limiter(&server, "probed", FailMode::Open, pause, &counts).await;
    assert_eq!(
        limiter.check("up").await.expect("check").source,
        Source::Store
    );
    kill(&mut server).await;
    for _ in 0..2 {
        assert_eq!(
            limiter.check("k").await.expect("fail-open").source,
            Source::Fallback
        );
    }
    let opened = limiter.stats().counts;
    assert_eq!((opened.store_errors, opened.store_paused), (2, 0));
    let warned = logs.lines_with(&opening);
    assert_eq!(warned.len(), 1, "logged when the pause starts: {warned:?}");
    assert!(warned[0].contains("WARN"), "{warned:?}");

    // Once the pause is over, of many calls at once exactly one asks the (still dead) store:
    // its failure starts another pause, the others are decided during the probe or the new
    // pause.
    tokio::time::sleep(pause).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..20 {
        let limiter = limiter.clone();
        calls.spawn(async move { limiter.check(&format!("burst:{i}")).await });
    }
    while let Some(v) = calls.join_next().await {
        let v = v.expect("no panic").expect("fail-open");
        assert_eq!((v.allow, v.source), (true, Source::Fallback));
    }
    let c = limiter.stats().counts;
    assert_eq!(c.store_errors, opened.store_errors + 1, "one probe: {c:?}");
    assert_eq!(c.store_paused, 19, "{c:?}");
    assert_eq!(
        logs.lines_with(&opening).len(),
        1,
        "a failed probe does not warn again"
    );

    // Redis comes back: once a pause is over a probe finds it (the client may need a failed
    // call or two to reconnect, each starting another pause), and the store decides again.
    server.restart().await.expect("redis-server restarts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = limiter.check("back").await.expect("check");
        if v.source == Source::Store {
            break;
        }
        assert_eq!(v.source, Source::Fallback);
        assert!(
            std::time::Instant::now() < deadline,
            "the store never answered a probe: {:?}",
            limiter.stats().counts
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = limiter.stats().counts;
    for _ in 0..3 {
        let v = limiter.check("store-again").await.expect("check");
        assert_eq!(v.source, Source::Store, "the pause is over");
    }
    let after = limiter.stats().counts;
    assert_eq!(
        (after.store_errors, after.store_paused),
        (back.store_errors, back.store_paused),
        "every call asks the store again"
    );
    let answers = logs.lines_with(&["limiter=probed", "rate limit store answers again"]);
    assert_eq!(answers.len(), 1, "logged once: {answers:?}");
    assert!(answers[0].contains("INFO"), "{answers:?}");
    assert_eq!(logs.lines_with(&opening).len(), 1, "warned once in all");
    assert_eq!(
        counts.get("celeriac_rate_limit_store_paused_total:probed"),
        after.store_paused
    );
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
