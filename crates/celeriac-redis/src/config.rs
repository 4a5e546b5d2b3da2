//! Backend URLs and settings.

use celeriac_core::backend::StoreRole;
use celeriac_core::error::{Error, Result};
use celeriac_core::redact;
use celeriac_core::retention::DEFAULT_DEAD_MAX;
use std::path::PathBuf;
use std::time::Duration;

/// How the backend reaches Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Topology {
    /// One server (`redis://`, `rediss://`).
    Standalone {
        /// `host:port`.
        addr: String,
        /// Database number.
        db: i64,
    },
    /// Redis Cluster (`redis+cluster://h1:p1,h2:p2`): any reachable nodes; the rest are discovered.
    Cluster {
        /// Seed nodes, `host:port`.
        nodes: Vec<String>,
    },
    /// Sentinel (`redis+sentinel://s1:p1,s2:p2/service`): the current master of `service`.
    Sentinel {
        /// Sentinels, `host:port`.
        sentinels: Vec<String>,
        /// The monitored master's name.
        service: String,
    },
}

/// Settings of the Redis backend. Its `Debug` output masks the password.
#[derive(Clone)]
pub struct RedisConfig {
    /// Where Redis is.
    pub topology: Topology,
    /// TLS to every server: the data nodes, and the sentinels of a Sentinel URL
    /// (`rediss://`, `rediss+cluster://`, `rediss+sentinel://`, or `?tls=true`). The server's
    /// certificate and host name are always verified.
    pub tls: bool,
    /// A PEM file of the certificate authorities to trust instead of the built-in (Mozilla)
    /// roots (`?ca=`).
    pub ca_file: Option<PathBuf>,
    /// A PEM file with the client certificate (and any intermediates) to present for mutual
    /// TLS (`?cert=`); goes with [`client_key`](Self::client_key).
    pub client_cert: Option<PathBuf>,
    /// A PEM file with the private key of [`client_cert`](Self::client_cert) (`?key=`).
    pub client_key: Option<PathBuf>,
    /// ACL user name.
    pub username: Option<String>,
    /// Password (of the ACL user, or `requirepass`).
    pub password: Option<String>,
    /// Prefix of every key (`?prefix=`, default `celeriac`).
    pub prefix: String,
    /// Longest wait for one reply before the call fails (`?response_timeout_ms=`, default 5 s).
    pub response_timeout: Duration,
    /// Longest wait to connect (`?connect_timeout_ms=`, default 5 s).
    pub connect_timeout: Duration,
    /// What this Redis is for (`?role=`): everything (the default), or caching alone
    /// (`?role=cache`): any `maxmemory-policy` and no persistence are accepted (a warning when
    /// the policy is `noeviction`, since writes then fail when it is full), and queue
    /// operations are refused.
    pub role: StoreRole,
    /// Run queues on a Redis whose `maxmemory-policy` may evict keys (`?allow_eviction=true`).
    /// Off by default: an evicted job is a lost job.
    pub allow_eviction: bool,
    /// Run queues on a Redis that persists nothing (no AOF, no RDB save points)
    /// (`?allow_volatile=true`). Off by default: a restart of such a Redis loses every job.
    pub allow_volatile: bool,
    /// Replicas that must acknowledge each enqueue (`?wait_replicas=N`, default 0: none).
    /// After the enqueue the backend sends `WAIT N timeout` on the same connection; fewer
    /// acknowledgements within [`wait_timeout`](Self::wait_timeout) fail the enqueue (the jobs
    /// may exist all the same; enqueueing the same ids again is safe).
    pub wait_replicas: u32,
    /// How long an enqueue waits for [`wait_replicas`](Self::wait_replicas) acknowledgements
    /// (`?wait_timeout_ms=`, default 1 s).
    pub wait_timeout: Duration,
    /// How long dead letters are kept (`?dead_ttl_s=`, default 7 days).
    pub dead_ttl: Duration,
    /// Most dead letters a queue keeps; a reap drops the oldest beyond it (`?dead_max=`,
    /// default [`DEFAULT_DEAD_MAX`]).
    pub dead_max: u64,
}

