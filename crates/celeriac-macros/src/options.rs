//! The options of `#[celeriac::task(...)]`, checked at compile time.

use proc_macro2::{Span, TokenStream};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Lit, LitStr};

/// Every option the attribute accepts, in the order the error message lists them.
pub(crate) const VALID_OPTIONS: &[&str] = &[
    "name",
    "queue",
    "retries",
    "backoff",
    "backoff_max",
    "no_jitter",
    "soft_time_limit",
    "time_limit",
    "priority",
    "ignore_result",
    "result_ttl",
    "encoding",
    "expires",
    "concurrency_limit",
    "rate_limit",
    "breaker",
];

/// The longest task or queue name a job accepts by default (`Bounds` in celeriac-core).
const MAX_NAME_LEN: usize = 200;

/// A value and where it was written.
#[derive(Debug, Clone)]
pub(crate) struct At<T> {
    pub value: T,
    pub span: Span,
}

/// The payload and result serialization a task asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Json,
    MsgPack,
}

/// The parsed attribute. Durations are in milliseconds.
#[derive(Debug, Default)]
pub(crate) struct TaskAttr {
    pub name: Option<At<String>>,
    pub queue: Option<At<String>>,
    pub retries: Option<At<u32>>,
    pub backoff: Option<At<u64>>,
    pub backoff_max: Option<At<u64>>,
    pub no_jitter: Option<At<bool>>,
    pub soft_time_limit: Option<At<u64>>,
    pub time_limit: Option<At<u64>>,
    pub priority: Option<At<u8>>,
    pub ignore_result: Option<At<bool>>,
    pub result_ttl: Option<At<u64>>,
    pub encoding: Option<At<Encoding>>,
    pub expires: Option<At<u64>>,
    /// At most this many running at once, across every worker.
    pub concurrency_limit: Option<At<u32>>,
    /// At most `count` starts per `per_ms`, across every worker.
    pub rate_limit: Option<At<(u32, u64)>>,
    /// The named circuit breaker the task's jobs wait on while it is open.
    pub breaker: Option<At<String>>,
}

/// Collects every error instead of stopping at the first.
#[derive(Default)]
pub(crate) struct Errors {
    all: Option<syn::Error>,
    count: usize,
}

impl Errors {
    /// Adds an error.
    pub fn push(&mut self, e: syn::Error) {
        self.count += 1;
        match &mut self.all {
            Some(all) => all.combine(e),
            None => self.all = Some(e),
        }
    }

    /// Adds all of `other`'s errors.
    pub fn append(&mut self, other: Errors) {
        if let Some(e) = other.all {
            self.count += other.count - 1;
            self.push(e);
        }
    }

    /// How many errors were added.
    pub fn len(&self) -> usize {
        self.count
    }

    /// The errors as `compile_error!` invocations (empty when there are none).
    pub fn to_compile_errors(&self) -> TokenStream {
        self.all
            .as_ref()
            .map(syn::Error::to_compile_error)
            .unwrap_or_default()
    }
}

impl TaskAttr {
    /// Parses the attribute's arguments. Bad values are reported in `errors` and the option is
    /// left unset, so the rest of the expansion can go on (and not bury the real error under
    /// "cannot find `send_email::Task`" noise); a malformed list stops parsing where it breaks.
    pub fn parse(tokens: TokenStream, errors: &mut Errors) -> TaskAttr {
        let mut attr = TaskAttr::default();
        let mut found = Errors::default();
        let parser = syn::meta::parser(|meta| attr.parse_one(meta, &mut found));
        if let Err(e) = parser.parse2(tokens) {
            found.push(e);
        }
        errors.append(found);
        attr.check(errors);
        attr
    }

