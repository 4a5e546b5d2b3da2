//! The job model: what is stored for each unit of work, and its lifecycle states.

use crate::clock::UnixMs;
use crate::error::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A job's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new id. Ids made by one process are ordered by creation.
    pub fn new() -> Self {
        JobId(uuid::Uuid::now_v7())
    }

    /// The 16 bytes of the id.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// An id from its 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        JobId(uuid::Uuid::from_bytes(bytes))
    }

    /// An id derived from this one and a label: the same inputs give the same id in every
    /// process, so whatever is enqueued under it is enqueued once (enqueueing is idempotent by
    /// id). It keeps this id's timestamp, so derived ids sort next to their origin.
    pub fn derive(&self, label: &str) -> JobId {
        let hashed = uuid::Uuid::new_v5(&self.0, label.as_bytes());
        let mut bytes = *hashed.as_bytes();
        bytes[..6].copy_from_slice(&self.0.as_bytes()[..6]);
        bytes[6] = 0x70 | (bytes[6] & 0x0f);
        bytes[8] = 0x80 | (bytes[8] & 0x3f);
        JobId(uuid::Uuid::from_bytes(bytes))
    }

    /// An id from a byte slice, which must be 16 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        uuid::Uuid::from_slice(bytes)
            .map(JobId)
            .map_err(|e| Error::Codec(format!("bad job id: {e}")))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        uuid::Uuid::parse_str(s.trim())
            .map(JobId)
            .map_err(|e| Error::Codec(format!("`{s}` is not a job id: {e}")))
    }
}

/// How a payload or result is serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// JSON (the default): readable in `celeriac inspect` and from other languages.
    #[default]
    Json,
    /// MessagePack: smaller and faster for large payloads.
    MsgPack,
}

impl Encoding {
    /// A stable small number for storage.
    pub fn code(self) -> u8 {
        match self {
            Encoding::Json => 0,
            Encoding::MsgPack => 1,
        }
    }

    /// The encoding for a stored code.
    pub fn from_code(code: i64) -> Result<Self> {
        match code {
            0 => Ok(Encoding::Json),
            1 => Ok(Encoding::MsgPack),
            other => Err(Error::Codec(format!("unknown encoding code {other}"))),
        }
    }

    /// Serializes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>> {
        match self {
            Encoding::Json => serde_json::to_vec(value).map_err(|e| Error::Codec(e.to_string())),
            Encoding::MsgPack => {
                rmp_serde::to_vec_named(value).map_err(|e| Error::Codec(e.to_string()))
            }
        }
    }

    /// Deserializes a value.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        match self {
            Encoding::Json => {
                serde_json::from_slice(bytes).map_err(|e| Error::Codec(e.to_string()))
            }
            Encoding::MsgPack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                de.set_max_depth(crate::nesting::MAX_DEPTH);
                crate::nesting::deserialize(&mut de, crate::nesting::MAX_DEPTH)
                    .map_err(|e| Error::Codec(e.to_string()))
            }
        }
    }

    /// A payload in this encoding rendered as JSON text, for people to read.
    pub fn to_json_text(self, bytes: &[u8]) -> String {
        match self {
            Encoding::Json => String::from_utf8_lossy(bytes).into_owned(),
            Encoding::MsgPack => match rmp_serde::from_slice::<serde_json::Value>(bytes) {
                Ok(v) => v.to_string(),
                Err(_) => format!("<{} bytes of undecodable msgpack>", bytes.len()),
            },
        }
    }
}

/// Job priority: `0..=9`, **higher runs first**; the default is [`Priority::NORMAL`] (5).
///
/// Within one priority, jobs of a queue run in the order they became due (FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority(u8);

impl Priority {
    /// The least urgent priority.
    pub const LOWEST: Priority = Priority(0);
    /// The default priority.
    pub const NORMAL: Priority = Priority(5);
    /// The most urgent priority.
    pub const HIGHEST: Priority = Priority(9);

    /// A priority; values outside `0..=9` are an error.
    pub fn new(value: u8) -> Result<Self> {
        if value <= 9 {
            Ok(Priority(value))
        } else {
            Err(Error::config(
                "priority",
                format!("{value} is outside 0..=9 (9 is the most urgent)"),
            ))
        }
    }

    /// A priority from a value known to be in `0..=9` (values above 9 become 9).
    pub const fn clamped(value: u8) -> Priority {
        Priority(if value > 9 { 9 } else { value })
    }

    /// The number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::NORMAL
    }
}