/// Lists the settings with the password masked (`Some("***")`).
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("topology", &self.topology)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| redact::MASK))
            .field("prefix", &self.prefix)
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("role", &self.role)
            .field("allow_eviction", &self.allow_eviction)
            .field("allow_volatile", &self.allow_volatile)
            .field("wait_replicas", &self.wait_replicas)
            .field("wait_timeout", &self.wait_timeout)
            .field("dead_ttl", &self.dead_ttl)
            .field("dead_max", &self.dead_max)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Parses a `redis://`, `rediss://`, `redis+cluster://` or `redis+sentinel://` URL.
    ///
    /// `redis://[user:password@]host[:port][/db][?param=value&...]`;
    /// `redis+cluster://[user:password@]h1:p1,h2:p2[?...]`;
    /// `redis+sentinel://[user:password@]s1:p1,s2:p2/service[?...]`.
    ///
    /// # Errors
    /// A URL that is not one of these, naming what is wrong; no message quotes the password.
    pub fn from_url(url: &str) -> Result<Self> {
        Self::parse_url(url).map_err(|e| redact::error(e, &redact::url_secrets(url)))
    }

    fn parse_url(url: &str) -> Result<Self> {
        let bad = |msg: String| Error::config("url", msg);
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| bad(format!("`{}` is not a URL", redact::url(url))))?;
        let (tls_scheme, kind) = match scheme {
            "redis" => (false, "standalone"),
            "rediss" => (true, "standalone"),
            "redis+cluster" => (false, "cluster"),
            "rediss+cluster" => (true, "cluster"),
            "redis+sentinel" => (false, "sentinel"),
            "rediss+sentinel" => (true, "sentinel"),
            other => return Err(bad(format!("`{other}://` is not a Redis URL scheme"))),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, q),
            None => (rest, ""),
        };
        if query.contains('@') {
            // A user or password holding `?`: what follows it would be read as parameters.
            return Err(bad(format!(
                "`{}` has an `@` after its `?`: percent-encode `?` (%3F) and `@` (%40) in the \
                 user, the password and parameter values",
                redact::url(url)
            )));
        }
        let (userinfo, hostpart) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                let user = percent_decode(user);
                let pass = percent_decode(pass);
                (
                    (!user.is_empty()).then_some(user),
                    (!pass.is_empty()).then_some(pass),
                )
            }
            None => (None, None),
        };
        let (hosts, path) = match hostpart.split_once('/') {
            Some((h, p)) => (h, p),
            None => (hostpart, ""),
        };
        let default_port = if kind == "sentinel" { 26379 } else { 6379 };
        let addrs: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| with_port(h, default_port).map_err(bad))
            .collect::<Result<_>>()?;
        if addrs.is_empty() {
            return Err(bad(format!("`{}` names no host", redact::url(url))));
        }
        let topology = match kind {
            "standalone" => {
                if addrs.len() > 1 {
                    return Err(bad(
                        "several hosts need redis+cluster:// or redis+sentinel://".into(),
                    ));
                }
                let db = if path.is_empty() {
                    0
                } else {
                    path.parse()
                        .map_err(|_| bad(format!("`/{path}` is not a database number")))?
                };
                Topology::Standalone {
                    addr: addrs[0].clone(),
                    db,
                }
            }
            "cluster" => Topology::Cluster { nodes: addrs },
            _ => {
                if path.is_empty() {
                    return Err(bad("redis+sentinel:// needs the master's name: redis+sentinel://host:26379/mymaster".into()));
                }
                Topology::Sentinel {
                    sentinels: addrs,
                    service: path.to_string(),
                }
            }
        };
        let mut config = RedisConfig {
            topology,
            tls: tls_scheme,
            ca_file: None,
            client_cert: None,
            client_key: None,
            username,
            password,
            prefix: "celeriac".into(),
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            role: StoreRole::All,
            allow_eviction: false,
            allow_volatile: false,
            wait_replicas: 0,
            wait_timeout: Duration::from_secs(1),
            dead_ttl: Duration::from_secs(7 * 24 * 3600),
            dead_max: DEFAULT_DEAD_MAX,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, "true"));
            let setting = format!("url: {k}");
            let flag = |v: &str| match v {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(Error::config(
                    &setting,
                    format!("`{v}` is not true or false"),
                )),
            };
            let millis = |v: &str| {
                v.parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        Error::config(&setting, format!("`{v}` is not a positive number"))
                    })
            };
            match k {
                "tls" => config.tls = flag(v)?,
                "ca" => config.ca_file = Some(PathBuf::from(percent_decode(v))),
                "cert" => config.client_cert = Some(PathBuf::from(percent_decode(v))),
                "key" => config.client_key = Some(PathBuf::from(percent_decode(v))),
                "prefix" => {
                    if v.is_empty() || v.contains(['{', '}']) {
                        return Err(Error::config(&setting, "must be non-empty and without braces"));
                    }
                    config.prefix = v.to_string();
                }
                "response_timeout_ms" => config.response_timeout = millis(v)?,
                "connect_timeout_ms" => config.connect_timeout = millis(v)?,
                "role" => config.role = StoreRole::parse(v)?,
                "allow_eviction" => config.allow_eviction = flag(v)?,
                "allow_volatile" => config.allow_volatile = flag(v)?,
                "wait_replicas" => {
                    config.wait_replicas = v.parse::<u32>().map_err(|_| {
                        Error::config(&setting, format!("`{v}` is not a number of replicas"))
                    })?
                }
                "wait_timeout_ms" => config.wait_timeout = millis(v)?,
                "dead_ttl_s" => config.dead_ttl = millis(v)? * 1000,
                "dead_max" => {
                    config.dead_max = v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                        Error::config(&setting, format!("`{v}` is not a positive number"))
                    })?
                }
                other => {
                    return Err(Error::config(
                        "url",
                        format!("unknown Redis URL parameter `{other}` (known: tls, ca, cert, key, prefix, response_timeout_ms, connect_timeout_ms, role, allow_eviction, allow_volatile, wait_replicas, wait_timeout_ms, dead_ttl_s, dead_max)"),
                    ))
                }
            }
        }
        match (&config.client_cert, &config.client_key) {
            (Some(_), None) => return Err(Error::config(
                "url: key",
                "`cert` (a client certificate) needs `key`, its private key: add &key=<pem file>",
            )),
            (None, Some(_)) => return Err(Error::config(
                "url: cert",
                "`key` needs `cert`, the client certificate it belongs to: add &cert=<pem file>",
            )),
            _ => {}
        }
        Ok(config)
    }

    /// The URL of one node in redis-rs form (credentials, TLS), without our parameters.
    pub(crate) fn node_url(&self, addr: &str, db: i64) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = match (&self.username, &self.password) {
            (Some(u), Some(p)) => format!("{}:{}@", percent_encode(u), percent_encode(p)),
            (None, Some(p)) => format!(":{}@", percent_encode(p)),
            (Some(u), None) => format!("{}@", percent_encode(u)),
            (None, None) => String::new(),
        };
        format!("{scheme}://{auth}{addr}/{db}")
    }
}

