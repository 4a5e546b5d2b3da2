//! `celeriac dashboard`, and the dashboard of `celeriac worker|beat --dashboard` and
//! `celeriac demo --dashboard`.

use crate::support::{CliError, CliResult};
use celeriac::App;
use celeriac_web::dashboard::Auth;
use celeriac_web::Dashboard;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The dashboard of `app` with authentication from the `CELERIAC_DASHBOARD_*` variables,
/// refused on an address other than loopback without it.
fn dashboard(
    app: &App,
    bind: SocketAddr,
    rules: Option<Vec<celeriac::alerts::Rule>>,
) -> Result<Dashboard, CliError> {
    let auth = Auth::from_env().map_err(|e| CliError(e.to_string()))?;
    let mut d = Dashboard::new(app.clone()).auth(auth);
    if let Some(rules) = rules {
        d = d.alert_rules(rules);
    }
    d.check_bind(bind).map_err(CliError)?;
    Ok(d)
}

/// Binds the dashboard of `app` on `bind` and serves it in the background until `stop`;
/// `rules` are the alert rules in force, when a rules file was given.
///
/// # Errors
/// When the address is refused (no authentication off loopback) or cannot be bound.
pub(crate) async fn spawn(
    app: &App,
    bind: SocketAddr,
    rules: Option<Vec<celeriac::alerts::Rule>>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, CliError> {
    let d = dashboard(app, bind, rules)?;
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| CliError(format!("--dashboard {bind}: cannot listen there: {e}")))?;
    let addr = listener.local_addr().unwrap_or(bind);
    eprintln!("dashboard on http://{addr}/");
    Ok(tokio::spawn(async move {
        if let Err(e) = d.serve_on(listener, stop).await {
            eprintln!("error: the dashboard stopped: {e}");
        }
    }))
}

/// `celeriac dashboard`: serves until Ctrl-C or SIGTERM.
pub(crate) async fn run(app: App, bind: SocketAddr, rules: Option<&std::path::Path>) -> CliResult {
    let rules = match rules {
        Some(path) => Some(crate::alerts::settings(Some(path), None)?.rules),
        None => None,
    };
    let stop = CancellationToken::new();
    let server = spawn(&app, bind, rules, stop.clone()).await?;
    crate::worker::wait_for_signal().await;
    stop.cancel();
    let _ = server.await;
    Ok(())
}