/// Where a job is in its life.
///
/// `pending → (scheduled) → active → succeeded | retrying → pending | failed | dead`,
/// plus `cancelled` and `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run, waiting for a worker.
    Pending,
    /// Delayed: becomes pending at its `run_at`.
    Scheduled,
    /// Leased by a worker and running.
    Active,
    /// Failed an attempt; waiting for its next one at `run_at`.
    Retrying,
    /// Finished with a result.
    Succeeded,
    /// Finished with an error the task marked as not worth retrying.
    Failed,
    /// Given up on and kept in the dead letters with the reason (retries exhausted, unknown
    /// task, undecodable payload); `celeriac dlq retry` brings it back.
    Dead,
    /// Cancelled before or while running.
    Cancelled,
    /// Not started before its `expires_at`.
    Expired,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 9] = [
        JobState::Pending,
        JobState::Scheduled,
        JobState::Active,
        JobState::Retrying,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Dead,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// A stable small number for storage.
    pub fn code(self) -> u8 {
        match self {
            JobState::Pending => 0,
            JobState::Scheduled => 1,
            JobState::Active => 2,
            JobState::Retrying => 3,
            JobState::Succeeded => 4,
            JobState::Failed => 5,
            JobState::Dead => 6,
            JobState::Cancelled => 7,
            JobState::Expired => 8,
        }
    }

    /// The state for a stored code.
    pub fn from_code(code: i64) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|s| i64::from(s.code()) == code)
            .ok_or_else(|| Error::Codec(format!("unknown job state code {code}")))
    }

    /// True once the job will not run again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded
                | JobState::Failed
                | JobState::Dead
                | JobState::Cancelled
                | JobState::Expired
        )
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Active => "active",
            JobState::Retrying => "retrying",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a unique job's key keeps duplicates out. Keys are unique within a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UniqueFor {
    /// Until the job starts (its first attempt is claimed).
    UntilStarted,
    /// Until the job finishes, in any terminal state; retries keep the key.
    UntilFinished,
    /// For this long after the first enqueue, whatever happens to the job (throttle).
    Window(Duration),
    /// Until the job starts; each duplicate replaces the waiting job's arguments and pushes
    /// its start back to this long after the duplicate's enqueue.
    Debounce(Duration),
}

impl UniqueFor {
    /// A one-letter code for storage.
    pub fn code(self) -> &'static str {
        match self {
            UniqueFor::UntilStarted => "s",
            UniqueFor::UntilFinished => "f",
            UniqueFor::Window(_) => "w",
            UniqueFor::Debounce(_) => "d",
        }
    }

    /// The duration a window or debounce carries (zero otherwise).
    pub fn duration(self) -> Duration {
        match self {
            UniqueFor::Window(d) | UniqueFor::Debounce(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// The lifetime for a stored code and duration.
    pub fn from_code(code: &str, duration: Duration) -> Option<Self> {
        match code {
            "s" => Some(UniqueFor::UntilStarted),
            "f" => Some(UniqueFor::UntilFinished),
            "w" => Some(UniqueFor::Window(duration)),
            "d" => Some(UniqueFor::Debounce(duration)),
            _ => None,
        }
    }
}

/// A unique job: while its key is held, enqueueing another job with the same key in the same
/// queue returns the holder instead of adding a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unique {
    /// The key: at most [`Bounds::max_unique_key_bytes`](crate::bounds::Bounds) bytes
    /// ([`Unique::MAX_KEY_LEN`] by default), without control characters.
    pub key: String,
    /// How long it keeps duplicates out.
    pub lifetime: UniqueFor,
}

impl Unique {
    /// The longest key accepted by default.
    pub const MAX_KEY_LEN: usize = 512;
}

/// One unit of work as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Unique, time-sortable id.
    pub id: JobId,
    /// The queue it waits in.
    pub queue: String,
    /// The registered task name that runs it.
    pub task: String,
    /// The serialized arguments.
    #[serde(with = "payload_as_text")]
    pub payload: Vec<u8>,
    /// How `payload` (and the result) are serialized.
    pub encoding: Encoding,
    /// Higher runs first.
    pub priority: Priority,
    /// Attempts started so far (a claim starts one).
    pub attempts: u32,
    /// After this many attempts the job is dead.
    pub max_attempts: u32,
    /// Not before this moment (delay, ETA, next retry).
    pub run_at: UnixMs,
    /// If not started by this moment, the job ends as expired.
    pub expires_at: Option<UnixMs>,
    /// The task's cancellation token fires after this long.
    pub soft_time_limit: Option<Duration>,
    /// The task's future is dropped after this long.
    pub hard_time_limit: Option<Duration>,
    /// Trace context and user metadata.
    pub headers: BTreeMap<String, String>,
    /// The job that spawned this one, in a workflow.
    pub parent_id: Option<JobId>,
    /// The first job of the workflow this one belongs to.
    pub root_id: Option<JobId>,
    /// How long to keep the result once finished; `None` keeps no result on success.
    pub result_ttl: Option<Duration>,
    /// Keeps duplicates out while its key is held.
    #[serde(default)]
    pub unique: Option<Unique>,
    /// When it was enqueued.
    pub created_at: UnixMs,
    /// When its first attempt started.
    pub started_at: Option<UnixMs>,
    /// When it reached a terminal state.
    pub finished_at: Option<UnixMs>,
}

