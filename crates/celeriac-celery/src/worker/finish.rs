//! What follows a task's outcome (§11.A step 7): callbacks, the next chain step, the result
//! record, the chord join; failures along the chain and to errbacks; retries republished.

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use super::message::{Ctx, Job};
use crate::protocol::{ApplyContext, Dispatch, ParentTask, Route, Signature, TaskMessage};
use crate::results::{ChordPart, ChordPartOutcome, ChordRelease, ExceptionInfo, ResultMeta, State};

/// How a run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The return value.
    Success(Value),
    /// FAILURE with this exception.
    Failure {
        exc: ExceptionInfo,
        traceback: String,
    },
    /// Republish with `retries + 1`, due after `countdown`.
    Retry {
        countdown: Duration,
        exc: ExceptionInfo,
        traceback: String,
    },
    /// REVOKED (`expired`, `revoked`, `terminated`).
    Revoked(String),
}

impl Ctx {
    fn apply_context(&self, msg: &TaskMessage, parent_result: Value) -> ApplyContext {
        ApplyContext {
            now: self.shared.now(),
            parent_result: Some(parent_result),
            parent: Some(ParentTask::from_headers(&msg.headers)),
            default_queue: self.config.default_queue.clone(),
        }
    }

    /// Publishes what applying a signature gave (the chord size first).
    async fn publish(&self, dispatch: Dispatch) -> Result<(), String> {
        if let Some(setup) = &dispatch.chord {
            self.backend
                .init_chord(&setup.group_id, setup.size as u64)
                .await
                .map_err(|e| e.to_string())?;
        }
        for (msg, route) in dispatch.messages {
            let raw = msg.to_envelope(route.clone()).encode();
            self.broker
                .publish(&route.queue, route.priority, &raw)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Applies a signature; returns the id of its result when it was sent.
    async fn apply(&self, sig: &Signature, ctx: &ApplyContext, what: &str) -> Option<String> {
        let sent = match sig.dispatch(ctx) {
            Ok(d) => {
                let id = d.result_id.clone();
                self.publish(d).await.map(|()| id)
            }
            Err(e) => Err(e.to_string()),
        };
        sent.map_err(|e| tracing::error!(error = %e, task = %sig.task, "could not send the {what}"))
            .ok()
    }

    /// Stores a record unless the task ignores results; `false` when the store failed.
    async fn store(&self, job: &Job, meta: ResultMeta) -> bool {
        if job.ignore_result() {
            return true;
        }
        match self.backend.store(&self.meta(job, meta)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, task_id = %job.msg.headers.id, "could not store the result");
                false
            }
        }
    }

