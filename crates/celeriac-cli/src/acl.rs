//! `celeriac redis-acl`: the least-privilege Redis user for an application's key prefix, as
//! the `ACL SETUSER` line to type at the `redis-cli` prompt.

use crate::support::{CliError, CliResult};

/// What stands for the password in the printed line: a secret is never printed.
const PLACEHOLDER: &str = "password";

/// Prints the `ACL SETUSER` line for `user` on `prefix` (given, or the `?prefix=` of a Redis
/// URL, or `celeriac`), with a placeholder where the password goes.
pub(crate) fn run(url: Option<&str>, user: &str, prefix: Option<String>, json: bool) -> CliResult {
    let prefix = match prefix {
        Some(p) => p,
        None => match url {
            Some(u) if u.starts_with("redis") => {
                celeriac::redis::RedisConfig::from_url(u)
                    .map_err(|e| CliError(e.to_string()))?
                    .prefix
            }
            _ => "celeriac".to_string(),
        },
    };
    if prefix.is_empty() || user.is_empty() || user.contains(char::is_whitespace) {
        return Err(CliError(
            "--user and --prefix must be non-empty, and a user name has no spaces".into(),
        ));
    }
    if json {
        let out = serde_json::json!({
            "user": user,
            "prefix": prefix,
            "rules": celeriac::redis::acl::rules(&prefix),
            "commands": celeriac::redis::acl::COMMANDS
                .iter()
                .map(|(command, why)| serde_json::json!({"command": command, "why": why}))
                .collect::<Vec<_>>(),
        });
        println!("{out:#}");
        return Ok(());
    }
    println!(
        "{}",
        celeriac::redis::acl::setuser_line(user, PLACEHOLDER, &prefix)
    );
    eprintln!(
        "Type it at the redis-cli prompt (not in a shell), with the password in place of \
         `>{PLACEHOLDER}`; then connect as redis://{user}:<password>@host:6379{}.",
        if prefix == "celeriac" {
            String::new()
        } else {
            format!("?prefix={prefix}")
        }
    );
    Ok(())
}
