//! [`ProcessRegistry`]: the live worker and beat processes of a fleet, each refreshing its own
//! entry, and the commands an operator sends them through the store (`celery control` style).

use crate::clock::{StoreClock, UnixMs};
use crate::error::{Error, Result};
use crate::job::JobId;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// The most job ids one entry lists; a busier process lists this many and counts the rest in
/// [`ProcessInfo::busy`].
pub const MAX_LISTED_JOBS: usize = 1000;

/// What kind of process an entry describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessKind {
    /// A worker: claims and runs jobs.
    Worker,
    /// A beat: fires periodic schedules while it leads.
    Beat,
}

impl ProcessKind {
    /// The kind's name: `worker` or `beat`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessKind::Worker => "worker",
            ProcessKind::Beat => "beat",
        }
    }
}

/// Where a process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Claiming jobs (a worker) or taking the leader lease (a beat).
    Running,
    /// Told to be quiet: claims nothing new and finishes what runs (a beat stops leading).
    Quiet,
    /// Shutting down: finishing or handing back what runs.
    Draining,
}

impl ProcessState {
    /// The state of a process shutting down (`draining`) or told to be quiet.
    pub fn of(draining: bool, quiet: bool) -> ProcessState {
        if draining {
            ProcessState::Draining
        } else if quiet {
            ProcessState::Quiet
        } else {
            ProcessState::Running
        }
    }

    /// The state's name: `running`, `quiet` or `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Quiet => "quiet",
            ProcessState::Draining => "draining",
        }
    }
}

/// A command sent to a process through the store; it acts on it at its next refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Control {
    /// Stop claiming, finish what runs, stay up (a beat hands its lease over).
    Quiet,
    /// Shut down gracefully, as on `SIGTERM`.
    Stop,
}

impl Control {
    /// The command's name: `quiet` or `stop`.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Quiet => "quiet",
            Control::Stop => "stop",
        }
    }

    /// The command named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Control> {
        match name {
            "quiet" => Some(Control::Quiet),
            "stop" => Some(Control::Stop),
            _ => None,
        }
    }

    /// Commands as stores keep them: comma-separated names, each once, in order; unknown
    /// names are skipped.
    pub fn parse_list(stored: &str) -> Vec<Control> {
        let mut all: Vec<Control> = stored.split(',').filter_map(Control::parse).collect();
        all.sort();
        all.dedup();
        all
    }

    /// The stored form of `commands` (see [`Control::parse_list`]).
    pub fn join_list(commands: &[Control]) -> String {
        commands
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// A queue a worker takes from, with its weight (0 when the worker takes its queues in
/// strict order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueWeight {
    /// The queue's name.
    pub queue: String,
    /// Its weight, or 0 for strict order.
    pub weight: u32,
}

/// One live process as it last described itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Unique in the fleet: a worker's id, a beat's holder name.
    pub id: String,
    /// Worker or beat.
    pub kind: ProcessKind,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// Celeriac's version in it.
    pub version: String,
    /// When it started (fleet clock, ms).
    pub started_at: UnixMs,
    /// The queues it takes from, in order (empty for a beat).
    #[serde(default)]
    pub queues: Vec<QueueWeight>,
    /// Jobs it runs at most at once (0 for a beat).
    #[serde(default)]
    pub concurrency: u32,
    /// Jobs it runs now.
    #[serde(default)]
    pub busy: u32,
    /// The ids of the jobs it runs (at most [`MAX_LISTED_JOBS`]).
    #[serde(default)]
    pub running: Vec<JobId>,
    /// Its resident memory, when the platform tells.
    #[serde(default)]
    pub rss_bytes: Option<u64>,
    /// How long its previous refresh took to reach the store and back, in microseconds.
    #[serde(default)]
    pub store_rtt_us: Option<u64>,
    /// Its host clock's offset from the fleet's clock, in ms (positive: the fleet is ahead).
    #[serde(default)]
    pub clock_offset_ms: i64,
    /// Running, quiet or draining.
    pub state: ProcessState,
    /// For a beat: whether it leads (fires the schedules).
    #[serde(default)]
    pub leader: bool,
    /// When it last refreshed its entry (fleet clock, ms).
    pub seen_at: UnixMs,
    /// When the entry expires unless refreshed again (fleet clock, ms).
    pub expires_at: UnixMs,
}

impl ProcessInfo {
    /// The queue names it takes from.
    pub fn queue_names(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(|q| q.queue.as_str())
    }

    /// The entry as stores keep it (JSON).
    pub fn encode(&self) -> Result<String> {
        serde_json::to_string(self).map_err(|e| Error::Codec(format!("process entry: {e}")))
    }

    /// An entry as stored, or `None` (logged) when it cannot be read: one bad entry does not
    /// hide the others.
    pub fn decode_or_skip(id: &str, stored: &[u8]) -> Option<ProcessInfo> {
        match serde_json::from_slice(stored) {
            Ok(info) => Some(info),
            Err(e) => {
                tracing::warn!(process = id, error = %e, "skipping a process entry that cannot be read");
                None
            }
        }
    }
}

/// The registry of live processes.
///
/// Each process refreshes its own entry every few seconds with [`ProcessRegistry::refresh`];
/// an entry not refreshed by its `expires_at` is gone from [`ProcessRegistry::processes`]
/// (and its pending commands with it). Every call is O(number of processes).
pub trait ProcessRegistry: StoreClock {
    /// Writes this process's entry, good until `info.expires_at`, and takes the commands sent
    /// to it since its last refresh (each is returned once, in a fixed order).
    fn refresh(&self, info: &ProcessInfo) -> impl Future<Output = Result<Vec<Control>>> + Send;

    /// Removes a process's entry and its pending commands (a clean exit).
    fn leave(&self, id: &str) -> impl Future<Output = Result<()>> + Send;

    /// The entries live at `now` (not expired), sorted by id. An entry that cannot be
    /// decoded is skipped and logged.
    fn processes(&self, now: UnixMs) -> impl Future<Output = Result<Vec<ProcessInfo>>> + Send;

    /// Sends `command` to the live process `id`; false when no live process has that id.
    fn control(
        &self,
        id: &str,
        command: Control,
        now: UnixMs,
    ) -> impl Future<Output = Result<bool>> + Send;
}

/// How long an entry refreshed every `every` lives: three refreshes, so one or two slow or
/// failed ones do not make a live process vanish.
pub fn entry_ttl(every: Duration) -> Duration {
    every.saturating_mul(3)
}
