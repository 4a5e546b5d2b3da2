//! One workflow: its record (shape, state, result or error) and its steps drawn as a graph,
//! stages left to right and the members of a group stacked, each with its job's state.
//!
//! The store keeps no list of a workflow's jobs: the record has the shape as text
//! ([`Flow::describe`](celeriac::Flow::describe)), and every step's job id derives from the
//! workflow's id and its place in the shape (see `celeriac_core::workflow::run`), so the page
//! reads the shape back, works the ids out the same way, and reads each job (one read per
//! step, at most [`MAX_MEMBERS`]). A map's members are known only once it ran: they are read
//! in turn until one is missing.

use super::jobs::{job_href, store_failure};
use super::layout::{badge, json_block, when};
use super::request::{Ctx, Failure, Outcome, Req};
use axum::extract::Path;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use celeriac::backend::{WorkflowRecord, WorkflowState, WorkflowStore};
use celeriac::clock::UnixMs;
use celeriac::{JobId, JobState, ResultStore};
use maud::{html, Markup};
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

/// The workflow routes: the page and its twin.
pub(crate) fn routes(r: Router<Arc<Ctx>>) -> Router<Arc<Ctx>> {
    r.route("/workflows/{id}", get(page))
        .route("/api/v1/workflows/{id}", get(api))
}

/// The most steps whose jobs a page reads.
pub(crate) const MAX_MEMBERS: usize = 200;

/// A workflow's shape as its record describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    Task(String),
    Chain(Vec<Shape>),
    Group(Vec<Shape>),
    Chord(Vec<Shape>, Box<Shape>),
    Map(String),
    OnError(Box<Shape>, String),
}

/// Reads a shape written by `Flow::describe` (`chain(a, group(b, c), d).on_error(e)`);
/// `None` when it does not read (a task name with brackets or commas, say).
pub(crate) fn parse_shape(text: &str) -> Option<Shape> {
    let mut p = Parser { rest: text.trim() };
    let shape = p.flow()?;
    p.rest.is_empty().then_some(shape)
}

struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn eat(&mut self, token: &str) -> bool {
        match self.rest.strip_prefix(token) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn flow(&mut self) -> Option<Shape> {
        let mut shape = if self.eat("chain(") {
            Shape::Chain(self.list()?)
        } else if self.eat("chord(group(") {
            let header = self.list()?;
            if !self.eat(", ") {
                return None;
            }
            let body = self.flow()?;
            if !self.eat(")") {
                return None;
            }
            Shape::Chord(header, Box::new(body))
        } else if self.eat("group(") {
            Shape::Group(self.list()?)
        } else if self.eat("map(") {
            let task = self.name()?;
            if !self.eat(")") {
                return None;
            }
            Shape::Map(task)
        } else {
            Shape::Task(self.name()?)
        };
        while self.eat(".on_error(") {
            let handler = self.name()?;
            if !self.eat(")") {
                return None;
            }
            shape = Shape::OnError(Box::new(shape), handler);
        }
        Some(shape)
    }

    /// Flows separated by `, ` up to the closing bracket (eaten).
    fn list(&mut self) -> Option<Vec<Shape>> {
        let mut parts = vec![self.flow()?];
        loop {
            if self.eat(")") {
                return Some(parts);
            }
            if !self.eat(", ") {
                return None;
            }
            parts.push(self.flow()?);
        }
    }

    /// A task name: up to a comma, a bracket or `.on_error(`.
    fn name(&mut self) -> Option<String> {
        let mut end = self.rest.len();
        for (i, c) in self.rest.char_indices() {
            if matches!(c, ',' | '(' | ')') || self.rest[i..].starts_with(".on_error(") {
                end = i;
                break;
            }
        }
        let (name, rest) = self.rest.split_at(end);
        if name.is_empty() || rest.starts_with('(') {
            return None;
        }
        self.rest = rest;
        Some(name.to_string())
    }
}

