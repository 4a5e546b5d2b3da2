//! The least-privilege Redis ACL of a Celeriac application: the one definition the docs, the
//! tests and any provisioning share.
//!
//! With the default prefix `celeriac`, [`setuser_line`]`("celeriac", "password", "celeriac")`
//! is:
//!
//! ```text
//! ACL SETUSER celeriac reset on >password ~celeriac:* resetchannels &celeriac:* "&celeriac:{*}:done" -@all +ping +select +info +time +wait +cluster|slots +asking +evalsha +script|load +multi +exec +publish +subscribe +psubscribe +del +exists +type +pexpire +pttl +persist +get +setrange +set +mget +incr +hdel +hexists +hget +hgetall +hincrby +hincrbyfloat +hkeys +hlen +hmget +hset +hsetnx +sadd +smembers +bzpopmin +zadd +zcard +zcount +zrange +zrangebyscore +zrank +zrem +zremrangebyscore +zrevrange +zrevrank +zscan +zscore +xadd +xrange +xrevrange
//! ```
//!
//! Type it at the `redis-cli` prompt (in a shell, `>` and `*` would be taken as a redirection
//! and a file pattern); in `redis.conf` or an ACL file, write `user <name> on >password`
//! followed by [`rules`].
//!
//! - `reset` first, so that running the line again replaces whatever the user had;
//! - `~<prefix>:*`: every key Celeriac writes starts with its prefix and a colon (see the
//!   `keys` module), so no other key can be read or written;
//! - `resetchannels &<prefix>:*`: the channels it publishes and subscribes to (completions,
//!   key-value broadcasts); `&<prefix>:{*}:done` is the completion pattern, which Redis
//!   compares literally with what `PSUBSCRIBE` asks for;
//! - `-@all` then one `+command` per command Celeriac sends ([`COMMANDS`] says why each),
//!   including those its Lua scripts call. Nothing of `@admin` (no `CONFIG`, `FLUSHALL`,
//!   `DEBUG`, `SHUTDOWN`, `ACL`), no `KEYS` and no `SCAN`; of `@dangerous` only `INFO`.
//!
//! Without `CONFIG GET`, the checks at start read `maxmemory_policy` from `INFO memory` and
//! `aof_enabled` from `INFO persistence`, so a Redis with `noeviction` and the append-only file
//! needs no `?allow_eviction` or `?allow_volatile` (with RDB snapshots only, the save points
//! cannot be seen without `CONFIG GET`: add `?allow_volatile=true` once you have checked them).
//! Each start still tries `CONFIG GET` first, so the server's `ACL LOG` shows it refused;
//! behind Sentinel the client also asks the master its `ROLE` (refused too: it then reads
//! `INFO replication`).
//!
//! Give each application its own prefix (`?prefix=billing`) and its own user
//! (`setuser_line("billing", ..., "billing")`): neither can then see nor touch the other's
//! keys. A prefix followed by `:` must not start another prefix (`a` and `a:b`), since
//! `~a:*` covers `a:b:…` too.
//!
//! The line needs Redis 6.2 or later (channel rules). Redis 7.2 and later also receive
//! `CLIENT SETINFO` from the client at connect; it is not granted (6.2 and 7.0 would refuse
//! the rule), and the client ignores its refusal.

