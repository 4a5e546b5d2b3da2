//! The chord join (§6.7): what a worker does after storing a chord header member's result,
//! and the producer's part ([`ResultBackend::init_chord`]).
//!
//! Both bookkeeping generations of Celery's Redis backend are implemented; which one a backend
//! uses is an option ([`ResultBackendBuilder::chord_generation`](super::ResultBackendBuilder::chord_generation)),
//! not detected: the client writes the same `.s` string in both (only its expiry and the
//! `.c` deletion differ, and nothing on the server tells them apart afterwards), and what has
//! to match is the algorithm of the *other workers* that may finish members of the same chord.
//! Rust workers next to Python 5.7 workers must use [`ChordGeneration::Claim`] (the same Lua
//! script, so the claim and the `done` marker are shared); next to Python 5.1–5.6 workers,
//! [`ChordGeneration::Classic`]. Either works with either client.

mod join;

use redis::Script;
use serde_json::Value;

use super::backend::ResultBackend;
use super::error::{Error, Result};
use super::exception::ExceptionInfo;
use super::state::State;
use crate::pyjson::to_python_json;

/// How long the `done` marker keeps late duplicates away at least (Celery 5.7: 300 s).
const DONE_MARKER_MIN: u64 = 300;
/// The release claim while the body is being sent: Celery 5.7's estimate for its default
/// publish retry policy (4 attempts of a 4 s connection timeout, plus waits).
const PUBLISH_CLAIM_MIN: u64 = 21;

/// Which chord bookkeeping the join follows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChordGeneration {
    /// Celery 5.1–5.6: one MULTI (`ZADD .j`, `ZCOUNT`, `GET .t`, `GET .s`, `EXPIRE`s); the
    /// worker whose element brings the count to the size sends the body, then `DEL .j .t .s`.
    /// A redelivered member with the same result adds no element (the zset holds it once)
    /// and does not release; a redelivery with a different result (or any redelivery with an
    /// unordered list) counts twice, as in Python.
    Classic,
    /// Celery 5.7: a Lua script records each `<task id>:<index>` once (`.d`), and the worker
    /// that sees the chord complete claims `.c` (`SET NX EX`) before releasing; after sending
    /// the body it deletes the state and leaves `.c = "done"`, so late duplicates are ignored.
    #[default]
    Claim,
}

/// A finished chord header member, as the join records it.
#[derive(Debug, Clone, Copy)]
pub struct ChordPart<'a> {
    /// The chord's header group id (`headers.group`).
    pub group_id: &'a str,
    /// The member's task id.
    pub task_id: &'a str,
    /// Its `headers.group_index` (`None` sorts last, as `+inf`).
    pub group_index: Option<u64>,
    /// Its final state (SUCCESS, FAILURE, REVOKED, ...).
    pub state: &'a State,
    /// Its result as stored: the return value or the exception dict.
    pub result: &'a Value,
}

/// What [`ResultBackend::chord_part_return`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum ChordPartOutcome {
    /// Not every member has reported (or another worker holds the release, or the client
    /// has not set the size up: `size` is `None`).
    Pending {
        /// Members recorded so far.
        ready: u64,
        /// The expected count (`.s` + `.t`), when set.
        size: Option<u64>,
    },
    /// The chord was already released (Celery 5.7 `done` marker): a late duplicate, not
    /// recorded.
    AlreadyReleased,
    /// This call completed the chord: send the body (or fail it), then call
    /// [`ResultBackend::chord_finish`]. Exactly one call per chord gets this.
    Release(Box<ChordRelease>),
}

/// The right (and duty) to release a chord's body.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordRelease {
    /// The header group id.
    pub group_id: String,
    /// The bookkeeping it was claimed under.
    pub generation: ChordGeneration,
    /// The header results in header order, or the failure that fails the body.
    pub outcome: std::result::Result<Vec<Value>, ChordFailure>,
    token: Option<String>,
}

/// Why a chord's body fails instead of running (§5.6).
#[derive(Debug, Clone, PartialEq)]
pub struct ChordFailure {
    /// The header member that failed (empty when the state could not be read).
    pub task_id: String,
    /// Its state (FAILURE or REVOKED).
    pub state: State,
    /// Its exception, when it stored one.
    pub cause: Option<ExceptionInfo>,
    /// What the body's FAILURE record holds: `celery.exceptions.ChordError("Dependency <id>
    /// raised ValueError('boom')")`.
    pub error: ExceptionInfo,
}

pub(crate) struct ChordScripts {
    part_return: Script,
    claim_extend: Script,
    cleanup: Script,
}

impl ChordScripts {
    pub(crate) fn new() -> Self {
        ChordScripts {
            part_return: Script::new(include_str!("lua/chordPartReturn-6.lua")),
            claim_extend: Script::new(include_str!("lua/chordClaimExtend-2.lua")),
            cleanup: Script::new(include_str!("lua/chordCleanup-5.lua")),
        }
    }
}