/// Serializes payload bytes as text where they are UTF-8 (for JSON dumps of jobs).
mod payload_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(bytes) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.serialize_bytes(bytes),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        Ok(text.into_bytes())
    }
}

/// The default number of attempts (one run plus three retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// The default time a result is kept: 24 hours.
pub const DEFAULT_RESULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The queue used when none is named.
pub const DEFAULT_QUEUE: &str = "default";

impl Job {
    /// A job for `task` with an already-serialized payload, due at `now`, with defaults for
    /// everything else.
    pub fn new(task: impl Into<String>, payload: Vec<u8>, now: UnixMs) -> Self {
        Job {
            id: JobId::new(),
            queue: DEFAULT_QUEUE.to_string(),
            task: task.into(),
            payload,
            encoding: Encoding::Json,
            priority: Priority::NORMAL,
            attempts: 0,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            run_at: now,
            expires_at: None,
            soft_time_limit: None,
            hard_time_limit: None,
            headers: BTreeMap::new(),
            parent_id: None,
            root_id: None,
            result_ttl: Some(DEFAULT_RESULT_TTL),
            unique: None,
            created_at: now,
            started_at: None,
            finished_at: None,
        }
    }

    /// The state a freshly enqueued job starts in, given the time of enqueueing.
    pub fn initial_state(&self, now: UnixMs) -> JobState {
        if self.run_at > now {
            JobState::Scheduled
        } else {
            JobState::Pending
        }
    }

    /// Checks the fields a store relies on, naming the first bad one. Sizes and characters
    /// are checked against the configured [`Bounds`](crate::bounds::Bounds) when the job is
    /// enqueued ([`Bounds::check`](crate::bounds::Bounds::check)).
    pub fn validate(&self) -> Result<()> {
        if self.queue.is_empty() {
            return Err(Error::config("queue", "a queue name cannot be empty"));
        }
        if self.task.is_empty() {
            return Err(Error::config("task", "a task name cannot be empty"));
        }
        if self.max_attempts == 0 {
            return Err(Error::config("max_attempts", "must be at least 1"));
        }
        if let Some(u) = &self.unique {
            if u.key.is_empty() {
                return Err(Error::config("unique", "the unique key cannot be empty"));
            }
            if matches!(u.lifetime, UniqueFor::Window(_) | UniqueFor::Debounce(_))
                && u.lifetime.duration().is_zero()
            {
                return Err(Error::config(
                    "unique",
                    "a window or debounce must be longer than zero",
                ));
            }
        }
        Ok(())
    }
}

/// What went wrong in an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// A short machine-readable kind: `error`, `panic`, `time_limit`, `unknown_task`,
    /// `undecodable_payload`, `lease_expired`, `retries_exhausted`, ...
    pub kind: String,
    /// The human-readable message, at most [`MAX_ERROR_BYTES`](crate::bounds::MAX_ERROR_BYTES)
    /// bytes when made by [`ErrorInfo::new`].
    pub message: String,
    /// The attempt (1-based) in which it happened.
    pub attempt: u32,
}

impl ErrorInfo {
    /// An error record. A message longer than
    /// [`MAX_ERROR_BYTES`](crate::bounds::MAX_ERROR_BYTES) is cut (on a character boundary)
    /// and ends with `… (truncated, N bytes)`: a failure is always recorded, whatever the
    /// size of its text.
    pub fn new(kind: impl Into<String>, message: impl Into<String>, attempt: u32) -> Self {
        Self {
            kind: kind.into(),
            message: crate::bounds::truncate_text(message.into(), crate::bounds::MAX_ERROR_BYTES),
            attempt,
        }
    }
}

impl fmt::Display for ErrorInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (attempt {})",
            self.kind, self.message, self.attempt
        )
    }
}

/// Progress a running task reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// From 0.0 to 1.0.
    pub fraction: f64,
    /// What it is doing.
    pub message: Option<String>,
}

/// Everything known about a job: the job, its state, and its outcome so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job itself.
    pub job: Job,
    /// Its state.
    pub state: JobState,
    /// The serialized return value, once succeeded (and when results are kept).
    #[serde(skip)]
    pub result: Option<Vec<u8>>,
    /// The last error.
    pub error: Option<ErrorInfo>,
    /// The last progress report.
    pub progress: Option<Progress>,
    /// The worker that holds, or last held, its lease.
    pub worker: Option<String>,
    /// When its lease runs out, while active.
    pub lease_until: Option<UnixMs>,
}

