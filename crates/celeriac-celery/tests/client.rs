//! The Rust producer (`celeriac_celery::client`) against real Python Celery workers: every
//! Python-facing case runs against both pinned versions (`scripts/celery-venvs`), each on its
//! own redis-server.

mod support;

#[path = "client/canvas.rs"]
mod canvas;
#[path = "client/common.rs"]
mod common;
#[path = "client/config.rs"]
mod config;
#[path = "client/routing.rs"]
mod routing;
#[path = "client/variants.rs"]
mod variants;
#[path = "client/waits.rs"]
mod waits;

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
            variants::message_variants_run_on_python_workers,
            canvas::canvas_runs_on_python_workers,
            routing::key_prefixes_match_python,
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
