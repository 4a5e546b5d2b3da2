//! How rate-limit state rests in Redis: state written as decimal text by older builds is read
//! on (an upgrade does not reset anyone's limit), and a key's TTL always covers how long its
//! state matters, although most writes keep the TTL they find. Against a `redis-server` the
//! testkit starts (never the shared Redis on 6379).

use celeriac_core::clock::system_now_ms;
use celeriac_core::limit::{Algorithm, Quota};
use celeriac_core::RateLimitStore;
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;
use std::time::Duration;

/// The Redis key of `quota`'s state for limiter key `key` (default prefix).
fn state_key(key: &str, quota: &Quota) -> String {
    format!("celeriac:{{rl:{key}}}:{}", quota.state_id())
}

async fn start() -> (RedisServer, RedisBackend) {
    let server = RedisServer::start().await.expect("redis-server starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    (server, backend)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcra_state_written_as_text_is_read_on() {
    let (server, backend) = start().await;
    let mut conn = server.connect().await.expect("raw connection");
    let quota = Quota::per_second(1);
    let now = system_now_ms();
    // An older build's state: a TAT 10 s ahead, in µs, as decimal text.
    let tat = (now + 10_000) * 1000;
    let key = state_key("text-gcra", &quota);
    conn.command(&["SET", &key, &tat.to_string(), "PX", "60000"])
        .await
        .expect("SET");
    let d = backend
        .check_limits("text-gcra", std::slice::from_ref(&quota), 1, now)
        .await
        .expect("decision");
    assert!(!d.allowed, "a TAT 10 s ahead must deny: {d:?}");
    let retry = d.retry_after.expect("a denial has a retry-after");
    assert!(
        retry >= Duration::from_secs(9) && retry <= Duration::from_secs(10),
        "retry-after {retry:?} must come from the stored TAT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_written_as_text_is_read_on_even_at_32_bytes() {
    let (server, backend) = start().await;
    let mut conn = server.connect().await.expect("raw connection");
    // 2024-11-30 16:00 UTC: a whole hour, so the window starts here.
    let start: i64 = 1_732_982_400_000;
    let now = start + 1_000;
    let quota = Quota::per_hour(123_456_790).with_algorithm(Algorithm::FixedWindow);
    for (name, text) in [
        // As long as the new binary state, to show the two are told apart.
        ("text-32", format!("{start}:123456789:12345678")),
        ("text-short", format!("{start}:123456789:0")),
    ] {
        assert!(name != "text-32" || text.len() == 32, "{text} is 32 bytes");
        conn.command(&["SET", &state_key(name, &quota), &text, "PX", "60000"])
            .await
            .expect("SET");
        let first = backend
            .check_limits(name, std::slice::from_ref(&quota), 1, now)
            .await
            .expect("decision");
        assert!(first.allowed, "{name}: one call is left: {first:?}");
        assert_eq!(first.remaining, 0, "{name}: the stored count must count");
        let second = backend
            .check_limits(name, std::slice::from_ref(&quota), 1, now)
            .await
            .expect("decision");
        assert!(!second.allowed, "{name}: the window is full: {second:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_key_lives_as_long_as_its_state_matters() {
    let (server, backend) = start().await;
    let mut conn = server.connect().await.expect("raw connection");
    // One call a minute with a burst of 9: each call pushes the TAT a minute further.
    let quota = Quota::per_minute(1).burst(9);
    let key = state_key("ttl", &quota);
    let now = system_now_ms();
    let mut last_ttl = 0;
    for call in 1..=10 {
        let d = backend
            .check_limits("ttl", std::slice::from_ref(&quota), 1, now)
            .await
            .expect("decision");
        assert!(d.allowed, "call {call} is within the burst: {d:?}");
        let ttl = conn
            .command(&["PTTL", &key])
            .await
            .expect("PTTL")
            .as_int()
            .expect("an integer");
        // When the key goes and until when its state matters, both on this machine's clock
        // (Redis runs here), give or take a millisecond of rounding each.
        let gone = system_now_ms() + ttl;
        let needed = now + d.reset_after.as_millis() as i64;
        assert!(
            gone + 2 >= needed,
            "call {call}: the key goes {} ms before its state stops mattering",
            needed - gone
        );
        last_ttl = ttl;
    }
    // Ten minutes of debt: the state matters for about ten minutes, so does the key.
    assert!(last_ttl >= 9 * 60_000, "TTL {last_ttl} ms after ten calls");
}

/// Decisions from many tasks at once, each a different key: every one is answered (none is
/// stranded in the queue while a slot is free), and each key is charged exactly once a call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_concurrent_decision_is_answered_and_charged_once() {
    let (_server, backend) = start().await;
    let backend = std::sync::Arc::new(backend);
    let quota = Quota::per_hour(1_000).with_algorithm(Algorithm::FixedWindow);
    let now = system_now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..40 {
        let (backend, quota) = (backend.clone(), quota.clone());
        tasks.spawn(async move {
            for i in 0..100u32 {
                let key = format!("k{}", (t * 100 + i) % 50);
                backend
                    .check_limits(&key, std::slice::from_ref(&quota), 1, now)
                    .await
                    .expect("decision");
                if i % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    let all = async {
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .expect("4,000 decisions answered within 60 s");
    // 4,000 calls over 50 keys: 80 each, so 920 left of every key's 1,000.
    for k in 0..50 {
        let d = backend
            .check_limits(&format!("k{k}"), std::slice::from_ref(&quota), 1, now)
            .await
            .expect("decision");
        assert_eq!(d.remaining, 919, "key k{k}: {d:?}");
    }
}
