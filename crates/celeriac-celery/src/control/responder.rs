//! [`PidboxResponder`]: a worker's node in Celery's `celery.pidbox` mailbox.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Context, Outcome};
use super::error::Result;
use super::handler::ControlHandler;
use super::message::{reply_envelope, ControlMessage, PIDBOX_EXCHANGE};
use super::revoked::Revoked;
use crate::broker::{FanoutSubscription, KombuBroker};
use crate::events::{EventSender, LamportClock};

/// Builds a [`PidboxResponder`] ([`PidboxResponder::builder`]).
pub struct PidboxBuilder {
    hostname: String,
    handler: Arc<dyn ControlHandler>,
    revoked: Revoked,
    events: Option<EventSender>,
    clock: Option<Arc<LamportClock>>,
}

impl std::fmt::Debug for PidboxBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PidboxBuilder")
            .field("hostname", &self.hostname)
            .finish_non_exhaustive()
    }
}

impl PidboxBuilder {
    /// The revoked set `revoke` fills (default: a new [`Revoked::default`]); share it with
    /// the code that runs tasks.
    pub fn revoked(mut self, revoked: Revoked) -> Self {
        self.revoked = revoked;
        self
    }

    /// The event sender that `enable_events`, `disable_events` and `heartbeat` act on
    /// (without one they answer "event dispatcher unavailable"); its clock is shared unless
    /// [`clock`](Self::clock) is given.
    pub fn events(mut self, events: EventSender) -> Self {
        self.events = Some(events);
        self
    }

    /// The Lamport clock replies carry.
    pub fn clock(mut self, clock: Arc<LamportClock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Subscribes to `celery.pidbox` and starts answering; returns once subscribed, so a
    /// command broadcast after this returns is seen.
    ///
    /// # Errors
    /// [`ControlError::Broker`](super::ControlError::Broker) when the subscription fails.
    pub async fn start(self, broker: KombuBroker) -> Result<PidboxResponder> {
        let subscription = subscribe(&broker).await?;
        let clock = self
            .clock
            .or_else(|| self.events.as_ref().map(|e| e.clock().clone()))
            .unwrap_or_default();
        let ctx = Context {
            hostname: self.hostname,
            handler: self.handler,
            revoked: self.revoked.clone(),
            events: self.events,
            clock,
            broker_url: broker.redacted_url().to_owned(),
            broker_db: broker.db(),
        };
        let token = CancellationToken::new();
        let task = tokio::spawn(run(broker, ctx, subscription, token.clone()));
        Ok(PidboxResponder {
            revoked: self.revoked,
            token,
            task: Some(task),
        })
    }
}

/// Answers Celery's remote control for one worker hostname, as a Python worker's pidbox
/// does: it listens on the `celery.pidbox` fanout, skips messages whose `destination` (or
/// `pattern`) does not name it, runs the command against a [`ControlHandler`] and replies
/// `{hostname: reply}` with the message's ticket through `reply.celery.pidbox`, so
/// `celery inspect`, `app.control` and Flower list and steer a Rust worker. Stops on
/// [`stop`](Self::stop) or drop.
#[derive(Debug)]
pub struct PidboxResponder {
    revoked: Revoked,
    token: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl PidboxResponder {
    /// A builder for the worker `hostname` answering from `handler`.
    pub fn builder(hostname: impl Into<String>, handler: Arc<dyn ControlHandler>) -> PidboxBuilder {
        PidboxBuilder {
            hostname: hostname.into(),
            handler,
            revoked: Revoked::default(),
            events: None,
            clock: None,
        }
    }

    /// The revoked set `revoke` commands fill.
    pub fn revoked(&self) -> &Revoked {
        &self.revoked
    }

    /// Stops listening and waits for the command being handled to finish.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(task) = self.task.take() {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "pidbox responder ended abnormally");
            }
        }
    }
}

impl Drop for PidboxResponder {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

async fn subscribe(broker: &KombuBroker) -> Result<FanoutSubscription> {
    Ok(broker.subscribe_fanout(&[(PIDBOX_EXCHANGE, "")]).await?)
}

async fn run(
    broker: KombuBroker,
    ctx: Context,
    mut subscription: FanoutSubscription,
    token: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            () = token.cancelled() => return,
            next = subscription.next() => next,
        };
        match next {
            Some(msg) => handle(&broker, &ctx, &msg.raw).await,
            None => {
                // The connection was lost: subscribe again (commands sent meanwhile are lost,
                // as they are for a Python worker).
                tracing::warn!(hostname = %ctx.hostname, "pidbox subscription lost; resubscribing");
                loop {
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    match subscribe(&broker).await {
                        Ok(s) => {
                            subscription = s;
                            break;
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot resubscribe to the pidbox"),
                    }
                }
            }
        }
    }
}

async fn handle(broker: &KombuBroker, ctx: &Context, raw: &[u8]) {
    let msg = match ControlMessage::decode(raw) {
        Ok(msg) => msg,
        Err(e) => {
            tracing::warn!(error = %e, "cannot decode a control message; ignored");
            return;
        }
    };
    // A Python worker forwards its clock on every pidbox message.
    match msg.clock {
        Some(c) => ctx.clock.adjust(c),
        None => ctx.clock.forward(),
    };
    if !msg.is_for(&ctx.hostname) {
        return;
    }
    tracing::debug!(method = %msg.method, hostname = %ctx.hostname, "control command");
    let reply = match ctx.dispatch(&msg) {
        Outcome::Reply(reply) => reply,
        Outcome::Silent => return,
    };
    let Some(reply_to) = &msg.reply_to else {
        return;
    };
    let raw = reply_envelope(
        &ctx.hostname,
        reply,
        msg.ticket.as_deref(),
        ctx.clock.forward(),
        reply_to,
    );
    match broker
        .publish_to_exchange(&reply_to.exchange, &reply_to.routing_key, &raw)
        .await
    {
        Ok(0) => tracing::debug!(method = %msg.method, "no reply queue bound; the client is gone"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, method = %msg.method, "cannot send a control reply"),
    }
}
