//! Connections: one multiplexed connection for commands, dedicated ones for blocking
//! wake-ups, and a pub/sub connection for completions, over standalone, Cluster or Sentinel,
//! in plain text or over TLS (server certificate and host name always verified; optionally a
//! client certificate).

use crate::config::{RedisConfig, Topology};
use celeriac_core::error::{Error, ErrorKind, Result};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, PubSub};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisFuture, RetryMethod, TlsCertificates, Value,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Maps a redis-rs error to the portable kinds: timeouts and the passing states of a failover
/// or restart (a read-only replica, a node loading its data, a master down, a script cache
/// emptied by a restart or a promotion) are retried, lost connections reconnect, everything
/// else gives up.
pub(crate) fn map_err(e: redis::RedisError) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Retry
    } else if e.code() == Some("OOM") || is_oom_message(&e.to_string()) {
        ErrorKind::Full
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
    match tls_hint(&e.to_string()) {
        Some(hint) => Error::backend(kind, format!("{e} ({hint})")),
        None => Error::backend(kind, e),
    }
}

/// Whether a reply's text is Redis refusing a write for memory (`OOM command not allowed
/// when used memory > 'maxmemory'`), wherever the client put it (a pipeline's or a script's
/// error may carry another code).
fn is_oom_message(text: &str) -> bool {
    text.contains("command not allowed when used memory")
}

/// What to check when a TLS handshake failed over a certificate.
fn tls_hint(message: &str) -> Option<&'static str> {
    if message.contains("invalid peer certificate") {
        Some(
            "the server's TLS certificate was refused: `ca` must name the CA that signed it, \
             and it must be issued for the host name or address in the URL",
        )
    } else if message.contains("CertificateRequired") {
        Some("the server requires a client certificate: give `cert` and `key`")
    } else {
        None
    }
}

/// Makes connections of one kind for one configuration.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<RedisConfig>,
    /// The CA and client certificate the URL names, read at start; `None` without TLS, or
    /// with TLS to a server the built-in roots vouch for and no client certificate.
    certs: Option<Arc<TlsCertificates>>,
}

impl Connector {
    /// Checks the TLS settings and reads the files they name.
    ///
    /// # Errors
    /// `ca`, `cert` or `key` without TLS; `cert` without `key` or the other way round; a file
    /// that cannot be read or holds no PEM certificate (or key); a key that is not the
    /// certificate's. Each names the setting and the file.
    pub(crate) fn new(config: Arc<RedisConfig>) -> Result<Self> {
        if !config.tls {
            let given = [
                ("url: ca", config.ca_file.is_some()),
                ("url: cert", config.client_cert.is_some()),
                ("url: key", config.client_key.is_some()),
            ];
            if let Some((setting, _)) = given.into_iter().find(|(_, given)| *given) {
                return Err(Error::config(
                    setting,
                    "is a TLS setting, but the connection is not TLS: use rediss:// \
                     (rediss+cluster://, rediss+sentinel://) or add tls=true",
                ));
            }
            return Ok(Self {
                config,
                certs: None,
            });
        }
        // rustls needs one process-wide crypto provider; ring is the one built in. An
        // application that installed its own keeps it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let certs = tls_certificates(&config)?.map(Arc::new);
        Ok(Self { config, certs })
    }

    /// The settings these connections follow.
    pub(crate) fn config(&self) -> &RedisConfig {
        &self.config
    }

    /// Where one node is, checked: TLS exactly when the settings say so, and never without
    /// verifying the server's certificate and name.
    fn node_info(&self, addr: &str, db: i64) -> Result<ConnectionInfo> {
        if addr.contains(['#', '?', '/', '@']) || addr.contains(char::is_whitespace) {
            return Err(Error::config("url", format!("`{addr}` is not a host:port")));
        }
        let info = self
            .config
            .node_url(addr, db)
            .into_connection_info()
            .map_err(|e| Error::config("url", e))?;
        match (self.config.tls, info.addr()) {
            (
                true,
                ConnectionAddr::TcpTls {
                    insecure: false, ..
                },
            )
            | (false, ConnectionAddr::Tcp(..)) => Ok(info),
            (_, other) => Err(Error::config(
                "url",
                format!(
                    "`{addr}` does not name a host and port the way TLS settings allow ({other:?})"
                ),
            )),
        }
    }

