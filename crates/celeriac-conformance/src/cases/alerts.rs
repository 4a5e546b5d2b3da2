//! Alerts over a store: the snapshot the rules read (queue figures, the registry, recent
//! history, the store's figures) comes from the store, a stalled queue fires and resolves once a
//! live worker serves it, dead letters in the history breach their rule, and the alerts' states
//! survive a round trip through the store's key-value space.

use crate::cases::processes::entry;
use crate::support::{enqueue, job, T0};
use celeriac_core::alerts::{evaluate, AlertStates, Kind, Rule, Snapshot, Status};
use celeriac_core::backend::{HistoryEntry, Resolution, MINUTE_MS};
use celeriac_core::{Broker, History, KvStore, ProcessRegistry, QueueAdmin, StoreHealth};
use std::sync::Arc;
use std::time::Duration;

/// A queue with ready jobs and no consumer fires `queue_stalled`, which resolves once a live
/// worker takes from it; dead letters recorded in the history fire `dead_letters`; the states
/// come back from the store as they were saved.
pub async fn alert_rules_read_the_store_and_states_survive_it<B>(backend: Arc<B>)
where
    B: Broker + QueueAdmin + ProcessRegistry + History + StoreHealth + KvStore,
{
    let b = &*backend;
    let rules = [
        Rule::new(Kind::QueueStalled, 0.0, Duration::ZERO),
        Rule::new(Kind::DeadLetters, 10.0, Duration::ZERO),
    ];
    enqueue(b, (0..3).map(|_| job("emails", T0)).collect(), T0).await;
    let minute = Resolution::Minute.start_of(T0);
    let mut dead = HistoryEntry::new(minute - 2 * MINUTE_MS, "emails", "t");
    dead.counts.dead = 12;
    b.record(vec![dead], T0).await.expect("record history");

    let now = T0 + 1_000;
    let snap = Snapshot::read(b, now).await.expect("the snapshot reads");
    assert!(snap.store_error.is_none());
    let mut states = AlertStates::load(b, now).await.expect("load");
    assert_eq!(states, AlertStates::default(), "nothing stored yet");
    let fired = evaluate(&rules, &snap, &mut states, Duration::from_secs(3600));
    let mut got: Vec<(Kind, &str, Status)> = fired
        .iter()
        .map(|a| (a.kind, a.subject.as_str(), a.status))
        .collect();
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        [
            (Kind::QueueStalled, "emails", Status::Firing),
            (Kind::DeadLetters, "emails", Status::Firing),
        ]
    );
    states.save(b, now).await.expect("save");
    let back = AlertStates::load(b, now).await.expect("load");
    assert_eq!(back, states, "the states survive the store");

    let worker = entry("alerts-worker", now, now + 15_000);
    b.refresh(&worker).await.expect("refresh");
    let later = now + 1_000;
    let snap = Snapshot::read(b, later).await.expect("the snapshot reads");
    let mut states = back;
    let news = evaluate(&rules, &snap, &mut states, Duration::from_secs(3600));
    assert_eq!(news.len(), 1, "{news:?}");
    assert_eq!(
        (news[0].kind, news[0].status),
        (Kind::QueueStalled, Status::Resolved),
        "a live worker serves the queue now"
    );
    assert_eq!(
        states.alerts.len(),
        1,
        "dead letters still fire, quietly within the cooldown"
    );
}

/// The cases of this file, expanded by [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_alerts {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            alert_rules_read_the_store_and_states_survive_it,
        }
    };
}
