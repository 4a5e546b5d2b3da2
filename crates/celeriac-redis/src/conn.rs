//! Connections: one multiplexed connection for commands, dedicated ones for blocking
//! wake-ups, and a pub/sub connection for completions, over standalone, Cluster or Sentinel.

use crate::config::{RedisConfig, Topology};
use celeriac_core::error::{Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{Client, Cmd, Pipeline, RedisFuture, RetryMethod, TlsCertificates, Value};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Maps a redis-rs error to the portable kinds: timeouts and the passing states of a failover
/// or restart (a read-only replica, a node loading its data, a master down, a script cache
/// emptied by a restart or a promotion) are retried, lost connections reconnect, everything
/// else gives up.
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Retry
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        ErrorKind::Reconnect
    } else if matches!(
        e.code(),
        Some("READONLY" | "TRYAGAIN" | "CLUSTERDOWN" | "LOADING" | "MASTERDOWN" | "NOSCRIPT")
    ) {
        ErrorKind::Retry
    } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
        ErrorKind::GiveUp
    } else {
        // What the client itself would do: a Cluster node gone while the slot moves to its
        // replica (no connection to it yet), a redirect, another I/O failure are passing; a
        // script's error, a type or a permission error are not.
        match e.retry_method() {
            RetryMethod::Reconnect | RetryMethod::ReconnectFromInitialConnections => {
                ErrorKind::Reconnect
            }
            RetryMethod::RetryImmediately
            | RetryMethod::WaitAndRetry
            | RetryMethod::AskRedirect
            | RetryMethod::MovedRedirect
            | RetryMethod::RefreshSlotsAndRetry => ErrorKind::Retry,
            RetryMethod::NoRetry => ErrorKind::GiveUp,
            _ => ErrorKind::GiveUp,
        }
    };
    Error::backend(kind, e)
}

/// Makes connections of one kind for one configuration.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<RedisConfig>,
    certs: Option<Arc<Vec<u8>>>,
}

impl Connector {
    pub(crate) fn new(config: Arc<RedisConfig>) -> Result<Self> {
        if config.tls {
            // rustls needs one process-wide crypto provider; ring is the one built in. An
            // application that installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let certs = match &config.ca_file {
            Some(path) => Some(Arc::new(std::fs::read(path).map_err(|e| {
                Error::config("url: ca", format!("cannot read {}: {e}", path.display()))
            })?)),
            None => None,
        };
        Ok(Self { config, certs })
    }

    /// The settings these connections follow.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }

    fn tls_certs(&self) -> TlsCertificates {
        TlsCertificates {
            client_tls: None,
            root_cert: self.certs.as_ref().map(|c| c.to_vec()),
        }
    }

    /// A client for one node.
    pub(crate) fn node_client(&self, addr: &str, db: i64) -> Result<Client> {
        let url = self.config.node_url(addr, db);
        let client = if self.config.tls && self.certs.is_some() {
            Client::build_with_tls(url.as_str(), self.tls_certs())
        } else {
            Client::open(url.as_str())
        };
        client.map_err(|e| Error::config("url", e))
    }

