use super::*;
use crate::backend::{Counts, QueueStats};
use crate::clock::ManualClock;

const T0: UnixMs = 1_700_000_000_000;

fn queue(name: &str, pending: u64, latency_ms: u64, consumers: u32) -> QueueFigures {
    let mut stats = QueueStats {
        queue: name.into(),
        ..Default::default()
    };
    stats.counts.insert("pending".into(), pending);
    QueueFigures {
        stats,
        latency_ms,
        consumers,
        slots: consumers * 4,
        succeeded_per_min: 0.0,
        failed_per_min: 0.0,
    }
}

fn snapshot(now: UnixMs, queues: Vec<QueueFigures>) -> Snapshot {
    Snapshot {
        now,
        queues,
        ..Default::default()
    }
}

#[test]
fn an_alert_is_pending_then_fires_is_reminded_after_the_cooldown_and_resolves() {
    let rules = [Rule::new(Kind::QueueStalled, 0.0, Duration::from_secs(120))];
    let cooldown = Duration::from_secs(600);
    let mut states = AlertStates::default();
    let stalled = || vec![queue("emails", 5, 1_000, 0)];

    assert!(evaluate(&rules, &snapshot(T0, stalled()), &mut states, cooldown).is_empty());
    assert_eq!(
        states.alerts[0].status,
        Status::Pending,
        "not for long enough yet"
    );
    let fired = evaluate(
        &rules,
        &snapshot(T0 + 120_000, stalled()),
        &mut states,
        cooldown,
    );
    assert_eq!(fired.len(), 1);
    assert_eq!(
        (fired[0].status, fired[0].subject.as_str(), fired[0].since),
        (Status::Firing, "emails", T0)
    );
    assert!(
        evaluate(
            &rules,
            &snapshot(T0 + 300_000, stalled()),
            &mut states,
            cooldown
        )
        .is_empty(),
        "no notice within the cooldown"
    );
    let reminded = evaluate(
        &rules,
        &snapshot(T0 + 720_000, stalled()),
        &mut states,
        cooldown,
    );
    assert_eq!(reminded.len(), 1, "reminded once the cooldown passed");
    let served = vec![queue("emails", 5, 1_000, 2)];
    let resolved = evaluate(
        &rules,
        &snapshot(T0 + 730_000, served.clone()),
        &mut states,
        cooldown,
    );
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0].status, Status::Resolved);
    assert!(states.alerts.is_empty());
    assert!(evaluate(
        &rules,
        &snapshot(T0 + 740_000, served),
        &mut states,
        cooldown
    )
    .is_empty());
}

#[test]
fn a_breach_shorter_than_its_for_never_fires_nor_resolves() {
    let rules = [Rule::new(
        Kind::QueueLatency,
        60.0,
        Duration::from_secs(300),
    )];
    let mut states = AlertStates::default();
    let slow = vec![queue("reports", 3, 90_000, 1)];
    assert!(evaluate(&rules, &snapshot(T0, slow), &mut states, Duration::ZERO).is_empty());
    let fine = vec![queue("reports", 0, 0, 1)];
    assert!(evaluate(
        &rules,
        &snapshot(T0 + 60_000, fine),
        &mut states,
        Duration::ZERO
    )
    .is_empty());
    assert!(states.alerts.is_empty(), "a pending alert just goes");
}

