//! Where Redis's time and memory go during a benchmark phase: the server's counters read
//! just before and just after the phase (`INFO cpu`: `used_cpu_sys` + `used_cpu_user`;
//! `INFO memory`: `used_memory`; `INFO commandstats`: calls and µs per command), and their
//! differences. `CONFIG RESETSTAT` is never sent: it would reset figures others read.
//!
//! The counters are the whole server's: whatever else it does during the phase (other
//! clients, its own background work such as expiring keys) is counted too.

use serde::Serialize;
use std::collections::BTreeMap;

/// One reading of a Redis server's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisReading {
    /// CPU of the server's process since it started, user and system, µs.
    pub cpu_us: f64,
    /// `used_memory`, bytes (`None` when the reply had no memory section).
    pub used_memory: Option<u64>,
    /// Per command (`evalsha`, `hset`, `client|setname`...): calls and µs spent in it.
    pub commands: BTreeMap<String, (u64, u64)>,
    /// `INFO` calls the reading's probe had sent before this one (they show up in `info`).
    pub own_infos: u64,
}

impl RedisReading {
    /// Reads the text of `INFO` with the `cpu` section, and with `memory` and `commandstats`
    /// when present; `None` without `used_cpu_sys` and `used_cpu_user`.
    pub fn parse(info: &str) -> Option<Self> {
        let mut sys = None;
        let mut user = None;
        let mut reading = RedisReading::default();
        for line in info.lines() {
            let Some((name, value)) = line.trim_end().split_once(':') else {
                continue;
            };
            match name {
                "used_cpu_sys" => sys = value.parse::<f64>().ok(),
                "used_cpu_user" => user = value.parse::<f64>().ok(),
                "used_memory" => reading.used_memory = value.parse().ok(),
                _ => {
                    if let Some(command) = name.strip_prefix("cmdstat_") {
                        let field = |key: &str| {
                            value.split(',').find_map(|kv| {
                                let (k, v) = kv.split_once('=')?;
                                (k == key).then(|| v.parse::<u64>().ok()).flatten()
                            })
                        };
                        if let (Some(calls), Some(usec)) = (field("calls"), field("usec")) {
                            reading.commands.insert(command.to_string(), (calls, usec));
                        }
                    }
                }
            }
        }
        reading.cpu_us = (sys? + user?) * 1e6;
        Some(reading)
    }
}

/// What one command (or script call: `evalsha`, `eval`, `fcall`) cost Redis in a phase.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CommandCost {
    /// The command as `INFO commandstats` names it, lowercase (`client|setname` for a
    /// subcommand).
    pub command: String,
    /// Calls in the phase.
    pub calls: u64,
    /// µs Redis spent in those calls.
    pub usec: u64,
    /// Calls per job.
    pub calls_per_job: f64,
    /// µs per call.
    pub usec_per_call: f64,
    /// µs per job.
    pub usec_per_job: f64,
}

/// What a phase of `jobs` jobs cost Redis, from a reading before and one after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseCost {
    /// Redis CPU per job, µs.
    pub cpu_us_per_job: f64,
    /// `used_memory` after minus before, per job, bytes (`None` without memory figures).
    pub bytes_per_job: Option<f64>,
    /// Every command called in the phase, the costliest first. The probe's own `INFO` calls
    /// are left out.
    pub commands: Vec<CommandCost>,
}

impl PhaseCost {
    /// The difference of two readings, divided by `jobs`.
    pub fn between(before: &RedisReading, after: &RedisReading, jobs: u64) -> Self {
        let n = jobs.max(1) as f64;
        let own = after.own_infos.saturating_sub(before.own_infos);
        let mut commands: Vec<CommandCost> = after
            .commands
            .iter()
            .filter_map(|(name, &(calls, usec))| {
                let (calls0, usec0) = before.commands.get(name).copied().unwrap_or((0, 0));
                let mut calls = calls.saturating_sub(calls0);
                let mut usec = usec.saturating_sub(usec0);
                if name == "info" && own > 0 && calls > 0 {
                    // The probe's own readings: take out their share of the time too.
                    let mine = own.min(calls);
                    usec -= usec * mine / calls;
                    calls -= mine;
                }
                (calls > 0).then(|| CommandCost {
                    command: name.clone(),
                    calls,
                    usec,
                    calls_per_job: calls as f64 / n,
                    usec_per_call: usec as f64 / calls as f64,
                    usec_per_job: usec as f64 / n,
                })
            })
            .collect();
        commands.sort_by(|a, b| b.usec.cmp(&a.usec).then(a.command.cmp(&b.command)));
        let bytes_per_job = match (before.used_memory, after.used_memory) {
            (Some(b), Some(a)) => Some((a as f64 - b as f64) / n),
            _ => None,
        };
        PhaseCost {
            cpu_us_per_job: (after.cpu_us - before.cpu_us).max(0.0) / n,
            bytes_per_job,
            commands,
        }
    }
}

