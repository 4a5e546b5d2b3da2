//! [`Broker`] for Redis: enqueue, claim, heartbeat, complete, release, reap and cancel, each
//! one Lua script per queue (see `lua/`).

use crate::codec;
use crate::conn::map_err;
use crate::{num, RedisBackend, ENQUEUE_CHUNK, REAP_ROUNDS};
use celeriac_core::backend::{
    Broker, CancelOutcome, CancelReport, ClaimRequest, Claimed, Completion, LeaseRef, Outcome,
    ReapReport,
};
use celeriac_core::clock::{duration_ms, UnixMs};
use celeriac_core::error::{Error, ErrorKind, Result};
use celeriac_core::job::{Job, JobId};
use redis::Value;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

impl Broker for RedisBackend {
    fn queues_allowed(&self) -> Result<()> {
        self.inner.config.role.allow_queues("run a worker")
    }

    async fn enqueue(&self, jobs: Vec<Job>, now: UnixMs) -> Result<Vec<JobId>> {
        self.inner.config.role.allow_queues("enqueue jobs")?;
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let total = jobs.len();
        for job in &jobs {
            if job.queue.contains(['{', '}']) {
                return Err(Error::config(
                    "queue",
                    format!("`{}`: Redis queue names cannot contain braces", job.queue),
                ));
            }
        }
        let groups = group_by_queue(jobs, |j| &j.queue);
        self.remember_queues(groups.keys().map(String::as_str))
            .await?;
        let mut ids: Vec<Option<JobId>> = vec![None; total];
        for (queue, jobs) in groups {
            let keys = self.keys(&queue);
            for chunk in jobs.chunks(ENQUEUE_CHUNK) {
                let mut args = vec![num(now)];
                for (_, job) in chunk {
                    args.extend(codec::enqueue_args(job)?);
                }
                // Only the jobs another job stands for come back: `position, holder` pairs.
                let script = &self.inner.scripts.enqueue;
                let others: Vec<(usize, String)> = match &self.inner.replica_wait {
                    Some(wait) => wait.invoke(script, &keys, args).await?,
                    None => self.invoke(script, &keys, args).await?,
                };
                for (at, job) in chunk {
                    ids[*at] = Some(job.id);
                }
                for (pos, holder) in others {
                    let (at, _) = chunk.get(pos.wrapping_sub(1)).ok_or_else(|| {
                        Error::backend(
                            ErrorKind::GiveUp,
                            format!("the enqueue script named job {pos} of {}", chunk.len()),
                        )
                    })?;
                    ids[*at] = Some(holder.parse()?);
                }
            }
        }
        self.bump_work();
        ids.into_iter().map(|id| id.ok_or(Error::Closed)).collect()
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Claimed>> {
        self.inner.config.role.allow_queues("claim jobs")?;
        let lease_until = req.now.saturating_add(duration_ms(req.lease));
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        let limits: String = req
            .limits
            .iter()
            .map(|(task, l)| {
                let cap = l.concurrency.map(|c| c.to_string()).unwrap_or_default();
                let interval = l
                    .rate
                    .map(|r| r.interval_ms().to_string())
                    .unwrap_or_default();
                format!("{task}\t{cap}\t{interval}\n")
            })
            .collect();
        let mut out = Vec::with_capacity(req.limit);
        for queue in &req.queues {
            if out.len() >= req.limit {
                break;
            }
            let keys = self.keys(queue);
            let reply: Vec<Value> = self
                .invoke(
                    &self.inner.scripts.claim,
                    &keys,
                    [
                        num(req.now),
                        num((req.limit - out.len()) as i64),
                        num(lease_until),
                        req.worker.clone().into_bytes(),
                        keys.channel.clone().into_bytes(),
                        limits.clone().into_bytes(),
                        num(dead_ttl),
                    ],
                )
                .await?;
            let mut poisoned = Vec::new();
            for v in &reply {
                match codec::claimed_from(v, queue) {
                    Ok((job, token)) => out.push(Claimed {
                        job,
                        token,
                        lease_until,
                    }),
                    Err(Some(bad)) => poisoned.push(bad),
                    Err(None) => {
                        return Err(Error::backend(
                            ErrorKind::GiveUp,
                            format!("the claim script answered in an unexpected shape: {v:?}"),
                        ))
                    }
                }
            }
            if !poisoned.is_empty() {
                self.dead_letter_undecodable(&keys, poisoned, req.now)
                    .await?;
            }
        }
        Ok(out)
    }

    async fn heartbeat(
        &self,
        leases: Vec<LeaseRef>,
        until: UnixMs,
        _now: UnixMs,
    ) -> Result<Vec<LeaseRef>> {
        self.leases_answered(&self.inner.scripts.extend, leases, vec![num(until)])
            .await
    }

    async fn complete(&self, done: Vec<Completion>, now: UnixMs) -> Result<Vec<bool>> {
        let total = done.len();
        let mut applied = vec![false; total];
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        for (queue, group) in group_by_queue(done, |c| &c.lease.queue) {
            let keys = self.keys(&queue);
            let mut args = vec![num(now), num(dead_ttl), keys.channel.clone().into_bytes()];
            for (_, c) in &group {
                args.push(c.lease.id.to_string().into_bytes());
                args.push(c.lease.token.to_string().into_bytes());
                let (kind, v1, v2, v3): (&[u8], Vec<u8>, Vec<u8>, Vec<u8>) = match &c.outcome {
                    Outcome::Succeeded { result } => (
                        b"s",
                        result.clone().unwrap_or_default(),
                        if result.is_some() {
                            b"1".to_vec()
                        } else {
                            b"0".to_vec()
                        },
                        Vec::new(),
                    ),
                    Outcome::Retry { at, error } => (
                        b"r",
                        num(*at),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Failed { error } => (
                        b"f",
                        Vec::new(),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Dead { error } => (
                        b"d",
                        Vec::new(),
                        error.kind.clone().into_bytes(),
                        error.message.clone().into_bytes(),
                    ),
                    Outcome::Cancelled => (b"c", Vec::new(), Vec::new(), Vec::new()),
                    Outcome::Deferred { at } => (b"e", num(*at), Vec::new(), Vec::new()),
                };
                args.push(kind.to_vec());
                args.extend([v1, v2, v3]);
            }
            let flags: Vec<i64> = self
                .invoke(&self.inner.scripts.complete, &keys, args)
                .await?;
            for ((i, _), flag) in group.iter().zip(flags) {
                applied[*i] = flag == 1;
            }
        }
        Ok(applied)
    }

    async fn release(&self, leases: Vec<LeaseRef>, _now: UnixMs) -> Result<u64> {
        let mut n = 0;
        for (queue, group) in group_by_queue(leases, |l| &l.queue) {
            let keys = self.keys(&queue);
            let args = lease_args(&group);
            let k: i64 = self
                .invoke(&self.inner.scripts.release, &keys, args)
                .await?;
            n += k as u64;
        }
        if n > 0 {
            self.bump_work();
        }
        Ok(n)
    }

    async fn reap(&self, now: UnixMs) -> Result<ReapReport> {
        let mut report = ReapReport::default();
        for queue in self.all_queues().await? {
            self.reap_queue(&queue, now, &mut report).await?;
        }
        if report.requeued > 0 {
            self.bump_work();
        }
        Ok(report)
    }

    async fn next_due(&self, queues: Vec<String>) -> Result<Option<UnixMs>> {
        let mut earliest: Option<UnixMs> = None;
        for queue in queues {
            let keys = self.keys(&queue);
            type Heads = Vec<(String, f64)>;
            let (a, b): (Heads, Heads) = redis::pipe()
                .zrange_withscores(keys.scheduled(), 0, 0)
                .zrange_withscores(keys.retry(), 0, 0)
                .query_async(&mut self.conn())
                .await
                .map_err(map_err)?;
            for (_, score) in a.into_iter().chain(b) {
                let t = score as i64;
                earliest = Some(earliest.map_or(t, |e| e.min(t)));
            }
        }
        Ok(earliest)
    }

    async fn wait_for_work(&self, queues: &[String], since: u64, max: Duration) {
        let mut rx = self.inner.work.subscribe();
        if *rx.borrow_and_update() != since {
            return;
        }
        self.ensure_watchers(queues);
        self.inner.waiting.send_modify(|n| *n += 1);
        let _ = tokio::time::timeout(max, rx.changed()).await;
        self.inner.waiting.send_modify(|n| *n = n.saturating_sub(1));
    }

    fn work_epoch(&self) -> u64 {
        *self.inner.work.borrow()
    }

    fn wakes_across_processes(&self) -> bool {
        true
    }

    async fn cancel(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        self.cancel_job(id, now).await
    }

    async fn cancel_requested(&self, leases: Vec<LeaseRef>) -> Result<Vec<LeaseRef>> {
        self.leases_answered(&self.inner.scripts.cancel_requested, leases, Vec::new())
            .await
    }
}

impl RedisBackend {
    /// Reaps one queue: one script call per batch, again while a batch came back full (at
    /// most [`REAP_ROUNDS`] calls, so records that keep falling due at `now` cannot hold the
    /// reaper on one queue; the next reap goes on).
    async fn reap_queue(&self, queue: &str, now: UnixMs, report: &mut ReapReport) -> Result<()> {
        let keys = self.keys(queue);
        let dead_ttl = duration_ms(self.inner.config.dead_ttl);
        let dead_max = i64::try_from(self.inner.config.dead_max).unwrap_or(i64::MAX);
        for _ in 0..REAP_ROUNDS {
            let reply: Value = self
                .invoke(
                    &self.inner.scripts.reap,
                    &keys,
                    [
                        num(now),
                        num(dead_ttl),
                        keys.channel.clone().into_bytes(),
                        num(dead_max),
                    ],
                )
                .await?;
            let round = codec::reap_round(reply)?;
            report.requeued += round.requeued;
            report.dead += round.dead;
            report.swept += round.swept;
            report.dead_dropped += round.dropped;
            celeriac_core::retention::count_dead_letters_dropped(queue, round.dropped);
            report.ended.extend(round.ended);
            if !round.more {
                break;
            }
        }
        Ok(())
    }
}

impl RedisBackend {
    async fn cancel_job(&self, id: JobId, now: UnixMs) -> Result<CancelReport> {
        let Some(crate::Found { queue, .. }) = self.locate(id).await? else {
            return Ok(CancelReport {
                outcome: CancelOutcome::NotFound,
                ended: None,
            });
        };
        let keys = self.keys(&queue);
        let reply: Value = self
            .invoke(
                &self.inner.scripts.cancel,
                &keys,
                [
                    id.to_string().into_bytes(),
                    num(now),
                    keys.channel.clone().into_bytes(),
                ],
            )
            .await?;
        codec::cancel_report(reply, id)
    }

    /// Runs a per-queue script over leases (`id, token` pairs after `head`) that answers with
    /// ids, and returns the leases it named.
    async fn leases_answered(
        &self,
        script: &redis::Script,
        leases: Vec<LeaseRef>,
        head: Vec<Vec<u8>>,
    ) -> Result<Vec<LeaseRef>> {
        let mut out = Vec::new();
        for (queue, group) in group_by_queue(leases, |l| &l.queue) {
            let keys = self.keys(&queue);
            let mut args = head.clone();
            args.extend(lease_args(&group));
            let named: Vec<String> = self.invoke(script, &keys, args).await?;
            let named: HashSet<String> = named.into_iter().collect();
            out.extend(
                group
                    .into_iter()
                    .map(|(_, l)| l)
                    .filter(|l| named.contains(&l.id.to_string())),
            );
        }
        Ok(out)
    }
}

fn group_by_queue<T>(
    items: Vec<T>,
    queue_of: impl Fn(&T) -> &str,
) -> BTreeMap<String, Vec<(usize, T)>> {
    let mut groups: BTreeMap<String, Vec<(usize, T)>> = BTreeMap::new();
    for (i, item) in items.into_iter().enumerate() {
        groups
            .entry(queue_of(&item).to_string())
            .or_default()
            .push((i, item));
    }
    groups
}

/// The `id, token` argument pairs of leases.
fn lease_args(group: &[(usize, LeaseRef)]) -> Vec<Vec<u8>> {
    group
        .iter()
        .flat_map(|(_, l)| {
            [
                l.id.to_string().into_bytes(),
                l.token.to_string().into_bytes(),
            ]
        })
        .collect()
}
