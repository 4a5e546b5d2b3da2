//! The join itself: recording a member under either generation's bookkeeping and reading
//! the results of a complete chord.

use serde_json::Value;
use uuid::Uuid;

use super::{
    ChordFailure, ChordGeneration, ChordPart, ChordPartOutcome, ChordRelease, PUBLISH_CLAIM_MIN,
};
use crate::pyjson::{parse_str, py_repr};
use crate::results::backend::ResultBackend;
use crate::results::error::{Error, Result};
use crate::results::exception::ExceptionInfo;
use crate::results::state::State;

/// The error of recording `part` in its chord's join.
fn recording(part: &ChordPart<'_>) -> impl FnOnce(redis::RedisError) -> Error {
    Error::redis(format!(
        "record member {} of chord {}",
        part.task_id, part.group_id
    ))
}

impl ResultBackend {
    pub(super) async fn part_return_classic(
        &self,
        part: ChordPart<'_>,
        element: &str,
        score: &str,
    ) -> Result<ChordPartOutcome> {
        let gid = part.group_id;
        let (jkey, tkey, skey) = (
            self.group_key(gid, ".j"),
            self.group_key(gid, ".t"),
            self.group_key(gid, ".s"),
        );
        let ordered = self.inner.chord_ordered;
        let mut pipe = redis::pipe();
        pipe.atomic();
        if ordered {
            pipe.cmd("ZADD").arg(&jkey).arg(score).arg(element);
            pipe.cmd("ZCOUNT").arg(&jkey).arg("-inf").arg("+inf");
        } else {
            pipe.cmd("RPUSH").arg(&jkey).arg(element);
            pipe.cmd("LLEN").arg(&jkey);
        }
        pipe.get(&tkey).get(&skey);
        if let Some(ttl) = self.inner.result_expires {
            for key in [&jkey, &tkey, &skey] {
                pipe.expire(key, ttl as i64).ignore();
            }
        }
        let (added, ready, diff, size): (i64, u64, Option<i64>, Option<i64>) = pipe
            .query_async(&mut self.connection())
            .await
            .map_err(recording(&part))?;
        let Some(total) = total(size, diff) else {
            return Ok(ChordPartOutcome::Pending { ready, size: None });
        };
        // Only the call whose element made the count reach the size releases: a duplicate
        // element (ZADD added nothing) must not release a second time.
        if ready != total || (ordered && added == 0) {
            return Ok(ChordPartOutcome::Pending {
                ready,
                size: Some(total),
            });
        }
        let outcome = self.read_results(gid, total).await?;
        Ok(ChordPartOutcome::Release(Box::new(ChordRelease {
            group_id: gid.to_owned(),
            generation: ChordGeneration::Classic,
            outcome,
            token: None,
        })))
    }

    pub(super) async fn part_return_claim(
        &self,
        part: ChordPart<'_>,
        element: &str,
        score: &str,
    ) -> Result<ChordPartOutcome> {
        let gid = part.group_id;
        let claim_expires = self.claim_expires();
        let chord_expires = self.inner.chord_expires.unwrap_or(0);
        let group_expires = match (self.inner.chord_expires, self.inner.result_expires) {
            (Some(c), Some(r)) => c.max(r),
            _ => 0,
        };
        let token = Uuid::new_v4().simple().to_string();
        let reply: Vec<redis::Value> = self
            .inner
            .chord_scripts
            .part_return
            .key(self.group_key(gid, ".j"))
            .key(self.group_key(gid, ".t"))
            .key(self.group_key(gid, ".s"))
            .key(self.group_key(gid, ".d"))
            .key(self.group_key(gid, ""))
            .key(self.group_key(gid, ".c"))
            .arg(part.task_id)
            .arg(element)
            .arg(if self.inner.chord_ordered { "1" } else { "0" })
            .arg(score)
            .arg(chord_expires)
            .arg(group_expires)
            .arg(claim_expires)
            .arg(&token)
            .invoke_async(&mut self.connection())
            .await
            .map_err(recording(&part))?;
        let ready = reply.first().and_then(int).unwrap_or(0);
        if ready == -1 {
            return Ok(ChordPartOutcome::AlreadyReleased);
        }
        let ready = u64::try_from(ready).unwrap_or(0);
        let diff = reply.get(1).and_then(int);
        let size = reply.get(2).and_then(int);
        let claimed = reply.get(3).and_then(int) == Some(1);
        let Some(total) = total(size, diff) else {
            return Ok(ChordPartOutcome::Pending { ready, size: None });
        };
        if ready != total || !claimed {
            return Ok(ChordPartOutcome::Pending {
                ready,
                size: Some(total),
            });
        }
        let outcome = self.read_results(gid, total).await?;
        if outcome.is_ok() {
            // Keep the claim while the body is being sent; give up if it was lost meanwhile.
            let extended: i64 = self
                .inner
                .chord_scripts
                .claim_extend
                .key(self.group_key(gid, ".c"))
                .key(self.group_key(gid, ".s"))
                .arg(&token)
                .arg(claim_expires.max(PUBLISH_CLAIM_MIN))
                .invoke_async(&mut self.connection())
                .await
                .map_err(Error::redis(format!(
                    "extend the release claim of chord {gid}"
                )))?;
            if extended == 0 {
                return Ok(ChordPartOutcome::Pending {
                    ready,
                    size: Some(total),
                });
            }
        }
        Ok(ChordPartOutcome::Release(Box::new(ChordRelease {
            group_id: gid.to_owned(),
            generation: ChordGeneration::Claim,
            outcome,
            token: Some(token),
        })))
    }

