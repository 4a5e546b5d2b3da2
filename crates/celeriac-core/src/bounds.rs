//! Bounded sizes: the largest payload, headers, unique key, queue and task names a job may
//! have ([`Bounds`]), checked when a job is enqueued, before anything reaches the store; the
//! largest result a worker stores ([`Bounds::max_result_bytes`], checked when the task
//! returns); and the cap on the error text kept with a failed attempt ([`MAX_ERROR_BYTES`]).
//!
//! Every enqueue of the runtime passes through [`Bounds::check`]: the [`Client`] (and so
//! whatever enqueues through it: applications, the command line, the dashboard), the
//! workflow steps a worker or a client enqueues, and the jobs a beat fires. The store traits
//! themselves ([`Broker::enqueue`]) take what they are given.
//!
//! ```
//! use celeriac_core::bounds::Bounds;
//! use celeriac_core::job::Job;
//!
//! let bounds = Bounds { max_payload_bytes: 16, ..Bounds::default() };
//! let job = Job::new("resize", vec![b'x'; 17], 0);
//! let err = bounds.check(&job).expect_err("over the maximum").to_string();
//! assert!(err.contains("max_payload_bytes") && err.contains("17 bytes"), "{err}");
//! ```
//!
//! [`Client`]: crate::client::Client
//! [`Broker::enqueue`]: crate::backend::Broker::enqueue

use crate::error::{Error, Result};
use crate::job::{Job, Unique};
use crate::workflow::FLOW_HEADER;

/// The separator of the parts of a store key (`celeriac:{emails}:ready`): a queue name
/// cannot contain it.
pub const KEY_SEPARATOR: char = ':';

/// The longest error text kept with a failed attempt or a dead letter, in bytes; a longer
/// one is cut on a character boundary and ends with a marker giving its full length.
pub const MAX_ERROR_BYTES: usize = 4096;

/// The largest job the runtime enqueues: see the [module docs](self).
///
/// Sizes are in bytes. A job over any of them is refused with an
/// [`Error::Config`] whose setting names the bound (`max_payload_bytes`,
/// ...) and whose message gives the job's size and the maximum; nothing is enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// The largest serialized payload (default 1 MiB).
    pub max_payload_bytes: usize,
    /// The most headers a job may carry (default 64). The workflow header Celeriac adds
    /// itself is not counted (its size counts against `max_payload_bytes`: it carries the
    /// arguments of the steps that follow).
    pub max_headers: usize,
    /// The largest total of the headers' names and values (default 16 KiB).
    pub max_header_bytes: usize,
    /// The longest unique key (default [`Unique::MAX_KEY_LEN`], 512). A key cannot contain
    /// control characters.
    pub max_unique_key_bytes: usize,
    /// The longest queue name (default 200). A queue name cannot contain control
    /// characters, the key separator `:`, nor `{` or `}` (they would change the Redis Cluster
    /// hash tag every key of the queue shares).
    pub max_queue_name_bytes: usize,
    /// The longest task name (default 200). A task name cannot contain control characters.
    pub max_task_name_bytes: usize,
    /// The largest serialized result a worker stores (default 16 MiB). A task whose result is
    /// larger fails (error kind `result_too_large`, naming this bound and the sizes) rather
    /// than write it to the store; it is not retried, as the same input gives the same
    /// result. Results that are not kept (no result ttl) are not measured.
    pub max_result_bytes: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_payload_bytes: 1 << 20,
            max_headers: 64,
            max_header_bytes: 16 << 10,
            max_unique_key_bytes: Unique::MAX_KEY_LEN,
            max_queue_name_bytes: 200,
            max_task_name_bytes: 200,
            max_result_bytes: 16 << 20,
        }
    }
}

impl Bounds {
    /// Checks the bounds themselves: every maximum must be above zero.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bound that is zero.
    pub fn validate(&self) -> Result<()> {
        let all = [
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_headers", self.max_headers),
            ("max_header_bytes", self.max_header_bytes),
            ("max_unique_key_bytes", self.max_unique_key_bytes),
            ("max_queue_name_bytes", self.max_queue_name_bytes),
            ("max_task_name_bytes", self.max_task_name_bytes),
            ("max_result_bytes", self.max_result_bytes),
        ];
        match all.iter().find(|(_, v)| *v == 0) {
            Some((name, _)) => Err(Error::config(*name, "must be above zero")),
            None => Ok(()),
        }
    }

