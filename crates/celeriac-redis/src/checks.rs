//! Checks at start that a Redis is safe for queues: it must not evict keys
//! (`maxmemory-policy`) and must persist them somehow (AOF or RDB save points). The settings
//! are read with `CONFIG GET`; where that is refused (managed services, a least-privilege ACL
//! user, see [`crate::acl`]), from `INFO`.

use crate::auth_or_backend;
use crate::conn::{map_err, Connector};
use celeriac_core::backend::KvMemory;
use celeriac_core::error::{Error, Result};
use redis::aio::MultiplexedConnection;

/// Refuses a data node whose `maxmemory-policy` may evict keys. Where `CONFIG GET` is refused
/// (managed services, a least-privilege ACL user) or hides the setting, the policy is read from
/// `INFO memory` (`maxmemory_policy`) instead.
pub(crate) async fn check_policy(connector: &Connector) -> Result<()> {
    for client in connector.data_node_clients().await? {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(map_err)?;
        let policy = match config_get(&mut c, "maxmemory-policy").await {
            Ok(Some(v)) => v,
            Err(e) if is_auth(&e) => return Err(auth_or_backend(e, connector.config())),
            unreadable => {
                let refused = match unreadable {
                    Err(e) => format!("CONFIG GET was refused: {e}"),
                    _ => "CONFIG GET does not show it".to_string(),
                };
                let cannot_read = |why: String| {
                    Error::config(
                        "url: allow_eviction",
                        format!(
                            "cannot read this Redis's maxmemory-policy ({refused}; {why}); \
                             grant the user INFO (see celeriac_redis::acl), or check that the \
                             policy is noeviction and add ?allow_eviction=true to the URL to \
                             skip this check"
                        ),
                    )
                };
                let info = info(&mut c, "memory", connector).await?;
                match info {
                    Ok(text) => match info_field(&text, "maxmemory_policy") {
                        Some(policy) => policy.to_string(),
                        None => {
                            return Err(cannot_read(
                                "INFO memory has no maxmemory_policy".to_string(),
                            ))
                        }
                    },
                    Err(e) => return Err(cannot_read(format!("INFO was refused too: {e}"))),
                }
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
/// Where `CONFIG GET` is refused (managed services, a least-privilege ACL user) or hides the
/// settings, `INFO persistence` shows whether the AOF is on; without it the save points cannot
/// be seen, and the node is refused with a message saying so.
pub(crate) async fn check_persistence(connector: &Connector) -> Result<()> {
    for client in connector.data_node_clients().await? {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(map_err)?;
        let settings = async {
            let aof = config_get(&mut c, "appendonly").await?;
            let save = config_get(&mut c, "save").await?;
            Ok::<_, redis::RedisError>(aof.zip(save))
        };
        match settings.await {
            Ok(Some((aof, save))) if aof == "yes" || !save.trim().is_empty() => {}
            Ok(Some((aof, save))) => {
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
            unreadable => {
                let refused = match unreadable {
                    Err(e) => format!("CONFIG GET was refused: {e}"),
                    _ => "CONFIG GET does not show them".to_string(),
                };
                let info = match info(&mut c, "persistence", connector).await? {
                    Ok(text) => text,
                    Err(e) => {
                        return Err(Error::config(
                            "url: allow_volatile",
                            format!(
                                "cannot read whether this Redis persists anything ({refused}; \
                                 INFO was refused too: {e}); grant the user INFO (see \
                                 celeriac_redis::acl), or check that it persists and add \
                                 ?allow_volatile=true to the URL to skip this check"
                            ),
                        ))
                    }
                };
                if info_field(&info, "aof_enabled") != Some("1") {
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

/// For a cache-only Redis (`?role=cache`): logs a warning when a data node is bounded and
/// does not evict (`noeviction`), since its writes fail once it is full; the cache then counts
/// them and serves from L1 or the loader. Says nothing when the policy cannot be read.
pub(crate) async fn warn_if_refusing_when_full(connector: &Connector) {
    match memory(connector).await {
        Ok(Some(m)) if m.policy == "noeviction" => tracing::warn!(
            maxmemory = m.max_bytes,
            "this cache Redis (role=cache) has maxmemory-policy noeviction: once full it refuses \
             writes instead of evicting (the cache counts them as l2_errors and serves from L1 \
             or its loader); allkeys-lfu is the policy for a cache"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "could not read the cache Redis's memory policy"),
    }
}

/// The memory figures of the data nodes, summed (`INFO memory`, `INFO stats`): `None` when a
/// node refuses `INFO`. The policy is the first node's (`mixed` when they differ).
pub(crate) async fn memory(connector: &Connector) -> Result<Option<KvMemory>> {
    let mut total: Option<KvMemory> = None;
    for client in connector.data_node_clients().await? {
        let mut c = client
            .get_multiplexed_async_connection()
            .await
            .map_err(map_err)?;
        let Ok(mem) = info(&mut c, "memory", connector).await? else {
            return Ok(None);
        };
        let Ok(stats) = info(&mut c, "stats", connector).await? else {
            return Ok(None);
        };
        let num = |text: &str, field| {
            info_field(text, field)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let policy = info_field(&mem, "maxmemory_policy").unwrap_or("unknown");
        let node = KvMemory::new(
            num(&mem, "used_memory"),
            num(&mem, "maxmemory"),
            policy,
            num(&stats, "evicted_keys"),
        );
        total = Some(match total {
            None => node,
            Some(t) => KvMemory::new(
                t.used_bytes + node.used_bytes,
                t.max_bytes + node.max_bytes,
                if t.policy == node.policy {
                    t.policy
                } else {
                    "mixed".to_string()
                },
                t.evicted_keys + node.evicted_keys,
            ),
        });
    }
    Ok(total)
}

/// The value of one setting (`CONFIG GET name`); `None` when the reply does not list it (a
/// service that hides the setting).
async fn config_get(
    c: &mut MultiplexedConnection,
    name: &str,
) -> redis::RedisResult<Option<String>> {
    let reply: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg(name)
        .query_async(c)
        .await?;
    Ok(reply.get(1).cloned())
}

/// `INFO <section>`: the inner error is the server refusing it (no permission, an unknown or
/// renamed command); the outer one anything else (authentication, the connection).
async fn info(
    c: &mut MultiplexedConnection,
    section: &str,
    connector: &Connector,
) -> Result<std::result::Result<String, redis::RedisError>> {
    match redis::cmd("INFO").arg(section).query_async(c).await {
        Ok(text) => Ok(Ok(text)),
        Err(e) if is_auth(&e) => Err(auth_or_backend(e, connector.config())),
        Err(e) if matches!(e.code(), Some("NOPERM" | "ERR")) => Ok(Err(e)),
        Err(e) => Err(map_err(e)),
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then_some(value.trim())
    })
}

fn is_auth(e: &redis::RedisError) -> bool {
    matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
}

#[cfg(test)]
mod tests {
    use super::info_field;

    #[test]
    fn the_policy_and_the_aof_flag_are_read_from_info() {
        let memory = "# Memory\r\nused_memory:1024\r\nmaxmemory_policy:allkeys-lru\r\n";
        assert_eq!(info_field(memory, "maxmemory_policy"), Some("allkeys-lru"));
        let persistence = "# Persistence\r\naof_enabled:1\r\naof_rewrite_in_progress:0\r\n";
        assert_eq!(info_field(persistence, "aof_enabled"), Some("1"));
        assert_eq!(info_field(persistence, "aof"), None);
    }
}
