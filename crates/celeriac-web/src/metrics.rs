//! The Prometheus recorder: one per process, installed as the `metrics` facade's global
//! recorder, so every counter, gauge and histogram Celeriac records (and the application's own)
//! is served by `/metrics`.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Histogram buckets (seconds) of every `*_seconds` metric: 1 ms to 10 minutes.
const SECONDS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
///
/// # Errors
/// When another `metrics` recorder was installed first (serve that one's output instead).
pub fn prometheus() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            install().map_err(|e| {
                format!(
                    "could not install the Prometheus recorder ({e}); another metrics recorder \
                     is installed in this process"
                )
            })
        })
        .clone()
}

fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .install_recorder()?;
    describe();
    metrics::gauge!("celeriac_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// The help text of the metrics Celeriac records.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!(
        "celeriac_build_info",
        "Celeriac's version, as a label; always 1"
    );
    describe_counter!(
        "celeriac_jobs_enqueued_total",
        "Jobs enqueued by this process, by queue and task"
    );
    describe_counter!(
        "celeriac_job_attempts_total",
        "Attempts that ended, by queue, task and outcome (succeeded, retried, failed, dead, \
         cancelled, deferred, stale: a completion the store fenced off)"
    );
    describe_histogram!(
        "celeriac_job_run_seconds",
        Unit::Seconds,
        "How long attempts ran, by queue and task"
    );
    describe_histogram!(
        "celeriac_job_wait_seconds",
        Unit::Seconds,
        "How long jobs waited once due before an attempt started, by queue"
    );
    describe_counter!(
        "celeriac_jobs_fenced_total",
        "Jobs a worker gave up because no heartbeat extended their lease in time"
    );
    describe_counter!(
        "celeriac_jobs_redelivered_total",
        "Jobs whose lease expired and that went back to their queue (reaped)"
    );
    describe_counter!(
        "celeriac_dead_letters_dropped_total",
        "Dead letters dropped by the cap, by queue"
    );
    describe_gauge!(
        "celeriac_worker_slots",
        "This worker's slots (its concurrency)"
    );
    describe_gauge!(
        "celeriac_worker_busy_slots",
        "This worker's slots running a job"
    );
    describe_counter!(
        "celeriac_rate_limit_decisions_total",
        "Rate limiter decisions, by limiter and outcome (allowed, denied, shadow_denied, \
         short_circuited: denied locally until the key's retry-after, also counted as denied)"
    );
    describe_counter!(
        "celeriac_rate_limit_store_errors_total",
        "Rate limiter store calls that failed or timed out (the failure mode decided), by limiter"
    );
    describe_counter!(
        "celeriac_rate_limit_store_paused_total",
        "Rate limiter calls the failure mode decided without asking the store, paused after \
         consecutive failures, by limiter"
    );
    describe_counter!(
        "celeriac_registry_refresh_failures_total",
        "Registry refreshes (heartbeats to the store) that failed"
    );
    describe_histogram!(
        "celeriac_store_rtt_seconds",
        Unit::Seconds,
        "Round trips of registry refreshes to the store"
    );
    describe_gauge!(
        "celeriac_runtime_lag_seconds",
        Unit::Seconds,
        "How late the runtime watchdog's last tick ran"
    );
    describe_gauge!(
        "celeriac_clock_offset_seconds",
        Unit::Seconds,
        "The fleet's clock minus this host's wall clock"
    );
    describe_gauge!(
        "celeriac_monitor_leader",
        "1 while this process publishes the fleet gauges"
    );
}