impl ResultBackend {
    /// Producer side: sets the chord size before the header tasks are sent (§5.6, §11.B).
    /// [`ChordGeneration::Claim`]: `DEL .c` and `SET .s <size> EX <chord_expires>`;
    /// [`ChordGeneration::Classic`]: `SETEX .s <result_expires> <size>` and `PUBLISH`, as the
    /// Python clients of each generation do. Python workers of either generation accept both.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn init_chord(&self, group_id: &str, size: u64) -> Result<()> {
        let skey = self.group_key(group_id, ".s");
        let mut pipe = redis::pipe();
        pipe.atomic();
        match self.inner.chord_generation {
            ChordGeneration::Claim => {
                pipe.del(self.group_key(group_id, ".c")).ignore();
                match self.inner.chord_expires {
                    Some(ttl) => pipe.set_ex(&skey, size, ttl).ignore(),
                    None => pipe.set(&skey, size).ignore(),
                };
            }
            ChordGeneration::Classic => {
                match self.inner.result_expires {
                    Some(ttl) => pipe.set_ex(&skey, size, ttl).ignore(),
                    None => pipe.set(&skey, size).ignore(),
                };
                pipe.publish(&skey, size).ignore();
            }
        }
        pipe.query_async::<()>(&mut self.connection())
            .await
            .map_err(Error::redis(format!(
                "set the size of chord {group_id} ({skey})"
            )))
    }

    /// `Task.add_to_chord`: one more member will report (`INCR .t`).
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn add_to_chord(&self, group_id: &str) -> Result<()> {
        let tkey = self.group_key(group_id, ".t");
        redis::cmd("INCR")
            .arg(&tkey)
            .query_async::<i64>(&mut self.connection())
            .await
            .map(drop)
            .map_err(Error::redis(format!("INCR {tkey}")))
    }

    /// Worker side, after the member's own result is stored: records it in the chord's join
    /// state and tells whether this call releases the body (§6.7), following the backend's
    /// [`ChordGeneration`].
    ///
    /// # Errors
    /// [`Error::Redis`]; [`Error::Encode`] for a result that is not JSON-serializable.
    pub async fn chord_part_return(&self, part: ChordPart<'_>) -> Result<ChordPartOutcome> {
        let encoded_result = match (
            part.state.is_exception(),
            ExceptionInfo::from_json(part.result),
        ) {
            (true, Some(exc)) => exc.to_json(),
            _ => part.result.clone(),
        };
        let element = to_python_json(&(1, part.task_id, part.state.as_str(), &encoded_result))
            .map_err(|source| Error::Encode {
                what: format!("chord element of task {}", part.task_id),
                source,
            })?;
        let score = part
            .group_index
            .map_or_else(|| "+inf".to_owned(), |i| i.to_string());
        match self.inner.chord_generation {
            ChordGeneration::Claim => self.part_return_claim(part, &element, &score).await,
            ChordGeneration::Classic => self.part_return_classic(part, &element, &score).await,
        }
    }

    /// After the body was sent (or its FAILURE stored): cleans the chord's join state up, as
    /// the Python worker of the release's generation does. Released: Classic `DEL .j .t .s`;
    /// Claim: the cleanup script (`DEL .j .t .s .d`, `.c = "done"`) if the claim is still
    /// this worker's. Failed: Claim `DEL .s` (a later duplicate cannot fail the chord again);
    /// Classic leaves the keys to expire. Returns whether the state was cleaned.
    ///
    /// # Errors
    /// [`Error::Redis`].
    pub async fn chord_finish(&self, release: &ChordRelease) -> Result<bool> {
        let gid = &release.group_id;
        let keys = [".j", ".t", ".s", ".d"].map(|s| self.group_key(gid, s));
        let action = format!("clean up chord {gid}");
        let mut conn = self.connection();
        match (release.generation, release.outcome.is_ok(), &release.token) {
            (ChordGeneration::Classic, true, _) => {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for key in &keys[..3] {
                    pipe.del(key).ignore();
                }
                pipe.query_async::<()>(&mut conn)
                    .await
                    .map_err(Error::redis(action))?;
                Ok(true)
            }
            (ChordGeneration::Classic, false, _) => Ok(false),
            (ChordGeneration::Claim, true, Some(token)) => {
                let done_expires = (2 * self.claim_expires()).max(DONE_MARKER_MIN);
                let cleaned: i64 = self
                    .inner
                    .chord_scripts
                    .cleanup
                    .key(self.group_key(gid, ".c"))
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .arg(token)
                    .arg(done_expires)
                    .invoke_async(&mut conn)
                    .await
                    .map_err(Error::redis(action))?;
                Ok(cleaned == 1)
            }
            (ChordGeneration::Claim, _, _) => {
                redis::cmd("DEL")
                    .arg(&keys[2])
                    .query_async::<i64>(&mut conn)
                    .await
                    .map_err(Error::redis(action))?;
                Ok(true)
            }
        }
    }

    /// max(5, 2 × `result_chord_join_timeout`) seconds, as Celery 5.7.
    fn claim_expires(&self) -> u64 {
        let doubled = (self.inner.chord_join_timeout.as_secs_f64() * 2.0) as u64;
        doubled.max(5)
    }
}

impl ChordFailure {
    /// The FAILURE record for the chord's body (`body_task_id` = the body signature's
    /// `options.task_id`), with a traceback text naming the error.
    pub fn body_meta(&self, body_task_id: &str) -> super::meta::ResultMeta {
        let traceback = format!(
            "Traceback (most recent call last):\n  (chord join in a Rust worker)\ncelery.exceptions.ChordError: {}\n",
            self.error.message()
        );
        super::meta::ResultMeta::failure(body_task_id, &self.error, traceback)
    }
}
