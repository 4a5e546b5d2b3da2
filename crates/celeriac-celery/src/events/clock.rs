//! Celery's Lamport clock (`kombu.clocks.LamportClock`), shared by events and remote control.

use std::sync::atomic::{AtomicU64, Ordering};

/// A Lamport clock: forwarded by one for every event or reply sent, moved past every clock
/// value received (`adjust`), as a Python worker does with `app.clock`.
#[derive(Debug, Default)]
pub struct LamportClock {
    value: AtomicU64,
}

impl LamportClock {
    /// A clock at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value.
    pub fn value(&self) -> u64 {
        self.value.load(Ordering::SeqCst)
    }

    /// Advances the clock by one and returns the new value.
    pub fn forward(&self) -> u64 {
        self.value.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Moves the clock past a value received from another node: `max(self, other) + 1`.
    pub fn adjust(&self, other: u64) -> u64 {
        let mut current = self.value.load(Ordering::SeqCst);
        loop {
            let next = current.max(other) + 1;
            match self
                .value
                .compare_exchange(current, next, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return next,
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_adjusts_like_kombu() {
        let c = LamportClock::new();
        assert_eq!(c.forward(), 1);
        assert_eq!(c.adjust(10), 11);
        assert_eq!(c.adjust(3), 12);
        assert_eq!(c.value(), 12);
    }
}
