//! Remote control (`celeriac_celery::control`) against real Python Celery clients: `inspect`,
//! `control` and the `celery` command reach the Rust pidbox responder, and Python parses
//! its replies. Every case runs against both pinned versions (`scripts/celery-venvs`), each
//! on its own redis-server.

mod support;

#[path = "control/flower.rs"]
mod flower;
#[path = "control/python.rs"]
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

per_version!(
    python_inspects_and_controls_a_rust_worker,
    celery_cli_pings_and_shuts_down_a_rust_worker,
);

#[test]
fn every_pinned_version_is_covered() {
    // The modules above are the pinned versions of the harness; keep them in step.
    let versions: Vec<&str> = Venv::all().iter().map(Venv::version).collect();
    assert_eq!(versions, vec![support::NEWEST, support::V5_3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flower_lists_the_rust_worker() {
    flower::flower_lists_the_rust_worker().await;
}
