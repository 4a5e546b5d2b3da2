//! Checks at start that a Redis is safe for queues: it must not evict keys
//! (`maxmemory-policy`) and must persist them somehow (AOF or RDB save points).

use crate::auth_or_backend;
use crate::conn::{map_err, Connector};
use celeriac_core::error::{Error, Result};
use redis::aio::MultiplexedConnection;

/// Refuses a data node whose `maxmemory-policy` may evict keys.
pub(crate) async fn check_policy(connector: &Connector) -> Result<()> {
    for client in connector.data_node_clients().await? {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(map_err)?;
        let policy = match config_get(&mut c, "maxmemory-policy").await {
            Ok(v) => v,
            Err(e) if is_auth(&e) => return Err(auth_or_backend(e, connector.config())),
            Err(e) => {
                return Err(Error::config(
                    "url: allow_eviction",
                    format!("cannot read maxmemory-policy ({e}); check it is noeviction and add ?allow_eviction=true to skip this check"),
                ))
            }
        };
        if policy != "noeviction" {
            return Err(Error::config(
                "url: allow_eviction",
                format!(
                    "this Redis has maxmemory-policy `{policy}`, which may evict queued jobs; set \
                     it to noeviction (CONFIG SET maxmemory-policy noeviction) or add \
                     ?allow_eviction=true to the URL to accept losing jobs"
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a data node that persists nothing: no append-only file and no RDB save point.
/// Where `CONFIG` is refused (managed services), `INFO persistence` shows whether the AOF is
/// on; without it the save points cannot be seen, and the node is refused with a message
/// saying so.
pub(crate) async fn check_persistence(connector: &Connector) -> Result<()> {
    for client in connector.data_node_clients().await? {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(map_err)?;
        let settings = async {
            let aof = config_get(&mut c, "appendonly").await?;
            let save = config_get(&mut c, "save").await?;
            Ok::<_, redis::RedisError>((aof, save))
        };
        match settings.await {
            Ok((aof, save)) if aof == "yes" || !save.trim().is_empty() => {}
            Ok((aof, save)) => {
                return Err(Error::config(
                    "url: allow_volatile",
                    format!(
                        "this Redis persists nothing (appendonly `{aof}`, save `{save}`): a \
                         restart or crash of it loses every queued job, result and schedule; \
                         turn on the append-only file (CONFIG SET appendonly yes, with \
                         appendfsync everysec) or RDB snapshots (CONFIG SET save \"3600 1 300 \
                         100\"), or add ?allow_volatile=true to the URL to accept losing them"
                    ),
                ))
            }
            Err(e) if is_auth(&e) => return Err(auth_or_backend(e, connector.config())),
            Err(refused) => {
                let info: String = redis::cmd("INFO")
                    .arg("persistence")
                    .query_async(&mut c)
                    .await
                    .map_err(|e| auth_or_backend(e, connector.config()))?;
                let aof_on = info.lines().any(|l| l.trim_end() == "aof_enabled:1");
                if !aof_on {
                    return Err(Error::config(
                        "url: allow_volatile",
                        format!(
                            "cannot read this Redis's save points ({refused}) and its append-only \
                             file is off (INFO persistence): if it persists nothing, a restart \
                             loses every queued job, result and schedule; check that RDB \
                             snapshots are on and add ?allow_volatile=true to skip this check"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The value of one setting (`CONFIG GET name`).
async fn config_get(c: &mut MultiplexedConnection, name: &str) -> redis::RedisResult<String> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(c)
        .await?;
    Ok(reply.get(1).cloned().unwrap_or_default())
}

fn is_auth(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}