/// A step of the drawn graph.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Drawn {
    /// One task's job.
    Task { task: String, member: Member },
    /// Parts one after the other.
    Chain { parts: Vec<Drawn> },
    /// Parts side by side.
    Group { parts: Vec<Drawn> },
    /// Parts side by side, then the body.
    Chord {
        header: Vec<Drawn>,
        body: Box<Drawn>,
    },
    /// One job per item of the input list: those found.
    Map {
        task: String,
        members: Vec<Member>,
        /// Whether reading stopped at the cap with more possibly left.
        capped: bool,
        /// Where its members' ids derive from: member `i` is `seed.derive("{path}.{i}")`.
        #[serde(skip)]
        from: Cont,
    },
    /// `body`, with `handler` enqueued if a step fails.
    OnError { body: Box<Drawn>, handler: String },
}

/// One step's job.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Member {
    pub(crate) id: JobId,
    /// Its state; `None` when it has no record (not enqueued yet, or expired) or was not read.
    pub(crate) state: Option<JobState>,
    /// Whether it was read (false past the cap).
    pub(crate) read: bool,
}

/// Where the next part of a flow starts: the id its ids derive from, and the path.
type Cont = (JobId, String);

/// Lays `shape` out from `seed` and `path` as the workflow runner does, giving the drawn
/// graph (with ids, states still unread) and where what follows it starts.
fn place(shape: &Shape, seed: JobId, path: &str) -> (Drawn, Cont) {
    let unread = |id| Member {
        id,
        state: None,
        read: false,
    };
    match shape {
        Shape::Task(task) => {
            let id = seed.derive(path);
            (
                Drawn::Task {
                    task: task.clone(),
                    member: unread(id),
                },
                (id, "n".to_string()),
            )
        }
        Shape::Chain(parts) => {
            let Some((first, rest)) = parts.split_first() else {
                return (Drawn::Chain { parts: Vec::new() }, (seed, path.to_string()));
            };
            let (d, cont) = place(first, seed, &format!("{path}.0"));
            let mut drawn = vec![d];
            // The runner continues with the one part left, or with a chain of the rest.
            let (rest_drawn, cont) = match rest {
                [] => return (Drawn::Chain { parts: drawn }, cont),
                [one] => place(one, cont.0, &cont.1),
                more => place(&Shape::Chain(more.to_vec()), cont.0, &cont.1),
            };
            match rest_drawn {
                Drawn::Chain { parts } if rest.len() > 1 => drawn.extend(parts),
                other => drawn.push(other),
            }
            (Drawn::Chain { parts: drawn }, cont)
        }
        Shape::Group(parts) => {
            let (parts, cont) = fan_out(parts, seed, path);
            (Drawn::Group { parts }, cont)
        }
        Shape::Chord(header, body) => {
            let (header, cont) = fan_out(header, seed, path);
            let (body, cont) = place(body, cont.0, &cont.1);
            (
                Drawn::Chord {
                    header,
                    body: Box::new(body),
                },
                cont,
            )
        }
        Shape::Map(task) => (
            Drawn::Map {
                task: task.clone(),
                members: Vec::new(),
                capped: false,
                from: (seed, path.to_string()),
            },
            (seed.derive(&format!("{path}.j")), "n".to_string()),
        ),
        Shape::OnError(body, handler) => {
            let (body, cont) = place(body, seed, path);
            (
                Drawn::OnError {
                    body: Box::new(body),
                    handler: handler.clone(),
                },
                cont,
            )
        }
    }
}

fn fan_out(parts: &[Shape], seed: JobId, path: &str) -> (Vec<Drawn>, Cont) {
    if parts.is_empty() {
        return (Vec::new(), (seed, format!("{path}.e")));
    }
    let drawn = parts
        .iter()
        .enumerate()
        .map(|(i, p)| place(p, seed, &format!("{path}.{i}")).0)
        .collect();
    (drawn, (seed.derive(&format!("{path}.j")), "n".to_string()))
}

/// Reads the states of the drawn members, in order, at most `budget` reads.
struct Reader<'a> {
    req: &'a Req,
    budget: usize,
}

