//! Celery's Redis result backend against real Python Celery: every Python-facing case runs
//! against both pinned versions (`scripts/celery-venvs`), each on its own redis-server.

mod support;

#[path = "results/chord_races.rs"]
mod chord_races;
#[path = "results/chords.rs"]
mod chords;
#[path = "results/common.rs"]
mod common;
#[path = "results/python_reads.rs"]
mod python_reads;
#[path = "results/rust_reads.rs"]
mod rust_reads;
#[path = "results/waits.rs"]
mod waits;

use celeriac_testkit::RedisServer;
use support::{CeleryConfig, Pool, Venv, WorkerOptions};

/// Expands `case(venv)` bodies into one test per pinned Celery version.
macro_rules! per_version {
    ($venv:ident => $($module:ident :: $case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                $module::$case(Venv::$venv()).await;
            }
        )*
    };
}

macro_rules! cases {
    ($venv:ident) => {
        per_version!($venv =>
            python_reads::python_gets_success_values,
            python_reads::python_waiter_is_woken_by_the_publish,
            python_reads::python_raises_stored_failures,
            python_reads::python_sees_other_states,
            python_reads::python_reads_extended_fields,
            python_reads::success_is_never_overwritten,
            python_reads::python_sees_forgotten_as_pending,
            python_reads::python_reads_with_global_keyprefix,
            python_reads::expiry_options_set_the_ttl,
            rust_reads::rust_waits_for_python_worker_results,
            rust_reads::rust_wait_skips_started_and_reads_extended,
            rust_reads::rust_reads_compressed_records,
            chords::python_chord_released_by_rust_join,
            chords::python_chord_with_failing_member,
            chords::rust_chord_runs_on_python_workers,
            chords::rust_and_python_workers_share_a_chord,
        );
    };
}

/// Celery 5.7.0 (the newest 5.x).
mod celery_newest {
    use super::*;
    cases!(newest);
}

/// Celery 5.3.6.
mod celery_5_3 {
    use super::*;
    cases!(v5_3);
}

/// The harness itself: a Python worker runs `add` sent by a Python client, on both versions.
#[tokio::test]
async fn harness_python_worker_runs_add() {
    for venv in Venv::all() {
        let server = RedisServer::start().await.expect("redis-server starts");
        let cfg = CeleryConfig::for_server(&server.url()).default_queue("q1");
        let worker = venv.start_worker(&cfg, "q1").await;
        assert!(
            worker.ping().await,
            "{venv}: the worker answers inspect ping"
        );
        let out = venv
            .run(&cfg, "import json\nfrom tasks import add\nprint(json.dumps(add.delay(2, 3).get(timeout=20)))")
            .await;
        out.assert_success();
        assert_eq!(out.json(), serde_json::json!(5), "{venv}");
        let log = worker.stop().await;
        assert!(log.contains("succeeded"), "{venv}: {log}");

        // A threads-pool worker, killed with SIGKILL: its process is gone afterwards.
        let options = WorkerOptions::new("q2").pool(Pool::Threads(2));
        let worker = venv.start_worker_with(&cfg, options).await;
        let pid = worker.pid().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid"));
        assert!(
            nix::sys::signal::kill(pid, None).is_ok(),
            "{venv}: alive before"
        );
        worker.kill9().await;
        assert!(
            nix::sys::signal::kill(pid, None).is_err(),
            "{venv}: gone after kill -9"
        );
    }
}
