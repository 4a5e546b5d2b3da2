//! A 3-master Redis Cluster, optionally with one replica per master or over TLS:
//! [`RedisCluster`].

use std::path::Path;
use std::time::Duration;

use crate::error::Result;
use crate::server::{info_field, wait_until, Mode, RedisServer, RedisServerBuilder};
use crate::tls::{self, TlsFiles};

/// The slots each master serves: three even-ish ranges covering 0..=16383.
const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];
/// How long the nodes may take to agree on `cluster_state:ok`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Three cluster-enabled masters that together serve all 16384 slots, with no replicas
/// ([`start`](Self::start)) or one replica each ([`with_replicas`](Self::with_replicas)),
/// in plain text or over TLS only ([`start_tls`](Self::start_tls)).
///
/// Each node is a [`RedisServer`] in its own directory with its cluster bus on port + 10000;
/// dropping the cluster kills every node.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    replicas: Vec<RedisServer>,
    /// The certificates every node of a TLS cluster shares; last, so it is removed after
    /// the nodes are gone.
    tls: Option<(tempfile::TempDir, TlsFiles)>,
}

impl RedisCluster {
    /// Starts three nodes, gives each a third of the slots, joins them (`CLUSTER MEET`) and
    /// waits until every node reports `cluster_state:ok`, 3 known nodes and all 16384 slots
    /// assigned and ok.
    ///
    /// # Errors
    ///
    /// [`Error::Start`](crate::Error::Start) when a node does not start;
    /// [`Error::Setup`](crate::Error::Setup), with every node's log, when the cluster is not
    /// ok within 30 s.
    pub async fn start() -> Result<RedisCluster> {
        Self::start_masters(None).await
    }

