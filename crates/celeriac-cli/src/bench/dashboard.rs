//! The dashboard's part of `celeriac bench monitor`: how long its main pages take to serve
//! over HTTP with every job queued, and what an open tab's live updates cost the store.

use crate::support::CliError;
use celeriac::App;
use serde::Serialize;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What serving the dashboard measured.
#[derive(Debug, Serialize)]
pub struct DashboardTimes {
    /// Milliseconds to serve the overview (median of the rounds), over HTTP.
    pub overview_p50_ms: f64,
    /// A queue's page with its first 50 pending jobs.
    pub queue_p50_ms: f64,
    /// A search with qualifiers (`queue:` and `task:`).
    pub search_p50_ms: f64,
    /// The store time of one live update of the overview, as a share of the time between two
    /// updates (in percent): what one open tab costs the store.
    pub live_store_percent: f64,
    /// On Redis, the Redis CPU one live update takes as a share of the time between two
    /// updates (percent of Redis's one core, from `INFO cpu`).
    pub live_redis_cpu_percent: Option<f64>,
}

/// Serves the dashboard of `app` on a loopback port and times its pages `rounds` times.
pub(crate) async fn measure(
    app: &App,
    url: &str,
    queue: &str,
    task: &str,
    rounds: usize,
) -> Result<DashboardTimes, CliError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError(format!("cannot listen for the dashboard: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError(format!("the dashboard's address: {e}")))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let server =
        tokio::spawn(celeriac_web::Dashboard::new(app.clone()).serve_on(listener, stop.clone()));
    let search = format!("/jobs?q=queue:{queue}+task:{task}+state:pending");
    let result = async {
        let overview_p50_ms = median_get(addr, "/", rounds).await?;
        let queue_p50_ms = median_get(addr, &format!("/queues/{queue}"), rounds).await?;
        let search_p50_ms = median_get(addr, &search, rounds).await?;
        // One live update reads what the overview's data (its twin) reads.
        let every = celeriac_web::dashboard::LIVE_EVERY.as_secs_f64() * 1000.0;
        let twin = median_get(addr, "/api/v1/overview", rounds).await?;
        let cpu = crate::bench::redis_info::cpu_ms_of(url, || async {
            for _ in 0..rounds.max(1) {
                get(addr, "/api/v1/overview").await?;
            }
            Ok(())
        })
        .await?;
        Ok::<_, CliError>(DashboardTimes {
            overview_p50_ms,
            queue_p50_ms,
            search_p50_ms,
            live_store_percent: twin / every * 100.0,
            live_redis_cpu_percent: cpu.map(|ms| ms / rounds.max(1) as f64 / every * 100.0),
        })
    }
    .await;
    stop.cancel();
    let _ = server.await;
    result
}

/// The median time of `rounds` GETs of `path`, in ms.
async fn median_get(addr: SocketAddr, path: &str, rounds: usize) -> Result<f64, CliError> {
    let mut times = Vec::with_capacity(rounds.max(1));
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        get(addr, path).await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// GETs `path` and reads the whole answer; fails unless it is 200.
async fn get(addr: SocketAddr, path: &str) -> Result<usize, CliError> {
    let fail = |e: std::io::Error| CliError(format!("GET {path} from the dashboard: {e}"));
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    let ask = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(ask.as_bytes()).await.map_err(fail)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.map_err(fail)?;
    if !reply.starts_with(b"HTTP/1.1 200") {
        let head = String::from_utf8_lossy(&reply[..reply.len().min(300)]).to_string();
        return Err(CliError(format!("GET {path} from the dashboard: {head}")));
    }
    Ok(reply.len())
}