impl Reader<'_> {
    async fn member(&mut self, m: &mut Member) -> Outcome<()> {
        if self.budget == 0 {
            return Ok(());
        }
        self.budget -= 1;
        let info = self.req.timed(self.req.ctx.store().get(m.id)).await?;
        m.state = info.map(|i| i.state);
        m.read = true;
        Ok(())
    }

    fn read<'b>(
        &'b mut self,
        d: &'b mut Drawn,
    ) -> futures_util::future::BoxFuture<'b, Outcome<()>> {
        Box::pin(async move {
            match d {
                Drawn::Task { member, .. } => self.member(member).await?,
                Drawn::Chain { parts } | Drawn::Group { parts } => {
                    for p in parts {
                        self.read(p).await?;
                    }
                }
                Drawn::Chord { header, body } => {
                    for p in header {
                        self.read(p).await?;
                    }
                    self.read(body).await?;
                }
                Drawn::Map {
                    members,
                    capped,
                    from: (seed, path),
                    ..
                } => {
                    for i in 0.. {
                        if self.budget == 0 {
                            *capped = true;
                            break;
                        }
                        let mut m = Member {
                            id: seed.derive(&format!("{path}.{i}")),
                            state: None,
                            read: false,
                        };
                        self.member(&mut m).await?;
                        if m.state.is_none() {
                            break;
                        }
                        members.push(m);
                    }
                }
                Drawn::OnError { body, .. } => self.read(body).await?,
            }
            Ok(())
        })
    }
}

/// A workflow's page (and its JSON twin).
#[derive(Debug, Serialize)]
pub(crate) struct WorkflowView {
    now: UnixMs,
    id: JobId,
    /// The shape, as recorded.
    name: String,
    state: WorkflowState,
    created_at: UnixMs,
    finished_at: Option<UnixMs>,
    /// The output once succeeded, redacted.
    result: Option<Value>,
    /// What stopped it, once failed.
    error: Option<String>,
    /// The steps with their jobs; `None` when the shape does not read.
    graph: Option<Drawn>,
    /// Jobs read for the states.
    members_read: usize,
    /// Whether the cap of reads was reached (later steps show no state).
    capped: bool,
}

async fn load(req: &Req, id: &str) -> Outcome<WorkflowView> {
    let missing = || {
        Failure::not_found(format!(
            "no workflow {id} (it never existed, or its record expired)"
        ))
    };
    let id: JobId = id.parse().map_err(|_| missing())?;
    let store = req.ctx.store();
    let rec: WorkflowRecord = req
        .timed(store.workflow_get(id))
        .await
        .map_err(store_failure)?
        .ok_or_else(missing)?;
    let result = rec.result.as_deref().map(|bytes| {
        let v = serde_json::from_slice(bytes).unwrap_or_else(|_| {
            Value::String(format!("<{} bytes that are not JSON>", bytes.len()))
        });
        (req.ctx.redactor)(&rec.name, v)
    });
    let shape = parse_shape(&rec.name);
    let (graph, members_read, capped) = match &shape {
        Some(shape) => {
            let (mut drawn, _) = place(shape, id, "r");
            let mut reader = Reader {
                req,
                budget: MAX_MEMBERS,
            };
            reader.read(&mut drawn).await?;
            let read = MAX_MEMBERS - reader.budget;
            (Some(drawn), read, reader.budget == 0)
        }
        None => (None, 0, false),
    };
    Ok(WorkflowView {
        now: req.ctx.now(),
        id,
        name: rec.name,
        state: rec.state,
        created_at: rec.created_at,
        finished_at: rec.finished_at,
        result,
        error: rec.error,
        graph,
        members_read,
        capped,
    })
}

fn node(req: &Req, task: &str, m: &Member) -> Markup {
    let word = match (m.read, m.state) {
        (_, Some(s)) => s.as_str(),
        (true, None) => "no record",
        (false, None) => "not read",
    };
    html! {
        div.node data-job=(m.id) {
            a href=(job_href(req, m.id)) { (task) }
            " " (badge(word))
        }
    }
}

fn draw(req: &Req, d: &Drawn) -> Markup {
    match d {
        Drawn::Task { task, member } => html! { div.stage { (node(req, task, member)) } },
        Drawn::Chain { parts } => html! {
            div.graph {
                @for (i, p) in parts.iter().enumerate() {
                    @if i > 0 { span.arrow { "→" } }
                    (draw(req, p))
                }
            }
        },
        Drawn::Group { parts } => html! {
            div.stage.group { @for p in parts { (draw(req, p)) } }
        },
        Drawn::Chord { header, body } => html! {
            div.graph {
                div.stage.group { @for p in header { (draw(req, p)) } }
                span.arrow { "→" }
                (draw(req, body))
            }
        },
        Drawn::Map {
            task,
            members,
            capped,
            ..
        } => html! {
            div.stage.group {
                span.label { "map(" (task) "): " (members.len()) @if *capped { "+" } " found" }
                @for m in members { (node(req, task, m)) }
            }
        },
        Drawn::OnError { body, handler } => html! {
            div.graph {
                (draw(req, body))
                span.arrow { "⇢" }
                div.stage { div.node.handler { "on error: " (handler) } }
            }
        },
    }
}

