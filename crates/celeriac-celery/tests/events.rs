//! Events (`celeriac_celery::events`) against real Python Celery: a Python worker's events
//! are captured to compare field sets, and Python's `EventReceiver` and `State` read the
//! Rust worker's events. Every case runs against both pinned versions
//! (`scripts/celery-venvs`), each on its own redis-server.

mod support;

#[path = "events/python.rs"]
mod python;

use support::Venv;

macro_rules! per_version {
    ($($case:ident),* $(,)?) => {
        mod newest {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    python::$case(Venv::newest()).await;
                }
            )*
        }
        mod v5_3 {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    python::$case(Venv::v5_3()).await;
                }
            )*
        }
    };
}

per_version!(rust_events_match_a_python_worker_and_feed_python_state);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_without_blocking() {
    python::a_full_queue_drops_and_counts_without_blocking().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_sender_sends_worker_offline() {
    python::dropping_the_sender_sends_worker_offline().await;
}
