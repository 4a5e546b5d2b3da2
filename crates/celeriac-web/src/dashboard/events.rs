//! Events: the store's capped stream of failures, dead letters, alerts and administrative
//! actions, newest first, filtered by kind prefix, queue and text over the latest
//! [`SEARCHED`] events, with a live tail.
//!
//! The tail's stream reads only the events appended since the last one it saw
//! (`EventLog::events(after, ..)`), keeps the latest [`SEARCHED`], and sends the whole list of
//! the latest [`SHOWN`] matching events each time, which the page's script puts in place.

use super::layout::{self, when};
use super::request::{Ctx, Outcome, Req};
use axum::extract::Query;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use celeriac::backend::Event;
use celeriac::clock::UnixMs;
use celeriac::EventLog;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Arc;

/// The latest events a page searches.
pub(crate) const SEARCHED: usize = 500;
/// The most matching events a page shows.
pub(crate) const SHOWN: usize = 100;
/// Kind prefixes offered in the filter.
const KINDS: &[&str] = &[
    "job.",
    "job.failed",
    "job.dead",
    "job.cancelled",
    "dlq.",
    "admin.",
    "alert.",
];

/// The events page, its JSON twin and its live tail.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/events", get(page))
        .route("/api/v1/events", get(api))
        .route("/live/events", get(live))
}

/// The filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Q {
    /// Events whose kind starts with this (`job.`, `admin.`, `alert.firing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<String>,
    /// Events of this queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) queue: Option<String>,
    /// Events whose message, kind, queue, job or actor contains this (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) q: Option<String>,
}

impl Q {
    /// The filters without empty fields.
    fn cleaned(&self) -> Q {
        let f = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Q {
            kind: f(&self.kind),
            queue: f(&self.queue),
            q: f(&self.q),
        }
    }

    /// Whether `e` passes the filters.
    pub(crate) fn matches(&self, e: &Event) -> bool {
        if self
            .kind
            .as_ref()
            .is_some_and(|k| !e.kind.starts_with(k.as_str()))
        {
            return false;
        }
        if self
            .queue
            .as_ref()
            .is_some_and(|q| e.queue.as_deref() != Some(q.as_str()))
        {
            return false;
        }
        if let Some(text) = &self.q {
            let text = text.to_lowercase();
            let job = e.job.map(|j| j.to_string()).unwrap_or_default();
            let found = [
                e.message.as_str(),
                e.kind.as_str(),
                e.queue.as_deref().unwrap_or(""),
                e.actor.as_deref().unwrap_or(""),
                job.as_str(),
            ]
            .iter()
            .any(|f| f.to_lowercase().contains(&text));
            if !found {
                return false;
            }
        }
        true
    }

    fn query_string(&self) -> String {
        serde_urlencoded::to_string(self).unwrap_or_default()
    }
}

/// The events page's data (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct Events {
    pub(crate) now: UnixMs,
    /// The filters applied.
    pub(crate) filters: Q,
    /// Events searched (the latest ones).
    pub(crate) searched: usize,
    /// The matching events, newest first (at most [`SHOWN`]).
    pub(crate) events: Vec<Event>,
}

/// The latest `SHOWN` events of `recent` (oldest first) that pass `q`, newest first.
fn newest_matching<'a>(recent: impl DoubleEndedIterator<Item = &'a Event>, q: &Q) -> Vec<Event> {
    recent
        .rev()
        .filter(|e| q.matches(e))
        .take(SHOWN)
        .cloned()
        .collect()
}

pub(crate) async fn load(req: &Req, q: &Q) -> Outcome<Events> {
    let filters = q.cleaned();
    let recent = req.timed(req.ctx.store().events(None, SEARCHED)).await?;
    Ok(Events {
        now: req.ctx.now(),
        searched: recent.len(),
        events: newest_matching(recent.iter(), &filters),
        filters,
    })
}

