//! A master, a replica and one sentinel, optionally all over TLS: [`RedisSentinel`].

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::resp::Value;
use crate::server::{info_field, wait_until, Mode, RedisServer};
use crate::tls::{self, TlsFiles};

/// The name the sentinel monitors the master under.
const MASTER_NAME: &str = "mymaster";
/// How long replication, discovery and failover may take.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(30);

/// A master, one replica of it and one sentinel (quorum 1) monitoring them as `mymaster`.
///
/// The sentinel considers the master down after 2 s without answers
/// (`down-after-milliseconds 2000`), so killing or pausing [`master`](Self::master) also
/// leads to an automatic failover. Dropping it kills all three processes.
///
/// [`start_tls`](Self::start_tls) runs all three over TLS only.
#[derive(Debug)]
pub struct RedisSentinel {
    /// `[master, replica]` at start; [`failover`](Self::failover) swaps the roles.
    data: [RedisServer; 2],
    master: usize,
    sentinel: RedisServer,
    /// The certificates all three share, with TLS; last, so it is removed after the
    /// processes are gone.
    tls: Option<(tempfile::TempDir, TlsFiles)>,
}

impl RedisSentinel {
    /// Starts the master, the replica and the sentinel, and waits until the replica is in
    /// sync and the sentinel lists it as a healthy replica of `mymaster`.
    ///
    /// # Errors
    ///
    /// [`Error::Start`] when a process does not start; [`Error::Setup`], with all three
    /// logs, when the setup is not complete within 30 s.
    pub async fn start() -> Result<RedisSentinel> {
        Self::start_with(None).await
    }