/// Every command a Celeriac application sends (directly or from its Lua scripts), lower
/// case, with what it is for. [`rules`] grants exactly these.
pub const COMMANDS: &[(&str, &str)] = &[
    // Connection and server.
    ("ping", "the first command at connect, and health checks"),
    (
        "select",
        "a database other than 0 in the URL (`redis://host/2`)",
    ),
    (
        "info",
        "the checks at start where CONFIG is refused, memory figures, Sentinel roles",
    ),
    (
        "time",
        "the fleet clock and rate limits: the server's time, read in scripts",
    ),
    ("wait", "`?wait_replicas=N`: enqueues wait for replicas"),
    ("cluster|slots", "Cluster: the slot map"),
    (
        "asking",
        "Cluster: following an ASK redirect while a slot migrates",
    ),
    // Scripts and transactions.
    (
        "evalsha",
        "every atomic operation is a Lua script, run by its SHA",
    ),
    (
        "script|load",
        "loading a script the server lacks (after a restart or a failover)",
    ),
    (
        "multi",
        "a transaction: deleting cache values, a process leaving the registry",
    ),
    ("exec", "the end of such a transaction"),
    // Pub/sub.
    (
        "publish",
        "key-value broadcasts; scripts publish completions",
    ),
    ("subscribe", "key-value broadcast channels"),
    (
        "psubscribe",
        "the completions of every queue and workflow (`<prefix>:{*}:done`)",
    ),
    // Keys.
    ("del", "cache values, job records, unique keys, locks"),
    ("exists", "unique keys, workflows, breakers (scripts)"),
    (
        "type",
        "naming what a key of the wrong type holds (scripts)",
    ),
    (
        "pexpire",
        "the retention of finished records, cache values, limiter state",
    ),
    (
        "pttl",
        "a cache tag barrier kept at least as long as its entries (scripts)",
    ),
    (
        "persist",
        "a dead job's record kept again when it is retried (scripts)",
    ),
    // Strings.
    ("get", "cache values, locks, limiter state"),
    (
        "setrange",
        "a cache tag barrier's expiry raised in place (scripts)",
    ),
    ("set", "cache values, locks, limiter state, unique keys"),
    ("mget", "cache values, several at once"),
    ("incr", "cache counters"),
    // Hashes.
    ("hdel", "job records, leases, process registry, schedules"),
    ("hexists", "workflow joins (scripts)"),
    ("hget", "queue flags, job records"),
    ("hgetall", "job records, workflows, schedules, history"),
    (
        "hincrby",
        "queue counters, history, joins, leader tokens (scripts)",
    ),
    ("hincrbyfloat", "history sums (scripts)"),
    ("hkeys", "recounting a workflow join (scripts)"),
    ("hlen", "history, leader leases, breakers (scripts)"),
    ("hmget", "job records, process registry"),
    ("hset", "job records, queue flags, schedules, breakers"),
    ("hsetnx", "workflow joins (scripts)"),
    // Sets.
    ("sadd", "the set of queue names"),
    ("smembers", "the set of queue names"),
    // Sorted sets.
    ("bzpopmin", "idle workers wait on a queue's wake-up marker"),
    (
        "zadd",
        "queue sets (ready, scheduled, retry, active, dead…)",
    ),
    ("zcard", "queue counts"),
    ("zcount", "browsing a queue"),
    ("zrange", "queue sets, browsing"),
    ("zrangebyscore", "due jobs, expired leases, live processes"),
    ("zrank", "browsing a queue"),
    ("zrem", "queue sets"),
    (
        "zremrangebyscore",
        "expired permits and breaker probes (scripts)",
    ),
    ("zrevrange", "dead letters, browsing"),
    ("zrevrank", "browsing a queue"),
    ("zscan", "finding one job among the ready ones (scripts)"),
    ("zscore", "leases, queue sets"),
    // Streams.
    ("xadd", "the event stream"),
    ("xrange", "reading the event stream"),
    ("xrevrange", "reading the event stream"),
];

/// `text` as a literal in a Redis glob pattern: `*`, `?`, `[`, `]` and `\` escaped.
fn glob_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The key pattern of an application whose keys start with `prefix` (`~<prefix>:*`).
pub fn key_rule(prefix: &str) -> String {
    format!("~{}:*", glob_literal(prefix))
}

/// The channel rules of an application with this prefix: `resetchannels` (Redis 6.2 grants
/// every channel by default), its channels (`&<prefix>:*`), and its completion pattern as
/// `PSUBSCRIBE` gives it (compared literally, so not escaped).
pub fn channel_rules(prefix: &str) -> Vec<String> {
    vec![
        "resetchannels".to_string(),
        format!("&{}:*", glob_literal(prefix)),
        format!("&{}", crate::keys::done_pattern(prefix)),
    ]
}

/// The key, channel and command rules of an application with this prefix: what follows the
/// user's name, `on` and password in `ACL SETUSER` or in a `user` line of `redis.conf`.
pub fn rules(prefix: &str) -> Vec<String> {
    let mut rules = vec![key_rule(prefix)];
    rules.extend(channel_rules(prefix));
    rules.push("-@all".to_string());
    rules.extend(COMMANDS.iter().map(|(command, _)| format!("+{command}")));
    rules
}

/// The arguments of `ACL SETUSER` giving `user`, with `password`, exactly what an application
/// with this prefix needs (`reset` first, so that it replaces earlier rules).
pub fn setuser_args(user: &str, password: &str, prefix: &str) -> Vec<String> {
    let mut args = vec![
        "ACL".to_string(),
        "SETUSER".to_string(),
        user.to_string(),
        "reset".to_string(),
        "on".to_string(),
        format!(">{password}"),
    ];
    args.extend(rules(prefix));
    args
}