impl RedisReading {
    /// The readings of several servers taken together: CPU, memory and per-command
    /// counters added up (`used_memory` only when every reading has it).
    pub fn sum(readings: &[RedisReading]) -> RedisReading {
        let mut total = RedisReading {
            used_memory: Some(0),
            ..RedisReading::default()
        };
        for r in readings {
            total.cpu_us += r.cpu_us;
            total.used_memory = match (total.used_memory, r.used_memory) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            for (name, &(calls, usec)) in &r.commands {
                let e = total.commands.entry(name.clone()).or_insert((0, 0));
                e.0 += calls;
                e.1 += usec;
            }
            total.own_infos += r.own_infos;
        }
        total
    }
}

/// Whether a backend URL names a Redis (standalone, TLS, Cluster or Sentinel).
pub fn is_redis_url(url: &str) -> bool {
    let scheme = url.split(':').next().unwrap_or("");
    matches!(
        scheme,
        "redis"
            | "rediss"
            | "redis+cluster"
            | "rediss+cluster"
            | "redis+sentinel"
            | "rediss+sentinel"
    )
}

/// A connection of its own to one Redis server, to read its counters.
#[cfg(feature = "redis")]
pub struct RedisProbe {
    conn: redis::aio::MultiplexedConnection,
    secrets: Vec<String>,
    /// `INFO` calls sent so far.
    sent: u64,
    /// The server takes several sections in one `INFO` (Redis 7 and later).
    multi_section: bool,
}

/// How long one reading may take before the figures are given up.
#[cfg(feature = "redis")]
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[cfg(feature = "redis")]
impl RedisProbe {
    /// Connects to the server of a `redis://` or `rediss://` URL (its query parameters are
    /// Celeriac's and left out). A Cluster or Sentinel URL is refused: its counters are per
    /// node. The error is one line to show in place of the figures, without the password.
    pub async fn connect(url: &str) -> Result<Self, String> {
        let secrets = celeriac_core::redact::url_secrets(url);
        let scheme = url.split(':').next().unwrap_or("");
        if scheme != "redis" && scheme != "rediss" {
            return Err(format!(
                "Redis figures are read from one server: not on a {scheme}:// URL"
            ));
        }
        let base = url.split('?').next().unwrap_or(url);
        let info = redis::IntoConnectionInfo::into_connection_info(base).map_err(|e| {
            celeriac_core::redact::text(&format!("cannot connect to read INFO: {e}"), &secrets)
        })?;
        Self::connect_to(info, secrets).await
    }

    /// Connects to the server `info` names; `secrets` are masked in every message.
    pub(crate) async fn connect_to(
        info: redis::ConnectionInfo,
        secrets: Vec<String>,
    ) -> Result<Self, String> {
        let fail = |e: redis::RedisError| {
            celeriac_core::redact::text(&format!("cannot connect to read INFO: {e}"), &secrets)
        };
        let client = redis::Client::open(info).map_err(fail)?;
        let conn = tokio::time::timeout(READ_TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| "cannot connect to read INFO: timed out".to_string())?
            .map_err(fail)?;
        Ok(RedisProbe {
            conn,
            secrets,
            sent: 0,
            multi_section: true,
        })
    }

    /// Sends another command than `INFO` (`CLUSTER NODES`, `CLUSTER KEYSLOT`); its failure
    /// is one line, without the password.
    pub(crate) async fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> Result<T, String> {
        tokio::time::timeout(READ_TIMEOUT, cmd.query_async::<T>(&mut self.conn))
            .await
            .map_err(|_| "the command timed out".to_string())?
            .map_err(|e| celeriac_core::redact::text(&e.to_string(), &self.secrets))
    }

    /// Sends `INFO` with these arguments.
    async fn info(&mut self, sections: &[&str]) -> Result<String, String> {
        let mut cmd = redis::cmd("INFO");
        for s in sections {
            cmd.arg(*s);
        }
        let reply = tokio::time::timeout(READ_TIMEOUT, cmd.query_async::<String>(&mut self.conn))
            .await
            .map_err(|_| "INFO timed out".to_string())?;
        // A refused command is counted by the server as well (`rejected_calls`, not `calls`),
        // so only what ran counts as the probe's own.
        if reply.is_ok() {
            self.sent += 1;
        }
        reply.map_err(|e| {
            let said = celeriac_core::redact::text(&e.to_string(), &self.secrets);
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoPerm)
                || said.contains("NOPERM")
            {
                format!("the Redis user may not run INFO ({said}); grant it +info to see them")
            } else {
                format!("INFO failed: {said}")
            }
        })
    }

    /// CPU, memory and per-command counters, in one `INFO` (`INFO all` where the server
    /// takes one section at a time).
    pub async fn read(&mut self) -> Result<RedisReading, String> {
        let own_infos = self.sent;
        let text = if self.multi_section {
            match self.info(&["cpu", "memory", "commandstats"]).await {
                Ok(t) => t,
                Err(e) if e.contains("may not run INFO") => return Err(e),
                Err(_) => {
                    self.multi_section = false;
                    self.info(&["all"]).await?
                }
            }
        } else {
            self.info(&["all"]).await?
        };
        let mut reading =
            RedisReading::parse(&text).ok_or_else(|| "INFO has no CPU figures".to_string())?;
        reading.own_infos = own_infos;
        Ok(reading)
    }

    /// The server's CPU so far (user and system), µs, from `INFO cpu` alone.
    pub async fn cpu_us(&mut self) -> Result<f64, String> {
        let text = self.info(&["cpu"]).await?;
        RedisReading::parse(&text)
            .map(|r| r.cpu_us)
            .ok_or_else(|| "INFO cpu has no CPU figures".to_string())
    }
}

