//! Where the load of a benchmark lands on a Redis Cluster: every master's counters (`INFO`,
//! as [`RedisProbe`] reads one server's) just before and just after each phase, and which of
//! the benchmark's queues each master serves.
//!
//! The masters are found with `CLUSTER NODES` on a seed node of the URL, and the slot of a
//! queue (its keys carry the hash tag `{<queue>}`) with `CLUSTER KEYSLOT`, both asked of the
//! server.

use crate::bench::redis_info::{RedisProbe, RedisReading};
use serde::Serialize;

/// A master of a Redis Cluster, as `CLUSTER NODES` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMaster {
    /// The node's id.
    pub id: String,
    /// Its host, as announced (an IPv6 address without brackets).
    pub host: String,
    /// Its client port.
    pub port: u16,
    /// The slot ranges it serves, inclusive.
    pub slots: Vec<(u16, u16)>,
}

impl ClusterMaster {
    /// `host:port` (`[host]:port` for an IPv6 address).
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Whether it serves `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    /// Its slot ranges as `0-5460,7000`.
    pub fn slot_text(&self) -> String {
        let ranges: Vec<String> = self
            .slots
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        ranges.join(",")
    }
}

/// The masters that serve slots, from the text of `CLUSTER NODES`, in slot order. A
/// master's empty address (a node that does not know its own) becomes `seed_host`; a node
/// marked `fail` or `noaddr` is left out, and so are the slots being imported or migrated
/// (`[1234->-id]`).
pub fn parse_cluster_nodes(text: &str, seed_host: &str) -> Result<Vec<ClusterMaster>, String> {
    let mut masters = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(id), Some(addr), Some(flags)) = (fields.first(), fields.get(1), fields.get(2))
        else {
            return Err(format!("CLUSTER NODES has a short line: `{line}`"));
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.contains(&"fail") || flags.contains(&"noaddr") {
            continue;
        }
        // `ip:port@cport[,hostname]`
        let hostport = addr.split(['@', ',']).next().unwrap_or(addr);
        let (host, port) = hostport
            .rsplit_once(':')
            .ok_or_else(|| format!("CLUSTER NODES: `{addr}` has no port"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("CLUSTER NODES: `{addr}` has no port number"))?;
        let host = if host.is_empty() { seed_host } else { host };
        let mut slots = Vec::new();
        for s in fields.iter().skip(8).filter(|s| !s.starts_with('[')) {
            let range = match s.split_once('-') {
                Some((a, b)) => a.parse().ok().zip(b.parse().ok()),
                None => s.parse().ok().map(|a| (a, a)),
            };
            slots.push(range.ok_or_else(|| format!("CLUSTER NODES: `{s}` is not a slot range"))?);
        }
        if slots.is_empty() {
            continue;
        }
        slots.sort_unstable();
        masters.push(ClusterMaster {
            id: (*id).to_string(),
            host: host.trim_start_matches('[').trim_end_matches(']').into(),
            port,
            slots,
        });
    }
    masters.sort_by_key(|m| m.slots.first().copied());
    Ok(masters)
}

/// One connection to each master of a Cluster, to read its counters, and the slot of each
/// of the benchmark's queues.
pub struct ClusterProbe {
    masters: Vec<(ClusterMaster, RedisProbe)>,
    /// Each queue's slot, in the order of the queues given to [`connect`](Self::connect).
    queue_slots: Vec<(String, u16)>,
}

#[cfg(feature = "redis")]
impl ClusterProbe {
    /// Connects to a seed node of a `redis+cluster://` or `rediss+cluster://` URL (the first
    /// that answers), lists the masters and the slots of `queues`, and connects to each
    /// master with the URL's credentials and TLS. The error is one line to show in place of
    /// the figures, without the password.
    pub async fn connect(url: &str, queues: &[String]) -> Result<Self, String> {
        use celeriac::redis::{RedisConfig, Topology};
        let secrets = celeriac_core::redact::url_secrets(url);
        let config = RedisConfig::from_url(url).map_err(|e| e.to_string())?;
        let Topology::Cluster { nodes: seeds } = &config.topology else {
            return Err("not a Redis Cluster URL".into());
        };
        let mut last = "the URL names no node".to_string();
        for seed in seeds {
            let Some((host, port)) = split_addr(seed) else {
                last = format!("`{seed}` is not host:port");
                continue;
            };
            let info = node_info(&config, host, port)?;
            let mut probe = match RedisProbe::connect_to(info, secrets.clone()).await {
                Ok(p) => p,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            let text: String = probe
                .query(redis::cmd("CLUSTER").arg("NODES"))
                .await
                .map_err(|e| format!("CLUSTER NODES failed: {e}"))?;
            let masters = parse_cluster_nodes(&text, host)?;
            if masters.is_empty() {
                return Err("CLUSTER NODES names no master serving slots".into());
            }
            let mut queue_slots = Vec::with_capacity(queues.len());
            for q in queues {
                let slot: u16 = probe
                    .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(format!("{{{q}}}")))
                    .await
                    .map_err(|e| format!("CLUSTER KEYSLOT failed: {e}"))?;
                queue_slots.push((q.clone(), slot));
            }
            let mut connected = Vec::with_capacity(masters.len());
            for m in masters {
                let info = node_info(&config, &m.host, m.port)?;
                let p = RedisProbe::connect_to(info, secrets.clone())
                    .await
                    .map_err(|e| format!("{e} (master {})", m.address()))?;
                connected.push((m, p));
            }
            return Ok(ClusterProbe {
                masters: connected,
                queue_slots,
            });
        }
        Err(last)
    }