    /// Checks a job before it is enqueued: its fields ([`Job::validate`]), then every bound.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first bound the job is over (or the field that is wrong),
    /// with the job's size and the maximum.
    pub fn check(&self, job: &Job) -> Result<()> {
        job.validate()?;
        self.check_queue(&job.queue)?;
        self.check_task(&job.task)?;
        let what = || format!("job {} of task `{}`", job.id, shown(&job.task));
        over(
            "max_payload_bytes",
            &format!("the payload of {}", what()),
            job.payload.len(),
            self.max_payload_bytes,
        )?;
        let mut count = 0;
        let mut bytes = 0;
        for (name, value) in &job.headers {
            if name == FLOW_HEADER {
                over(
                    "max_payload_bytes",
                    &format!(
                        "the workflow continuation (the steps after it) of {}",
                        what()
                    ),
                    value.len(),
                    self.max_payload_bytes,
                )?;
                continue;
            }
            count += 1;
            bytes += name.len() + value.len();
        }
        if count > self.max_headers {
            return Err(Error::config(
                "max_headers",
                format!(
                    "{} has {count} headers, over the maximum of {}",
                    what(),
                    self.max_headers
                ),
            ));
        }
        over(
            "max_header_bytes",
            &format!("the headers (names and values) of {}", what()),
            bytes,
            self.max_header_bytes,
        )?;
        if let Some(unique) = &job.unique {
            over(
                "max_unique_key_bytes",
                &format!("the unique key `{}`", shown(&unique.key)),
                unique.key.len(),
                self.max_unique_key_bytes,
            )?;
            if let Some(c) = unique.key.chars().find(|c| c.is_control()) {
                return Err(Error::config(
                    "unique",
                    format!(
                        "the unique key `{}` contains {}, a control character; a unique key \
                         cannot contain control characters",
                        shown(&unique.key),
                        code_point(c)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Checks a queue name: not empty, at most `max_queue_name_bytes`, without control
    /// characters, `:` (the key separator), `{` or `}` (Redis Cluster hash tags).
    ///
    /// # Errors
    /// [`Error::Config`] naming `queue` (or `max_queue_name_bytes`) and the queue.
    pub fn check_queue(&self, queue: &str) -> Result<()> {
        if queue.is_empty() {
            return Err(Error::config("queue", "a queue name cannot be empty"));
        }
        over(
            "max_queue_name_bytes",
            &format!("the queue name `{}`", shown(queue)),
            queue.len(),
            self.max_queue_name_bytes,
        )?;
        let bad = queue
            .chars()
            .find(|&c| c.is_control() || c == KEY_SEPARATOR || c == '{' || c == '}');
        match bad {
            Some(c) => Err(Error::config(
                "queue",
                format!(
                    "the queue name `{}` contains {}; a queue name cannot contain control \
                     characters, `{KEY_SEPARATOR}` (the store's key separator), `{{` or `}}` \
                     (they would change the queue's Redis Cluster hash tag)",
                    shown(queue),
                    if c.is_control() {
                        format!("{}, a control character", code_point(c))
                    } else {
                        format!("`{c}`")
                    }
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks a task name: not empty, at most `max_task_name_bytes`, without control
    /// characters.
    ///
    /// # Errors
    /// [`Error::Config`] naming `task` (or `max_task_name_bytes`) and the task.
    pub fn check_task(&self, task: &str) -> Result<()> {
        if task.is_empty() {
            return Err(Error::config("task", "a task name cannot be empty"));
        }
        over(
            "max_task_name_bytes",
            &format!("the task name `{}`", shown(task)),
            task.len(),
            self.max_task_name_bytes,
        )?;
        match task.chars().find(|c| c.is_control()) {
            Some(c) => Err(Error::config(
                "task",
                format!(
                    "the task name `{}` contains {}, a control character; a task name cannot \
                     contain control characters",
                    shown(task),
                    code_point(c)
                ),
            )),
            None => Ok(()),
        }
    }

    /// Checks every job (see [`Bounds::check`]), then puts the current trace context into
    /// their headers: what every enqueue of the runtime does before handing jobs to the store.
    pub(crate) fn admit(&self, jobs: &mut [Job]) -> Result<()> {
        for job in jobs.iter() {
            self.check(job)?;
        }
        for job in jobs {
            crate::trace::inject_current(&mut job.headers);
        }
        Ok(())
    }
}

/// `Err` naming `setting` when `size` is over `max`: "`what` is 2.3 MiB (2411724 bytes), over
/// the 1 MiB maximum".
fn over(setting: &str, what: &str, size: usize, max: usize) -> Result<()> {
    if size <= max {
        return Ok(());
    }
    Err(Error::config(
        setting,
        format!(
            "{what} is {}, over the {} maximum",
            human_bytes(size),
            human_bytes(max)
        ),
    ))
}

/// A size for people: `17 bytes`, `16 KiB`, `2.3 MiB (2411724 bytes)`.
pub fn human_bytes(n: usize) -> String {
    const KIB: usize = 1 << 10;
    const MIB: usize = 1 << 20;
    let (unit, name) = match n {
        n if n >= MIB => (MIB, "MiB"),
        n if n >= KIB => (KIB, "KiB"),
        1 => return "1 byte".to_string(),
        n => return format!("{n} bytes"),
    };
    if n.is_multiple_of(unit) {
        format!("{} {name}", n / unit)
    } else {
        format!("{:.1} {name} ({n} bytes)", n as f64 / unit as f64)
    }
}

/// A name or key as an error shows it: control characters escaped, at most 64 characters.
fn shown(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

/// `U+0007`.
fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// `text` cut to at most `max` bytes on a character boundary, ending with
/// `… (truncated, N bytes)` (N the full length) when it was longer.
pub fn truncate_text(mut text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let marker = format!("… (truncated, {} bytes)", text.len());
    let mut cut = max.saturating_sub(marker.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(&marker);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::UniqueFor;
    use std::collections::BTreeMap;

    fn job() -> Job {
        Job::new("t", b"null".to_vec(), 0)
    }

    fn refused(bounds: &Bounds, job: &Job) -> String {
        bounds.check(job).expect_err("refused").to_string()
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(2_411_724), "2.3 MiB (2411724 bytes)");
        assert_eq!(human_bytes(16 << 10), "16 KiB");
        assert_eq!(human_bytes(17), "17 bytes");
    }

    #[test]
    fn the_payload_is_bounded() {
        let b = Bounds::default();
        let mut j = job();
        j.payload = vec![b'x'; b.max_payload_bytes];
        assert!(b.check(&j).is_ok(), "exactly the maximum is accepted");
        j.payload.push(b'x');
        let err = refused(&b, &j);
        assert!(
            err.contains("max_payload_bytes") && err.contains("1048577 bytes"),
            "{err}"
        );
        assert!(err.contains("over the 1 MiB maximum"), "{err}");
    }

    #[test]
    fn headers_are_bounded_by_count_and_bytes() {
        let b = Bounds::default();
        let mut j = job();
        j.headers = (0..b.max_headers)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        assert!(b.check(&j).is_ok());
        j.headers.insert("one-more".into(), String::new());
        let err = refused(&b, &j);
        assert!(
            err.contains("max_headers") && err.contains("65 headers"),
            "{err}"
        );
        j.headers = BTreeMap::from([("big".to_string(), "v".repeat(b.max_header_bytes))]);
        let err = refused(&b, &j);
        assert!(err.contains("max_header_bytes"), "{err}");
        // The workflow header is not a header the caller set: only its size is bounded.
        j.headers = BTreeMap::from([(FLOW_HEADER.to_string(), "v".repeat(64 << 10))]);
        assert!(b.check(&j).is_ok());
    }

    #[test]
    fn queue_names_refuse_the_separator_braces_and_control_characters() {
        let b = Bounds::default();
        for ok in ["emails", "emails.high", "q-1_ü", &"q".repeat(200)] {
            assert!(b.check_queue(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("a:b", "`:`"),
            ("{a}", "`{`"),
            ("a}", "`}`"),
            ("a\nb", "U+000A"),
            ("a\u{7}", "U+0007"),
            ("", "empty"),
        ] {
            let err = b.check_queue(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
            assert!(
                !err.contains('\n') && !err.contains('\u{7}'),
                "escaped: {err}"
            );
        }
        let err = b
            .check_queue(&"q".repeat(201))
            .expect_err("long")
            .to_string();
        assert!(
            err.contains("max_queue_name_bytes") && err.contains("201 bytes"),
            "{err}"
        );
    }

    #[test]
    fn unique_keys_and_task_names_refuse_control_characters() {
        let b = Bounds::default();
        let mut j = job();
        j.unique = Some(Unique {
            key: "user:42@2024-01-01T00:00:00Z".into(),
            lifetime: UniqueFor::UntilStarted,
        });
        assert!(b.check(&j).is_ok(), "a unique key may contain `:`");
        j.unique = Some(Unique {
            key: "a\u{0}b".into(),
            lifetime: UniqueFor::UntilStarted,
        });
        assert!(refused(&b, &j).contains("U+0000"));
        j.unique = Some(Unique {
            key: "k".repeat(b.max_unique_key_bytes + 1),
            lifetime: UniqueFor::UntilStarted,
        });
        assert!(refused(&b, &j).contains("max_unique_key_bytes"));
        let mut j = job();
        j.task = "t\u{1b}[31m".into();
        assert!(refused(&b, &j).contains("U+001B"));
    }

    #[test]
    fn bounds_are_configurable() {
        let b = Bounds {
            max_queue_name_bytes: 300,
            ..Bounds::default()
        };
        assert!(b.check_queue(&"q".repeat(300)).is_ok());
        let zero = Bounds {
            max_headers: 0,
            ..Bounds::default()
        };
        let err = zero.validate().expect_err("zero").to_string();
        assert!(err.contains("max_headers"), "{err}");
        let zero = Bounds {
            max_result_bytes: 0,
            ..Bounds::default()
        };
        let err = zero.validate().expect_err("zero").to_string();
        assert!(err.contains("max_result_bytes"), "{err}");
        assert!(Bounds::default().validate().is_ok());
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncate_text("short".into(), 100), "short");
        let long = "é".repeat(100_000);
        let cut = truncate_text(long, MAX_ERROR_BYTES);
        assert!(cut.len() <= MAX_ERROR_BYTES, "{}", cut.len());
        assert!(cut.ends_with("… (truncated, 200000 bytes)"), "{cut:.40}");
        assert!(cut.starts_with("éé"));
    }
}