#[test]
fn each_kind_reads_its_own_figures() {
    let at = |kind, threshold| Rule::new(kind, threshold, Duration::ZERO);
    let mut paused = queue("paused", 9, 900_000, 0);
    paused.stats.paused = true;
    let snap = Snapshot {
        now: T0,
        queues: vec![queue("a", 3, 400_000, 0), queue("b", 3, 1_000, 1), paused],
        ..Default::default()
    };
    let subjects = |rule: Rule, snap: &Snapshot| -> Vec<String> {
        breaches(&rule, snap)
            .into_iter()
            .map(|r| r.subject)
            .collect()
    };
    assert_eq!(
        subjects(at(Kind::QueueLatency, 300.0), &snap),
        ["a"],
        "paused queues wait"
    );
    assert_eq!(subjects(at(Kind::QueueStalled, 0.0), &snap), ["a"]);
    let mut only_b = at(Kind::QueueLatency, 0.5);
    only_b.queue = Some("b".into());
    assert_eq!(subjects(only_b, &snap), ["b"]);

    let entry = |task: &str, ok: u64, failed: u64, dead: u64| {
        let mut e = HistoryEntry::new(T0 - 120_000, "emails", task);
        e.counts = Counts {
            succeeded: ok,
            failed,
            dead,
            ..Counts::default()
        };
        e
    };
    let snap = Snapshot {
        now: T0,
        recent: vec![entry("send", 60, 30, 12), entry("rare", 1, 5, 0)],
        ..Default::default()
    };
    assert_eq!(
        subjects(at(Kind::FailureRatio, 0.2), &snap),
        ["emails/send"],
        "too few attempts of `rare` to judge"
    );
    assert_eq!(subjects(at(Kind::DeadLetters, 10.0), &snap), ["emails"]);

    let clock = ManualClock::new(T0);
    let mut stale = crate::process::describe("w-1", ProcessKind::Worker, &clock);
    stale.seen_at = T0 - 20_000;
    stale.expires_at = T0 - 20_000 + 15_000;
    let fresh = crate::process::describe("w-2", ProcessKind::Worker, &clock);
    let mut fresh = fresh;
    fresh.seen_at = T0 - 1_000;
    fresh.expires_at = T0 + 14_000;
    let snap = Snapshot {
        now: T0,
        processes: vec![stale, fresh],
        store: StoreFigures {
            memory_used_bytes: Some(95),
            memory_max_bytes: Some(100),
            evicted_keys: Some(12),
            ..Default::default()
        },
        evicted_before: Some(10),
        ..Default::default()
    };
    assert_eq!(subjects(at(Kind::WorkerStale, 2.0), &snap), ["w-1"]);
    assert_eq!(subjects(at(Kind::StoreMemory, 0.9), &snap), ["store"]);
    assert_eq!(subjects(at(Kind::StoreEvicting, 0.0), &snap), ["store"]);
    assert!(subjects(at(Kind::StoreDown, 0.0), &snap).is_empty());

    let down = Snapshot {
        now: T0,
        store_error: Some("connection refused".into()),
        queues: vec![queue("a", 3, 400_000, 0)],
        ..Default::default()
    };
    for kind in Kind::ALL {
        let got = subjects(at(kind, 0.0), &down);
        if kind == Kind::StoreDown {
            assert_eq!(got, ["store"]);
        } else {
            assert!(
                got.is_empty(),
                "{kind:?} says nothing while the store is down"
            );
        }
    }
}

#[test]
fn states_survive_the_store_and_rules_export_to_prometheus() {
    let rules = Rule::defaults();
    let mut states = AlertStates::default();
    let snap = snapshot(T0, vec![queue("emails", 5, 1_000, 0)]);
    evaluate(&rules, &snap, &mut states, Duration::ZERO);
    assert!(!states.alerts.is_empty());
    let back = AlertStates::decode(Some(&states.encode().expect("encodes")));
    assert_eq!(back, states);
    assert_eq!(
        AlertStates::decode(Some(b"not json")),
        AlertStates::default()
    );

    let yaml = prometheus_rules(&rules);
    for rule in &rules {
        assert!(
            yaml.contains(&format!("alert: celeriac_{}", rule.kind.as_str())),
            "{yaml}"
        );
    }
    assert_eq!(yaml.matches("for: ").count(), rules.len());
    assert!(yaml.contains("celeriac_queue_latency_seconds > 300"));
}

#[test]
fn rules_read_from_toml() {
    #[derive(Deserialize)]
    struct File {
        rule: Vec<Rule>,
    }
    let text = r#"
        [[rule]]
        kind = "queue_latency"
        threshold = 60
        for = "2m"
        queue = "emails"
    "#;
    let f: File = toml::from_str(text).expect("parses");
    assert_eq!(f.rule[0].kind, Kind::QueueLatency);
    assert_eq!(f.rule[0].for_, Duration::from_secs(120));
    assert_eq!(f.rule[0].id(), "queue_latency:emails");
}
