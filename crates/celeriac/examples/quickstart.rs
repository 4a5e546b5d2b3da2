//! The README's example: define a task, enqueue it, run a worker, wait for the result.
//!
//! `cargo run -p celeriac --example quickstart`

use celeriac::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An e-mail to send.
#[derive(Serialize, Deserialize)]
struct Email {
    to: String,
    subject: String,
}

#[celeriac::task(queue = "emails", retries = 5, backoff = "2s", time_limit = "60s")]
async fn send_email(ctx: &TaskContext, email: Email) -> Result<String, TaskError> {
    // `?` on any std error is a retryable failure; TaskError::fatal(..) fails for good,
    // TaskError::retry_after(d, ..) picks the delay.
    Ok(format!(
        "sent '{}' to {} on attempt {}",
        email.subject,
        email.to,
        ctx.attempt()
    ))
}

#[tokio::main]
async fn main() -> celeriac::Result<()> {
    let app = App::builder()
        .url("sqlite::memory:") // or sqlite://celeriac.db, or CELERIAC_URL in the binary
        .task::<send_email::Task>()
        .build()
        .await?;

    // Enqueue: typed arguments, per-job overrides.
    let job = send_email::enqueue(
        &app,
        Email {
            to: "a@example.com".into(),
            subject: "Hi".into(),
        },
    )
    .await?;
    send_email::with(Email {
        to: "b@example.com".into(),
        subject: "Later".into(),
    })
    .delay(Duration::from_secs(60))
    .priority(Priority::HIGHEST)
    .enqueue(&app)
    .await?;

    // Run a worker (usually in another process: `my-app worker`).
    let worker = app.worker();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    let info = job.wait(Duration::from_secs(10)).await?;
    println!("{}: {:?}", info.state, info.result_as::<String>()?);
    stop.graceful();
    let _ = running.await;
    Ok(())
}