async fn page(req: Req, Path(id): Path<String>) -> Response {
    let data = load(&req, &id).await;
    req.page(&format!("Workflow {id}"), data, |req, w| {
        html! {
            section.summary {
                (badge(w.state.as_str())) " " code { (w.name) }
                p {
                    "Started " (when(w.created_at, w.now))
                    @if let Some(at) = w.finished_at { ", finished " (when(at, w.now)) }
                    "."
                }
                @if let Some(e) = &w.error { p.notice.bad { (e) } }
            }
            section {
                h2 { "Steps" }
                @match &w.graph {
                    Some(g) => {
                        (draw(req, g))
                        p.help {
                            (w.members_read) " jobs read for their states"
                            @if w.capped { ", the most a page reads (" (MAX_MEMBERS) "): later steps show none" }
                            ". A step without a record is not enqueued yet, or its record expired; a \
                             map's jobs show once it ran."
                        }
                    }
                    None => p.empty { "The shape " code { (w.name) } " does not read back, so its \
                        steps cannot be drawn; the workflow's jobs link here from their pages." },
                }
            }
            @if let Some(r) = &w.result {
                section { h2 { "Result" } (json_block(r, 4096)) }
            }
        }
    })
}

async fn api(req: Req, Path(id): Path<String>) -> Response {
    Req::json(load(&req, &id).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> Shape {
        Shape::Task(name.to_string())
    }

    #[test]
    fn shapes_read_back() {
        assert_eq!(parse_shape("fetch"), Some(t("fetch")));
        assert_eq!(
            parse_shape("chain(Fetch, chord(group(map(Resize)), Report), Notify).on_error(Alert)"),
            Some(Shape::OnError(
                Box::new(Shape::Chain(vec![
                    t("Fetch"),
                    Shape::Chord(vec![Shape::Map("Resize".into())], Box::new(t("Report"))),
                    t("Notify"),
                ])),
                "Alert".into()
            ))
        );
        assert_eq!(
            parse_shape("group(a.b, chain(c, d))"),
            Some(Shape::Group(vec![
                t("a.b"),
                Shape::Chain(vec![t("c"), t("d")])
            ]))
        );
        assert_eq!(parse_shape("chain(a, b"), None);
        assert_eq!(parse_shape("f(x)"), None);
    }

    #[test]
    fn ids_follow_the_runner() {
        let w = JobId::new();
        // chain(a, b, c, d): a at r.0, b after a at n.0 (the rest is a chain), c at n.0 after
        // b, d at n after c (one part left).
        let shape = parse_shape("chain(a, b, c, d)").expect("reads");
        let (Drawn::Chain { parts }, _) = place(&shape, w, "r") else {
            panic!("a chain")
        };
        let ids: Vec<JobId> = parts
            .iter()
            .map(|p| match p {
                Drawn::Task { member, .. } => member.id,
                other => panic!("a task: {other:?}"),
            })
            .collect();
        let a = w.derive("r.0");
        let b = a.derive("n.0");
        let c = b.derive("n.0");
        let d = c.derive("n");
        assert_eq!(ids, vec![a, b, c, d]);
        // A chord whose body is one task: as WorkflowHandle::callback_id says.
        let (Drawn::Chord { header, body }, _) = place(
            &parse_shape("chord(group(x, y), z)").expect("reads"),
            w,
            "r",
        ) else {
            panic!("a chord")
        };
        let Drawn::Task { member, .. } = &header[1] else {
            panic!("a task")
        };
        assert_eq!(member.id, w.derive("r.1"));
        let Drawn::Task { member, .. } = &*body else {
            panic!("a task")
        };
        assert_eq!(member.id, w.derive("r.j").derive("n"));
    }
}
