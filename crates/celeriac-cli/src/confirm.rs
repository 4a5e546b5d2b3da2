//! Confirmation of the commands that delete or change many things at once (`purge`, `dlq
//! purge`, `dlq retry` of everything, `jobs retry|cancel|delete` of all that match, the
//! breaker overrides): with `--yes` they go ahead; on a terminal they say what they will do
//! and how much it touches, and go ahead only when the queue's (or breaker's, or group's) name
//! is typed back; anywhere else they refuse, and nothing changes.

use crate::support::CliError;
use std::io::{BufRead, IsTerminal, Write};

/// The `--yes` of a command that asks first.
#[derive(clap::Args, Debug, Clone, Copy, Default)]
pub(crate) struct Yes {
    /// Go ahead without asking. Without it, the command says what it will do and, on a
    /// terminal, asks to type the name it acts on; elsewhere it refuses.
    #[arg(long, short = 'y', env = "CELERIAC_YES")]
    pub(crate) yes: bool,
}

/// What a command is about to do, counted in the store just before.
pub(crate) struct Plan {
    /// What it does, after "This": `deletes 1,234 dead letters of queue `emails``.
    pub(crate) what: String,
    /// What to type to confirm: the queue, breaker or group it acts on.
    pub(crate) name: String,
    /// How many things it touches, when that is known: none means nothing to confirm.
    pub(crate) count: Option<u64>,
    /// What to say when `count` is zero: `queue `emails` has no waiting jobs`.
    pub(crate) none: String,
}

/// Whether to go ahead: `Ok(true)` when confirmed, `Ok(false)` when there is nothing to do
/// (said on standard output), an error when refused or not confirmed.
///
/// # Errors
/// Without `--yes`: standard input is not a terminal, or what was typed is not the name.
pub(crate) fn confirm(yes: bool, plan: &Plan) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    if plan.count == Some(0) {
        println!("nothing to do: {}", plan.none);
        return Ok(false);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError(format!(
            "this {}; add --yes to confirm (nothing was changed)",
            plan.what
        )));
    }
    ask(plan, &mut stdin.lock(), &mut std::io::stderr()).map(|()| true)
}

/// Asks on `out` for the name and reads one line of `input`.
fn ask(plan: &Plan, input: &mut impl BufRead, out: &mut impl Write) -> Result<(), CliError> {
    write!(out, "This {}. Type `{}` to confirm: ", plan.what, plan.name)?;
    out.flush()?;
    let mut line = String::new();
    input.read_line(&mut line)?;
    let typed = line.trim();
    if typed == plan.name {
        Ok(())
    } else {
        Err(CliError(format!(
            "not confirmed (`{typed}` is not `{}`); nothing was changed",
            plan.name
        )))
    }
}

/// `n` with thousands separated by commas: `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `n` and the noun that goes with it: `1 dead letter`, `1,234 dead letters`.
pub(crate) fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", thousands(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            what: "deletes 3 waiting jobs of queue `emails`".into(),
            name: "emails".into(),
            count: Some(3),
            none: "queue `emails` has no waiting jobs".into(),
        }
    }

    #[test]
    fn the_name_typed_back_confirms_and_anything_else_does_not() {
        let mut out = Vec::new();
        assert!(ask(&plan(), &mut &b"emails\n"[..], &mut out).is_ok());
        let asked = String::from_utf8_lossy(&out);
        assert_eq!(
            asked,
            "This deletes 3 waiting jobs of queue `emails`. Type `emails` to confirm: "
        );
        for typed in [&b"y\n"[..], b"yes\n", b"email\n", b"", b"EMAILS\n"] {
            let err = ask(&plan(), &mut &typed[..], &mut Vec::new())
                .err()
                .map(|e| e.0)
                .unwrap_or_default();
            assert!(err.contains("nothing was changed"), "{typed:?}: {err}");
        }
    }

    #[test]
    fn counts_read_with_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1234), "1,234");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(counted(1, "job", "jobs"), "1 job");
        assert_eq!(counted(1000, "job", "jobs"), "1,000 jobs");
    }
}