impl JobInfo {
    /// Decodes the result with the job's encoding.
    pub fn result_as<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match &self.result {
            Some(bytes) => self.job.encoding.decode(bytes).map(Some),
            None => Ok(None),
        }
    }

    /// The result rendered as JSON text, for people.
    pub fn result_text(&self) -> Option<String> {
        self.result
            .as_ref()
            .map(|b| self.job.encoding.to_json_text(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recursive argument type.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Nest {
        End,
        In(Option<Box<Nest>>),
    }

    fn nest(levels: usize) -> Nest {
        (0..levels).fold(Nest::End, |n, _| Nest::In(Some(Box::new(n))))
    }

    #[test]
    fn payloads_nested_past_the_limit_do_not_decode_in_either_encoding() {
        for encoding in [Encoding::Json, Encoding::MsgPack] {
            let fine = nest(20);
            let bytes = encoding.encode(&fine).expect("encode");
            assert_eq!(encoding.decode::<Nest>(&bytes).expect("decode"), fine);
            // MessagePack's own limit counts neither the enum nor the option: without the
            // adapter this decodes (and far deeper input overflows the stack).
            let bytes = encoding.encode(&nest(1000)).expect("encode");
            let decoded = encoding.decode::<Nest>(&bytes);
            assert!(
                matches!(decoded, Err(Error::Codec(_))),
                "{encoding:?}: decoded {}",
                decoded.is_ok()
            );
        }
    }

    #[test]
    fn ids_sort_by_creation_and_round_trip() {
        let ids: Vec<JobId> = (0..1000).map(|_| JobId::new()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let text = ids[3].to_string();
        assert_eq!(text.parse::<JobId>().ok(), Some(ids[3]));
        assert!("not-an-id".parse::<JobId>().is_err());
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let origin: JobId = "01890a5d-ac96-774b-bcce-b302099a8057"
            .parse()
            .expect("an id");
        let a = origin.derive("n");
        assert_eq!(a, origin.derive("n"), "the same inputs give the same id");
        assert_ne!(a, origin.derive("n.1"));
        assert_ne!(a, JobId::new().derive("n"));
        assert_eq!(
            a.as_bytes()[..6],
            origin.as_bytes()[..6],
            "the timestamp is kept"
        );
        assert_eq!(a.0.get_version_num(), 7);
        // Pinned: a derived id must not change between releases, or in-flight workflows
        // would enqueue their steps twice.
        assert_eq!(a.to_string(), "01890a5d-ac96-7593-8c18-3eb4d6fd62a8");
    }

    #[test]
    fn states_round_trip_through_codes() {
        for s in JobState::ALL {
            assert_eq!(JobState::from_code(i64::from(s.code())).ok(), Some(s));
        }
        assert!(JobState::from_code(42).is_err());
    }

    #[test]
    fn priority_range_is_checked() {
        assert!(Priority::new(9).is_ok());
        assert!(Priority::new(10).is_err());
    }

    #[test]
    fn unique_keys_are_checked() {
        let mut j = Job::new("t", b"1".to_vec(), 0);
        j.unique = Some(Unique {
            key: String::new(),
            lifetime: UniqueFor::UntilStarted,
        });
        let err = j.validate().expect_err("empty").to_string();
        assert!(err.contains("unique"), "{err}");
        j.unique = Some(Unique {
            key: "ok".into(),
            lifetime: UniqueFor::Window(Duration::ZERO),
        });
        assert!(j.validate().is_err(), "a zero window is refused");
        j.unique = Some(Unique {
            key: "ok".into(),
            lifetime: UniqueFor::Debounce(Duration::from_secs(1)),
        });
        assert!(j.validate().is_ok());
    }

    #[test]
    fn long_error_messages_are_truncated() {
        let e = ErrorInfo::new("error", "x".repeat(1 << 20), 1);
        assert!(e.message.len() <= crate::bounds::MAX_ERROR_BYTES);
        assert!(
            e.message.ends_with("(truncated, 1048576 bytes)"),
            "{}",
            &e.message[e.message.len() - 40..]
        );
        assert_eq!(ErrorInfo::new("error", "short", 1).message, "short");
    }

    #[test]
    fn encodings_round_trip() {
        for enc in [Encoding::Json, Encoding::MsgPack] {
            let bytes = enc.encode(&("hi", 3u32)).expect("encode");
            let back: (String, u32) = enc.decode(&bytes).expect("decode");
            assert_eq!(back, ("hi".to_string(), 3));
        }
    }
}