    /// Every master's counters, in the order of [`masters`](Self::masters).
    pub async fn read(&mut self) -> Result<Vec<RedisReading>, String> {
        let mut readings = Vec::with_capacity(self.masters.len());
        for (m, probe) in &mut self.masters {
            readings.push(
                probe
                    .read()
                    .await
                    .map_err(|e| format!("{e} (master {})", m.address()))?,
            );
        }
        Ok(readings)
    }
}

#[cfg(not(feature = "redis"))]
impl ClusterProbe {
    /// Always refused: this build has no Redis client.
    pub async fn connect(_url: &str, _queues: &[String]) -> Result<Self, String> {
        Err("this build has no Redis support".into())
    }

    /// Never called: there is no probe.
    pub async fn read(&mut self) -> Result<Vec<RedisReading>, String> {
        Err("this build has no Redis support".into())
    }
}

impl ClusterProbe {
    /// The masters, in slot order.
    pub fn masters(&self) -> impl Iterator<Item = &ClusterMaster> {
        self.masters.iter().map(|(m, _)| m)
    }

    /// The queues each master serves (by the slot of `{<queue>}`), in the order of
    /// [`masters`](Self::masters).
    pub fn queues_of_masters(&self) -> Vec<Vec<String>> {
        self.masters()
            .map(|m| {
                self.queue_slots
                    .iter()
                    .filter(|(_, slot)| m.owns(*slot))
                    .map(|(q, _)| q.clone())
                    .collect()
            })
            .collect()
    }
}

/// `host` and `port` of `host:port` (`[v6]:port` too).
#[cfg(feature = "redis")]
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// How to reach one node: the URL's TLS and credentials at `host:port`.
#[cfg(feature = "redis")]
fn node_info(
    config: &celeriac::redis::RedisConfig,
    host: &str,
    port: u16,
) -> Result<redis::ConnectionInfo, String> {
    let addr = if config.tls {
        redis::ConnectionAddr::TcpTls {
            host: host.to_string(),
            port,
            insecure: false,
            tls_params: None,
        }
    } else {
        redis::ConnectionAddr::Tcp(host.to_string(), port)
    };
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(u) = &config.username {
        settings = settings.set_username(u);
    }
    if let Some(p) = &config.password {
        settings = settings.set_password(p);
    }
    redis::IntoConnectionInfo::into_connection_info(addr)
        .map(|info| info.set_redis_settings(settings))
        .map_err(|e| format!("cannot connect to {host}:{port} to read INFO: {e}"))
}