    fn manager_config(&self, response_timeout: Duration) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.config.connect_timeout))
            .set_response_timeout(Some(response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2))
    }

    fn cluster_client(
        &self,
        response_timeout: Duration,
        nodes: &[String],
    ) -> Result<ClusterClient> {
        let urls: Vec<String> = nodes.iter().map(|n| self.config.node_url(n, 0)).collect();
        let mut b = ClusterClientBuilder::new(urls)
            .connection_timeout(self.config.connect_timeout)
            .response_timeout(response_timeout)
            .retries(6)
            .max_retry_wait(1000)
            .min_retry_wait(50);
        if self.config.tls && self.certs.is_some() {
            b = b.certs(self.tls_certs());
        }
        b.build().map_err(|e| Error::config("url", e))
    }

    fn sentinel_client(&self, sentinels: &[String], service: &str) -> Result<SentinelClient> {
        let addrs = sentinels
            .iter()
            .map(|s| {
                let (h, p) = s.rsplit_once(':').unwrap_or((s, "26379"));
                let port = p.parse().unwrap_or(26379);
                redis::ConnectionAddr::Tcp(h.to_string(), port)
            })
            .collect::<Vec<_>>();
        let mut b = SentinelClientBuilder::new(addrs, service, SentinelServerType::Master)
            .map_err(|e| Error::config("url", e))?;
        if let Some(u) = &self.config.username {
            b = b.set_client_to_redis_username(u);
        }
        if let Some(p) = &self.config.password {
            b = b.set_client_to_redis_password(p);
        }
        if self.config.tls {
            b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
            if self.certs.is_some() {
                b = b.set_client_to_redis_certificates(self.tls_certs());
            }
        }
        b.build().map_err(|e| Error::config("url", e))
    }

    /// A multiplexed connection whose replies may take up to `response_timeout`.
    pub(crate) async fn connect(&self, response_timeout: Duration) -> Result<Conn> {
        match &self.config.topology {
            Topology::Standalone { addr, db } => {
                let client = self.node_client(addr, *db)?;
                let cm = ConnectionManager::new_with_config(
                    client,
                    self.manager_config(response_timeout),
                )
                .await
                .map_err(map_err)?;
                Ok(Conn::Single(cm))
            }
            Topology::Cluster { nodes } => {
                let conn = self
                    .cluster_client(response_timeout, nodes)?
                    .get_async_connection()
                    .await
                    .map_err(map_err)?;
                Ok(Conn::Cluster(conn))
            }
            Topology::Sentinel { sentinels, service } => {
                let sentinel = self.sentinel_client(sentinels, service)?;
                let conn = SentinelConn {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    current: RwLock::new(None),
                    config: self.manager_config(response_timeout),
                };
                conn.reresolve().await?;
                Ok(Conn::Sentinel(Arc::new(conn)))
            }
        }
    }

    /// A pub/sub connection. On a cluster, classic pub/sub reaches every node, so the first
    /// reachable seed node serves.
    pub(crate) async fn pubsub(&self) -> Result<PubSub> {
        let client = match &self.config.topology {
            Topology::Standalone { addr, db } => self.node_client(addr, *db)?,
            Topology::Cluster { nodes } => {
                let mut last = None;
                for n in nodes {
                    match self.node_client(n, 0)?.get_async_pubsub().await {
                        Ok(p) => return Ok(p),
                        Err(e) => last = Some(e),
                    }
                }
                return Err(last.map(map_err).unwrap_or(Error::Closed));
            }
            Topology::Sentinel { sentinels, service } => self
                .sentinel_client(sentinels, service)?
                .async_get_client()
                .await
                .map_err(map_err)?,
        };
        client.get_async_pubsub().await.map_err(map_err)
    }

    /// One client per configured data node, for checks at start (standalone: the server;
    /// cluster: the seed nodes; sentinel: the current master).
    pub(crate) async fn data_node_clients(&self) -> Result<Vec<Client>> {
        match &self.config.topology {
            Topology::Standalone { addr, db } => Ok(vec![self.node_client(addr, *db)?]),
            Topology::Cluster { nodes } => nodes.iter().map(|n| self.node_client(n, 0)).collect(),
            Topology::Sentinel { sentinels, service } => Ok(vec![self
                .sentinel_client(sentinels, service)?
                .async_get_client()
                .await
                .map_err(map_err)?]),
        }
    }
}

/// The master of a Sentinel-monitored service, re-resolved when it stops answering as one.
pub(crate) struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: RwLock<Option<ConnectionManager>>,
    config: ConnectionManagerConfig,
}

impl SentinelConn {
    async fn reresolve(&self) -> Result<ConnectionManager> {
        let client = self
            .sentinel
            .lock()
            .await
            .async_get_client()
            .await
            .map_err(map_err)?;
        let cm = ConnectionManager::new_with_config(client, self.config.clone())
            .await
            .map_err(map_err)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = Some(cm.clone());
        }
        Ok(cm)
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.current.read().ok().and_then(|c| c.clone())
    }

    fn needs_new_master(e: &redis::RedisError) -> bool {
        e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || matches!(e.code(), Some("READONLY" | "LOADING"))
    }

    /// A reply from a master that has been demoted: redis-rs hands server errors back as
    /// values, so READONLY shows up here rather than as an `Err`.
    fn demoted(v: &Value) -> bool {
        match v {
            Value::ServerError(e) => matches!(e.code(), "READONLY" | "LOADING"),
            Value::Array(items) => items.iter().any(Self::demoted),
            _ => false,
        }
    }
}

/// A connection of any topology; cheap to clone.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    if let Some(mut c) = s.current() {
                        match c.req_packed_command(cmd).await {
                            Err(e) if SentinelConn::needs_new_master(&e) => {}
                            Ok(v) if SentinelConn::demoted(&v) => {}
                            other => return other,
                        }
                    }
                    let mut c = s.reresolve().await.map_err(|e| {
                        redis::RedisError::from(std::io::Error::other(e.to_string()))
                    })?;
                    c.req_packed_command(cmd).await
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Sentinel(s) => {
                let s = s.clone();
                Box::pin(async move {
                    if let Some(mut c) = s.current() {
                        match c.req_packed_commands(cmd, offset, count).await {
                            Err(e) if SentinelConn::needs_new_master(&e) => {}
                            Ok(vs) if vs.iter().any(SentinelConn::demoted) => {}
                            other => return other,
                        }
                    }
                    let mut c = s.reresolve().await.map_err(|e| {
                        redis::RedisError::from(std::io::Error::other(e.to_string()))
                    })?;
                    c.req_packed_commands(cmd, offset, count).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(s) => s.current().map(|c| c.get_db()).unwrap_or(0),
        }
    }
}
