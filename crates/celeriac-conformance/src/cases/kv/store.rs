//! The key-value store (the cache's L2): values that expire by the caller's `now`, several
//! keys per call, keys with hash tags and odd bytes, refused keys and ttls, counters, lease
//! locks and the broadcast channel.

use crate::support::{PATIENCE, T0};
use celeriac_core::backend::{KvEntry, KvEvent, KvSubscription};
use celeriac_core::{KvStore, UnixMs};
use std::sync::Arc;
use std::time::Duration;

const MINUTE: Duration = Duration::from_secs(60);

fn entry(key: &str, value: &[u8], ttl: Duration) -> KvEntry {
    KvEntry {
        key: key.to_string(),
        value: value.to_vec(),
        ttl,
    }
}

fn keys(names: &[&str]) -> Vec<String> {
    names.iter().map(|k| k.to_string()).collect()
}

async fn set<B: KvStore>(b: &B, entries: Vec<KvEntry>, now: UnixMs) {
    b.kv_set(entries, now).await.expect("kv_set succeeds");
}

async fn get<B: KvStore>(b: &B, names: &[&str], now: UnixMs) -> Vec<Option<Vec<u8>>> {
    b.kv_get(keys(names), now).await.expect("kv_get succeeds")
}

fn some(v: &[u8]) -> Option<Vec<u8>> {
    Some(v.to_vec())
}

/// The next message of a subscription, skipping resets (a spurious one is allowed), within
/// [`PATIENCE`].
async fn next_message(sub: &mut KvSubscription, what: &str) -> Vec<u8> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(KvEvent::Message(m))) => return m,
            Ok(Some(KvEvent::Reset)) => continue,
            Ok(None) => panic!("{what}: the subscription ended"),
            Err(_) => panic!("{what}: no message within {PATIENCE:?}"),
        }
    }
}

/// Several keys per call: present, absent and expired (by `now`) keys come back in the
/// caller's order; delete counts only what was live.
pub async fn kv_values_round_trip_several_keys_per_call<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    set(
        b,
        vec![
            entry("rt:a", b"alpha", MINUTE),
            entry("rt:b", b"", MINUTE),
            entry("rt:short", b"gone soon", Duration::from_secs(1)),
        ],
        T0,
    )
    .await;
    let now = T0 + 5_000;
    assert_eq!(
        get(b, &["rt:a", "rt:missing", "rt:short", "rt:b"], now).await,
        vec![some(b"alpha"), None, None, some(b"")],
        "present, absent, expired by now, and an empty value"
    );
    assert_eq!(
        b.kv_delete(keys(&["rt:a", "rt:missing", "rt:short"]), now)
            .await
            .expect("kv_delete succeeds"),
        1,
        "only rt:a existed at now"
    );
    assert_eq!(
        get(b, &["rt:a", "rt:short", "rt:b"], now).await,
        vec![None, None, some(b"")],
        "deleted keys are gone, the others stay"
    );
    assert_eq!(
        b.kv_get(Vec::new(), now).await.expect("an empty kv_get"),
        Vec::<Option<Vec<u8>>>::new()
    );
}

/// A value is present until its ttl from the `now` it was set at runs out, judged by the
/// reader's `now`; a fresh one is present.
pub async fn kv_values_expire_by_the_callers_now<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    set(b, vec![entry("exp:old", b"1", Duration::from_secs(10))], T0).await;
    assert_eq!(get(b, &["exp:old"], T0 + 9_999).await, vec![some(b"1")]);
    set(
        b,
        vec![entry("exp:fresh", b"2", Duration::from_secs(10))],
        T0 + 10_000,
    )
    .await;
    assert_eq!(
        get(b, &["exp:old", "exp:fresh"], T0 + 10_000).await,
        vec![None, some(b"2")],
        "the old value expired at T0 + 10 s, the fresh one lives"
    );
    assert_eq!(
        get(b, &["exp:fresh"], T0 + 19_999).await,
        vec![some(b"2")],
        "the fresh value runs from the now it was set at"
    );
}

