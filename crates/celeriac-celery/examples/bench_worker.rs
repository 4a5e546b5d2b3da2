//! The Rust side of `bench/celery-interop`: a [`CeleryWorker`] serving the no-op task
//! `bench.noop` that a Python Celery client sends.
//!
//! ```sh
//! cargo run --release -p celeriac-celery --example bench_worker -- \
//!     --broker redis://127.0.0.1:6390/0 --backend redis://127.0.0.1:6390/1 \
//!     --queue bench_interop -c 100
//! ```
//!
//! It prints `READY` on stdout once connected, runs until SIGTERM or SIGINT, then shuts down
//! gracefully. The benchmark's clock is read from Redis by the driver, not here.

use celeriac_celery::worker::{CeleryTask, CeleryTaskOptions, CeleryWorker};
use celeriac_core::task::{TaskContext, TaskError};
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    broker: String,
    backend: String,
    queue: String,
    concurrency: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        broker: String::new(),
        backend: String::new(),
        queue: "celery".to_owned(),
        concurrency: 100,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--broker" => args.broker = value()?,
            "--backend" => args.backend = value()?,
            "--queue" => args.queue = value()?,
            "-c" | "--concurrency" => {
                let v = value()?;
                args.concurrency = v.parse().map_err(|e| format!("--concurrency {v:?}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.broker.is_empty() || args.backend.is_empty() {
        return Err("--broker URL and --backend URL are required".to_owned());
    }
    Ok(args)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench_worker: {e}");
            std::process::exit(2);
        }
    };
    // The message's `ignore_result` header decides whether a result is stored.
    let noop = CeleryTask::from_fn(
        "bench.noop",
        CeleryTaskOptions::default(),
        |_ctx: TaskContext, _args: Vec<Value>| async move { Ok::<_, TaskError>(Value::Null) },
    );
    let worker = CeleryWorker::builder(args.broker, args.backend)
        .queues([args.queue])
        .concurrency(args.concurrency)
        .hostname("bench@celeriac")
        // As the Python worker of the benchmark: no events (no `-E`, `--without-heartbeat`);
        // remote control stays on, as Python's pidbox does.
        .events(false)
        .task_events(false)
        .task(noop)
        .build()
        .await
        .unwrap_or_else(|e| {
            eprintln!("bench_worker: cannot start: {e}");
            std::process::exit(1);
        });
    let handle = worker.handle();
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        handle.shutdown();
    });
    println!("READY");
    if let Err(e) = worker.run().await {
        eprintln!("bench_worker: {e}");
        std::process::exit(1);
    }
}
