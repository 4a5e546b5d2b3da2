//! `celeriac breaker`: the state of shared circuit breakers in the store, manual overrides,
//! and (hidden) a driver that calls an HTTP endpoint through a breaker, for process tests.

use crate::confirm::{confirm, counted, Plan, Yes};
use crate::support::{CliError, CliResult};
use celeriac::backend::{BreakerCommand as StoreCommand, BreakerStore, SharedBreakerState};
use celeriac::breaker::shared::policy_of;
use celeriac::breaker::{
    BreakerState, CallError, CircuitBreaker, SharedBreaker, SharedOptions, WindowKind,
};
use celeriac::{AnyBackend, Clock};
use celeriac_core::StoreClock;
use celeriac_core::UnixMs;
use clap::{Args, Subcommand};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What `celeriac breaker` does.
#[derive(Subcommand, Debug)]
pub(super) enum BreakerCommand {
    /// A shared breaker's state in the store: closed, open (until when), half-open; trips in a
    /// row; the window's calls, failures and reporting instances.
    Status {
        /// The breaker's name.
        name: String,
        /// Print JSON.
        #[arg(long, env = "CELERIAC_JSON")]
        json: bool,
    },
    /// Open a shared breaker for every process until `reset`. Asks first (see --yes).
    ForceOpen {
        /// The breaker's name.
        name: String,
        #[command(flatten)]
        yes: Yes,
    },
    /// Close a shared breaker for every process until `reset` (nothing is judged). Asks
    /// first (see --yes).
    ForceClosed {
        /// The breaker's name.
        name: String,
        #[command(flatten)]
        yes: Yes,
    },
    /// Close a shared breaker with no signals and no backoff history. Asks first (see --yes).
    Reset {
        /// The breaker's name.
        name: String,
        #[command(flatten)]
        yes: Yes,
    },
    /// (Internal) call an HTTP endpoint through a breaker and print one JSON line per call.
    #[command(hide = true)]
    Drive(DriveArgs),
}

/// Settings of the hidden driver.
#[derive(Args, Debug)]
pub(super) struct DriveArgs {
    /// `http://host:port/path` to GET; a 5xx answer or a refused connection is a failure.
    #[arg(long)]
    target: String,
    /// The breaker's name.
    #[arg(long, default_value = "drive")]
    name: String,
    /// Calls to make (0: until killed).
    #[arg(long, default_value_t = 0)]
    calls: u64,
    /// Pause between calls (ms).
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Count window size.
    #[arg(long, default_value_t = 10)]
    window: u32,
    /// Minimum calls before judging.
    #[arg(long, default_value_t = 5)]
    min_calls: u32,
    /// Failure rate (percent) that opens.
    #[arg(long, default_value_t = 50.0)]
    failure_rate: f64,
    /// Open period (ms).
    #[arg(long, default_value_t = 1000)]
    open_ms: u64,
    /// Half-open probes.
    #[arg(long, default_value_t = 1)]
    probes: u32,
    /// Share the breaker through the store at --url.
    #[arg(long)]
    shared: bool,
    /// Shared mode: instances that must each see the failure rate.
    #[arg(long, default_value_t = 1)]
    quorum: u32,
    /// Shared mode: how often to report and adopt the store's state (ms).
    #[arg(long, default_value_t = 200)]
    sync_ms: u64,
    /// Shared mode: this process's instance id.
    #[arg(long, default_value = "drive")]
    instance: String,
}

fn default_breaker(name: &str) -> Result<CircuitBreaker, CliError> {
    Ok(CircuitBreaker::builder(name).build()?)
}

fn print_state(name: &str, s: &SharedBreakerState, now: UnixMs, json: bool) -> CliResult {
    if json {
        let v = serde_json::json!({
            "breaker": name,
            "state": s.state.as_str(),
            "open_until": (s.state == BreakerState::Open).then_some(s.open_until),
            "trips": s.trips,
            "calls": s.window.calls,
            "failures": s.window.failures,
            "slow": s.window.slow,
            "instances": s.instances,
        });
        println!("{v}");
        return Ok(());
    }
    let until = if s.state == BreakerState::Open {
        let left = (s.open_until - now).max(0);
        format!(" for {:.1} s more", left as f64 / 1000.0)
    } else {
        String::new()
    };
    println!(
        "{name}: {}{until}; trips in a row {}; window {} calls, {} failed, {} slow, from {} instances",
        s.state, s.trips, s.window.calls, s.window.failures, s.window.slow, s.instances
    );
    Ok(())
}