pub(crate) async fn page(req: Req, Query(q): Query<Q>) -> Response {
    let data = load(&req, &q).await;
    req.page("Events", data, |req, d| {
        let source = format!("/live/events?{}", d.filters.query_string());
        html! {
            (filters(req, &d.filters))
            p.reason {
                "The latest " (SHOWN) " matching among the latest " (d.searched)
                " events, newest first; new ones appear while this tab is visible."
            }
            (layout::live(req, &source, table(req, &d.events, d.now)))
        }
    })
}

pub(crate) async fn api(req: Req, Query(q): Query<Q>) -> Response {
    Req::json(load(&req, &q).await)
}

fn filters(req: &Req, f: &Q) -> Markup {
    html! {
        form.filters method="get" action=(req.link("/events")) {
            label for="events-kind" { "Kind" }
            input #events-kind type="text" name="kind" list="event-kinds" placeholder="job., admin., alert."
                value=(f.kind.as_deref().unwrap_or(""));
            datalist #event-kinds {
                @for k in KINDS { option value=(k) {} }
            }
            label for="events-queue" { "Queue" }
            input #events-queue type="text" name="queue" value=(f.queue.as_deref().unwrap_or(""));
            label for="events-q" { "Text" }
            input #events-q type="search" name="q" value=(f.q.as_deref().unwrap_or(""));
            button type="submit" { "Filter" }
            " "
            a href=(req.link("/events")) { "clear" }
        }
    }
}

/// The events as a table, newest first.
pub(crate) fn table(req: &Req, events: &[Event], now: UnixMs) -> Markup {
    html! {
        @if events.is_empty() {
            p.empty { "No events match." }
        } @else {
            table #events {
                thead { tr {
                    th { "When" } th { "Kind" } th { "Queue" } th { "Job" } th { "By" } th { "What" }
                } }
                tbody {
                    @for e in events {
                        tr data-event=(e.id) data-kind=(e.kind) {
                            td { (when(e.at, now)) }
                            td { code { (e.kind) } }
                            td { @if let Some(q) = &e.queue {
                                a href=(req.link(&format!("/queues/{}", layout::path_escape(q)))) { (q) }
                            } }
                            td { @if let Some(j) = &e.job {
                                a href=(req.link(&format!("/jobs/{j}"))) { code { (j) } }
                            } }
                            td { @if let Some(a) = &e.actor { (a) } }
                            td.message { (e.message) }
                        }
                    }
                }
            }
        }
    }
}

/// What the tail keeps between sends: the latest events and the last one seen.
#[derive(Default)]
struct Tail {
    recent: VecDeque<Event>,
    last: Option<String>,
}

impl Tail {
    /// Reads what was appended since the last read (or the latest events, the first time or
    /// after more than a page was appended).
    async fn catch_up(&mut self, req: &Req) -> celeriac::Result<()> {
        let store = req.ctx.store();
        let new = match &self.last {
            Some(last) => {
                req.timed(store.events(Some(last.clone()), SEARCHED))
                    .await?
            }
            None => Vec::new(),
        };
        if self.last.is_none() || new.len() >= SEARCHED {
            let latest = req.timed(store.events(None, SEARCHED)).await?;
            self.recent = latest.into();
        } else {
            self.recent.extend(new);
            while self.recent.len() > SEARCHED {
                self.recent.pop_front();
            }
        }
        if let Some(e) = self.recent.back() {
            self.last = Some(e.id.clone());
        }
        Ok(())
    }
}

/// The live tail: every refresh, the latest matching events as the page shows them.
pub(crate) async fn live(req: Req, Query(q): Query<Q>) -> Response {
    let every = req.ctx.live_every;
    let filters = Arc::new(q.cleaned());
    let req = Arc::new(req);
    let tail = Arc::new(tokio::sync::Mutex::new(Tail::default()));
    super::live::every(every, move || {
        let (req, tail, filters) = (req.clone(), tail.clone(), filters.clone());
        async move {
            let mut tail = tail.lock().await;
            match tail.catch_up(&req).await {
                Ok(()) => table(
                    &req,
                    &newest_matching(tail.recent.iter(), &filters),
                    req.ctx.now(),
                ),
                Err(e) => layout::failure(&e.into()),
            }
        }
    })
    .into_response()
}