    fn parse_one(&mut self, meta: ParseNestedMeta<'_>, errors: &mut Errors) -> syn::Result<()> {
        let Some(ident) = meta.path.get_ident() else {
            return Err(unknown_option(&meta));
        };
        let key = ident.to_string();
        let key_span = ident.span();
        let slot_taken = match key.as_str() {
            "name" => self.name.is_some(),
            "queue" => self.queue.is_some(),
            "retries" => self.retries.is_some(),
            "backoff" => self.backoff.is_some(),
            "backoff_max" => self.backoff_max.is_some(),
            "no_jitter" => self.no_jitter.is_some(),
            "soft_time_limit" => self.soft_time_limit.is_some(),
            "time_limit" => self.time_limit.is_some(),
            "priority" => self.priority.is_some(),
            "ignore_result" => self.ignore_result.is_some(),
            "result_ttl" => self.result_ttl.is_some(),
            "encoding" => self.encoding.is_some(),
            "expires" => self.expires.is_some(),
            "concurrency_limit" => self.concurrency_limit.is_some(),
            "rate_limit" => self.rate_limit.is_some(),
            "breaker" => self.breaker.is_some(),
            _ => return Err(unknown_option(&meta)),
        };

        let result = match key.as_str() {
            "no_jitter" | "ignore_result" => parse_flag(&meta).map(|v| {
                let v = Some(At {
                    value: v,
                    span: key_span,
                });
                if key == "no_jitter" {
                    self.no_jitter = v;
                } else {
                    self.ignore_result = v;
                }
            }),
            _ if !meta.input.peek(syn::Token![=]) => Err(syn::Error::new(
                key_span,
                format!("`{key}` needs a value, like `{key} = {}`", example(&key)),
            )),
            _ => {
                let expr: Expr = meta.value()?.parse()?;
                self.set_value(&key, key_span, &expr)
            }
        };
        match result {
            Ok(()) if slot_taken => errors.push(syn::Error::new(
                key_span,
                format!("`{key}` is given more than once"),
            )),
            Ok(()) => {}
            Err(e) => errors.push(e),
        }
        Ok(())
    }

    fn set_value(&mut self, key: &str, key_span: Span, expr: &Expr) -> syn::Result<()> {
        let span = expr.span();
        match key {
            "name" | "queue" | "breaker" => {
                let s = lit_str(expr, key)?;
                let value = s.value();
                if value.is_empty() || value.len() > MAX_NAME_LEN {
                    return Err(syn::Error::new(
                        s.span(),
                        format!("`{key}` must be 1 to {MAX_NAME_LEN} bytes long"),
                    ));
                }
                let at = Some(At { value, span });
                match key {
                    "name" => self.name = at,
                    "queue" => self.queue = at,
                    _ => self.breaker = at,
                }
            }
            "retries" => {
                let n: u32 = lit_int(expr, key)?;
                if n == u32::MAX {
                    return Err(syn::Error::new_spanned(
                        expr,
                        "`retries` is too large (the first run counts as an attempt too)",
                    ));
                }
                self.retries = Some(At { value: n, span });
            }
            "concurrency_limit" => {
                let n: u32 = lit_int(expr, key)?;
                if n == 0 {
                    return Err(syn::Error::new_spanned(
                        expr,
                        "`concurrency_limit = 0` would never run the task",
                    ));
                }
                self.concurrency_limit = Some(At { value: n, span });
            }
            "rate_limit" => {
                let s = lit_str(expr, key)?;
                let value = parse_rate(&s.value())
                    .map_err(|msg| syn::Error::new(s.span(), format!("`rate_limit`: {msg}")))?;
                self.rate_limit = Some(At { value, span });
            }
            "priority" => {
                let n: u8 = lit_int(expr, key).map_err(|_| {
                    syn::Error::new_spanned(
                        expr,
                        "`priority` must be an integer from 0 to 9 (9 runs first), like `priority = 7`",
                    )
                })?;
                if n > 9 {
                    return Err(syn::Error::new_spanned(
                        expr,
                        format!("`priority = {n}` is outside 0..=9 (9 runs first)"),
                    ));
                }
                self.priority = Some(At { value: n, span });
            }
            "encoding" => {
                let s = lit_str(expr, key)?;
                let value = match s.value().as_str() {
                    "json" => Encoding::Json,
                    "msgpack" => Encoding::MsgPack,
                    other => {
                        return Err(syn::Error::new(
                            s.span(),
                            format!("unknown encoding `{other}`; expected \"json\" or \"msgpack\""),
                        ))
                    }
                };
                self.encoding = Some(At { value, span });
            }
            "backoff" | "backoff_max" | "soft_time_limit" | "time_limit" | "result_ttl"
            | "expires" => {
                if let Expr::Lit(ExprLit {
                    lit: Lit::Int(n), ..
                }) = expr
                {
                    let n = n.base10_digits();
                    return Err(syn::Error::new_spanned(
                        expr,
                        format!(
                            "`{key}` takes a string literal with a unit, like \
                             `{key} = \"{n}s\"` for {n} seconds"
                        ),
                    ));
                }
                let s = lit_str(expr, key)?;
                let ms = parse_duration_ms(&s.value())
                    .map_err(|msg| syn::Error::new(s.span(), format!("`{key}`: {msg}")))?;
                if ms == 0 && !matches!(key, "backoff" | "backoff_max") {
                    let hint = if key == "result_ttl" {
                        "; to keep no result, use `ignore_result`"
                    } else {
                        ""
                    };
                    return Err(syn::Error::new(
                        s.span(),
                        format!("`{key}` must be above zero{hint}"),
                    ));
                }
                let v = Some(At { value: ms, span });
                match key {
                    "backoff" => self.backoff = v,
                    "backoff_max" => self.backoff_max = v,
                    "soft_time_limit" => self.soft_time_limit = v,
                    "time_limit" => self.time_limit = v,
                    "result_ttl" => self.result_ttl = v,
                    _ => self.expires = v,
                }
            }
            _ => return Err(syn::Error::new(key_span, format!("unknown option `{key}`"))),
        }
        Ok(())
    }