/// `host:port` from one host of a URL, with `default_port` when it names none; a bracketed
/// IPv6 address (`[::1]`, `[::1]:6380`) keeps its colons.
fn with_port(h: &str, default_port: u16) -> std::result::Result<String, String> {
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !h.ends_with(']') => (host, Some(port)),
        _ => (h, None),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{h}` names no host before its port"));
    }
    match port {
        None => Ok(format!("{h}:{default_port}")),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(h.to_string()),
            _ => Err(format!(
                "`{h}`: the port `{p}` is not a number from 1 to 65535"
            )),
        },
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits exactly: `from_str_radix` alone would take `%+f` as 15.
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit()
        {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_ports_are_checked() {
        for (url, needle) in [
            ("redis://:6379", "names no host"),
            ("redis://h:99999", "65535"),
            ("redis://h:0", "65535"),
            ("redis://h:+80", "65535"),
            ("redis://h:port", "65535"),
            ("redis+cluster://a:7000,:7001", "names no host"),
        ] {
            let err = RedisConfig::from_url(url).expect_err(url).to_string();
            assert!(err.contains(needle), "{url}: {err}");
        }
        let addr = |url: &str| match RedisConfig::from_url(url).expect(url).topology {
            Topology::Standalone { addr, .. } => addr,
            other => panic!("{other:?}"),
        };
        assert_eq!(addr("redis://h"), "h:6379");
        assert_eq!(addr("redis://h:6380"), "h:6380");
        assert_eq!(addr("redis://[::1]"), "[::1]:6379");
        assert_eq!(addr("redis://[::1]:6380"), "[::1]:6380");
    }

    #[test]
    fn percent_escapes_take_two_hex_digits() {
        assert_eq!(percent_decode("%+f"), "%+f");
        assert_eq!(percent_decode("%-1x"), "%-1x");
        assert_eq!(percent_decode("a%40b%3F"), "a@b?");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn urls_parse() {
        let c = RedisConfig::from_url("redis://app:s%40cret@127.0.0.1:7000/2?prefix=jobs")
            .expect("parses");
        assert_eq!(
            c.topology,
            Topology::Standalone {
                addr: "127.0.0.1:7000".into(),
                db: 2
            }
        );
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.prefix, "jobs");
        assert_eq!(c.dead_max, DEFAULT_DEAD_MAX);
        assert_eq!(c.wait_replicas, 0);
        assert!(!c.allow_volatile);
        let durable =
            RedisConfig::from_url("redis://h?wait_replicas=2&wait_timeout_ms=250&allow_volatile=1")
                .expect("parses");
        assert_eq!(durable.wait_replicas, 2);
        assert_eq!(durable.wait_timeout, Duration::from_millis(250));
        assert!(durable.allow_volatile);
        let capped = RedisConfig::from_url("redis://h?dead_max=500").expect("parses");
        assert_eq!(capped.dead_max, 500);
        assert_eq!(c.node_url("h:1", 2), "redis://app:s%40cret@h:1/2");

        let c = RedisConfig::from_url("redis+cluster://a:1,b:2,c").expect("parses");
        assert_eq!(
            c.topology,
            Topology::Cluster {
                nodes: vec!["a:1".into(), "b:2".into(), "c:6379".into()]
            }
        );
        let c = RedisConfig::from_url("rediss+sentinel://:pw@s1:5000/mymaster?ca=/tmp/ca.pem")
            .expect("parses");
        assert!(c.tls);
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.ca_file, Some(PathBuf::from("/tmp/ca.pem")));
        assert_eq!(
            c.topology,
            Topology::Sentinel {
                sentinels: vec!["s1:5000".into()],
                service: "mymaster".into()
            }
        );
    }

    #[test]
    fn bad_urls_name_the_problem() {
        let err = |u: &str| {
            RedisConfig::from_url(u)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("redis://h?bogus=1").contains("unknown Redis URL parameter `bogus`"));
        assert!(err("redis+sentinel://h:1").contains("master's name"));
        assert!(err("redis://h/x").contains("database number"));
        assert!(err("redis://h?response_timeout_ms=0").contains("response_timeout_ms"));
        assert!(err("redis://a,b").contains("redis+cluster"));
        assert!(err("redis://h?dead_max=0").contains("url: dead_max"));
        assert!(err("redis://h?dead_max=many").contains("url: dead_max"));
        assert!(err("redis://h?wait_replicas=-1").contains("url: wait_replicas"));
        assert!(err("redis://h?wait_replicas=all").contains("url: wait_replicas"));
        assert!(err("redis://h?wait_timeout_ms=0").contains("url: wait_timeout_ms"));
        assert!(err("redis://h?allow_volatile=maybe").contains("url: allow_volatile"));
    }

    #[test]
    fn client_certificates_come_with_their_key() {
        let c =
            RedisConfig::from_url("rediss://h?ca=/c/ca.pem&cert=/c/app%20one.crt&key=/c/app.key")
                .expect("parses");
        assert_eq!(c.client_cert, Some(PathBuf::from("/c/app one.crt")));
        assert_eq!(c.client_key, Some(PathBuf::from("/c/app.key")));
        let plain = RedisConfig::from_url("rediss://h").expect("parses");
        assert_eq!((plain.client_cert, plain.client_key), (None, None));

        let err = |u: &str| {
            RedisConfig::from_url(u)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let msg = err("rediss://h?cert=/c/app.crt");
        assert!(msg.contains("url: key") && msg.contains("`cert`"), "{msg}");
        let msg = err("rediss://h?key=/c/app.key");
        assert!(msg.contains("url: cert") && msg.contains("`key`"), "{msg}");
    }
}
