//! Secrets kept out of what people and logs see: store URLs with their passwords masked, and
//! known secrets scrubbed from text written by someone else (a client library's error).
//!
//! Every banner, report, log line, error message and `Debug` output that shows a store URL
//! shows [`url`]'s form of it:
//!
//! ```
//! use celeriac_core::redact;
//!
//! assert_eq!(
//!     redact::url("redis://app:s3cret@10.0.0.5:6379/0?prefix=shop"),
//!     "redis://app:***@10.0.0.5:6379/0?prefix=shop"
//! );
//! let secrets = redact::url_secrets("redis://:s3cret@h");
//! assert_eq!(redact::text("AUTH s3cret refused", &secrets), "AUTH *** refused");
//! ```

use crate::error::Error;
use std::fmt;

/// What a masked secret reads as.
pub const MASK: &str = "***";

/// A store URL that displays with its secrets masked: the password of `user:password@`
/// (the whole userinfo when there is no user: `password@host`), and the value of every query
/// parameter whose name says it holds a secret (see [`is_secret_param`]). Hosts, ports, the
/// database, the user name and other parameters (file paths such as `ca`, `cert`, `key`)
/// stay visible.
///
/// Everything before the last `@` after the scheme counts as userinfo, as the Redis URL
/// parser reads it, so a password with an unencoded `@`, `/`, `,` or `?` is masked whole.
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(pub &'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = Parts::of(self.0);
        f.write_str(parts.scheme)?;
        if let Some(cred) = parts.userinfo {
            match cred.split_once(':') {
                Some((user, _)) => write!(f, "{user}:{MASK}@")?,
                None if cred.is_empty() => f.write_str("@")?,
                // `redis://password@host` is a password alone.
                None => write!(f, "{MASK}@")?,
            }
        }
        f.write_str(parts.location)?;
        if let Some(query) = parts.query {
            f.write_str("?")?;
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => write!(f, "{name}={MASK}")?,
                    _ => f.write_str(pair)?,
                }
            }
        }
        Ok(())
    }
}

/// The same as [`Display`](fmt::Display), quoted: a `Debug` field that holds a URL.
impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

/// A store URL with its secrets masked (see [`RedactedUrl`]):
/// `redis://user:pass@host` becomes `redis://user:***@host`.
pub fn url(url: &str) -> String {
    RedactedUrl(url).to_string()
}

/// The secrets a URL carries, as written and percent-decoded: the password (or the whole
/// userinfo when it has no `:`), and the values of secret query parameters. Empty when it
/// carries none. Give them to [`text`] to scrub a message that may quote them.
pub fn url_secrets(url: &str) -> Vec<String> {
    let parts = Parts::of(url);
    let mut found = Vec::new();
    if let Some(cred) = parts.userinfo {
        let password = match cred.split_once(':') {
            Some((_, p)) => p,
            None => cred,
        };
        found.push(password);
    }
    if let Some(query) = parts.query {
        found.extend(
            query
                .split('&')
                .filter_map(|pair| pair.split_once('='))
                .filter(|(name, _)| is_secret_param(name))
                .map(|(_, value)| value),
        );
    }
    let mut secrets = Vec::new();
    for raw in found.into_iter().filter(|s| !s.is_empty()) {
        for form in [raw.to_string(), percent_decode(raw)] {
            if !secrets.contains(&form) {
                secrets.push(form);
            }
        }
    }
    secrets
}

/// `message` with every occurrence of each secret replaced by [`MASK`]; for text this
/// program did not write (a client library's error, a server's reply) that might quote one.
/// Longer secrets are replaced first, so one that contains another is masked whole; empty
/// secrets are ignored.
pub fn text<S: AsRef<str>>(message: &str, secrets: &[S]) -> String {
    let mut sorted: Vec<&str> = secrets
        .iter()
        .map(AsRef::as_ref)
        .filter(|s| !s.is_empty())
        .collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = message.to_string();
    for secret in sorted {
        if out.contains(secret) {
            out = out.replace(secret, MASK);
        }
    }
    out
}

/// `error` with [`text`] applied to every message it carries (the kind and the setting's
/// name stay): for an error raised while using credentials, before it travels on.
pub fn error<S: AsRef<str>>(error: Error, secrets: &[S]) -> Error {
    if secrets.iter().all(|s| s.as_ref().is_empty()) {
        return error;
    }
    match error {
        Error::Backend { kind, message } => Error::Backend {
            kind,
            message: text(&message, secrets),
        },
        Error::Config { setting, message } => Error::Config {
            setting: text(&setting, secrets),
            message: text(&message, secrets),
        },
        Error::Codec(m) => Error::Codec(text(&m, secrets)),
        Error::NotFound(m) => Error::NotFound(text(&m, secrets)),
        Error::Timeout(m) => Error::Timeout(text(&m, secrets)),
        Error::Closed => Error::Closed,
    }
}

/// Whether a URL query parameter holds a secret, by its name (case-insensitive): one that
/// contains `pass` (`password`, `passwd`, `passphrase`), `pwd`, `token`, `secret`, `auth`,
/// `credential`, or is an API or access key (`apikey`, `api_key`, `access_key`). The TLS file
/// parameters (`ca`, `cert`, `key`) name files, not secrets, and stay visible.
pub fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "token",
        "secret",
        "auth",
        "credential",
        "apikey",
        "api_key",
        "access_key",
    ]
    .iter()
    .any(|s| n.contains(s))
}

