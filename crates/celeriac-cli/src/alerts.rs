//! `celeriac alerts`: the alerts' states the evaluating process keeps in the store, and the
//! rules as Prometheus alerting rules. Also how the worker and beat commands read their
//! alerting settings.

use crate::args::AlertsCommand;
use crate::support::{format_ms, CliError, CliResult};
use celeriac::alerts::{prometheus_rules, Status};
use celeriac::App;
use celeriac_web::Alerting;
use std::path::Path;

pub(crate) async fn run(app: App, command: Option<AlertsCommand>, json: bool) -> CliResult {
    if let Some(AlertsCommand::Export { rules, .. }) = command {
        let alerting = settings(rules.as_deref(), None)?;
        print!("{}", prometheus_rules(&alerting.rules));
        return Ok(());
    }
    let states = celeriac_web::alert_states(&app).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(());
    }
    if states.evaluated_at == 0 {
        println!(
            "no alerts evaluated yet: rules are evaluated by a worker or beat running with --http"
        );
        return Ok(());
    }
    println!("evaluated at {}", format_ms(states.evaluated_at));
    if states.alerts.is_empty() {
        println!("nothing fires or is pending");
        return Ok(());
    }
    println!(
        "{:<8} {:<28} {:<28} {:>10} {:>10} {:<24}  SUMMARY",
        "STATUS", "RULE", "SUBJECT", "VALUE", "THRESHOLD", "SINCE"
    );
    for a in &states.alerts {
        let status = match a.status {
            Status::Firing => "firing",
            Status::Pending => "pending",
            Status::Resolved => "resolved",
        };
        println!(
            "{:<8} {:<28} {:<28} {:>10.2} {:>10.2} {:<24}  {}",
            status,
            a.rule,
            a.subject,
            a.value,
            a.threshold,
            format_ms(a.since),
            a.summary
        );
    }
    Ok(())
}

/// The alerting settings: the rules file's (or the built-in rules) and the webhook.
pub(crate) fn settings(
    rules: Option<&Path>,
    webhook: Option<String>,
) -> Result<Alerting, CliError> {
    let mut alerting = match rules {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError(format!(
                    "the rules file {}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            Alerting::from_toml(&text)
                .map_err(|e| CliError(format!("the rules file {}: {e}", path.display())))?
        }
        None => Alerting::default(),
    };
    if let Some(url) = webhook {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(CliError(
                "--alert-webhook: give an http:// or https:// URL".into(),
            ));
        }
        alerting.webhook = Some(url);
    }
    Ok(alerting)
}
