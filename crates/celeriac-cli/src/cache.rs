//! `celeriac cache`: reading, warming, invalidating and measuring named caches.

use crate::args::CacheCommand;
use crate::demo;
use crate::support::{progress_bar, CliError, CliResult};
use celeriac::App;
use std::time::Duration;

pub(crate) async fn cache(app: App, command: CacheCommand) -> CliResult {
    match command {
        CacheCommand::Stats {
            namespace,
            app: name,
            json,
        } => cache_stats(&app, &name, namespace, json).await,
        CacheCommand::Probe {
            key,
            initial,
            set,
            within,
        } => probe(&app, &key, initial, set, within).await,
        CacheCommand::WriteBehindDemo { writes, keys } => {
            use std::io::Write;
            let cache = demo::stock_cache().build(app.backend().clone()).await?;
            let wb = celeriac::cache::WriteBehind::new(cache);
            let mut out = std::io::stdout().lock();
            for i in 0..writes {
                let key = format!("sku-{}", i % keys.max(1));
                let version = wb.write(key.as_str(), i).await?;
                writeln!(out, "acked {key} {version} {i}")?;
                out.flush()?;
            }
            writeln!(out, "done")?;
            out.flush()?;
            drop(out);
            std::future::pending::<()>().await;
            Ok(())
        }
        CacheCommand::Warm {
            namespace,
            keys,
            all,
            concurrency,
            json,
        } => {
            if keys.is_empty() && !all {
                return Err(CliError(format!(
                    "cache warm {namespace}: give --keys a,b,c or --all"
                )));
            }
            if concurrency == 0 {
                return Err(CliError("--concurrency must be at least 1".into()));
            }
            let warmer = celeriac::cache_warmer(&namespace).ok_or_else(|| {
                CliError(format!(
                    "no cache warmer for namespace `{namespace}` (this program registers: {})",
                    celeriac::cache_warmer_namespaces().join(", ")
                ))
            })?;
            let bar = progress_bar(0, "warming");
            let shown = bar.clone();
            let progress: celeriac::cache::WarmProgress =
                std::sync::Arc::new(move |done, total| {
                    shown.set_length(total as u64);
                    shown.set_position(done as u64);
                });
            let started = std::time::Instant::now();
            let keys = (!all).then_some(keys);
            let report = warmer
                .warm(app.backend().clone(), keys, concurrency, progress)
                .await?;
            bar.finish_and_clear();
            let seconds = started.elapsed().as_secs_f64();
            if json {
                let mut v = serde_json::to_value(&report)?;
                v["namespace"] = namespace.clone().into();
                v["seconds"] = seconds.into();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "warmed {namespace}: {} keys in the cache ({} loaded, the rest were fresh), \
                     {} failed, in {seconds:.2} s",
                    report.ok, report.loaded, report.failed
                );
                if let Some(e) = &report.first_error {
                    println!("first failure: {e}");
                }
            }
            if report.failed > 0 {
                return Err(CliError(format!(
                    "{} of {} keys of `{namespace}` did not warm",
                    report.failed,
                    report.ok + report.failed
                )));
            }
            Ok(())
        }
    }
}