/// A URL cut where secrets may sit.
struct Parts<'a> {
    /// `redis://`, or empty for text without a scheme.
    scheme: &'a str,
    /// Everything before the last `@` after the scheme.
    userinfo: Option<&'a str>,
    /// Hosts and path.
    location: &'a str,
    /// After the first `?` that follows the userinfo.
    query: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn of(url: &'a str) -> Self {
        let (scheme, rest) = match url.find("://") {
            Some(i) => url.split_at(i + 3),
            None => ("", url),
        };
        let (userinfo, after) = match rest.rsplit_once('@') {
            Some((cred, after)) => (Some(cred), after),
            None => (None, rest),
        };
        let (location, query) = match after.split_once('?') {
            Some((l, q)) => (l, Some(q)),
            None => (after, None),
        };
        Parts {
            scheme,
            userinfo,
            location,
            query,
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_in_store_urls_are_masked() {
        assert_eq!(
            url("redis://app:s3cret@10.0.0.5:6379/0?prefix=shop"),
            "redis://app:***@10.0.0.5:6379/0?prefix=shop"
        );
        assert_eq!(url("redis://:s3cret@host:6379"), "redis://:***@host:6379");
        assert_eq!(url("redis://s3cret@host"), "redis://***@host");
        assert_eq!(url("redis://user:@host"), "redis://user:***@host");
        assert_eq!(url("redis://@host"), "redis://@host");
        // Everything before the last `@` is the userinfo, as the Redis URL parser reads it:
        // hosts between credentials are masked with them.
        assert_eq!(
            url("redis+cluster://u:p1@h1:7000,u:p2@h2:7001"),
            "redis+cluster://u:***@h2:7001"
        );
        assert_eq!(
            url("redis+cluster://u:pw@h1:7000,h2:7001?tls=true"),
            "redis+cluster://u:***@h1:7000,h2:7001?tls=true"
        );
        assert_eq!(
            url("rediss://h:6380?ca=/ca.pem&cert=/c.pem&key=/k.pem&password=x&token=y&Auth=z"),
            "rediss://h:6380?ca=/ca.pem&cert=/c.pem&key=/k.pem&password=***&token=***&Auth=***"
        );
        assert_eq!(
            url("sqlite:///var/lib/jobs.db?synchronous=full"),
            "sqlite:///var/lib/jobs.db?synchronous=full"
        );
        assert_eq!(url("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(url("u:s3cret@host:6379"), "u:***@host:6379");
        assert_eq!(
            format!("{:?}", RedactedUrl("redis://:s3cret@h")),
            "\"redis://:***@h\""
        );
        for u in [
            "redis://app:s3cret@h",
            "redis+sentinel://:s3cret@s1:26379,:s3cret@s2:26379/master",
            "redis://h?password=s3cret",
            "redis://h?passwd=s3cret&x=1",
            "redis://u:s3cret@s3cret@h",
            "redis://u:a,s3cret/x@h/0",
            "redis://u:s3c?ret@h?prefix=p",
            "rediss+foo://u:s3cret@h",
            "redis://u:s3cret@",
            "u:s3cret@",
        ] {
            assert!(!url(u).contains("s3cret"), "{u} -> {}", url(u));
            assert!(!url(u).contains("ret@"), "{u} -> {}", url(u));
            assert!(url(u).contains(MASK), "{u} -> {}", url(u));
        }
    }

    #[test]
    fn secrets_of_a_url_are_found_raw_and_decoded() {
        assert_eq!(
            url_secrets("redis://u:s%40cret@h?token=t0k&prefix=p"),
            vec!["s%40cret", "s@cret", "t0k"]
        );
        assert_eq!(url_secrets("redis://pw@h"), vec!["pw"]);
        assert!(url_secrets("redis://u@h").contains(&"u".to_string()));
        assert!(url_secrets("redis://u:@h?prefix=x").is_empty());
        assert!(url_secrets("sqlite://jobs.db").is_empty());
        // A `%` not followed by two hex digits stays as it is.
        assert_eq!(url_secrets("redis://:a%zz%4@h"), vec!["a%zz%4"]);
    }

    #[test]
    fn secrets_in_foreign_text_are_masked() {
        let secrets = url_secrets("redis://u:p%2Fw@h");
        assert_eq!(
            text("failed: redis://u:p%2Fw@h, auth p/w", &secrets),
            "failed: redis://u:***@h, auth ***"
        );
        // The longer of two overlapping secrets is masked whole.
        assert_eq!(text("abcdef", &["abc", "abcdef"]), "***");
        assert_eq!(text("nothing here", &[""]), "nothing here");
        assert_eq!(text("nothing here", &[] as &[&str]), "nothing here");
    }

    #[test]
    fn errors_keep_their_kind_and_lose_the_secret() {
        let e = error(
            Error::backend(crate::ErrorKind::Reconnect, "AUTH pw failed"),
            &["pw"],
        );
        assert_eq!(e.kind(), crate::ErrorKind::Reconnect);
        assert_eq!(e.to_string(), "backend error: AUTH *** failed");
        let e = error(Error::config("url", "`redis://:pw@h` is wrong"), &["pw"]);
        assert!(matches!(&e, Error::Config { setting, .. } if setting == "url"));
        assert!(!e.to_string().contains("pw"), "{e}");
    }
}