/// Setting a key again replaces its value and its ttl.
pub async fn kv_overwrite_replaces<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    set(b, vec![entry("ow", b"first", MINUTE)], T0).await;
    set(
        b,
        vec![entry("ow", b"second", Duration::from_secs(2))],
        T0 + 1,
    )
    .await;
    assert_eq!(get(b, &["ow"], T0 + 1_000).await, vec![some(b"second")]);
    assert_eq!(
        get(b, &["ow"], T0 + 3_000).await,
        vec![None],
        "the new ttl replaced the old one"
    );
}

/// Keys with `{hash tags}` (kept intact), spaces, unicode, colons, braces and control bytes
/// round trip, and one call may touch keys all over a cluster.
pub async fn kv_keys_with_hash_tags_and_odd_bytes_round_trip<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let odd = [
        "{user:1}:profile",
        "{user:1}:cart",
        "with spaces in it",
        "ünïcødé ✓ 鍵",
        "a:b::c:",
        "{}",
        "}{",
        "tab\tnew\nline",
        "|pipe|",
    ];
    let entries = odd
        .iter()
        .map(|k| entry(k, format!("value of {k}").as_bytes(), MINUTE))
        .collect();
    set(b, entries, T0).await;
    let got = get(b, &odd, T0 + 1).await;
    for (k, v) in odd.iter().zip(&got) {
        assert_eq!(
            v.as_deref(),
            Some(format!("value of {k}").as_bytes()),
            "key {k:?}"
        );
    }
    // Many keys (many slots on a cluster) in one call each way.
    let many: Vec<String> = (0..64).map(|i| format!("many:{i}")).collect();
    set(
        b,
        many.iter()
            .map(|k| entry(k, k.as_bytes(), MINUTE))
            .collect(),
        T0,
    )
    .await;
    let mut asked = many.clone();
    asked.reverse();
    asked.insert(10, "many:absent".into());
    let got = b.kv_get(asked.clone(), T0 + 1).await.expect("kv_get");
    for (k, v) in asked.iter().zip(&got) {
        let want = (k != "many:absent").then(|| k.as_bytes().to_vec());
        assert_eq!(v, &want, "key {k} in a call over many keys");
    }
    assert_eq!(
        b.kv_delete(asked, T0 + 1).await.expect("kv_delete"),
        64,
        "every key of one delete over many keys is counted"
    );
}

/// Empty and too long keys, and zero ttls, are refused with errors that name the problem; a
/// key of exactly the limit is fine.
pub async fn kv_bad_keys_and_ttls_are_refused<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let long = "k".repeat(B::MAX_KEY_LEN + 1);
    let err = b
        .kv_get(vec![long.clone()], T0)
        .await
        .expect_err("a key over the limit is refused")
        .to_string();
    assert!(
        err.contains(&(B::MAX_KEY_LEN + 1).to_string()),
        "the error names the key's length: {err}"
    );
    let err = b
        .kv_set(vec![entry(&long, b"v", MINUTE)], T0)
        .await
        .expect_err("a set of a key over the limit is refused")
        .to_string();
    assert!(err.contains("bytes"), "{err}");
    let err = b
        .kv_get(vec![String::new()], T0)
        .await
        .expect_err("an empty key is refused")
        .to_string();
    assert!(
        err.contains("empty"),
        "the error says the key is empty: {err}"
    );
    let err = b
        .kv_incr("", T0)
        .await
        .expect_err("an empty counter key is refused")
        .to_string();
    assert!(err.contains("empty"), "{err}");
    let err = b
        .kv_set(vec![entry("zero", b"v", Duration::ZERO)], T0)
        .await
        .expect_err("a zero ttl is refused")
        .to_string();
    assert!(err.contains("ttl"), "the error names the ttl: {err}");
    let err = b
        .kv_lock("zero", "t", Duration::ZERO, T0)
        .await
        .expect_err("a lock with a zero ttl is refused")
        .to_string();
    assert!(err.contains("ttl"), "{err}");
    assert_eq!(
        get(b, &["zero"], T0).await,
        vec![None],
        "a refused set stores nothing"
    );
    let limit = "k".repeat(B::MAX_KEY_LEN);
    set(b, vec![entry(&limit, b"v", MINUTE)], T0).await;
    assert_eq!(
        b.kv_get(vec![limit], T0).await.expect("a key at the limit"),
        vec![some(b"v")]
    );
}