/// Stands in for the probe without the `redis` feature: never connects.
#[cfg(not(feature = "redis"))]
pub struct RedisProbe;

#[cfg(not(feature = "redis"))]
impl RedisProbe {
    /// Always refused: this build has no Redis client.
    pub async fn connect(_url: &str) -> Result<Self, String> {
        Err("this build has no Redis support".into())
    }

    /// Never called: there is no probe.
    pub async fn read(&mut self) -> Result<RedisReading, String> {
        Err("this build has no Redis support".into())
    }

    /// Never called: there is no probe.
    pub async fn cpu_us(&mut self) -> Result<f64, String> {
        Err("this build has no Redis support".into())
    }
}

/// Redis CPU (user and system, ms) that `work` cost, from `INFO cpu` read just before and
/// just after it; `None` off a plain `redis://` URL.
pub(crate) async fn cpu_ms_of<F, Fut>(
    url: &str,
    work: F,
) -> Result<Option<f64>, crate::support::CliError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), crate::support::CliError>>,
{
    if !cfg!(feature = "redis") || !url.starts_with("redis://") {
        work().await?;
        return Ok(None);
    }
    let mut probe = RedisProbe::connect(url)
        .await
        .map_err(crate::support::CliError)?;
    let before = probe.cpu_us().await.map_err(crate::support::CliError)?;
    work().await?;
    let after = probe.cpu_us().await.map_err(crate::support::CliError)?;
    Ok(Some((after - before).max(0.0) / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# CPU\r\nused_cpu_sys:1.500000\r\nused_cpu_user:2.250000\r\n\
        used_cpu_sys_children:9.000000\r\n# Memory\r\nused_memory:1000000\r\n\
        used_memory_human:976.56K\r\n# Commandstats\r\n\
        cmdstat_evalsha:calls=10,usec=500,usec_per_call=50.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=300,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# CPU\r\nused_cpu_sys:1.600000\r\nused_cpu_user:2.350000\r\n\
        used_cpu_sys_children:99.000000\r\n# Memory\r\nused_memory:1445000\r\n\
        # Commandstats\r\n\
        cmdstat_evalsha:calls=1010,usec=20500,usec_per_call=20.30,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=4,usec=400,usec_per_call=100.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_client|setname:calls=2,usec=4,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn a_reading_has_cpu_memory_and_commands() {
        let r = RedisReading::parse(BEFORE).expect("parses");
        assert!((r.cpu_us - 3_750_000.0).abs() < 1e-3, "{r:?}");
        assert_eq!(r.used_memory, Some(1_000_000));
        assert_eq!(r.commands.get("evalsha"), Some(&(10, 500)));
        assert_eq!(r.commands.len(), 2);
        assert_eq!(RedisReading::parse("# Memory\r\nused_memory:5\r\n"), None);
    }

    #[test]
    fn a_phase_costs_the_differences_per_job_without_the_probes_info() {
        let before = RedisReading {
            own_infos: 1,
            ..RedisReading::parse(BEFORE).expect("parses")
        };
        let after = RedisReading {
            own_infos: 2,
            ..RedisReading::parse(AFTER).expect("parses")
        };
        let c = PhaseCost::between(&before, &after, 1000);
        assert!((c.cpu_us_per_job - 200.0).abs() < 1e-6, "{c:?}");
        assert_eq!(c.bytes_per_job, Some(445.0));
        let names: Vec<&str> = c.commands.iter().map(|c| c.command.as_str()).collect();
        // The one `info` call in between was the probe's own: left out.
        assert_eq!(names, ["evalsha", "client|setname"], "{c:?}");
        let e = &c.commands[0];
        assert_eq!((e.calls, e.usec), (1000, 20_000));
        assert!((e.calls_per_job - 1.0).abs() < 1e-9);
        assert!((e.usec_per_call - 20.0).abs() < 1e-9);
        assert!((e.usec_per_job - 20.0).abs() < 1e-9);
    }

    #[test]
    fn redis_urls_are_told_from_others() {
        for url in [
            "redis://127.0.0.1:1",
            "rediss://h:1",
            "redis+cluster://a:1,b:2",
            "rediss+sentinel://s:1/m",
        ] {
            assert!(is_redis_url(url), "{url}");
        }
        for url in ["sqlite://x.db", "sqlite::memory:", "postgres://x"] {
            assert!(!is_redis_url(url), "{url}");
        }
    }
}
