//! This process as the fleet sees it: its host name and memory, the default names of its
//! workers and beats, and the loop that keeps its entry in the [`ProcessRegistry`] fresh and
//! hands it the commands an operator sent.

use crate::backend::{entry_ttl, Control, ProcessInfo, ProcessKind, ProcessRegistry};
use crate::clock::{duration_ms, Clock};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// How often a process refreshes its registry entry by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// How soon after obeying a command a process refreshes again, to show its new state.
const AFTER_COMMAND: Duration = Duration::from_millis(100);

/// Celeriac's version, as processes report it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This host's name: the kernel's, else `$HOSTNAME`, else `localhost`.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// This process's resident memory in bytes, where the platform tells (Linux).
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

static WORKERS: AtomicU32 = AtomicU32::new(0);
static BEATS: AtomicU32 = AtomicU32::new(0);

/// A default name for the next worker or beat of this process, unique in the fleet as long as
/// host names are: `host:pid` for the first worker, `host:pid/beat` for the first beat, with
/// `-2`, `-3`, … for later ones in the same process.
pub fn default_name(kind: ProcessKind) -> String {
    let (counter, suffix) = match kind {
        ProcessKind::Worker => (&WORKERS, ""),
        ProcessKind::Beat => (&BEATS, "/beat"),
    };
    let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
    let base = format!("{}:{}{suffix}", hostname(), std::process::id());
    if n == 1 {
        base
    } else {
        format!("{base}-{n}")
    }
}

/// The fixed part of an entry for a process starting now.
pub(crate) fn describe(id: &str, kind: ProcessKind, clock: &dyn Clock) -> ProcessInfo {
    let now = clock.now_ms();
    ProcessInfo {
        id: id.to_string(),
        kind,
        host: hostname(),
        pid: std::process::id(),
        version: VERSION.to_string(),
        started_at: now,
        queues: Vec::new(),
        concurrency: 0,
        busy: 0,
        running: Vec::new(),
        rss_bytes: None,
        store_rtt_us: None,
        clock_offset_ms: 0,
        state: crate::backend::ProcessState::Running,
        leader: false,
        seen_at: now,
        expires_at: now,
    }
}

/// What [`keep_fresh`] keeps: a process's entry and how it changes.
pub(crate) struct Presence<S, C> {
    /// The entry.
    pub(crate) info: ProcessInfo,
    /// How often it is refreshed.
    pub(crate) every: Duration,
    /// Fills the changing fields before each refresh.
    pub(crate) status: S,
    /// Acts on a command sent to the process.
    pub(crate) on_control: C,
    /// Refreshes that failed since the last that landed (readiness reads it).
    pub(crate) failing: Arc<AtomicU64>,
}

/// Keeps a process's registry entry fresh until `stop`, then removes it.
///
/// Every `every` (and once at the start) it fills the changing fields with `status`, writes the
/// entry, and passes each command it got to `on_control`. A refresh that fails is logged and
/// counted; the entry lives three refreshes, so a short outage of the store does not make the
/// process vanish.
pub(crate) async fn keep_fresh<B: ProcessRegistry, S, C>(
    backend: Arc<B>,
    clock: Arc<dyn Clock>,
    presence: Presence<S, C>,
    stop: CancellationToken,
) where
    S: Fn(&mut ProcessInfo) + Send,
    C: Fn(Control) + Send,
{
    let Presence {
        mut info,
        every,
        status,
        on_control,
        failing,
    } = presence;
    let ttl = duration_ms(entry_ttl(every));
    let fleet = backend.fleet_clock();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => break,
        }
        status(&mut info);
        let now = clock.now_ms();
        info.seen_at = now;
        info.expires_at = now.saturating_add(ttl);
        info.rss_bytes = rss_bytes();
        info.clock_offset_ms = fleet.offset_ms();
        let sent = Instant::now();
        match backend.refresh(&info).await {
            Ok(commands) => {
                failing.store(0, Ordering::Relaxed);
                let rtt = sent.elapsed();
                info.store_rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
                metrics::histogram!("celeriac_store_rtt_seconds").record(rtt.as_secs_f64());
                if !commands.is_empty() {
                    // Show the new state soon, once the process had a moment to act on it.
                    tick.reset_after(every.min(AFTER_COMMAND));
                }
                for command in commands {
                    info!(process = %info.id, command = command.as_str(), "command received");
                    on_control(command);
                }
            }
            Err(e) => {
                failing.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("celeriac_registry_refresh_failures_total").increment(1);
                warn!(process = %info.id, error = %e, "could not refresh the registry entry");
            }
        }
    }
    match backend.leave(&info.id).await {
        Ok(()) => debug!(process = %info.id, "left the registry"),
        Err(e) => {
            debug!(process = %info.id, error = %e, "could not leave the registry; the entry will expire")
        }
    }
}