    /// Like [`start`](Self::start), over TLS only: the master, the replica and the sentinel
    /// serve TLS on their ports and nothing in plain text (`port 0`), replication and the
    /// sentinel's own links are TLS (`tls-replication yes`), and all three share one CA
    /// ([`tls_ca_path`](Self::tls_ca_path)) and a server certificate for `127.0.0.1` and
    /// `localhost`. Clients need no certificate of their own.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_tls() -> Result<RedisSentinel> {
        Self::start_with(Some(tls::generate_shared()?)).await
    }

    async fn start_with(tls: Option<(tempfile::TempDir, TlsFiles)>) -> Result<RedisSentinel> {
        let files = tls.as_ref().map(|(_, files)| files.clone());
        let builder = || match &files {
            Some(files) => RedisServer::builder().tls_files(files.clone()),
            None => RedisServer::builder(),
        };
        let master = builder().start().await?;
        let master_port = master.port().to_string();
        let replica = builder()
            .args("--replicaof", ["127.0.0.1", master_port.as_str()])
            .start()
            .await?;
        let conf = format!(
            "sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n\
             sentinel down-after-milliseconds {MASTER_NAME} 2000\n\
             sentinel failover-timeout {MASTER_NAME} 10000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n"
        );
        let sentinel = builder().mode(Mode::Sentinel(conf)).start().await?;
        let setup = RedisSentinel {
            data: [master, replica],
            master: 0,
            sentinel,
            tls,
        };
        wait_until(
            "the replica to sync and the sentinel to list it as a healthy replica of mymaster",
            SENTINEL_TIMEOUT,
            &setup.all(),
            || setup.replica_known(),
        )
        .await?;
        Ok(setup)
    }

    /// `redis+sentinel://127.0.0.1:SENTINEL_PORT/mymaster`; `rediss+sentinel://…` over TLS
    /// (a client must also trust [`tls_ca_path`](Self::tls_ca_path)).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss+sentinel"
        } else {
            "redis+sentinel"
        };
        format!(
            "{scheme}://127.0.0.1:{}/{MASTER_NAME}",
            self.sentinel.port()
        )
    }

    /// The CA certificate (PEM) the certificates of all three are signed by, for a setup
    /// started with [`start_tls`](Self::start_tls).
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, files)| files.ca_cert.as_path())
    }

    /// The server that is master now (the replica after a [`failover`](Self::failover)).
    pub fn master(&mut self) -> &mut RedisServer {
        &mut self.data[self.master]
    }

    /// The server that is the replica now (the old master after a
    /// [`failover`](Self::failover)).
    pub fn replica(&mut self) -> &mut RedisServer {
        &mut self.data[1 - self.master]
    }

    /// The sentinel process.
    pub fn sentinel(&self) -> &RedisServer {
        &self.sentinel
    }

    /// Waits until the replica has caught up with the master (a planned failover), then asks
    /// the sentinel for a failover (`SENTINEL FAILOVER mymaster`) and waits until it
    /// reports the replica's address as the master's and the replica says `role:master`.
    /// Then points the old master at the new one (`REPLICAOF`), as the sentinel itself
    /// would some seconds later, and swaps [`master`](Self::master) and
    /// [`replica`](Self::replica).
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when the failover does not complete within 30 s; [`Error::Server`]
    /// when the sentinel refuses it (`NOGOODSLAVE` is retried for 30 s first).
    pub async fn failover(&mut self) -> Result<()> {
        let new_master = 1 - self.master;
        let target = self.data[new_master].port();
        // A planned failover: let the replica catch up first, so what the master acknowledged
        // is on the replica when it takes over (replication is asynchronous).
        let (old, new) = (&self.data[self.master], &self.data[new_master]);
        wait_until(
            "the replica to catch up with the master",
            SENTINEL_TIMEOUT,
            &self.all(),
            || async {
                let m = old.command(&["INFO", "replication"]).await?;
                let r = new.command(&["INFO", "replication"]).await?;
                let offset = |text: &str, field: &str| {
                    info_field(text, field).and_then(|v| v.parse::<i64>().ok())
                };
                let master_at = offset(&m.as_text().unwrap_or_default(), "master_repl_offset");
                let replica_at = offset(&r.as_text().unwrap_or_default(), "slave_repl_offset");
                Ok(matches!((master_at, replica_at), (Some(m), Some(r)) if r >= m))
            },
        )
        .await?;
        let deadline = Instant::now() + SENTINEL_TIMEOUT;
        loop {
            match self
                .sentinel
                .command(&["SENTINEL", "FAILOVER", MASTER_NAME])
                .await
            {
                Ok(_) => break,
                // A failover already running is as good as one started.
                Err(Error::Server(msg)) if msg.starts_with("INPROG") => break,
                // The sentinel has not checked the replica recently enough yet.
                Err(Error::Server(msg))
                    if msg.starts_with("NOGOODSLAVE") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let promoted = &self.data[new_master];
        wait_until(
            "the sentinel to report the replica as master of mymaster",
            SENTINEL_TIMEOUT,
            &self.all(),
            || async {
                if self.master_addr().await?.1 != target {
                    return Ok(false);
                }
                let info = promoted.command(&["INFO", "replication"]).await?;
                Ok(info_field(&info.as_text().unwrap_or_default(), "role") == Some("master"))
            },
        )
        .await?;
        let port = target.to_string();
        self.data[self.master]
            .command(&["REPLICAOF", "127.0.0.1", &port])
            .await?;
        self.master = new_master;
        Ok(())
    }

    /// An unplanned failover: kills the master with SIGKILL, whatever the replica has not
    /// received yet (replication is asynchronous), and waits until the sentinel has promoted
    /// the replica: it reports the replica's address as the master's and the replica says
    /// `role:master`. Then swaps [`master`](Self::master) and [`replica`](Self::replica); the
    /// old master stays down until [`rejoin`](Self::rejoin).
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] when the sentinel does not promote the replica within 30 s.
    pub async fn crash_master(&mut self) -> Result<()> {
        let new_master = 1 - self.master;
        let target = self.data[new_master].port();
        self.data[self.master].kill();
        let promoted = &self.data[new_master];
        wait_until(
            "the sentinel to promote the replica after the master was killed",
            SENTINEL_TIMEOUT,
            &self.all(),
            || async {
                if self.master_addr().await?.1 != target {
                    return Ok(false);
                }
                let info = promoted.command(&["INFO", "replication"]).await?;
                Ok(info_field(&info.as_text().unwrap_or_default(), "role") == Some("master"))
            },
        )
        .await?;
        self.master = new_master;
        Ok(())
    }

    /// Brings a [crashed](Self::crash_master) old master back as a replica of the new one
    /// (`REPLICAOF`, as the sentinel itself would some seconds later), and waits until it is
    /// in sync and the sentinel lists it as a healthy replica. What it alone held is gone.
    ///
    /// # Errors
    ///
    /// [`Error::Start`] when it does not start; [`Error::Setup`] when it is not a healthy
    /// replica within 30 s.
    pub async fn rejoin(&mut self) -> Result<()> {
        let port = self.data[self.master].port().to_string();
        let old = &mut self.data[1 - self.master];
        old.restart().await?;
        old.command(&["REPLICAOF", "127.0.0.1", &port]).await?;
        wait_until(
            "the old master to sync as a replica and the sentinel to list it",
            SENTINEL_TIMEOUT,
            &self.all(),
            || self.replica_known(),
        )
        .await
    }

    /// The master's address as the sentinel reports it
    /// (`SENTINEL get-master-addr-by-name mymaster`).
    ///
    /// # Errors
    ///
    /// [`Error::Protocol`] when the reply is not an address; as
    /// [`RedisServer::command`] otherwise.
    pub async fn master_addr(&self) -> Result<(String, u16)> {
        let reply = self
            .sentinel
            .command(&["SENTINEL", "get-master-addr-by-name", MASTER_NAME])
            .await?;
        let parts = reply.as_array().unwrap_or_default();
        let host = parts.first().and_then(Value::as_text);
        let port = parts.get(1).and_then(Value::as_int);
        match (host, port.and_then(|p| u16::try_from(p).ok())) {
            (Some(host), Some(port)) => Ok((host, port)),
            _ => Err(Error::Protocol(format!(
                "unexpected reply to get-master-addr-by-name: {reply:?}"
            ))),
        }
    }

    fn all(&self) -> [&RedisServer; 3] {
        [&self.data[0], &self.data[1], &self.sentinel]
    }

    /// Whether the replica is in sync and the sentinel knows it as a healthy replica.
    async fn replica_known(&self) -> Result<bool> {
        let replica = &self.data[1 - self.master];
        let info = replica.command(&["INFO", "replication"]).await?;
        if info_field(&info.as_text().unwrap_or_default(), "master_link_status") != Some("up") {
            return Ok(false);
        }
        let master = self
            .sentinel
            .command(&["SENTINEL", "MASTER", MASTER_NAME])
            .await?;
        if field(&master, "flags").as_deref() != Some("master") {
            return Ok(false);
        }
        let replicas = self
            .sentinel
            .command(&["SENTINEL", "REPLICAS", MASTER_NAME])
            .await?;
        let port = replica.port().to_string();
        Ok(replicas.as_array().unwrap_or_default().iter().any(|r| {
            field(r, "port").as_deref() == Some(port.as_str())
                && field(r, "flags").as_deref() == Some("slave")
                && field(r, "master-link-status").as_deref() == Some("ok")
        }))
    }
}

/// A field of a sentinel reply that is a flat `[key, value, key, value, ...]` array.
fn field(reply: &Value, key: &str) -> Option<String> {
    let items = reply.as_array()?;
    items
        .chunks(2)
        .find(|pair| pair[0].as_text().as_deref() == Some(key))
        .and_then(|pair| pair.get(1)?.as_text())
}