    /// Reads the recorded elements in header order and decodes them; a member in FAILURE or
    /// REVOKED makes the outcome a [`ChordFailure`].
    async fn read_results(
        &self,
        gid: &str,
        total: u64,
    ) -> Result<std::result::Result<Vec<Value>, ChordFailure>> {
        let jkey = self.group_key(gid, ".j");
        let gkey = self.group_key(gid, "");
        let mut conn = self.connection();
        let saved: bool = redis::cmd("EXISTS")
            .arg(&gkey)
            .query_async::<i64>(&mut conn)
            .await
            .map_err(Error::redis(format!("EXISTS {gkey}")))?
            == 1;
        if saved {
            // A header with nested groups: Python saved a GroupResult to restore the nesting.
            return Ok(Err(join_error(format!(
                "chord {gid} has a saved GroupResult ({gkey}): nested groups in a chord \
                 header are not supported by the Rust join"
            ))));
        }
        let mut read = if self.inner.chord_ordered {
            redis::cmd("ZRANGE")
        } else {
            redis::cmd("LRANGE")
        };
        let end = if self.inner.chord_ordered {
            -1
        } else {
            i64::try_from(total).unwrap_or(-1)
        };
        read.arg(&jkey).arg(0).arg(end);
        let raw: Vec<Vec<u8>> =
            read.query_async(&mut conn)
                .await
                .map_err(Error::redis(format!(
                    "read the results of chord {gid} ({jkey})"
                )))?;
        let mut results = Vec::with_capacity(raw.len());
        for bytes in raw {
            match decode_element(&bytes) {
                Ok((_, State::Success, value)) => results.push(value),
                Ok((tid, state, value)) if state.propagates() => {
                    let cause = ExceptionInfo::from_json(&value);
                    let shown = cause
                        .as_ref()
                        .map_or_else(|| py_repr(&value), ExceptionInfo::py_repr);
                    let error =
                        ExceptionInfo::chord_error(format!("Dependency {tid} raised {shown}"));
                    return Ok(Err(ChordFailure {
                        task_id: tid,
                        state,
                        cause,
                        error,
                    }));
                }
                // Other states (RETRY, custom) pass their value on, as Python does.
                Ok((_, _, value)) => results.push(value),
                Err(reason) => return Ok(Err(join_error(format!("{jkey}: {reason}")))),
            }
        }
        Ok(Ok(results))
    }
}

fn join_error(reason: String) -> ChordFailure {
    ChordFailure {
        task_id: String::new(),
        state: State::Failure,
        cause: None,
        error: ExceptionInfo::chord_error(format!("Join error: {reason}")),
    }
}

/// `[1, task_id, state, result]`.
fn decode_element(bytes: &[u8]) -> std::result::Result<(String, State, Value), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("element not UTF-8: {e}"))?;
    let value = parse_str(text).map_err(|e| format!("element not JSON: {e}"))?;
    match value {
        Value::Array(mut items) if items.len() == 4 => {
            let result = items.pop().unwrap_or(Value::Null);
            let state = match items.pop() {
                Some(Value::String(s)) => State::parse(&s),
                other => return Err(format!("element state is not a string: {other:?}")),
            };
            let tid = match items.pop() {
                Some(Value::String(s)) => s,
                other => return Err(format!("element task id is not a string: {other:?}")),
            };
            Ok((tid, state, result))
        }
        other => Err(format!("element is not [1, id, state, result]: {other}")),
    }
}

/// `.s` + `.t` when `.s` is set.
fn total(size: Option<i64>, diff: Option<i64>) -> Option<u64> {
    let size = size?;
    u64::try_from(size + diff.unwrap_or(0)).ok()
}

fn int(value: &redis::Value) -> Option<i64> {
    match value {
        redis::Value::Int(i) => Some(*i),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        redis::Value::SimpleString(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn elements_decode_as_python_writes_them() {
        let (tid, state, value) =
            decode_element(br#"[1, "b5535d81", "SUCCESS", 6]"#).expect("an element");
        assert_eq!(
            (tid.as_str(), state, value),
            ("b5535d81", State::Success, json!(6))
        );
        assert!(decode_element(b"[1, 2]").is_err());
        assert!(decode_element(br#"[1, "t", "SUCCESS", NaN]"#).is_ok());
        assert_eq!(total(Some(2), None), Some(2));
        assert_eq!(total(Some(2), Some(1)), Some(3));
        assert_eq!(total(None, Some(1)), None);
    }
}
