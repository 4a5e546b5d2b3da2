//! The job search: qualifiers (`task:`, `queue:`, `state:`, `error:`, `id:`, `after:`,
//! `before:`) and free words over the queues, one page of each queue and state per page,
//! merged newest first, with a cursor per listing to go on from.

use super::jobs::{
    parse_moment, parse_state, row_of, rows_table, state_names, store_failure, Row, PAGE,
};
use super::layout;
use super::request::{Failure, Outcome, Req};
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use celeriac::clock::UnixMs;
use celeriac::{JobId, JobInfo, JobState, QueueAdmin, ResultStore};
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The states searched when the query names none: jobs waiting, running or gone wrong.
pub(crate) const DEFAULT_STATES: [JobState; 5] = [
    JobState::Pending,
    JobState::Active,
    JobState::Retrying,
    JobState::Failed,
    JobState::Dead,
];

/// The qualifiers, for the help line and messages.
const QUALIFIERS: &str = "task:, queue:, state:, error:, id:, after:, before:";

/// A search as typed, understood.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Search {
    /// `id:` — the job looked up directly (the rest is then ignored).
    pub(crate) id: Option<JobId>,
    /// `task:`
    pub(crate) task: Option<String>,
    /// `queue:`
    pub(crate) queue: Option<String>,
    /// `state:` (repeated or comma-separated; `any` for all); empty: [`DEFAULT_STATES`].
    pub(crate) states: Vec<JobState>,
    /// `error:` — text in the last error's kind or message.
    pub(crate) error: Option<String>,
    /// `after:` — created at or after.
    pub(crate) after: Option<UnixMs>,
    /// `before:` — created before.
    pub(crate) before: Option<UnixMs>,
    /// Other words: looked for, together as one phrase, in the last error.
    pub(crate) words: Vec<String>,
}

/// One piece of a query: `key:value` or a free word (quoted text is one piece; a quote
/// before any colon makes it free text).
fn pieces(q: &str) -> Result<Vec<(Option<String>, String)>, String> {
    let mut out = Vec::new();
    let mut chars = q.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let (mut key, mut value, mut quoted) = (None, String::new(), false);
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            chars.next();
            match c {
                '"' => {
                    quoted = true;
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '"' {
                            closed = true;
                            break;
                        }
                        value.push(c);
                    }
                    if !closed {
                        return Err("a quote is not closed: write error:\"two words\"".into());
                    }
                }
                ':' if key.is_none()
                    && !quoted
                    && !value.is_empty()
                    && value.chars().all(|c| c.is_ascii_alphabetic() || c == '_') =>
                {
                    key = Some(value.to_ascii_lowercase());
                    value = String::new();
                }
                c => value.push(c),
            }
        }
        out.push((key, value));
    }
}

/// Reads a search: qualifiers, quoted text, free words; times relative to `now`.
///
/// # Errors
/// A qualifier that is unknown, given twice or empty, a state, id or time that does not read,
/// an unclosed quote, `after:` not before `before:`.
pub(crate) fn parse_search(q: &str, now: UnixMs) -> Result<Search, String> {
    let mut s = Search::default();
    for (key, value) in pieces(q)? {
        let Some(key) = key else {
            if !value.is_empty() {
                s.words.push(value);
            }
            continue;
        };
        if value.trim().is_empty() {
            return Err(format!("`{key}:` needs a value"));
        }
        let twice = || format!("`{key}:` is given twice");
        match key.as_str() {
            "state" => {
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    if matches!(name, "any" | "all") {
                        s.states.extend(JobState::ALL);
                        continue;
                    }
                    let state = parse_state(name).ok_or_else(|| {
                        format!("`{name}` is not a state: use {}, or any", state_names())
                    })?;
                    s.states.push(state);
                }
            }
            "task" | "queue" | "error" => {
                let slot = match key.as_str() {
                    "task" => &mut s.task,
                    "queue" => &mut s.queue,
                    _ => &mut s.error,
                };
                if slot.replace(value).is_some() {
                    return Err(twice());
                }
            }
            "id" => {
                let id = value
                    .parse::<JobId>()
                    .map_err(|_| format!("`{value}` is not a job id"))?;
                if s.id.replace(id).is_some() {
                    return Err(twice());
                }
            }
            "after" | "before" => {
                let at = parse_moment(&value, now).map_err(|e| format!("{key}: {e}"))?;
                let slot = if key == "after" {
                    &mut s.after
                } else {
                    &mut s.before
                };
                if slot.replace(at).is_some() {
                    return Err(twice());
                }
            }
            other => {
                return Err(format!(
                    "unknown qualifier `{other}:`; the qualifiers are {QUALIFIERS} (put text \
                     with a colon in quotes to look for it in errors)"
                ))
            }
        }
    }
    let mut seen = Vec::new();
    s.states.retain(|st| {
        let new = !seen.contains(st);
        seen.push(*st);
        new
    });
    if let (Some(a), Some(b)) = (s.after, s.before) {
        if a >= b {
            return Err("after: must come before before:".into());
        }
    }
    Ok(s)
}