    /// Records the outcome and acknowledges the message (a message whose result could not be
    /// stored stays un-acknowledged, for a sweep).
    pub async fn conclude(&self, job: &Job, outcome: Outcome) {
        let h = &job.msg.headers;
        let stored = match outcome {
            Outcome::Success(value) => {
                let ctx = self.apply_context(&job.msg, value.clone());
                // `children`: what was sent from here, as Python records it.
                let mut children = Vec::new();
                for cb in job.msg.embed.callbacks.iter().flatten() {
                    children.extend(self.apply(cb, &ctx, "callback").await);
                }
                match job.msg.embed.dispatch_chain_step(&ctx) {
                    Ok(Some(d)) => {
                        let id = d.result_id.clone();
                        match self.publish(d).await {
                            Ok(()) => children.push(id),
                            Err(e) => {
                                tracing::error!(error = %e, task_id = %h.id, "could not send the next chain step");
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, task_id = %h.id, "bad next chain step")
                    }
                }
                let mut meta = ResultMeta::success(&h.id, value.clone());
                meta.children = children
                    .into_iter()
                    .map(|id| serde_json::json!([[id, null], null]))
                    .collect();
                let stored = self.store(job, meta).await;
                self.chord_join(&job.msg, State::Success, &value).await;
                stored
            }
            Outcome::Failure { exc, traceback } => {
                let meta = ResultMeta::failure(&h.id, &exc, traceback);
                self.fail(job, meta).await
            }
            Outcome::Revoked(reason) => {
                let meta = ResultMeta::revoked(&h.id, reason);
                let result = meta.result.clone();
                let stored = self.store(job, meta.clone()).await;
                // The chain does not go on: its remaining steps (the final one included)
                // are REVOKED too, so a client waiting on the chain wakes up.
                self.mark_chain(&job.msg, &meta).await;
                self.chord_join(&job.msg, State::Revoked, &result).await;
                stored
            }
            Outcome::Retry {
                countdown,
                exc,
                traceback,
            } => {
                let delta = chrono::Duration::from_std(countdown).unwrap_or(chrono::Duration::MAX);
                let eta = self
                    .shared
                    .now()
                    .checked_add_signed(delta)
                    .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
                let next = job.msg.for_retry(eta, h.retries.saturating_add(1));
                let mut route = Route::from_envelope(&job.envelope);
                if route.queue.is_empty() {
                    route = Route::queue(job.delivery.queue.clone());
                    route.priority = job.envelope.properties.priority;
                }
                let mut envelope = next.to_envelope(route.clone());
                envelope
                    .properties
                    .extra
                    .insert("origin".into(), Value::String(self.config.hostname.clone()));
                if let Err(e) = self
                    .broker
                    .publish(&route.queue, route.priority, &envelope.encode())
                    .await
                {
                    // Not republished: the message stays un-acknowledged, for a sweep.
                    tracing::error!(error = %e, task_id = %h.id, "could not republish a retry");
                    self.shared.untrack(&job.delivery.delivery_tag);
                    return;
                }
                self.store(job, ResultMeta::retry(&h.id, Some(&exc), traceback))
                    .await
            }
        };
        if job.acked {
            return;
        }
        if stored {
            self.ack(&job.delivery.delivery_tag).await;
        } else {
            self.shared.untrack(&job.delivery.delivery_tag);
        }
    }

    /// FAILURE: stored for the task and every remaining chain element (§5.7), the chord
    /// joined with it, errbacks sent with `[task_id]`.
    async fn fail(&self, job: &Job, meta: ResultMeta) -> bool {
        let stored = self.store(job, meta.clone()).await;
        self.fail_workflow(&job.msg, &meta).await;
        stored
    }

    /// What follows a FAILURE besides its own record (also for an unknown task): the same
    /// FAILURE for the rest of the chain, the chord join, the errbacks.
    pub async fn fail_workflow(&self, msg: &TaskMessage, meta: &ResultMeta) {
        let h = &msg.headers;
        self.mark_chain(msg, meta).await;
        self.chord_join(msg, State::Failure, &meta.result).await;
        let ctx = self.apply_context(msg, Value::String(h.id.clone()));
        for eb in msg.embed.errbacks.iter().flatten() {
            self.apply(eb, &ctx, "errback").await;
        }
    }

    /// Stores `meta` (FAILURE or REVOKED) under every remaining chain element's id.
    async fn mark_chain(&self, msg: &TaskMessage, meta: &ResultMeta) {
        let h = &msg.headers;
        for step in msg.embed.chain.iter().flatten() {
            if let Some(id) = chain_result_id(step) {
                let mut m = meta.clone();
                m.task_id = id;
                m.group_id = None;
                m.parent_id = Some(h.id.clone());
                m.extended = None;
                if let Err(e) = self.backend.store(&m).await {
                    tracing::warn!(error = %e, task_id = %m.task_id, "could not mark a chain element");
                }
            }
        }
    }

    /// The chord join after a header member's own result (§6.7); the body is sent (or
    /// failed) by the call that completes the chord.
    async fn chord_join(&self, msg: &TaskMessage, state: State, result: &Value) {
        let h = &msg.headers;
        let Some(body) = &msg.embed.chord else {
            return;
        };
        let Some(group_id) = h.group.as_deref() else {
            tracing::error!(task_id = %h.id, "a chord member without `group`: the chord cannot be joined");
            return;
        };
        let part = ChordPart {
            group_id,
            task_id: &h.id,
            group_index: h.group_index.map(u64::from),
            state: &state,
            result,
        };
        match self.backend.chord_part_return(part).await {
            Ok(ChordPartOutcome::Release(release)) => {
                self.release_chord(msg, body, &release).await;
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, group_id, "chord join failed"),
        }
    }

    async fn release_chord(&self, msg: &TaskMessage, body: &Signature, release: &ChordRelease) {
        match &release.outcome {
            Ok(results) => {
                let ctx = self.apply_context(msg, Value::Array(results.clone()));
                self.apply(body, &ctx, "chord body").await;
            }
            Err(failure) => {
                let body_id = body.task_id().unwrap_or_default().to_owned();
                let meta = failure.body_meta(&body_id);
                if let Err(e) = self.backend.store(&meta).await {
                    tracing::error!(error = %e, task_id = %body_id, "could not fail the chord body");
                }
                let chain = Signature::list_from_value(body.options.get("chain"), "body.chain")
                    .unwrap_or_default();
                for step in &chain {
                    if let Some(id) = chain_result_id(step) {
                        let mut m = meta.clone();
                        m.task_id = id;
                        if let Err(e) = self.backend.store(&m).await {
                            tracing::warn!(error = %e, "could not fail a chain element");
                        }
                    }
                }
                let errbacks =
                    Signature::list_from_value(body.options.get("link_error"), "body.link_error")
                        .unwrap_or_default();
                let mut ctx = self.apply_context(msg, Value::String(body_id.clone()));
                ctx.parent = Some(ParentTask {
                    id: body_id,
                    root_id: msg.headers.root_id.clone(),
                });
                for eb in &errbacks {
                    self.apply(eb, &ctx, "chord errback").await;
                }
            }
        }
        if let Err(e) = self.backend.chord_finish(release).await {
            tracing::warn!(error = %e, group_id = %release.group_id, "chord cleanup failed");
        }
    }
}

/// The id a client waits on for a chain element: its own, or a chord's body's.
fn chain_result_id(step: &Signature) -> Option<String> {
    if let Some(id) = step.task_id() {
        return Some(id.to_owned());
    }
    step.chord_parts()
        .ok()
        .and_then(|(_, body)| body.task_id().map(str::to_owned))
}
