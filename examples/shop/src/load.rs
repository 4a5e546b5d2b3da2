//! `shop-load`: the load run and the fault run against real shop processes.
//!
//! Both start their own deployment (a private `redis-server` with AOF, two `shop serve`
//! instances, two `shop worker` processes, the SMTP sink answering after 200 ms; or the
//! embedded backend with one instance and one worker), drive it with oha at a fixed arrival
//! rate (one oha process per route class and instance), read back every request oha made,
//! and report latency per route, e-mails per order, 429s per key against a replay of the
//! limit, the cache's hit ratio, and (fault run) one verdict per property.

mod chart;
mod emails;
mod faults;
mod limitprobe;
mod oha;
mod procs;
mod run;
mod stats;
mod topo;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

const ABOUT: &str = "The shop's load run and fault run (issue 17).

`shop-load run` starts the shop on a private Redis (2 instances, 2 workers) and on the embedded
backend (1 instance, 1 worker), with the cache on and off, and drives a fixed arrival rate with
oha: browse 80 % (GET /products over a large pool of users, none near its limit), order 10 %
(POST /orders; the SMTP sink takes 200 ms a message), update 2 % (PUT /products/{id}, premium
keys), over-limit clients 8 % (4 keys each far over 100/minute, split over both instances).
It reports p50/p99/p99.9 per route, requests/s, e-mails per accepted order, 429s per over-limit
client against a replay of GCRA over the send times, the cache hit ratio, closed-loop capacity of
the listing cached and uncached, the rate-limit layer's cost, and the issue's targets.

`shop-load faults` runs the same deployment on Redis while it kill -9s a worker every 20 s (and
restarts it), restarts Redis once (graceful SHUTDOWN, 5 s down, same AOF), and makes the SMTP sink
refuse for 30 s; then prints one verdict per property and exits 1 when one fails.

Both write a chart of latency over time (SVG, and PNG through headless Chromium when it is
installed) into a temporary folder, or into examples/shop/docs/ with --publish.
oha 1.16.0 must be installed: cargo install --locked oha --version 1.16.0 --root ~/.cache/celeriac/tools";

#[derive(Parser, Debug)]
#[command(name = "shop-load", about = "The shop's load run and fault run", long_about = ABOUT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The load run: latency, throughput, e-mails, 429s and cache hits per scenario.
    Run(run::RunArgs),
    /// The fault run: kills, a Redis restart and an SMTP outage under load, with verdicts.
    Faults(faults::FaultArgs),
    /// (Internal) serves /plain and /limited for the rate-limit overhead measurement.
    #[command(hide = true)]
    LimitProbe(limitprobe::ProbeArgs),
}

/// Options of both runs.
#[derive(Args, Debug, Clone)]
pub(crate) struct Common {
    /// The `shop` binary (default: next to this one).
    #[arg(long, env = "SHOP_LOAD_SHOP")]
    shop: Option<PathBuf>,
    /// The oha binary (default: $PATH, then ~/.cache/celeriac/tools/bin/oha).
    #[arg(long, env = "SHOP_LOAD_OHA")]
    oha: Option<PathBuf>,
    /// Where to keep logs, databases and oha's records (default: a new temporary folder,
    /// deleted at the end unless --keep).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Keep the work folder.
    #[arg(long)]
    keep: bool,
    /// Write the chart to examples/shop/docs/ (the committed picture) instead of the work folder.
    #[arg(long)]
    publish: bool,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// Per-minute limit of a standard key, as the shop is configured (for the replay).
    #[arg(long, default_value_t = 100)]
    limit_per_minute: u32,
    /// Per-minute limit of a premium key, as the shop is configured.
    #[arg(long, default_value_t = 1000)]
    premium_per_minute: u32,
}

/// The folder a run works in, removed at the end unless kept.
pub(crate) struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    fn new(c: &Common) -> Result<WorkDir> {
        match &c.work_dir {
            Some(p) => {
                std::fs::create_dir_all(p)?;
                Ok(WorkDir {
                    path: p.clone(),
                    keep: true,
                })
            }
            None => {
                let p = std::env::temp_dir().join(format!(
                    "shop-load-{}-{}",
                    std::process::id(),
                    oha::now_ms() as u64
                ));
                std::fs::create_dir_all(&p)?;
                Ok(WorkDir {
                    path: p,
                    keep: c.keep,
                })
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Resolved tools and settings shared by the runs.
pub(crate) struct Env {
    pub(crate) shop: PathBuf,
    pub(crate) oha: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) docs: PathBuf,
    pub(crate) common: Common,
}

fn shop_binary(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe().context("finding shop-load's own path")?;
    let next = me.with_file_name("shop");
    if next.is_file() {
        return Ok(next);
    }
    bail!(
        "no `shop` binary next to {} (build it with `cargo build --release -p shop`, or give --shop)",
        me.display()
    )
}

impl Common {
    /// The quota the shop gives a key (the shop's own `http::quota`: GCRA, a bucket of the
    /// per-minute limit).
    pub(crate) fn quota_of(&self, key: &str) -> celeriac::limit::Quota {
        let premium = key.starts_with("admin-") || key.starts_with("probe-");
        let per_minute = if premium {
            self.premium_per_minute
        } else {
            self.limit_per_minute
        };
        crate::http::quota(per_minute, if premium { "premium" } else { "default" })
    }
}

/// Prints a progress line on stderr.
pub(crate) fn say(line: impl AsRef<str>) {
    eprintln!("[shop-load] {}", line.as_ref());
}

/// Parses `30s`, `10m`, `200ms`, `1.5s`.
pub(crate) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    celeriac::duration::parse(s).map_err(|e| e.to_string())
}

/// Runs `shop-load`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shop-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        let work = async move {
            match cli.cmd {
                Cmd::LimitProbe(a) => limitprobe::serve(a).await.map(|()| true),
                Cmd::Run(a) => {
                    let (env, _dir) = prepare(&a.common)?;
                    run::run(&env, &a).await
                }
                Cmd::Faults(a) => {
                    let (env, _dir) = prepare(&a.common)?;
                    faults::run(&env, &a).await
                }
            }
        };
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; every process started was stopped")),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("shop-load: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn prepare(c: &Common) -> Result<(Env, WorkDir)> {
    let shop = shop_binary(c.shop.as_deref())?;
    let oha = oha::find(c.oha.as_deref())?;
    let dir = WorkDir::new(c)?;
    let docs = if c.publish {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs")
    } else {
        dir.path.clone()
    };
    std::fs::create_dir_all(&docs)?;
    say(format!(
        "work folder {}{}",
        dir.path.display(),
        if dir.keep {
            " (kept)"
        } else {
            " (removed at the end; --keep keeps it)"
        }
    ));
    Ok((
        Env {
            shop,
            oha,
            work: dir.path.clone(),
            docs,
            common: c.clone(),
        },
        dir,
    ))
}
