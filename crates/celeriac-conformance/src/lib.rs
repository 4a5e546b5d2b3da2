//! One conformance suite for every Celeriac backend.
//!
//! Each case is a plain `async fn case<B: Broker + ResultStore>(backend: Arc<B>)` (or with
//! [`WorkflowStore`](celeriac_core::WorkflowStore) in place of `ResultStore`) in
//! [`cases`], written only against the backend traits and the core types; it drives time
//! with explicit `now` values (and a [`celeriac_core::ManualClock`] for the worker-driven
//! cases) and panics when the backend does not behave. The [`suite!`] macro expands every
//! case into a `#[tokio::test]` with a fresh backend, so a backend joins the suite with one
//! line in its test file:
//!
//! ```no_run
//! celeriac_conformance::suite!(sqlite_memory, celeriac_embedded::SqliteBackend::memory());
//! # fn main() {}
//! ```
//!
//! The constructor is any expression giving a future of `Result<F, E>`, where `F` is the
//! backend itself or a [`Guarded`] backend that keeps something alive for the length of the
//! test (a temporary directory, a server process), and `E: Debug`.

pub mod cases;
mod support;

pub use support::wait_for;

use celeriac_core::StoreClock;

/// What a suite's constructor may give: a backend, and whatever must outlive the test.
pub trait Fixture {
    /// The backend under test: each case asks for the traits it uses.
    type Backend: Send + Sync + 'static;
    /// Dropped when the test ends, after the backend.
    type Guard;
    /// Splits the fixture into the backend and its guard.
    fn into_parts(self) -> (Self::Backend, Self::Guard);
}

impl<B: StoreClock> Fixture for B {
    type Backend = B;
    type Guard = ();
    fn into_parts(self) -> (B, ()) {
        (self, ())
    }
}

/// A backend with something that must live as long as the test: a temporary directory
/// holding its file, a server process.
#[derive(Debug)]
pub struct Guarded<B, G> {
    /// The backend under test.
    pub backend: B,
    /// Kept alive until the test ends.
    pub guard: G,
}

impl<B: Send + Sync + 'static, G> Fixture for Guarded<B, G> {
    type Backend = B;
    type Guard = G;
    fn into_parts(self) -> (B, G) {
        (self.backend, self.guard)
    }
}

/// Builds the fixture of one test: awaits the constructor and splits the result.
#[doc(hidden)]
pub async fn __fixture<F, E, Fut>(constructor: Fut) -> (std::sync::Arc<F::Backend>, F::Guard)
where
    F: Fixture,
    E: std::fmt::Debug,
    Fut: std::future::Future<Output = Result<F, E>>,
{
    let (backend, guard) = constructor
        .await
        .expect("the suite's backend constructor failed")
        .into_parts();
    (std::sync::Arc::new(backend), guard)
}

/// Expands the conformance cases into `#[tokio::test]`s inside `mod $module`, one
/// submodule per capability, each test with a fresh backend from `$constructor` (evaluated
/// once per test; see the crate docs for what it may return). The calling crate needs
/// `tokio` with the `macros` and `rt-multi-thread` features.
///
/// Without a list, every capability runs; a backend that implements only some of the traits
/// names the capabilities it has: `broker` (its cases also use `ResultStore`), `results`,
/// `workflows`, `coordinator`, `kv`, `rate_limits`, `breakers` (its worker cases also use
/// `Broker` and `ResultStore`), `processes` (the process registry; its cases also run a worker
/// and a beat), `events` (the event stream; its worker case also uses `Broker`), `history` (the
/// history per minute and hour; its worker case also uses `Broker`), `health` (a ping and the
/// store's own figures), `alerts` (the rules over the store's figures, and their states in its
/// key-value space; uses `Broker`, `QueueAdmin`, `ProcessRegistry`, `History`, `StoreHealth`
/// and `KvStore`). Cases that run a worker
/// need every capability a worker uses (`celeriac_core::WorkerStore`), a beat
/// `ProcessRegistry`.
///
/// ```no_run
/// celeriac_conformance::suite!(sqlite_memory, celeriac_embedded::SqliteBackend::memory());
/// celeriac_conformance::suite!(
///     sqlite_queues,
///     celeriac_embedded::SqliteBackend::memory(),
///     [broker, results]
/// );
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! suite {
    ($module:ident, $constructor:expr $(,)?) => {
        $crate::suite!(
            $module,
            $constructor,
            [
                broker,
                results,
                workflows,
                coordinator,
                kv,
                rate_limits,
                breakers,
                processes,
                events,
                history,
                health,
                alerts
            ]
        );
    };
    ($module:ident, $constructor:expr, [$($capability:ident),* $(,)?] $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $( $crate::__capability!($capability, $constructor); )*
        }
    };
}

/// One capability of [`suite!`]: a module of the tests of its case files.
#[doc(hidden)]
#[macro_export]
macro_rules! __capability {
    (broker, $c:expr) => {
        pub mod broker {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_broker_ordering!($c);
            $crate::__cases_broker_leases!($c);
            $crate::__cases_broker_completion!($c);
            $crate::__cases_broker_queues!($c);
            $crate::__cases_broker_expiry!($c);
            $crate::__cases_broker_dead_letters!($c);
            $crate::__cases_broker_cancel!($c);
            $crate::__cases_broker_unique!($c);
            $crate::__cases_broker_task_limits!($c);
            $crate::__cases_broker_worker!($c);
            $crate::__cases_broker_retention!($c);
            $crate::__cases_broker_browse!($c);
            $crate::__cases_broker_bounds!($c);
        }
    };
    (results, $c:expr) => {
        pub mod results {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_results!($c);
        }
    };
    (workflows, $c:expr) => {
        pub mod workflows {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_workflows_store!($c);
            $crate::__cases_workflows_runs!($c);
        }
    };
    (coordinator, $c:expr) => {
        pub mod coordinator {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_coordinator!($c);
        }
    };
    (kv, $c:expr) => {
        pub mod kv {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_kv_store!($c);
            $crate::__cases_kv_cache!($c);
            $crate::__cases_kv_cache_bounds!($c);
        }
    };
    (rate_limits, $c:expr) => {
        pub mod rate_limits {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_rate_limits!($c);
        }
    };
    (events, $c:expr) => {
        pub mod events {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_events!($c);
        }
    };
    (alerts, $c:expr) => {
        pub mod alerts {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_alerts!($c);
        }
    };
    (health, $c:expr) => {
        pub mod health {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_health!($c);
        }
    };
    (history, $c:expr) => {
        pub mod history {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_history!($c);
        }
    };
    (processes, $c:expr) => {
        pub mod processes {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_processes!($c);
        }
    };
    (breakers, $c:expr) => {
        pub mod breakers {
            #[allow(unused_imports)]
            use super::*;
            $crate::__cases_breakers!($c);
        }
    };
}

/// The expansion of [`suite!`]: one test per case name.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_cases {
    ($constructor:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (backend, _guard) = $crate::__fixture($constructor).await;
                $crate::cases::$case(backend).await;
            }
        )*
    };
}