impl Search {
    /// The states it looks in.
    fn states(&self) -> Vec<JobState> {
        if self.states.is_empty() {
            DEFAULT_STATES.to_vec()
        } else {
            self.states.clone()
        }
    }

    /// The free words as one phrase.
    fn phrase(&self) -> Option<String> {
        (!self.words.is_empty()).then(|| self.words.join(" "))
    }

    /// The listing query of one queue and state.
    fn query(&self, queue: &str, state: JobState) -> celeriac::backend::JobQuery {
        let mut q = celeriac::backend::JobQuery::new(queue, state);
        q.task = self.task.clone();
        q.error = self.error.clone().or_else(|| self.phrase());
        q.created_from = self.after;
        q.created_until = self.before;
        q.newest_first = true;
        q
    }

    /// Whether `info` passes what the store's filter could not take: the free words when
    /// `error:` is given too.
    fn passes(&self, info: &JobInfo) -> bool {
        let (Some(_), Some(phrase)) = (&self.error, self.phrase()) else {
            return true;
        };
        let phrase = phrase.to_lowercase();
        info.error.as_ref().is_some_and(|e| {
            e.kind.to_lowercase().contains(&phrase) || e.message.to_lowercase().contains(&phrase)
        })
    }
}

/// Where a search stands in one queue and state: the store's cursor and how many jobs of
/// the page it gives were already shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Source {
    /// The queue.
    q: String,
    /// The state.
    s: JobState,
    /// The store's cursor (`None`: the start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    c: Option<String>,
    /// Jobs of that page already shown.
    #[serde(default, skip_serializing_if = "is_zero")]
    k: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The search's query string.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct SearchQ {
    q: Option<String>,
    cursor: Option<String>,
}

/// A page of search results (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Found {
    now: UnixMs,
    /// The query as typed.
    query: String,
    /// As understood.
    search: Search,
    /// The states looked in.
    states: Vec<JobState>,
    /// Whether those are the default ones.
    default_states: bool,
    /// Queue-and-state listings read for this page.
    listings: usize,
    /// Jobs the store examined.
    scanned: u64,
    /// The matching jobs, newest first.
    jobs: Vec<Row>,
    /// Where the next page starts, when any listing has more.
    next: Option<String>,
}