    /// Like [`start`](Self::start), over TLS only: every node serves TLS on its port and
    /// nothing in plain text (`port 0`), the cluster bus is TLS (`tls-cluster yes`), and all
    /// nodes share one CA ([`tls_ca_path`](Self::tls_ca_path)) and a server certificate for
    /// `127.0.0.1` and `localhost`. Clients need no certificate of their own.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_tls() -> Result<RedisCluster> {
        Self::start_masters(Some(tls::generate_shared()?)).await
    }

    async fn start_masters(tls: Option<(tempfile::TempDir, TlsFiles)>) -> Result<RedisCluster> {
        let files = tls.as_ref().map(|(_, files)| files.clone());
        let node = || node_builder(files.clone()).start();
        let (a, b, c) = tokio::try_join!(node(), node(), node())?;
        let cluster = RedisCluster {
            nodes: vec![a, b, c],
            replicas: Vec::new(),
            tls,
        };
        cluster.assign_slots().await?;
        cluster.meet().await?;
        cluster.wait_ok().await?;
        Ok(cluster)
    }

    /// Like [`start`](Self::start), plus one replica per master (`CLUSTER REPLICATE`): the
    /// replica `i` of [`replicas`](Self::replicas) follows master `i` of
    /// [`nodes`](Self::nodes). Waits until every node reports `cluster_state:ok`, 6 known
    /// nodes and all slots ok, and every replica's link to its master is up. A replica takes
    /// over when its master has not answered for the node timeout (5 s).
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start), and [`Error::Setup`](crate::Error::Setup) when a replica
    /// does not sync with its master within 30 s.
    pub async fn with_replicas() -> Result<RedisCluster> {
        let node = || node_builder(None).start();
        let (a, b, c) = tokio::try_join!(node(), node(), node())?;
        let (d, e, f) = tokio::try_join!(node(), node(), node())?;
        let cluster = RedisCluster {
            nodes: vec![a, b, c],
            replicas: vec![d, e, f],
            tls: None,
        };
        cluster.assign_slots().await?;
        cluster.meet().await?;
        let all = cluster.all_nodes();
        wait_until("every node knows all 6", CLUSTER_TIMEOUT, &all, || {
            cluster.all_know(6)
        })
        .await?;
        for (master, replica) in cluster.nodes.iter().zip(&cluster.replicas) {
            let id = master.command(&["CLUSTER", "MYID"]).await?;
            let id = id.as_text().unwrap_or_default();
            replica.command(&["CLUSTER", "REPLICATE", &id]).await?;
        }
        cluster.wait_ok().await?;
        wait_until(
            "every replica's link to its master is up",
            CLUSTER_TIMEOUT,
            &all,
            || cluster.replicas_synced(),
        )
        .await?;
        Ok(cluster)
    }

    fn all_nodes(&self) -> Vec<&RedisServer> {
        self.nodes.iter().chain(&self.replicas).collect()
    }

    async fn assign_slots(&self) -> Result<()> {
        for (i, (node, (first, last))) in self.nodes.iter().zip(SLOT_RANGES).enumerate() {
            // Distinct epochs up front, as `redis-cli --cluster create` does, so the nodes do
            // not have to resolve an epoch collision first.
            let epoch = (i + 1).to_string();
            node.command(&["CLUSTER", "SET-CONFIG-EPOCH", &epoch])
                .await?;
            let (first, last) = (first.to_string(), last.to_string());
            node.command(&["CLUSTER", "ADDSLOTSRANGE", &first, &last])
                .await?;
        }
        Ok(())
    }

    async fn meet(&self) -> Result<()> {
        let all = self.all_nodes();
        let first = all[0];
        for other in &all[1..] {
            let port = other.port().to_string();
            first
                .command(&["CLUSTER", "MEET", "127.0.0.1", &port])
                .await?;
        }
        Ok(())
    }

    async fn wait_ok(&self) -> Result<()> {
        let all = self.all_nodes();
        let what = format!(
            "cluster_state:ok with {} nodes and 16384 slots on every node",
            all.len()
        );
        wait_until(&what, CLUSTER_TIMEOUT, &all, || self.all_ok()).await
    }

    async fn all_know(&self, n: usize) -> Result<bool> {
        let n = n.to_string();
        for node in self.all_nodes() {
            let info = node.command(&["CLUSTER", "INFO"]).await?;
            let info = info.as_text().unwrap_or_default();
            if info_field(&info, "cluster_known_nodes") != Some(n.as_str()) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn replicas_synced(&self) -> Result<bool> {
        for replica in &self.replicas {
            let info = replica.command(&["INFO", "replication"]).await?;
            let info = info.as_text().unwrap_or_default();
            if info_field(&info, "master_link_status") != Some("up") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn all_ok(&self) -> Result<bool> {
        let known = self.all_nodes().len().to_string();
        for node in self.all_nodes() {
            let info = node.command(&["CLUSTER", "INFO"]).await?;
            let info = info.as_text().unwrap_or_default();
            let ok = info_field(&info, "cluster_state") == Some("ok")
                && info_field(&info, "cluster_known_nodes") == Some(known.as_str())
                && info_field(&info, "cluster_slots_assigned") == Some("16384")
                && info_field(&info, "cluster_slots_ok") == Some("16384");
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `redis+cluster://127.0.0.1:P1,…`: every master, then every replica;
    /// `rediss+cluster://…` over TLS (a client must also trust
    /// [`tls_ca_path`](Self::tls_ca_path)).
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .all_nodes()
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let scheme = if self.tls.is_some() {
            "rediss+cluster"
        } else {
            "redis+cluster"
        };
        format!("{scheme}://{}", hosts.join(","))
    }

    /// The CA certificate (PEM) every node's certificate is signed by, for a cluster started
    /// with [`start_tls`](Self::start_tls).
    pub fn tls_ca_path(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(_, files)| files.ca_cert.as_path())
    }

    /// The three masters as started, in slot order (the first serves slots 0..=5460).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The masters as started, to kill, pause or restart one.
    pub fn nodes_mut(&mut self) -> &mut [RedisServer] {
        &mut self.nodes
    }

    /// The replicas, one per master in the order of [`nodes`](Self::nodes); empty unless
    /// started [`with_replicas`](Self::with_replicas).
    pub fn replicas(&self) -> &[RedisServer] {
        &self.replicas
    }

    /// `redis://127.0.0.1:Pi` (`rediss://` over TLS) for each master.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// The options of one cluster node, with the shared certificates of a TLS cluster.
fn node_builder(tls: Option<TlsFiles>) -> RedisServerBuilder {
    let builder = RedisServer::builder().mode(Mode::ClusterNode);
    match tls {
        Some(files) => builder.tls_files(files),
        None => builder,
    }
}