/// [`setuser_args`] as one line for `redis-cli`, with any argument that `redis-cli` would
/// split or mangle (spaces, quotes, braces, backslashes, control characters) double-quoted.
pub fn setuser_line(user: &str, password: &str, prefix: &str) -> String {
    setuser_args(user, password, prefix)
        .iter()
        .map(|a| quoted(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One `redis-cli` argument: as is when plain, else double-quoted with escapes.
fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, '"' | '\'' | '\\' | '{' | '}'));
    if plain {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    for c in arg.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_line_is_the_one_generated() {
        let line = setuser_line("celeriac", "password", "celeriac");
        let docs = include_str!("acl.rs");
        assert!(
            docs.contains(&format!("//! {line}\n")),
            "the module docs must show the line exactly:\n{line}"
        );
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&format!("\n{line}\n")),
            "README's Security section must show the line exactly:\n{line}"
        );
    }

    #[test]
    fn nothing_administrative_is_granted() {
        let granted: Vec<String> = rules("celeriac");
        // Neither these commands nor any of their subcommands.
        for denied in [
            "+config",
            "+flushall",
            "+flushdb",
            "+keys",
            "+scan",
            "+debug",
            "+shutdown",
            "+acl",
            "+eval",
            "+module",
            "+replicaof",
            "+migrate",
            "+@all",
            "+@admin",
            "+@dangerous",
        ] {
            assert!(
                !granted
                    .iter()
                    .any(|r| r == denied || r.starts_with(&format!("{denied}|"))),
                "{denied} must not be granted: {granted:?}"
            );
        }
        // Of these, one subcommand at most, never the whole command.
        for whole in ["+script", "+cluster", "+client"] {
            assert!(!granted.iter().any(|r| r == whole), "{whole}: {granted:?}");
        }
        assert!(granted.contains(&"+script|load".to_string()));
        assert_eq!(granted.iter().filter(|r| r.starts_with('~')).count(), 1);
    }

    /// The commands named as string literals right after `marker` in `text` (`redis.call('X'`,
    /// `cmd("X")`), lower case.
    fn named_after(text: &str, marker: &str) -> Vec<String> {
        text.match_indices(marker)
            .filter_map(|(at, _)| {
                let rest = text[at + marker.len()..].trim_start();
                let quote = rest.chars().next().filter(|c| *c == '\'' || *c == '"')?;
                let name = rest[1..].split(quote).next()?;
                Some(name.to_ascii_lowercase())
            })
            .collect()
    }

    fn granted(command: &str) -> bool {
        COMMANDS.iter().any(|(c, _)| *c == command)
    }

    fn files(dir: &std::path::Path, ext: &str, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("readable dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                files(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }

    #[test]
    fn every_command_the_scripts_call_is_granted() {
        let mut scripts = Vec::new();
        files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lua"),
            "lua",
            &mut scripts,
        );
        assert!(scripts.len() > 20, "the scripts were found: {scripts:?}");
        let mut called = Vec::new();
        for path in &scripts {
            let text = std::fs::read_to_string(path).expect("readable script");
            for marker in ["redis.call(", "redis.pcall(", "sliced("] {
                called.extend(named_after(&text, marker).into_iter().map(|c| (c, path)));
            }
        }
        assert!(called.iter().any(|(c, _)| c == "zadd"));
        let missing: Vec<_> = called.iter().filter(|(c, _)| !granted(c)).collect();
        assert!(
            missing.is_empty(),
            "called by a script, not granted: {missing:?}"
        );
    }

    #[test]
    fn every_command_named_in_the_sources_is_granted_but_config() {
        let mut sources = Vec::new();
        files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            "rs",
            &mut sources,
        );
        let mut named = Vec::new();
        for path in sources.iter().filter(|p| !p.ends_with("acl.rs")) {
            let text = std::fs::read_to_string(path).expect("readable source");
            named.extend(named_after(&text, "cmd(").into_iter().map(|c| (c, path)));
        }
        assert!(named.iter().any(|(c, _)| c == "evalsha"));
        // CONFIG GET is tried and may be refused: the checks then read INFO.
        let missing: Vec<_> = named
            .iter()
            .filter(|(c, _)| !granted(c) && c != "config")
            .collect();
        assert!(missing.is_empty(), "sent, not granted: {missing:?}");
    }

    #[test]
    fn glob_characters_of_a_prefix_are_literal_in_the_key_pattern() {
        assert_eq!(key_rule("jobs"), "~jobs:*");
        assert_eq!(key_rule("a*b?[c]\\"), "~a\\*b\\?\\[c\\]\\\\:*");
        // The completion pattern is compared literally with what PSUBSCRIBE gives: as is.
        assert_eq!(channel_rules("a*b")[2], "&a*b:{*}:done");
    }

    #[test]
    fn arguments_redis_cli_would_split_are_quoted() {
        let line = setuser_line("app user", "p\"w d", "jobs");
        assert!(line.starts_with("ACL SETUSER \"app user\" reset on \">p\\\"w d\" ~jobs:* "));
        assert!(line.contains(" \"&jobs:{*}:done\" "), "{line}");
    }
}