async fn load_search(req: &Req, q: &SearchQ) -> Outcome<Found> {
    let store = req.ctx.store();
    let now = req.ctx.now();
    let query = q.q.clone().unwrap_or_default();
    let search = parse_search(&query, now).map_err(Failure::bad_request)?;
    let states = search.states();
    let mut found = Found {
        now,
        query,
        default_states: search.states.is_empty(),
        states: states.clone(),
        search,
        listings: 0,
        scanned: 0,
        jobs: Vec::new(),
        next: None,
    };
    if let Some(id) = found.search.id {
        let info = req.timed(store.get(id)).await?;
        found.jobs = info.iter().map(row_of).collect();
        return Ok(found);
    }
    let sources: Vec<Source> = match &q.cursor {
        Some(c) => serde_json::from_str(c).map_err(|_| {
            Failure::bad_request("the cursor does not read: start the search again")
        })?,
        None => {
            let stats = req.timed(store.stats()).await?;
            let mut sources = Vec::new();
            for st in stats.iter().filter(|st| match &found.search.queue {
                Some(q) => &st.queue == q,
                None => st.queue != crate::CANARY_QUEUE,
            }) {
                for state in &states {
                    if st.count(*state) > 0 {
                        sources.push(Source {
                            q: st.queue.clone(),
                            s: *state,
                            c: None,
                            k: 0,
                        });
                    }
                }
            }
            sources
        }
    };
    // One page of each listing; the pages merged newest first. A listing whose page is not
    // shown to its end goes on from the same cursor, past what was shown.
    struct Read {
        source: Source,
        jobs: VecDeque<JobInfo>,
        next: Option<String>,
        shown: usize,
    }
    let mut reads = Vec::with_capacity(sources.len());
    for source in sources {
        let query = found.search.query(&source.q, source.s);
        let page = req
            .timed(store.list_jobs(query, source.c.clone(), PAGE))
            .await
            .map_err(store_failure)?;
        found.scanned += page.scanned;
        found.listings += 1;
        reads.push(Read {
            jobs: page.jobs.into_iter().skip(source.k).collect(),
            next: page.next,
            source,
            shown: 0,
        });
    }
    while found.jobs.len() < PAGE {
        let newest = reads
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.jobs.front().map(|j| (i, j.job.created_at)))
            .max_by_key(|(_, at)| *at);
        let Some((i, _)) = newest else { break };
        let r = &mut reads[i];
        let Some(info) = r.jobs.pop_front() else {
            break;
        };
        r.shown += 1;
        if found.search.passes(&info) {
            found.jobs.push(row_of(&info));
        }
    }
    let rest: Vec<Source> = reads
        .into_iter()
        .filter_map(|r| {
            if r.jobs.is_empty() {
                r.next.map(|c| Source {
                    c: Some(c),
                    k: 0,
                    ..r.source
                })
            } else {
                Some(Source {
                    k: r.source.k + r.shown,
                    ..r.source
                })
            }
        })
        .collect();
    if !rest.is_empty() {
        found.next = serde_json::to_string(&rest).ok();
    }
    found
        .jobs
        .sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    Ok(found)
}

fn search_form(req: &Req, query: &str) -> Markup {
    html! {
        form.search method="get" action=(req.link("/jobs")) role="search" {
            input type="search" name="q" value=(query) aria-label="search jobs"
                placeholder="task:emails.send state:dead error:\"connection refused\" after:1h";
            " "
            button type="submit" { "Search" }
        }
        p.help {
            "Qualifiers: " code { "task:NAME" } " " code { "queue:NAME" } " "
            code { "state:dead,failed" } " (or " code { "state:any" } ") "
            code { "error:TEXT" } " or " code { "error:\"two words\"" } " "
            code { "id:JOB-ID" } " " code { "after:" } " / " code { "before:" }
            " a date-time (" code { "2026-12-06T14:00:00Z" } "), a date (" code { "2026-12-06" }
            ") or how long ago (" code { "1h" } ", " code { "7d" } "). Other words are looked \
             for in the last error. Without " code { "state:" } ", the search looks in "
            (DEFAULT_STATES.map(JobState::as_str).join(", ")) " jobs."
        }
    }
}