    /// Checks between options; the later option is left unset when two contradict.
    fn check(&mut self, errors: &mut Errors) {
        if let (Some(soft), Some(hard)) = (&self.soft_time_limit, &self.time_limit) {
            if soft.value >= hard.value {
                errors.push(syn::Error::new(
                    soft.span,
                    "`soft_time_limit` must be shorter than `time_limit` (the soft limit asks \
                     the task to stop; the hard limit abandons it)",
                ));
                self.soft_time_limit = None;
            }
        }
        if let (Some(base), Some(cap)) = (&self.backoff, &self.backoff_max) {
            if base.value > cap.value {
                errors.push(syn::Error::new(
                    base.span,
                    "`backoff` is longer than `backoff_max`, which caps every delay",
                ));
                self.backoff = None;
            }
        }
        if let (Some(ignore), Some(ttl)) = (&self.ignore_result, &self.result_ttl) {
            if ignore.value {
                errors.push(syn::Error::new(
                    ttl.span,
                    "`result_ttl` has no effect together with `ignore_result`, which keeps no \
                     result; remove one of them",
                ));
                self.result_ttl = None;
            }
        }
    }
}

/// An example value for an option, for error messages.
fn example(key: &str) -> &'static str {
    match key {
        "name" => "\"emails.send\"",
        "queue" => "\"emails\"",
        "retries" => "5",
        "priority" => "7",
        "encoding" => "\"msgpack\"",
        "backoff" => "\"2s\"",
        "backoff_max" => "\"10m\"",
        "result_ttl" => "\"1h\"",
        "expires" => "\"5m\"",
        "concurrency_limit" => "5",
        "rate_limit" => "\"100/m\"",
        "breaker" => "\"partner-api\"",
        _ => "\"30s\"",
    }
}

fn unknown_option(meta: &ParseNestedMeta<'_>) -> syn::Error {
    let path = &meta.path;
    let shown = quote::quote!(#path).to_string().replace(' ', "");
    let hint = match shown.as_str() {
        "max_retries" | "retry" | "max_retry" => " (did you mean `retries`?)",
        "max_attempts" | "attempts" => {
            " (use `retries = N`: the number of attempts after the first)"
        }
        "hard_time_limit" | "timeout" => " (did you mean `time_limit`?)",
        "soft_timeout" => " (did you mean `soft_time_limit`?)",
        "jitter" => " (jitter is on by default; `no_jitter` turns it off)",
        "retry_backoff" | "backoff_base" => " (did you mean `backoff`?)",
        "retry_backoff_max" | "backoff_cap" | "max_backoff" => " (did you mean `backoff_max`?)",
        "serializer" => " (did you mean `encoding`?)",
        "ttl" | "result_expires" => " (did you mean `result_ttl`?)",
        "expires_in" | "expiry" => " (did you mean `expires`?)",
        _ => "",
    };
    meta.error(format!(
        "unknown option `{shown}` in #[celeriac::task]{hint}; valid options: {}",
        VALID_OPTIONS.join(", ")
    ))
}

/// A flag: `ignore_result` or `ignore_result = true|false`.
fn parse_flag(meta: &ParseNestedMeta<'_>) -> syn::Result<bool> {
    if meta.input.peek(syn::Token![=]) {
        let expr: Expr = meta.value()?.parse()?;
        match &expr {
            Expr::Lit(ExprLit {
                lit: Lit::Bool(b), ..
            }) => Ok(b.value),
            other => Err(syn::Error::new_spanned(
                other,
                "expected `true` or `false`, or the bare flag",
            )),
        }
    } else if meta.input.is_empty() || meta.input.peek(syn::Token![,]) {
        Ok(true)
    } else {
        Err(meta.error("this flag takes no value (or `= true` / `= false`)"))
    }
}

fn lit_str<'a>(expr: &'a Expr, key: &str) -> syn::Result<&'a LitStr> {
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "`{key}` takes a string literal, like `{key} = {}`",
                example(key)
            ),
        )),
    }
}