/// Counters count from 1, read back as decimal text, and 100 concurrent increments give
/// 1..=100, each once.
pub async fn kv_incr_counts_from_one_and_is_atomic<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    assert_eq!(b.kv_incr("ctr:one", T0).await.expect("incr"), 1);
    assert_eq!(b.kv_incr("ctr:one", T0 + 1).await.expect("incr"), 2);
    assert_eq!(
        get(b, &["ctr:one"], T0 + 1_000_000_000).await,
        vec![some(b"2")],
        "a counter reads as decimal text and does not expire"
    );
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let b = backend.clone();
            tokio::spawn(async move { b.kv_incr("ctr:many", T0 + i).await })
        })
        .collect();
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.expect("task").expect("incr succeeds"));
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=100).collect::<Vec<i64>>());
}

/// A lease lock: exclusive while it lasts (by the caller's `now`), taken over by another
/// token once expired, released only by the token that holds it.
pub async fn kv_lock_is_exclusive_and_expires_by_now<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let ttl = Duration::from_secs(10);
    let lock = |token: &'static str, now: UnixMs| async move {
        b.kv_lock("lk", token, ttl, now)
            .await
            .expect("kv_lock succeeds")
    };
    let unlock = |token: &'static str| async move {
        b.kv_unlock("lk", token).await.expect("kv_unlock succeeds")
    };
    assert!(lock("a", T0).await, "a free lock is taken");
    assert!(!lock("b", T0 + 1).await, "held by a");
    assert!(!lock("b", T0 + 9_999).await, "still held by a");
    assert!(!unlock("b").await, "b does not hold it");
    assert!(
        lock("b", T0 + 10_000).await,
        "a's lease ran out at T0 + 10 s"
    );
    assert!(!lock("a", T0 + 10_001).await, "now held by b");
    assert!(!unlock("a").await, "a lost it");
    assert!(unlock("b").await, "the holder releases it");
    assert!(!unlock("b").await, "released once");
    assert!(lock("c", T0 + 10_002).await, "a released lock is free");
    assert!(
        b.kv_lock("lk-other", "a", ttl, T0 + 10_002)
            .await
            .expect("kv_lock"),
        "locks are per key"
    );
}

/// Two subscribers of one channel each receive every message, in order.
pub async fn kv_broadcast_reaches_every_subscriber_in_order<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let mut one = b.kv_subscribe("news").await.expect("subscribe");
    let mut two = b.kv_subscribe("news").await.expect("subscribe");
    for i in 0..10 {
        b.kv_publish("news", format!("m{i}").into_bytes())
            .await
            .expect("publish");
    }
    for (name, sub) in [("first", &mut one), ("second", &mut two)] {
        for i in 0..10 {
            assert_eq!(
                next_message(sub, name).await,
                format!("m{i}").into_bytes(),
                "the {name} subscriber's message {i}"
            );
        }
    }
}

/// A message published after subscribing arrives; a subscriber of another channel does not
/// receive it (its next message is its own channel's).
pub async fn kv_broadcast_stays_in_its_channel<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let mut red = b.kv_subscribe("red").await.expect("subscribe");
    let mut blue = b.kv_subscribe("blue").await.expect("subscribe");
    b.kv_publish("red", b"for red".to_vec())
        .await
        .expect("publish");
    assert_eq!(next_message(&mut red, "red").await, b"for red".to_vec());
    b.kv_publish("blue", b"for blue".to_vec())
        .await
        .expect("publish");
    assert_eq!(
        next_message(&mut blue, "blue").await,
        b"for blue".to_vec(),
        "blue never saw red's message"
    );
}

