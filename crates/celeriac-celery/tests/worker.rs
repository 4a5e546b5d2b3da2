//! The Rust Celery worker serving real Python Celery clients: every Python-facing case runs
//! against both pinned versions (`scripts/celery-venvs`), each on its own redis-server.

mod support;

#[path = "worker/bad_input.rs"]
mod bad_input;
#[path = "worker/basics.rs"]
mod basics;
#[path = "worker/canvas.rs"]
mod canvas;
#[path = "worker/common.rs"]
mod common;
#[path = "worker/control.rs"]
mod control;
#[path = "worker/crash.rs"]
mod crash;
#[path = "worker/remote.rs"]
mod remote;
#[path = "worker/retries.rs"]
mod retries;
#[path = "worker/tasks.rs"]
mod tasks;

use support::Venv;

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
            basics::add_result_reaches_python,
            basics::priority_sub_queue_is_consumed,
            basics::failures_raise_mapped_classes,
            basics::eta_is_honoured,
            basics::expired_and_ignored,
            basics::time_limits_from_the_message,
            basics::extended_and_started,
            retries::retry_then_success,
            retries::max_retries_then_failure,
            retries::autoretry_policy,
            canvas::chain_runs_to_the_end,
            canvas::chord_joins_in_rust,
            canvas::chord_with_failing_member,
            canvas::links_and_errbacks,
            bad_input::unknown_task_is_dead_lettered,
            bad_input::pickle_is_dead_lettered,
            bad_input::unknown_task_fails_its_workflow,
            crash::killed_worker_task_is_restored,
            control::shutdown_gives_messages_back,
            control::early_ack_and_revoke,
            control::bad_arguments_raise_type_error,
            control::long_tasks_and_held_etas_stay_fresh,
            remote::python_inspects_and_revokes,
            remote::remote_shutdown_is_graceful,
            remote::revoked_chain_step_revokes_the_chain,
            remote::python_state_follows_the_worker,
            remote::consumers_are_added_and_cancelled,
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
