//! `celeriac limits`: rate limits in the store from the command line.

use crate::support::{CliError, CliResult};
use celeriac::clock::Clock;
use celeriac::limit::Quota;
use celeriac::RateLimitStore;
use clap::Subcommand;
use std::sync::Arc;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub(super) enum LimitsCommand {
    /// Check a key against one or more quotas in the store, charge it if every quota allows
    /// it, and print the decision (exit status 0 either way).
    Check {
        /// The key (a user, an IP address, an API key).
        key: String,
        /// A quota: `100/minute`, `10/s; burst=5`, `1000/h; algorithm=sliding_window;
        /// name=hourly`. Repeat for several, checked at once (all or nothing).
        #[arg(long = "limit", required = true)]
        limits: Vec<String>,
        /// How many units this call costs.
        #[arg(long, default_value_t = 1)]
        cost: u32,
        /// Print JSON.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
        /// FOR TESTS ONLY: check again and again for this long on the limiter's clock,
        /// `--hammer-tasks` calls at a time, printing the `now` of every allowed call, one per
        /// line.
        #[arg(long, hide = true, value_parser = celeriac::duration::parse)]
        hammer_for: Option<Duration>,
        /// FOR TESTS ONLY: concurrent calls while hammering.
        #[arg(long, hide = true, default_value_t = 4)]
        hammer_tasks: usize,
        /// The warped clock of the process tests (debug builds only); hammering starts at its
        /// origin.
        #[command(flatten)]
        warp: crate::warp::Warp,
    },
}

pub(super) async fn run(url: &str, command: LimitsCommand) -> CliResult {
    let LimitsCommand::Check {
        key,
        limits,
        cost,
        json,
        hammer_for,
        hammer_tasks,
        warp,
    } = command;
    let quotas = limits
        .iter()
        .map(|l| {
            l.parse::<Quota>()
                .map_err(|e| CliError(format!("--limit `{l}`: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    celeriac::limit::check_request(&key, &quotas, cost)?;
    let backend = Arc::new(celeriac::AnyBackend::connect(url).await?);
    let (clock, origin): (Arc<dyn Clock>, i64) = match warp.clock()? {
        Some(warped) => (warped.clock, warped.origin),
        None => {
            let fleet = celeriac_core::StoreClock::fleet_clock(backend.as_ref());
            let now = fleet.now_ms();
            (fleet, now)
        }
    };
    if let Some(length) = hammer_for {
        return hammer(
            backend,
            clock,
            origin,
            length,
            hammer_tasks,
            key,
            quotas,
            cost,
        )
        .await;
    }
    let now = clock.now_ms();
    let d = backend.check_limits(&key, &quotas, cost, now).await?;
    let quota = quotas
        .get(d.quota)
        .map(|q| q.to_string())
        .unwrap_or_default();
    if json {
        let v = serde_json::json!({
            "key": key,
            "allowed": d.allowed,
            "quota": quota,
            "limit": d.limit,
            "remaining": d.remaining,
            "reset_after_ms": d.reset_after.as_millis() as u64,
            "retry_after_ms": d.retry_after.map(|r| r.as_millis() as u64),
        });
        println!("{v}");
    } else {
        let verdict = if d.allowed { "allowed" } else { "denied" };
        print!(
            "{verdict}: {key} under {quota}: {} of {} remaining, full again in {:?}",
            d.remaining, d.limit, d.reset_after
        );
        match d.retry_after {
            Some(r) => println!(", retry after {r:?}"),
            None => println!(),
        }
    }
    Ok(())
}

/// Calls the store without pause from `tasks` tasks between `origin` and `origin + length`
/// on `clock`, and prints the `now` of every allowed call.
#[allow(clippy::too_many_arguments)]
async fn hammer(
    backend: Arc<celeriac::AnyBackend>,
    clock: Arc<dyn Clock>,
    origin: i64,
    length: Duration,
    tasks: usize,
    key: String,
    quotas: Vec<Quota>,
    cost: u32,
) -> CliResult {
    let end = origin.saturating_add(celeriac::clock::duration_ms(length));
    let wait = origin - clock.now_ms();
    if wait > 0 {
        let real = clock.real_duration(Duration::from_millis(wait as u64));
        tokio::time::sleep(real).await;
    }
    let quotas: Arc<[Quota]> = quotas.into();
    let key: Arc<str> = key.into();
    let mut handles = Vec::new();
    for _ in 0..tasks.max(1) {
        let (backend, clock, quotas, key) =
            (backend.clone(), clock.clone(), quotas.clone(), key.clone());
        handles.push(tokio::spawn(async move {
            let mut allowed = Vec::new();
            loop {
                let now = clock.now_ms();
                if now >= end {
                    return Ok::<_, celeriac::Error>(allowed);
                }
                if backend
                    .check_limits(&key, &quotas, cost, now)
                    .await?
                    .allowed
                {
                    allowed.push(now);
                }
            }
        }));
    }
    let mut out = String::new();
    for h in handles {
        let allowed = h
            .await
            .map_err(|e| CliError(format!("a hammer task failed: {e}")))??;
        for now in allowed {
            out.push_str(&now.to_string());
            out.push('\n');
        }
    }
    print!("{out}");
    Ok(())
}