fn lit_int<N>(expr: &Expr, key: &str) -> syn::Result<N>
where
    N: std::str::FromStr,
    N::Err: std::fmt::Display,
{
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse::<N>(),
        other => Err(syn::Error::new_spanned(
            other,
            format!(
                "`{key}` takes a non-negative integer literal, like `{key} = {}`",
                example(key)
            ),
        )),
    }
}

/// Parses a rate such as `100/m`, `10/s` or `5/30s` into (count, period in ms).
pub(crate) fn parse_rate(text: &str) -> Result<(u32, u64), String> {
    let (count, per) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate; write it like \"100/m\" or \"5/30s\""))?;
    let count: u32 = count
        .trim()
        .parse()
        .map_err(|_| format!("`{count}` is not a whole number of runs"))?;
    if count == 0 {
        return Err("a rate of 0 would never run the task".into());
    }
    let per = per.trim();
    // A bare unit is one of it: `100/m`, `10/second`.
    let per = if per.starts_with(|c: char| c.is_ascii_alphabetic()) {
        format!("1{per}")
    } else {
        per.to_string()
    };
    let ms = parse_duration_ms(&per)?;
    if ms == 0 {
        return Err("the period must be above zero".into());
    }
    Ok((count, ms))
}

/// Each unit's names and its length in ms.
const UNITS: &[(&[&str], u64)] = &[
    (&["ms", "msec", "millisecond", "milliseconds"], 1),
    (&["s", "sec", "secs", "second", "seconds"], 1_000),
    (&["m", "min", "mins", "minute", "minutes"], 60_000),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600_000),
    (&["d", "day", "days"], 86_400_000),
];

/// The length in ms of the unit called `name` (in any case).
fn unit_ms(name: &str) -> Option<u64> {
    UNITS
        .iter()
        .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
        .map(|&(_, ms)| ms)
}

/// Reads a duration into milliseconds, by Celeriac's duration grammar (the module
/// `celeriac_core::duration` documents it): a number and a unit (`"250ms"`, `"2s"`, `"10m"`),
/// several added up (`"1h30m"`), or plain seconds (`"30"`); fractions that come to whole
/// milliseconds (`"1.5s"`). This is a copy of `celeriac_core::duration::parse_ms` (a
/// procedural macro cannot call into the runtime crate), with the same messages; both are
/// tested against the table in `celeriac-core/src/duration/cases.rs`.
pub(crate) fn parse_duration_ms(text: &str) -> Result<u64, String> {
    const UNIT_LIST: &str = "(use ms, s, m, h or d)";
    const EXAMPLES: &str = "write a number and a unit, like 30s, 5m, 1h30m or 250ms";
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {EXAMPLES}"));
    }
    if s.starts_with('-') {
        return Err(format!("`{text}` is negative; a duration is zero or more"));
    }
    let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
    let mut rest = s;
    let mut total: u64 = 0;
    let mut first = true;
    while !rest.is_empty() {
        let number_len = rest.find(|c| !is_number_char(c)).unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() {
            let word_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let word = &rest[..word_len];
            return Err(match rest.chars().next() {
                Some(c) if !c.is_ascii_alphabetic() => {
                    format!("`{text}` has an unexpected `{c}`; {EXAMPLES}")
                }
                _ if first && unit_ms(word).is_none() => {
                    format!("`{text}` is not a duration; {EXAMPLES}")
                }
                _ => format!("`{text}` has a unit without a number, `{word}`"),
            });
        }
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        let per = if unit.is_empty() {
            match rest.chars().next() {
                // A plain number: seconds.
                None if first => 1_000,
                Some(c) if !is_number_char(c) => {
                    return Err(format!("`{text}` has an unexpected `{c}`; {EXAMPLES}"))
                }
                _ => {
                    return Err(format!(
                        "`{text}` has a number without a unit, `{number}` {UNIT_LIST}"
                    ))
                }
            }
        } else {
            unit_ms(unit)
                .ok_or_else(|| format!("`{text}` has an unknown unit `{unit}` {UNIT_LIST}"))?
        };
        let ms = term_ms(number, per).map_err(|problem| match problem {
            Term::BadNumber => format!("`{text}` has a malformed number `{number}`"),
            Term::TooFine => format!("`{text}` is finer than a millisecond"),
            Term::TooLarge => format!("`{text}` is too large"),
        })?;
        total = total
            .checked_add(ms)
            .ok_or_else(|| format!("`{text}` is too large"))?;
        first = false;
    }
    Ok(total)
}

