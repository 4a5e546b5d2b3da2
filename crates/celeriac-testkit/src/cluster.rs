//! A 3-master Redis Cluster: [`RedisCluster`].

use std::time::Duration;

use crate::error::Result;
use crate::server::{info_field, wait_until, Mode, RedisServer};

/// The slots each master serves: three even-ish ranges covering 0..=16383.
const SLOT_RANGES: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];
/// How long the nodes may take to agree on `cluster_state:ok`.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(30);

/// Three cluster-enabled masters (no replicas) that together serve all 16384 slots.
///
/// Each node is a [`RedisServer`] in its own directory with its cluster bus on port + 10000;
/// dropping the cluster kills all three.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
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
        let node = || RedisServer::builder().mode(Mode::ClusterNode).start();
        let (a, b, c) = tokio::try_join!(node(), node(), node())?;
        let cluster = RedisCluster {
            nodes: vec![a, b, c],
        };
        for (i, (node, (first, last))) in cluster.nodes.iter().zip(SLOT_RANGES).enumerate() {
            // Distinct epochs up front, as `redis-cli --cluster create` does, so the nodes do
            // not have to resolve an epoch collision first.
            let epoch = (i + 1).to_string();
            node.command(&["CLUSTER", "SET-CONFIG-EPOCH", &epoch])
                .await?;
            let (first, last) = (first.to_string(), last.to_string());
            node.command(&["CLUSTER", "ADDSLOTSRANGE", &first, &last])
                .await?;
        }
        let first = &cluster.nodes[0];
        for other in &cluster.nodes[1..] {
            let port = other.port().to_string();
            first
                .command(&["CLUSTER", "MEET", "127.0.0.1", &port])
                .await?;
        }
        let nodes: Vec<&RedisServer> = cluster.nodes.iter().collect();
        wait_until(
            "cluster_state:ok with 3 nodes and 16384 slots on every node",
            CLUSTER_TIMEOUT,
            &nodes,
            || cluster.all_ok(),
        )
        .await?;
        Ok(cluster)
    }

    async fn all_ok(&self) -> Result<bool> {
        for node in &self.nodes {
            let info = node.command(&["CLUSTER", "INFO"]).await?;
            let info = info.as_text().unwrap_or_default();
            let ok = info_field(&info, "cluster_state") == Some("ok")
                && info_field(&info, "cluster_known_nodes") == Some("3")
                && info_field(&info, "cluster_slots_assigned") == Some("16384")
                && info_field(&info, "cluster_slots_ok") == Some("16384");
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// The three nodes, in slot order (the first serves slots 0..=5460).
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:Pi` for each node.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