/// What the benchmark cost one master of a Cluster.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeCost {
    /// `host:port`.
    pub address: String,
    /// The slots it serves (`0-5460`).
    pub slots: String,
    /// The benchmark's queues whose slot it serves.
    pub queues: Vec<String>,
    /// The backlog's jobs in those queues.
    pub jobs: u64,
    /// Its CPU (user and system) in the enqueue phase, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_enqueue: Option<f64>,
    /// Its CPU in the processing phase, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_process: Option<f64>,
    /// Its enqueue CPU divided by the jobs of its queues, µs (none without jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_job_enqueue: Option<f64>,
    /// Its processing CPU divided by the jobs of its queues, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_job_process: Option<f64>,
    /// Its `used_memory` with the backlog queued minus before the enqueue, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub used_memory_delta_bytes: Option<i64>,
}

/// One master's readings around the two phases (each `None` when not made).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeReadings<'a> {
    /// Before and after the enqueue.
    pub enqueue: Option<(&'a RedisReading, &'a RedisReading)>,
    /// Before and after the processing.
    pub process: Option<(&'a RedisReading, &'a RedisReading)>,
}

impl NodeCost {
    /// The cost of `master`, serving `queues` that hold `jobs` of the backlog.
    pub fn of(master: &ClusterMaster, queues: Vec<String>, jobs: u64, r: NodeReadings) -> Self {
        let cpu = |p: Option<(&RedisReading, &RedisReading)>| {
            p.map(|(before, after)| (after.cpu_us - before.cpu_us).max(0.0))
        };
        let per_job = |us: Option<f64>| us.filter(|_| jobs > 0).map(|us| us / jobs as f64);
        let cpu_us_enqueue = cpu(r.enqueue);
        let cpu_us_process = cpu(r.process);
        NodeCost {
            address: master.address(),
            slots: master.slot_text(),
            queues,
            jobs,
            cpu_us_enqueue,
            cpu_us_process,
            cpu_us_per_job_enqueue: per_job(cpu_us_enqueue),
            cpu_us_per_job_process: per_job(cpu_us_process),
            used_memory_delta_bytes: r.enqueue.and_then(|(b, a)| {
                Some(i64::try_from(a.used_memory?).ok()? - i64::try_from(b.used_memory?).ok()?)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CLUSTER NODES` of a 3-master cluster with a replica, a failed master, a master without
    /// slots and a slot being migrated, as Redis 7 writes it.
    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@40004 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected\n\
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@40002,node-b master - 0 1426238316232 2 connected 5461-10922\n\
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@40003 master - 0 1426238318243 3 connected 10923-16383 [5000->-67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1]\n\
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@40005 master,fail - 1426238316232 0 5 disconnected 7000\n\
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@40006 master - 0 1426238316232 6 connected\n\
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca :30001@40001 myself,master - 0 0 1 connected 0-5000 5001-5460\n";

    #[test]
    fn cluster_nodes_gives_the_masters_that_serve_slots_in_slot_order() {
        let m = parse_cluster_nodes(NODES, "10.0.0.9").expect("parses");
        let addrs: Vec<String> = m.iter().map(ClusterMaster::address).collect();
        assert_eq!(
            addrs,
            ["10.0.0.9:30001", "127.0.0.1:30002", "127.0.0.1:30003"]
        );
        assert_eq!(m[0].slots, [(0, 5000), (5001, 5460)]);
        assert_eq!(m[0].slot_text(), "0-5000,5001-5460");
        assert_eq!(m[1].id, "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1");
        assert_eq!(
            m[2].slots,
            [(10923, 16383)],
            "the migrating slot is left out"
        );
        assert!(m[0].owns(0) && m[0].owns(5460) && !m[0].owns(5461));
        assert!(m[2].owns(16383) && !m[2].owns(5000));
    }

    #[test]
    fn cluster_nodes_takes_ipv6_and_single_slots_and_refuses_garbage() {
        let m = parse_cluster_nodes(
            "abc ::1:7000@17000 master - 0 0 1 connected 42 100-200\n",
            "h",
        )
        .expect("parses");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].address(), "[::1]:7000");
        assert_eq!(m[0].slots, [(42, 42), (100, 200)]);
        assert_eq!(m[0].slot_text(), "42,100-200");
        assert!(parse_cluster_nodes("abc 1.2.3.4:x@1 master - 0 0 1 connected 1", "h").is_err());
        assert!(parse_cluster_nodes("abc 1.2.3.4:1@2 master - 0 0 1 connected a-b", "h").is_err());
        assert!(parse_cluster_nodes("abc", "h").is_err());
        assert_eq!(parse_cluster_nodes("", "h"), Ok(Vec::new()));
    }

    fn reading(cpu_us: f64, used_memory: u64) -> RedisReading {
        RedisReading {
            cpu_us,
            used_memory: Some(used_memory),
            ..RedisReading::default()
        }
    }

    #[test]
    fn a_node_costs_its_cpu_over_the_jobs_of_its_queues() {
        let master = ClusterMaster {
            id: "x".into(),
            host: "127.0.0.1".into(),
            port: 7000,
            slots: vec![(0, 5460)],
        };
        let (a, b, c) = (
            reading(1000.0, 5000),
            reading(3000.0, 9000),
            reading(9000.0, 5500),
        );
        let r = NodeReadings {
            enqueue: Some((&a, &b)),
            process: Some((&b, &c)),
        };
        let cost = NodeCost::of(&master, vec!["q0".into(), "q3".into()], 100, r);
        assert_eq!(cost.address, "127.0.0.1:7000");
        assert_eq!(cost.slots, "0-5460");
        assert_eq!(cost.cpu_us_enqueue, Some(2000.0));
        assert_eq!(cost.cpu_us_process, Some(6000.0));
        assert_eq!(cost.cpu_us_per_job_enqueue, Some(20.0));
        assert_eq!(cost.cpu_us_per_job_process, Some(60.0));
        assert_eq!(cost.used_memory_delta_bytes, Some(4000));
        let idle = NodeCost::of(
            &master,
            Vec::new(),
            0,
            NodeReadings {
                enqueue: Some((&a, &b)),
                process: None,
            },
        );
        assert_eq!(idle.cpu_us_enqueue, Some(2000.0));
        assert_eq!(
            idle.cpu_us_per_job_enqueue, None,
            "no jobs, no figure per job"
        );
        assert_eq!(idle.cpu_us_process, None);
    }

    #[test]
    fn readings_add_up() {
        let mut a = reading(10.0, 100);
        a.commands.insert("evalsha".into(), (3, 30));
        a.own_infos = 2;
        let mut b = reading(5.0, 50);
        b.commands.insert("evalsha".into(), (1, 10));
        b.commands.insert("hset".into(), (4, 4));
        b.own_infos = 1;
        let s = RedisReading::sum(&[a, b.clone()]);
        assert_eq!(s.cpu_us, 15.0);
        assert_eq!(s.used_memory, Some(150));
        assert_eq!(s.commands.get("evalsha"), Some(&(4, 40)));
        assert_eq!(s.commands.get("hset"), Some(&(4, 4)));
        assert_eq!(s.own_infos, 3);
        b.used_memory = None;
        assert_eq!(RedisReading::sum(&[reading(1.0, 1), b]).used_memory, None);
    }
}
