//! Store health: the store answers a ping, and says what it knows of its own resources.

use celeriac_core::backend::StoreHealth;
use std::sync::Arc;
use std::time::Duration;

/// A ping answers, well within a second on a loopback store; the figures come back, and a
/// store with memory figures has a policy too.
pub async fn the_store_answers_a_ping_and_gives_its_figures<B: StoreHealth>(backend: Arc<B>) {
    let took = backend.ping().await.expect("the store answers a ping");
    assert!(took < Duration::from_secs(5), "a ping took {took:?}");
    let figures = backend
        .store_figures()
        .await
        .expect("the store gives its figures");
    if let Some(used) = figures.memory_used_bytes {
        assert!(used > 0, "memory in use: {figures:?}");
        assert!(figures.eviction_policy.is_some(), "{figures:?}");
    }
    if let Some(file) = figures.file_bytes {
        assert!(file > 0, "a database file has pages: {figures:?}");
    }
}

/// The cases of this file, expanded by [`suite!`](crate::suite).
#[doc(hidden)]
#[macro_export]
macro_rules! __cases_health {
    ($constructor:expr) => {
        $crate::__suite_cases! {
            $constructor;
            the_store_answers_a_ping_and_gives_its_figures,
        }
    };
}