/// `kv_ensure`, in one call over several keys: an absent key is written with its ttl; a live
/// key keeps its value, and a life shorter than the ttl is raised to it (the key reads after
/// its old expiry and until the new one) while a longer life is kept (not shortened, not
/// lengthened); an expired key is replaced by the new value and ttl.
pub async fn kv_ensure_writes_absent_keys_and_never_changes_live_ones<B: KvStore>(backend: Arc<B>) {
    let b = &*backend;
    let secs = Duration::from_secs;
    set(
        b,
        vec![
            entry("en:short", b"kept", secs(10)),
            entry("en:long", b"long", secs(600)),
            entry("en:expired", b"stale", secs(1)),
        ],
        T0,
    )
    .await;
    let at = T0 + 5_000;
    // Precondition: at the ensure, the two live keys are there and the expired one is not.
    assert_eq!(
        get(b, &["en:short", "en:long", "en:expired", "en:absent"], at).await,
        vec![some(b"kept"), some(b"long"), None, None],
        "before kv_ensure"
    );
    let ensured = |key: &str| entry(key, b"ensured", secs(60));
    b.kv_ensure(
        vec![
            ensured("en:absent"),
            ensured("en:short"),
            ensured("en:long"),
            ensured("en:expired"),
        ],
        at,
    )
    .await
    .expect("kv_ensure succeeds");
    let names = ["en:absent", "en:short", "en:long", "en:expired"];
    assert_eq!(
        get(b, &names, at).await,
        vec![
            some(b"ensured"),
            some(b"kept"),
            some(b"long"),
            some(b"ensured")
        ],
        "absent and expired keys are written; live values are never changed"
    );
    // After en:short's old expiry (T0 + 10 s), before the ensured one (at + 60 s).
    assert_eq!(
        get(b, &names, T0 + 30_000).await,
        vec![
            some(b"ensured"),
            some(b"kept"),
            some(b"long"),
            some(b"ensured")
        ],
        "en:short lives past its old expiry: its life was raised"
    );
    assert_eq!(
        get(b, &names, at + 59_999).await,
        vec![
            some(b"ensured"),
            some(b"kept"),
            some(b"long"),
            some(b"ensured")
        ],
        "every key lives until at least the ensured ttl"
    );
    assert_eq!(
        get(b, &names, at + 60_000).await,
        vec![None, None, some(b"long"), None],
        "the ensured ttl ran out; en:long keeps its longer life"
    );
    assert_eq!(
        get(b, &["en:long"], T0 + 599_999).await,
        vec![some(b"long")],
        "en:long lives its whole first life"
    );
    assert_eq!(
        get(b, &["en:long"], T0 + 600_000).await,
        vec![None],
        "and no longer: the ensure did not lengthen a life longer than its ttl"
    );
    b.kv_ensure(Vec::new(), at)
        .await
        .expect("an empty kv_ensure succeeds");
}

/// This file's cases, for [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_kv_store {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            kv_values_round_trip_several_keys_per_call,
            kv_values_expire_by_the_callers_now,
            kv_overwrite_replaces,
            kv_keys_with_hash_tags_and_odd_bytes_round_trip,
            kv_bad_keys_and_ttls_are_refused,
            kv_incr_counts_from_one_and_is_atomic,
            kv_lock_is_exclusive_and_expires_by_now,
            kv_broadcast_reaches_every_subscriber_in_order,
            kv_broadcast_stays_in_its_channel,
            kv_ensure_writes_absent_keys_and_never_changes_live_ones,
        }
    };
}