async fn probe(
    app: &App,
    key: &str,
    initial: String,
    set: Option<String>,
    within: Duration,
) -> CliResult {
    use std::io::{BufRead, Write};
    let cache: celeriac::cache::Cache<str, String, celeriac::AnyBackend> =
        celeriac::cache::Cache::<str, String, ()>::builder("probe")
            .ttl(Duration::from_secs(3600))
            .early_refresh(0.0)
            .build(app.backend().clone())
            .await?;
    let seen = cache.get_with(key, move || async move { initial }).await?;
    let deadline = std::time::Instant::now() + within;
    while !cache.listening() {
        if std::time::Instant::now() > deadline {
            return Err(CliError(
                "the invalidation channel was not subscribed in time".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let unix_ms = || celeriac::Clock::now_ms(&celeriac::SystemClock);
    let say = |line: String| -> CliResult {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")?;
        out.flush()?;
        Ok(())
    };
    say(format!("ready {seen}"))?;
    if let Some(new) = set {
        let mut go = String::new();
        tokio::task::spawn_blocking(move || std::io::stdin().lock().read_line(&mut go))
            .await
            .map_err(|e| CliError(e.to_string()))??;
        cache.set(key, new).await?;
        return say(format!("set {}", unix_ms()));
    }
    loop {
        let now = cache.get(key).await?;
        if now.as_deref() != Some(seen.as_str()) {
            let shown = now.unwrap_or_else(|| "(none)".into());
            return say(format!("saw {shown} {}", unix_ms()));
        }
        if std::time::Instant::now() > deadline {
            return Err(CliError(format!(
                "`{key}` still reads `{seen}` after {within:?}: no update arrived"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn cache_stats(app: &App, name: &str, namespace: Option<String>, json: bool) -> CliResult {
    use celeriac::backend::KvStore;
    use celeriac::cache::stats;
    let store = app.backend();
    let now = celeriac::Clock::now_ms(&*celeriac_core::StoreClock::fleet_clock(store.as_ref()));
    let names = match namespace {
        Some(ns) => vec![ns],
        None => stats::namespaces(&**store, name, now).await?,
    };
    let mut all = Vec::with_capacity(names.len());
    for ns in &names {
        all.push(stats::read_stats(&**store, name, ns, now).await?);
    }
    let backend = backend_name(app.url());
    // The store's memory does not decide the counters: a store that cannot tell it (or fails
    // to) leaves the rest of the answer as it is.
    let memory = store.kv_memory().await.map_err(|e| e.to_string());
    if json {
        let l2 = l2_json(backend, &memory);
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["hit_ratio"] = n.hit_ratio().into();
                v["mean_load_ms"] = n.mean_load_ms().into();
                v["l2_memory"] = l2.clone();
                v
            })
            .collect();
        if let Err(e) = &memory {
            eprintln!("the L2's memory was not read: {e}");
        }
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no cache of application `{name}` has published statistics yet");
        println!("{}", l2_line(backend, &memory));
        return Ok(());
    }
    let mut table = vec![[
        "NAMESPACE",
        "INST",
        "L1 HITS",
        "L2 HITS",
        "MISSES",
        "HIT %",
        "STALE",
        "LOADS",
        "LOAD MS",
        "WAITERS",
        "LOADING",
        "ADDED",
        "EVICTED",
        "EXPIRED",
        "REMOVED",
        "L1 BYTES",
        "L2 ERR",
        "L2 FULL",
        "TOO LARGE",
    ]
    .map(String::from)];
    for n in &all {
        let s = &n.stats;
        let ratio = n
            .hit_ratio()
            .map_or_else(|| "-".to_string(), |r| format!("{:.1}", r * 100.0));
        let load = n
            .mean_load_ms()
            .map_or_else(|| "-".to_string(), |m| format!("{m:.1}"));
        // The L1's weighted size over its byte bound, when it has one.
        let bytes = if s.l1_max_bytes > 0 {
            format!(
                "{}/{} ({})",
                human_bytes(s.l1_weighted_bytes),
                human_bytes(s.l1_max_bytes),
                percent_of(s.l1_weighted_bytes, s.l1_max_bytes)
            )
        } else {
            "-".to_string()
        };
        table.push([
            n.namespace.clone(),
            n.instances.to_string(),
            s.l1_hits.to_string(),
            s.l2_hits.to_string(),
            s.misses.to_string(),
            ratio,
            s.stale_served.to_string(),
            s.loads.to_string(),
            load,
            s.waiters.to_string(),
            s.loading.to_string(),
            s.l1_added.to_string(),
            s.l1_evicted_size.to_string(),
            s.l1_expired.to_string(),
            s.l1_removed.to_string(),
            bytes,
            s.l2_errors.to_string(),
            s.l2_full.to_string(),
            s.too_large.to_string(),
        ]);
    }
    print!("{}", aligned(&table));
    println!("{}", l2_line(backend, &memory));
    Ok(())
}

/// `sqlite` or `redis`, from the store's URL.
fn backend_name(url: &str) -> &'static str {
    if url.starts_with("sqlite") {
        "sqlite"
    } else {
        "redis"
    }
}

/// The rows with each column as wide as its widest cell: the first column to the left, the
/// others to the right.
fn aligned<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i == 0 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Bytes in binary units: `512 B`, `4.8 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `part` out of `whole` (above 0) in whole percent.
fn percent_of(part: u64, whole: u64) -> String {
    format!("{:.0}%", part as f64 * 100.0 / whole as f64)
}

/// The L2's memory in one line: `L2 (redis): 4.8 MiB used of 5.0 MiB (96%), policy
/// allkeys-lfu, 12,345 keys evicted`.
fn l2_line(backend: &str, memory: &Result<Option<celeriac::backend::KvMemory>, String>) -> String {
    let m = match memory {
        Err(e) => return format!("L2 ({backend}): its memory could not be read: {e}"),
        Ok(None) => return format!("L2 ({backend}): the store does not report its memory"),
        Ok(Some(m)) => m,
    };
    let used = if m.max_bytes > 0 {
        format!(
            "{} used of {} ({})",
            human_bytes(m.used_bytes),
            human_bytes(m.max_bytes),
            percent_of(m.used_bytes, m.max_bytes)
        )
    } else {
        format!("{} used, unbounded", human_bytes(m.used_bytes))
    };
    let keys = if m.evicted_keys == 1 { "key" } else { "keys" };
    let mut line = format!(
        "L2 ({backend}): {used}, policy {}, {} {keys} evicted",
        m.policy,
        crate::confirm::thousands(m.evicted_keys)
    );
    if m.refuses_when_full() {
        line.push_str(" (noeviction: writes fail when full)");
    }
    line
}

/// The L2's memory for `--json`: `null` when the store does not report it (or could not).
fn l2_json(
    backend: &str,
    memory: &Result<Option<celeriac::backend::KvMemory>, String>,
) -> serde_json::Value {
    match memory {
        Ok(Some(m)) => serde_json::json!({
            "backend": backend,
            "used_bytes": m.used_bytes,
            "max_bytes": m.max_bytes,
            "used_ratio": (m.max_bytes > 0).then(|| m.used_bytes as f64 / m.max_bytes as f64),
            "policy": m.policy,
            "evicted_keys": m.evicted_keys,
            "refuses_when_full": m.refuses_when_full(),
        }),
        _ => serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use celeriac::backend::KvMemory;

    #[test]
    fn the_l2_line_reads_like_a_sentence() {
        let full = KvMemory::new(5_033_165, 5 << 20, "allkeys-lfu", 12_345);
        assert_eq!(
            l2_line("redis", &Ok(Some(full))),
            "L2 (redis): 4.8 MiB used of 5.0 MiB (96%), policy allkeys-lfu, 12,345 keys evicted"
        );
        let refusing = KvMemory::new(1024, 2048, "noeviction", 0);
        assert_eq!(
            l2_line("redis", &Ok(Some(refusing))),
            "L2 (redis): 1.0 KiB used of 2.0 KiB (50%), policy noeviction, 0 keys evicted \
             (noeviction: writes fail when full)"
        );
        let sqlite = KvMemory::new(300, 0, "none", 1);
        assert_eq!(
            l2_line("sqlite", &Ok(Some(sqlite))),
            "L2 (sqlite): 300 B used, unbounded, policy none, 1 key evicted"
        );
        assert_eq!(
            l2_line("redis", &Ok(None)),
            "L2 (redis): the store does not report its memory"
        );
    }

    #[test]
    fn columns_line_up_whatever_their_width() {
        let rows = [
            ["NAME", "N"].map(String::from),
            ["a-rather-long-namespace", "1234567"].map(String::from),
        ];
        let text = aligned(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{text}");
        assert!(lines[0].ends_with("      N"), "{text}");
        assert_eq!(crate::confirm::thousands(1_234_567), "1,234,567");
        assert_eq!(crate::confirm::thousands(999), "999");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
    }
}