pub(crate) async fn page(req: Req, Query(q): Query<SearchQ>) -> Response {
    let data = load_search(&req, &q).await;
    if let Err(f) = &data {
        if f.status == StatusCode::BAD_REQUEST {
            // A query that does not read: the box again, with what is wrong.
            let typed = q.q.clone().unwrap_or_default();
            let message = f.message.clone();
            let mut res = req.page("Jobs", Ok(()), |req, _| {
                html! {
                    (search_form(req, &typed))
                    p.notice.bad role="alert" { (message) }
                }
            });
            *res.status_mut() = StatusCode::BAD_REQUEST;
            return res;
        }
    }
    req.page("Jobs", data, |req, f| {
        html! {
            (search_form(req, &f.query))
            p.cost {
                @if f.search.id.is_some() {
                    "Looked the job up by its id (other qualifiers are not used with id:)."
                } @else {
                    (f.jobs.len()) " jobs shown, newest first, from " (f.listings)
                    " listings (" (f.states.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
                    @if f.default_states { ", the default" }
                    "); " (f.scanned) " examined."
                }
            }
            @if f.jobs.is_empty() {
                p.empty { "No job matches." }
            } @else {
                (rows_table(req, &f.jobs, f.now))
            }
            (layout::pager(req, f.next.as_deref()))
        }
    })
}

pub(crate) async fn api(req: Req, Query(q): Query<SearchQ>) -> Response {
    Req::json(load_search(&req, &q).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMs = 1_800_000_000_000;

    #[test]
    fn qualifiers_and_words_are_read() {
        let s = parse_search("task:x state:pending", NOW).expect("reads");
        assert_eq!(s.task.as_deref(), Some("x"));
        assert_eq!(s.states, vec![JobState::Pending]);
        assert!(s.words.is_empty() && s.queue.is_none() && s.id.is_none());

        let s = parse_search(
            r#" error:"connection refused"  queue:emails  timeout  "a:b" "#,
            NOW,
        )
        .expect("reads");
        assert_eq!(s.error.as_deref(), Some("connection refused"));
        assert_eq!(s.queue.as_deref(), Some("emails"));
        assert_eq!(s.words, vec!["timeout".to_string(), "a:b".to_string()]);

        let s = parse_search("state:dead,failed STATE:dead", NOW).expect("reads");
        assert_eq!(s.states, vec![JobState::Dead, JobState::Failed]);
        assert_eq!(
            parse_search("state:any", NOW).expect("reads").states,
            JobState::ALL.to_vec()
        );
        let id = JobId::new();
        assert_eq!(
            parse_search(&format!("id:{id}"), NOW).expect("reads").id,
            Some(id)
        );
        assert_eq!(parse_search("", NOW).expect("reads"), Search::default());
        assert_eq!(
            parse_search("12:30", NOW).expect("reads").words,
            vec!["12:30"]
        );
    }

    #[test]
    fn times_are_absolute_or_that_long_ago() {
        let s = parse_search("after:1h before:2027-02-01", NOW).expect("reads");
        assert_eq!(s.after, Some(NOW - 3_600_000));
        assert_eq!(
            s.before,
            Some(1_801_440_000_000),
            "a date is its midnight, UTC"
        );
        let s = parse_search("after:2026-12-06T10:00:00Z", NOW).expect("reads");
        assert_eq!(s.after, Some(1_796_551_200_000));
        assert_eq!(
            parse_moment("2026-12-06T10:00", NOW),
            Ok(1_796_551_200_000),
            "a date-time without zone is UTC"
        );
        assert_eq!(parse_moment("7d", NOW), Ok(NOW - 7 * 86_400_000));
    }

    #[test]
    fn bad_qualifiers_say_what_is_wrong() {
        let err = |q: &str| parse_search(q, NOW).expect_err(q);
        assert!(err("foo:bar").contains("unknown qualifier `foo:`"));
        assert!(err("state:nope").contains("`nope` is not a state"));
        assert!(err("id:xyz").contains("not a job id"));
        assert!(err("task:").contains("`task:` needs a value"));
        assert!(err("task:a task:b").contains("given twice"));
        assert!(err("error:\"open").contains("quote is not closed"));
        assert!(err("after:soon").contains("after: `soon` is not a time"));
        assert!(err("after:1h before:2h").contains("after: must come before"));
    }
}