    /// A client for one node.
    pub(crate) fn node_client(&self, addr: &str, db: i64) -> Result<Client> {
        let info = self.node_info(addr, db)?;
        let client = match &self.certs {
            Some(certs) => Client::build_with_tls(info, TlsCertificates::clone(certs)),
            None => Client::open(info),
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
        let infos = nodes
            .iter()
            .map(|n| self.node_info(n, 0))
            .collect::<Result<Vec<_>>>()?;
        let mut b = ClusterClientBuilder::new(infos)
            .connection_timeout(self.config.connect_timeout)
            .response_timeout(response_timeout)
            .retries(6)
            .max_retry_wait(1000)
            .min_retry_wait(50);
        if let Some(certs) = &self.certs {
            b = b.certs(TlsCertificates::clone(certs));
        }
        b.build().map_err(|e| Error::config("url", e))
    }

    fn sentinel_client(&self, sentinels: &[String], service: &str) -> Result<SentinelClient> {
        let addrs = sentinels
            .iter()
            .map(|s| {
                let (h, p) = s.rsplit_once(':').unwrap_or((s, "26379"));
                let port = p.parse().unwrap_or(26379);
                if self.config.tls {
                    ConnectionAddr::TcpTls {
                        host: h.to_string(),
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(h.to_string(), port)
                }
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
            // TLS to the sentinels and to the servers they name, with the same trust and
            // client certificate.
            b = b
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(certs) = &self.certs {
                b = b
                    .set_client_to_redis_certificates(TlsCertificates::clone(certs))
                    .set_client_to_sentinel_certificates(TlsCertificates::clone(certs));
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

/// The trust anchors (`ca`) and client certificate (`cert`, `key`) the settings name, read
/// and checked now so that a wrong file fails at start, naming the setting and the path.
fn tls_certificates(config: &RedisConfig) -> Result<Option<TlsCertificates>> {
    let root_cert = match &config.ca_file {
        Some(path) => {
            let pem = read_pem("url: ca", "CA certificate file", path)?;
            certificates("url: ca", path, &pem)?;
            Some(pem)
        }
        None => None,
    };
    let client_tls = match (&config.client_cert, &config.client_key) {
        (Some(cert_path), Some(key_path)) => {
            let cert = read_pem("url: cert", "client certificate file", cert_path)?;
            let chain = certificates("url: cert", cert_path, &cert)?;
            let key = read_pem("url: key", "client key file", key_path)?;
            let key_der = PrivateKeyDer::from_pem_slice(&key).map_err(|e| {
                Error::config(
                    "url: key",
                    format!("{} holds no PEM private key: {e}", key_path.display()),
                )
            })?;
            // rustls checks that the key belongs to the certificate when it is installed.
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::config("url: key", e))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_client_auth_cert(chain, key_der)
            .map_err(|e| {
                Error::config(
                    "url: key",
                    format!(
                        "{} does not go with the client certificate {}: {e}",
                        key_path.display(),
                        cert_path.display()
                    ),
                )
            })?;
            Some(ClientTlsConfig {
                client_cert: cert,
                client_key: key,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::config(
                "url: key",
                "`cert` (a client certificate) needs `key`, its private key",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::config(
                "url: cert",
                "`key` needs `cert`, the client certificate it belongs to",
            ))
        }
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

fn read_pem(setting: &str, what: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::config(
            setting,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

/// The certificates of a PEM file: at least one, or an error naming the setting and file.
fn certificates(setting: &str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::config(
                setting,
                format!("{} is not a PEM certificate file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
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
