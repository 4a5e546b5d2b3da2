//! [`QueueAdmin`] for Redis: pause, resume, counts, purge and the dead letters.

use crate::codec;
use crate::conn::map_err;
use crate::{num, RedisBackend};
use celeriac_core::backend::{JobPage, JobQuery, QueueAdmin, QueueStats};
use celeriac_core::clock::UnixMs;
use celeriac_core::error::Result;
use celeriac_core::job::{JobId, JobInfo, JobState};
use redis::{AsyncCommands, Value};

/// The width of one priority's band of scores in a queue's `ready` set (see `keys.rs`).
const BAND: f64 = 4_398_046_511_104.0;

impl RedisBackend {
    /// Fills the oldest pending job's and the next due job's times: the first member of each
    /// priority's band of the `ready` set, and the first of `scheduled` and `retry`, in one
    /// round trip of twelve O(log n) reads.
    async fn ready_times(&self, stats: &mut QueueStats) -> Result<()> {
        let waiting = [JobState::Pending, JobState::Scheduled, JobState::Retrying];
        if waiting.iter().all(|&s| stats.count(s) == 0) {
            return Ok(());
        }
        let k = self.keys(&stats.queue);
        let mut pipe = redis::pipe();
        for band in 0..10u8 {
            let low = f64::from(band) * BAND;
            pipe.zrangebyscore_limit_withscores(
                k.ready(),
                format!("{low:.0}"),
                format!("({:.0}", low + BAND),
                0,
                1,
            );
        }
        pipe.zrange_withscores(k.scheduled(), 0, 0);
        pipe.zrange_withscores(k.retry(), 0, 0);
        let firsts: Vec<Vec<(String, f64)>> =
            pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
        let earliest = |found: &mut Option<UnixMs>, at: f64| {
            let at = at as UnixMs;
            *found = Some(found.map_or(at, |f| f.min(at)));
        };
        for (band, first) in firsts.iter().take(10).enumerate() {
            if let Some((_, score)) = first.first() {
                earliest(&mut stats.oldest_pending_at, score - band as f64 * BAND);
            }
        }
        for first in firsts.iter().skip(10) {
            if let Some((_, score)) = first.first() {
                earliest(&mut stats.next_due_at, *score);
            }
        }
        Ok(())
    }
}

