//! One conformance suite for every Celeriac backend.
//!
//! Each case is a plain `async fn case<B: Broker + ResultStore>(backend: Arc<B>)` (or with
//! [`WorkflowStore`] in place of `ResultStore`) in
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

use celeriac_core::{
    BreakerStore, Broker, Coordinator, KvStore, RateLimitStore, ResultStore, WorkflowStore,
};

/// What a suite's constructor may give: a backend, and whatever must outlive the test.
pub trait Fixture {
    /// The backend under test.
    type Backend: Broker
        + ResultStore
        + WorkflowStore
        + Coordinator
        + KvStore
        + RateLimitStore
        + BreakerStore;
    /// Dropped when the test ends, after the backend.
    type Guard;
    /// Splits the fixture into the backend and its guard.
    fn into_parts(self) -> (Self::Backend, Self::Guard);
}

impl<
        B: Broker
            + ResultStore
            + WorkflowStore
            + Coordinator
            + KvStore
            + RateLimitStore
            + BreakerStore,
    > Fixture for B
{
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

impl<
        B: Broker
            + ResultStore
            + WorkflowStore
            + Coordinator
            + KvStore
            + RateLimitStore
            + BreakerStore,
        G,
    > Fixture for Guarded<B, G>
{
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

/// Expands every conformance case into a `#[tokio::test]` inside `mod $module`, each with a
/// fresh backend from `$constructor` (evaluated once per test; see the crate docs for what
/// it may return). The calling crate needs `tokio` with the `macros` and `rt-multi-thread`
/// features.
///
/// ```no_run
/// celeriac_conformance::suite!(sqlite_memory, celeriac_embedded::SqliteBackend::memory());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! suite {
    ($module:ident, $constructor:expr $(,)?) => {
        $crate::__suite_cases! {
            $module, $constructor;
            // Every case of `celeriac_conformance::cases`, once.
            fifo_within_priority,
            priority_order,
            delayed_jobs_wait_for_run_at,
            next_due_is_per_queue,
            claim_respects_limit_and_queue_order,
            lease_expiry_redelivers,
            stale_token_is_fenced_off,
            release_returns_lease_uncounted,
            unknown_leases_are_lost,
            completion_outcomes_set_state,
            retry_schedule_follows_backoff,
            worker_dead_letters_after_max_attempts,
            unknown_task_is_dead_lettered,
            undecodable_payload_is_dead_lettered,
            worker_runs_a_task_to_success,
            pause_and_resume,
            purge_clears_one_queue,
            stats_count_states_per_queue,
            batch_enqueue_is_atomic,
            results_are_stored,
            wait_returns_when_completed,
            wait_times_out,
            unknown_job_is_not_found,
            progress_is_visible,
            result_ttl_sweeps_finished_jobs,
            reap_sweeps_every_due_result_in_one_call,
            dead_letter_cap_drops_the_oldest,
            ignored_result_leaves_no_row,
            expired_jobs_are_not_claimed,
            expired_jobs_do_not_use_up_the_claim_limit,
            dead_letters_list_retry_purge,
            cancel_waiting_jobs_never_run,
            cancel_running_job_is_reported_and_never_retried,
            cancelled_job_with_expired_lease_is_not_redelivered,
            worker_stops_a_cancelled_job,
            unique_until_started,
            unique_until_finished,
            unique_window_throttles,
            unique_debounce_replaces_and_delays,
            unique_debounce_within_one_batch,
            enqueue_is_idempotent_by_id,
            concurrency_cap_holds_jobs_back,
            rate_spaces_starts,
            workflow_chain_feeds_each_result_forward,
            workflow_group_collects_results_in_order,
            workflow_chord_callback_runs_once,
            workflow_map_fans_out_over_a_list,
            workflow_parts_nest,
            workflow_failing_step_stops_the_chain,
            workflow_dead_member_fails_the_chord,
            workflow_status_and_bad_definitions,
            workflow_steps_ended_by_the_store_fail_it,
            cache_loads_a_cold_key_once,
            cache_instances_share_one_load,
            cache_serves_stale_while_revalidating,
            cache_fail_safe_serves_stale_on_loader_errors,
            cache_refreshes_hot_keys_early,
            cache_caches_not_found_when_asked,
            cache_invalidation_reaches_other_instances,
            cache_bad_data_and_bad_settings,
            cache_warms_keys_ahead_of_use,
            cache_stats_are_published_and_summed,
            cache_write_behind_flushes_every_acknowledged_write,
            cache_write_behind_gathers_concurrent_writes,
            cache_counts_l1_evictions,
            cache_write_through_writes_the_store_first,
            join_completes_in_index_order,
            join_counts_a_repeated_index_once,
            join_arrivals_after_completion_stay_complete,
            join_failure_is_first_and_final,
            join_of_a_thousand_concurrent_members,
            join_expires_after_its_ttl,
            workflow_start_is_idempotent,
            workflow_finish_applies_once,
            workflow_wait_returns_when_finished,
            workflow_wait_on_unknown_is_not_found,
            workflow_wait_times_out,
            finished_workflow_expires_after_its_ttl,
            leader_lease_is_exclusive_and_fenced,
            record_tick_is_fenced,
            schedules_pause_and_resume,
            two_beats_fire_each_tick_once,
            beat_loops_running_at_once_fire_each_tick_once,
            missed_ticks_follow_the_policy,
            paused_schedules_do_not_fire,
            kv_values_round_trip_several_keys_per_call,
            kv_values_expire_by_the_callers_now,
            kv_overwrite_replaces,
            kv_keys_with_hash_tags_and_odd_bytes_round_trip,
            kv_bad_keys_and_ttls_are_refused,
            kv_incr_counts_from_one_and_is_atomic,
            kv_lock_is_exclusive_and_expires_by_now,
            kv_broadcast_reaches_every_subscriber_in_order,
            kv_broadcast_stays_in_its_channel,
            limits_gcra_spaces_calls_with_a_burst,
            limits_fixed_window_counts_per_window,
            limits_sliding_window_weighs_the_previous_window,
            limits_several_quotas_are_all_or_nothing,
            limits_cost_charges_several_units,
            limits_match_the_local_limiter_call_for_call,
            limits_keys_are_apart_and_state_expires,
            limits_permits_cap_concurrency_and_expire,
            limits_concurrent_calls_count_once,
            limits_bad_input_is_a_clear_error,
            breaker_opens_on_a_quorum_of_instances,
            breaker_signals_slide_out_of_the_window,
            breaker_probes_are_bounded_across_instances,
            breaker_probe_results_close_or_reopen_with_backoff,
            breaker_commands_override_and_reset,
            breaker_keys_expire_after_the_ttl,
            shared_breaker_trips_every_instance,
            deferred_completion_keeps_the_attempt,
            worker_defers_tasks_behind_an_open_breaker,
            worker_refuses_an_unknown_breaker,
            workers_share_a_breaker_through_the_store,
        }
    };
}

/// The expansion of [`suite!`]: one test per case name.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite_cases {
    ($module:ident, $constructor:expr; $($case:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let (backend, _guard) = $crate::__fixture($constructor).await;
                    $crate::cases::$case(backend).await;
                }
            )*
        }
    };
}
