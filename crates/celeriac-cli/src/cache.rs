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
    if json {
        let rows: Vec<serde_json::Value> = all
            .iter()
            .map(|n| {
                let mut v = serde_json::to_value(n).unwrap_or_default();
                v["hit_ratio"] = n.hit_ratio().into();
                v["mean_load_ms"] = n.mean_load_ms().into();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no cache of application `{name}` has published statistics yet");
        return Ok(());
    }
    println!(
        "{:<20} {:>5} {:>10} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>19} {:>7} {:>9}",
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
        "EVICTED",
        "EXPIRED",
        "REMOVED",
        "L1 BYTES",
        "L2 ERR",
        "TOO LARGE"
    );
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
            format!("{}/{}", s.l1_weighted_bytes, s.l1_max_bytes)
        } else {
            "-".to_string()
        };
        println!(
            "{:<20} {:>5} {:>10} {:>10} {:>9} {:>6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>9} {:>19} {:>7} {:>9}",
            n.namespace,
            n.instances,
            s.l1_hits,
            s.l2_hits,
            s.misses,
            ratio,
            s.stale_served,
            s.loads,
            load,
            s.waiters,
            s.l1_evicted_size,
            s.l1_expired,
            s.l1_removed,
            bytes,
            s.l2_errors,
            s.too_large
        );
    }
    Ok(())
}