impl QueueAdmin for RedisBackend {
    async fn pause(&self, queue: &str) -> Result<()> {
        self.remember_queues([queue]).await?;
        let _: () = self
            .conn()
            .hset(self.keys(queue).meta(), "paused", "1")
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn resume(&self, queue: &str) -> Result<()> {
        self.remember_queues([queue]).await?;
        let keys = self.keys(queue);
        let _: () = redis::pipe()
            .hset(keys.meta(), "paused", "0")
            .zadd(keys.marker(), "w", 0)
            .query_async(&mut self.conn())
            .await
            .map_err(map_err)?;
        self.bump_work();
        Ok(())
    }

    async fn stats(&self) -> Result<Vec<QueueStats>> {
        let mut out = Vec::new();
        for queue in self.all_queues().await? {
            let k = self.keys(&queue);
            let mut pipe = redis::pipe();
            for key in [
                k.ready(),
                k.scheduled(),
                k.retry(),
                k.active(),
                k.dead(),
                &k.keys[7],
                &k.keys[8],
                &k.keys[9],
                &k.keys[10],
            ] {
                if key == k.active() {
                    // Every finite score: leases, not the keeper (see `keys::KEEPER_MARK`).
                    pipe.zcount(key, "-inf", "(+inf");
                } else {
                    pipe.zcard(key);
                }
            }
            pipe.hget(k.meta(), "paused");
            let (counts, paused): (Vec<u64>, Option<String>) = {
                let mut all: Vec<Value> =
                    pipe.query_async(&mut self.conn()).await.map_err(map_err)?;
                let paused = all.pop().map(|v| codec::text_of(&v));
                (
                    all.iter().map(|v| codec::int_of(v).max(0) as u64).collect(),
                    paused,
                )
            };
            let states = [
                JobState::Pending,
                JobState::Scheduled,
                JobState::Retrying,
                JobState::Active,
                JobState::Dead,
                JobState::Succeeded,
                JobState::Failed,
                JobState::Cancelled,
                JobState::Expired,
            ];
            let counts = states
                .iter()
                .zip(counts)
                .filter(|(_, n)| *n > 0)
                .map(|(s, n)| (s.as_str().to_string(), n))
                .collect();
            let mut stats = QueueStats {
                queue,
                paused: paused.as_deref() == Some("1"),
                counts,
                ..QueueStats::default()
            };
            self.ready_times(&mut stats).await?;
            out.push(stats);
        }
        Ok(out)
    }

    async fn purge(&self, queue: &str) -> Result<u64> {
        let keys = self.keys(queue);
        self.loop_script(&self.inner.scripts.purge, &keys, Vec::new())
            .await
    }

    async fn dead_letters(
        &self,
        queue: Option<String>,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<JobInfo>> {
        let queues = match queue {
            Some(q) => vec![q],
            None => self.all_queues().await?,
        };
        let mut entries: Vec<(f64, String, String)> = Vec::new();
        let want = (offset + limit) as isize;
        for q in queues {
            let k = self.keys(&q);
            let ids: Vec<(String, f64)> = self
                .conn()
                .zrevrange_withscores(k.dead(), 0, want - 1)
                .await
                .map_err(map_err)?;
            entries.extend(ids.into_iter().map(|(id, score)| (score, q.clone(), id)));
        }
        entries.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| b.2.cmp(&a.2)));
        let mut out = Vec::new();
        for (_, q, id) in entries.into_iter().skip(offset).take(limit) {
            let k = self.keys(&q);
            // A member that names no job (another process wrote it) is passed over.
            let Ok(jid) = id.parse::<JobId>() else {
                tracing::warn!(member = %id, "skipping a dead letter that is not a job id");
                continue;
            };
            // One record per call, its error kept as a value: a key that is not a hash shows
            // as unreadable instead of failing the listing.
            let reply: Value = redis::cmd("HGETALL")
                .arg(k.job(&id))
                .query_async(&mut self.conn())
                .await
                .or_else(|e| match e.code() {
                    Some("WRONGTYPE") => Ok(Value::Nil),
                    _ => Err(map_err(e)),
                })?;
            let info = match codec::record_of(reply) {
                Ok(fields) => codec::info_from_hash(jid, &q, fields, None, Some(JobState::Dead))?,
                Err(why) => Some(codec::foreign_info(jid, &q, JobState::Dead, &why)),
            };
            out.extend(info);
        }
        Ok(out)
    }

    async fn retry_dead(&self, ids: Option<Vec<JobId>>, now: UnixMs) -> Result<u64> {
        self.inner.config.role.allow_queues("retry dead letters")?;
        let mut retried = 0u64;
        for queue in self.all_queues().await? {
            let keys = self.keys(&queue);
            match &ids {
                None => loop {
                    let r: Vec<i64> = self
                        .invoke(
                            &self.inner.scripts.retry_dead,
                            &keys,
                            [num(now), b"*".to_vec()],
                        )
                        .await?;
                    retried += r.first().copied().unwrap_or(0) as u64;
                    if r.get(1).copied().unwrap_or(0) == 0 {
                        break;
                    }
                },
                Some(ids) => {
                    for chunk in ids.chunks(500) {
                        let mut args = vec![num(now)];
                        args.extend(chunk.iter().map(|i| i.to_string().into_bytes()));
                        let r: Vec<i64> = self
                            .invoke(&self.inner.scripts.retry_dead, &keys, args)
                            .await?;
                        retried += r.first().copied().unwrap_or(0) as u64;
                    }
                }
            }
        }
        if retried > 0 {
            self.bump_work();
        }
        Ok(retried)
    }

    async fn purge_dead(&self, queue: Option<String>) -> Result<u64> {
        let queues = match queue {
            Some(q) => vec![q],
            None => self.all_queues().await?,
        };
        let mut n = 0;
        for q in queues {
            n += self
                .loop_script(&self.inner.scripts.purge_dead, &self.keys(&q), Vec::new())
                .await?;
        }
        Ok(n)
    }
    async fn list_jobs(
        &self,
        query: JobQuery,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<JobPage> {
        self.browse(&query, cursor.as_deref(), limit).await
    }

    async fn delete_jobs(&self, queue: &str, ids: Vec<JobId>) -> Result<u64> {
        self.delete(queue, ids).await
    }
}
