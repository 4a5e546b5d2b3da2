//! How history rests in Redis: one hash per queue and bucket under the queue's hash tag, and
//! each bucket's TTL is what the history keeps (48 hours after a minute ends, 90 days after
//! an hour ends), whether a worker's record or the enqueue script wrote it. Against a
//! `redis-server` the testkit starts (never the shared Redis on 6379).

use celeriac_core::backend::{History, HistoryEntry, Resolution, HOURS_KEPT_MS, MINUTES_KEPT_MS};
use celeriac_core::clock::system_now_ms;
use celeriac_core::{Broker, Job};
use celeriac_redis::RedisBackend;
use celeriac_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_expire_when_the_history_stops_keeping_them() {
    let server = RedisServer::start().await.expect("redis-server starts");
    let backend = RedisBackend::connect(&server.url())
        .await
        .expect("connects");
    let mut conn = server.connect().await.expect("raw connection");
    let now = system_now_ms();
    let mut e = HistoryEntry::new(now, "reports", "render");
    e.counts.succeeded = 2;
    e.run_ms.add(12.0);
    backend.record(vec![e], now).await.expect("record");
    let mut job = Job::new("render", b"null".to_vec(), now);
    job.queue = "reports".into();
    backend.enqueue(vec![job], now).await.expect("enqueue");

    for res in [Resolution::Minute, Resolution::Hour] {
        let start = res.start_of(now);
        let key = format!("celeriac:{{reports}}:hist:{}:{start}", res.code());
        let fields = conn
            .command(&["HGETALL", key.as_str()])
            .await
            .expect("HGETALL");
        let fields: Vec<String> = fields
            .as_array()
            .expect("a hash")
            .iter()
            .filter_map(|v| v.as_text())
            .collect();
        for (field, value) in [("o|render", "2"), ("e|render", "1"), ("R", "")] {
            let at = fields
                .iter()
                .position(|f| f.starts_with(field))
                .unwrap_or_else(|| panic!("{key} has {field}: {fields:?}"));
            if !value.is_empty() {
                assert_eq!(fields[at + 1], value, "{key} {field}");
            }
        }
        let ttl = conn
            .command(&["PTTL", key.as_str()])
            .await
            .expect("PTTL")
            .as_int()
            .expect("a TTL");
        let want = start + res.span_ms() + res.kept_ms() - now;
        assert!(
            ttl <= want && ttl > want - 60_000,
            "{key}: TTL {ttl} ms, want about {want} ms"
        );
    }
    const { assert!(MINUTES_KEPT_MS >= 48 * 3_600_000 && HOURS_KEPT_MS >= 90 * 86_400_000) };
}