/// Why one number and unit is not a whole number of milliseconds.
enum Term {
    BadNumber,
    TooFine,
    TooLarge,
}

/// `number` (digits with at most one `.`) times `per` ms, when that is a whole number of ms.
fn term_ms(number: &str, per: u64) -> Result<u64, Term> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(Term::BadNumber);
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| Term::TooLarge)?
    };
    let mut ms = whole.checked_mul(per).ok_or(Term::TooLarge)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        // A fraction ending in a non-zero digit, times a unit of at most 2^10 * 5^5 ms, is
        // a whole number of ms only if it has at most ten digits.
        if fraction.len() > 10 {
            return Err(Term::TooFine);
        }
        let digits: u128 = fraction.parse().map_err(|_| Term::BadNumber)?;
        let scaled = digits * u128::from(per);
        let scale = 10u128.pow(fraction.len() as u32);
        if !scaled.is_multiple_of(scale) {
            return Err(Term::TooFine);
        }
        let part = u64::try_from(scaled / scale).map_err(|_| Term::TooLarge)?;
        ms = ms.checked_add(part).ok_or(Term::TooLarge)?;
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("100/m"), Ok((100, 60_000)));
        assert_eq!(parse_rate("10/s"), Ok((10, 1_000)));
        assert_eq!(parse_rate("5/30s"), Ok((5, 30_000)));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("0/m").is_err());
        assert!(parse_rate("x/m").is_err());
        assert!(parse_rate("3/fortnight").is_err());
        assert_eq!(parse_rate("100/minute"), Ok((100, 60_000)));
        assert_eq!(parse_rate("6/1h30m"), Ok((6, 5_400_000)));
        assert_eq!(parse_rate("10/.5m"), Ok((10, 30_000)));
    }

    #[test]
    fn durations_parse_with_every_unit() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("2s"), Ok(2_000));
        assert_eq!(parse_duration_ms("10m"), Ok(600_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1d"), Ok(86_400_000));
        assert_eq!(parse_duration_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration_ms("0s"), Ok(0));
    }

    #[test]
    fn bad_durations_are_explained() {
        for bad in ["", "2x", "s", "-1s", "1m30", "99999999999999999999d"] {
            let err = parse_duration_ms(bad);
            assert!(err.is_err(), "{bad:?} parsed as {err:?}");
        }
        let msg = parse_duration_ms("1m30").err().unwrap_or_default();
        assert!(msg.contains("without a unit"), "{msg}");
        let msg = parse_duration_ms("2x").err().unwrap_or_default();
        assert!(msg.contains("unknown unit `x`"), "{msg}");
    }

    /// The cases `celeriac_core::duration` is tested against: the same grammar, the same
    /// messages.
    const CASES: &[(&str, Result<u64, &str>)] =
        include!("../../celeriac-core/src/duration/cases.rs");

    #[test]
    fn the_grammar_is_celeriac_cores() {
        for (text, expected) in CASES {
            match (parse_duration_ms(text), expected) {
                (Ok(ms), Ok(want)) => assert_eq!(ms, *want, "{text:?}"),
                (Err(msg), Err(part)) => {
                    assert!(msg.contains(part), "{text:?}: {msg:?} lacks {part:?}")
                }
                (got, want) => panic!("{text:?}: got {got:?}, expected {want:?}"),
            }
        }
    }
}
