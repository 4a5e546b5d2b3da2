//! Browsing a queue's jobs in one state a page at a time (by rank in the state's sorted set,
//! so a page costs O(log n + page) at any depth), and deleting jobs.

use crate::codec;
use crate::conn::map_err;
use crate::keys::QueueKeys;
use crate::RedisBackend;
use celeriac_core::backend::{JobPage, JobQuery, SCAN_MAX};
use celeriac_core::error::{Error, Result};
use celeriac_core::job::{JobId, JobState};
use redis::AsyncCommands;
use redis::Value;

/// The sorted set holding a queue's jobs in `state`.
fn set_of(k: &QueueKeys, state: JobState) -> &str {
    match state {
        JobState::Pending => k.ready(),
        JobState::Scheduled => k.scheduled(),
        JobState::Retrying => k.retry(),
        JobState::Active => k.active(),
        JobState::Dead => k.dead(),
        JobState::Succeeded => &k.keys[7],
        JobState::Failed => &k.keys[8],
        JobState::Cancelled => &k.keys[9],
        JobState::Expired => &k.keys[10],
    }
}

/// A cursor: the score and member of the last job examined.
pub(crate) fn parse_cursor(s: &str) -> Result<(String, String)> {
    let bad = || Error::config("cursor", format!("`{s}` is not a cursor of this listing"));
    let (score, member) = s.split_once('|').ok_or_else(bad)?;
    score.parse::<f64>().map_err(|_| bad())?;
    Ok((score.to_string(), member.to_string()))
}

impl RedisBackend {
    /// See [`celeriac_core::QueueAdmin::list_jobs`].
    pub(crate) async fn browse(
        &self,
        q: &JobQuery,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage> {
        let k = self.keys(&q.queue);
        let set = set_of(&k, q.state).to_string();
        let size = if q.is_filtered() {
            SCAN_MAX.max(limit)
        } else {
            limit.max(1)
        };
        let mut conn = self.conn();
        let start: isize = match cursor {
            None => 0,
            Some(c) => {
                let (score, member) = parse_cursor(c)?;
                let rank: Option<isize> = if q.newest_first {
                    conn.zrevrank(&set, &member).await
                } else {
                    conn.zrank(&set, &member).await
                }
                .map_err(map_err)?;
                match rank {
                    Some(r) => r + 1,
                    // The last job seen has left the state: start after its score (jobs of
                    // the same score may show again, none is skipped).
                    None if q.newest_first => conn
                        .zcount(&set, format!("({score}"), "+inf")
                        .await
                        .map_err(map_err)?,
                    None => conn
                        .zcount(&set, "-inf", format!("({score}"))
                        .await
                        .map_err(map_err)?,
                }
            }
        };
        let end = start + size as isize - 1;
        let members: Vec<(String, f64)> = if q.newest_first {
            conn.zrevrange_withscores(&set, start, end).await
        } else {
            conn.zrange_withscores(&set, start, end).await
        }
        .map_err(map_err)?;
        let id_of = |m: &str| -> String {
            if q.state == JobState::Pending {
                m.get(16..).unwrap_or_default().to_string()
            } else {
                m.to_string()
            }
        };
        // Errors stay per record (`ignore_errors`): a key that is not a hash shows as
        // unreadable instead of failing the page.
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for (m, _) in &members {
            pipe.hgetall(k.job(&id_of(m)));
        }
        let hashes: Vec<Value> = if members.is_empty() {
            Vec::new()
        } else {
            pipe.query_async(&mut conn).await.map_err(map_err)?
        };
        let (total, full) = (members.len() as u64, members.len() == size);
        let mut page = JobPage {
            jobs: Vec::new(),
            next: None,
            scanned: 0,
        };
        let mut last = None;
        for ((member, score), reply) in members.into_iter().zip(hashes) {
            page.scanned += 1;
            last = Some(format!("{score:.0}|{member}"));
            if member.starts_with(crate::keys::KEEPER_MARK) {
                continue;
            }
            // A member that names no job (another process wrote it) is passed over.
            let Ok(id) = id_of(&member).parse::<JobId>() else {
                tracing::warn!(member = %member, "skipping a set member that is not a job id");
                continue;
            };
            let lease = (q.state == JobState::Active).then_some(score as i64);
            let found = codec::record_of(reply)
                .map(|fields| codec::info_from_hash(id, &q.queue, fields, lease, Some(q.state)));
            let found = match found {
                Ok(info) => info?,
                Err(why) => Some(codec::foreign_info(id, &q.queue, q.state, &why)),
            };
            if let Some(info) = found {
                if info.state == q.state && q.matches(&info) {
                    page.jobs.push(info);
                    if page.jobs.len() == limit {
                        break;
                    }
                }
            }
        }
        if page.scanned < total || full {
            page.next = last;
        }
        Ok(page)
    }

    /// See [`celeriac_core::QueueAdmin::delete_jobs`].
    pub(crate) async fn delete(&self, queue: &str, ids: Vec<JobId>) -> Result<u64> {
        let keys = self.keys(queue);
        let mut deleted = 0;
        for chunk in ids.chunks(500) {
            let args: Vec<Vec<u8>> = chunk.iter().map(|i| i.to_string().into_bytes()).collect();
            let n: i64 = self
                .invoke(&self.inner.scripts.delete_jobs, &keys, args)
                .await?;
            deleted += n.max(0) as u64;
        }
        Ok(deleted)
    }
}
