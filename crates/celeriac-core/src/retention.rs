//! What the stores share about retention: the dead-letter count cap and the counter of dead
//! letters it drops.

/// Dead letters a queue keeps by default; a reap drops the oldest beyond this many.
pub const DEFAULT_DEAD_MAX: u64 = 100_000;

/// The counter of dead letters dropped because their queue held more than its cap.
pub const DEAD_LETTERS_DROPPED: &str = "celeriac_dead_letters_dropped_total";

/// Counts `n` dead letters of `queue` dropped by the cap (nothing when `n` is zero).
pub fn count_dead_letters_dropped(queue: &str, n: u64) {
    if n > 0 {
        metrics::counter!(DEAD_LETTERS_DROPPED, "queue" => queue.to_string()).increment(n);
    }
}