pub(super) async fn run(url: &str, command: BreakerCommand) -> CliResult {
    let backend = Arc::new(AnyBackend::connect(url).await?);
    let now = backend.fleet_clock().now_ms();
    let (name, cmd, yes) = match command {
        BreakerCommand::Status { name, json } => {
            return match backend.breaker_status(&name, now).await? {
                Some(s) => print_state(&name, &s, now, json),
                None if json => {
                    println!("{}", serde_json::json!({"breaker": name, "state": null}));
                    Ok(())
                }
                None => {
                    println!("{name}: no shared state in the store (closed)");
                    Ok(())
                }
            };
        }
        BreakerCommand::ForceOpen { name, yes } => (name, StoreCommand::ForceOpen, yes),
        BreakerCommand::ForceClosed { name, yes } => (name, StoreCommand::ForceClosed, yes),
        BreakerCommand::Reset { name, yes } => (name, StoreCommand::Reset, yes),
        BreakerCommand::Drive(args) => return drive(backend, args).await,
    };
    let policy = policy_of(&default_breaker(&name)?, &SharedOptions::default());
    let (action, does) = match cmd {
        StoreCommand::ForceOpen => (
            "breaker_force_open",
            format!(
                "forces breaker `{name}` open: every process rejects its calls until \
                 `celeriac breaker reset {name}`"
            ),
        ),
        StoreCommand::ForceClosed => (
            "breaker_force_closed",
            format!(
                "forces breaker `{name}` closed: every process lets every call through, judging \
                 none, until `celeriac breaker reset {name}`"
            ),
        ),
        StoreCommand::Reset => (
            "breaker_reset",
            format!(
                "resets breaker `{name}` for every process: closed, its signals and backoff \
                 history wiped"
            ),
        ),
    };
    let now_is = match backend.breaker_status(&name, now).await? {
        Some(s) => format!(
            "it is {} now, with {} reporting",
            s.state,
            counted(u64::from(s.instances), "instance", "instances")
        ),
        None => "it has no shared state in the store yet".to_string(),
    };
    let plan = Plan {
        what: format!("{does} ({now_is})"),
        name: name.clone(),
        count: None,
        none: String::new(),
    };
    confirm(yes.yes, &plan)?;
    let s = backend.breaker_command(&name, cmd, &policy, now).await?;
    crate::events::record(
        &backend,
        now,
        action,
        None,
        format!("breaker {name}: {action}"),
    )
    .await;
    print_state(&name, &s, now, false)
}

/// One GET; Ok(status) or the connection error.
async fn get(target: &str) -> Result<u16, String> {
    let rest = target
        .strip_prefix("http://")
        .ok_or_else(|| format!("--target `{target}` must start with http://"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
    let head = String::from_utf8_lossy(&buf[..buf.len().min(64)]).to_string();
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {head:?}"))
}

async fn call_once(target: &str) -> Result<u16, String> {
    match get(target).await {
        Ok(code) if code >= 500 => Err(format!("status {code}")),
        other => other,
    }
}

async fn drive(backend: Arc<AnyBackend>, a: DriveArgs) -> CliResult {
    let breaker = CircuitBreaker::builder(a.name.as_str())
        .window(WindowKind::Count(a.window))
        .min_calls(a.min_calls)
        .failure_rate(a.failure_rate)
        .open_for(Duration::from_millis(a.open_ms))
        .half_open_probes(a.probes)
        .jitter(0.0)
        .build()?;
    let mut events = breaker.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            println!(
                "{}",
                serde_json::json!({"event": "transition", "from": e.from.as_str(), "to": e.to.as_str(), "at": e.at})
            );
        }
    });
    let shared = if a.shared {
        Some(SharedBreaker::new(
            breaker.clone(),
            backend,
            SharedOptions {
                instance: a.instance.clone(),
                sync_interval: Duration::from_millis(a.sync_ms.max(1)),
                quorum: a.quorum,
                ..SharedOptions::default()
            },
        )?)
    } else {
        None
    };
    let mut last_sync = tokio::time::Instant::now();
    let mut n = 0u64;
    while a.calls == 0 || n < a.calls {
        n += 1;
        if let Some(s) = &shared {
            // Synced inline (not by spawn_sync) so that each sync is one line of output.
            if last_sync.elapsed() >= Duration::from_millis(a.sync_ms) {
                last_sync = tokio::time::Instant::now();
                match s.sync().await {
                    Ok(st) => println!(
                        "{}",
                        serde_json::json!({"event": "sync", "state": st.state.as_str(), "local": breaker.state().as_str()})
                    ),
                    Err(e) => println!(
                        "{}",
                        serde_json::json!({"event": "sync_error", "error": e.to_string()})
                    ),
                }
            }
        }
        let result = match &shared {
            Some(s) => s.call(call_once(&a.target)).await,
            None => {
                breaker
                    .call_with(call_once(&a.target), |r| {
                        if r.is_ok() {
                            celeriac::breaker::Verdict::Success
                        } else {
                            celeriac::breaker::Verdict::Failure
                        }
                    })
                    .await
            }
        };
        let word = match &result {
            Ok(_) => "ok",
            Err(CallError::Inner(_)) => "fail",
            Err(CallError::Rejected(_)) => "rejected",
        };
        println!(
            "{}",
            serde_json::json!({"event": "call", "n": n, "result": word, "state": breaker.state().as_str()})
        );
        tokio::time::sleep(Duration::from_millis(a.interval_ms)).await;
    }
    Ok(())
}
