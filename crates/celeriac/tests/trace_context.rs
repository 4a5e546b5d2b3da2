//! Trace context across the queue (feature `otel`): a job enqueued inside a span runs in a span
//! of the same trace, a child of the enqueuing one, through a real worker on a SQLite file and
//! the OpenTelemetry SDK's in-memory exporter; a job enqueued outside any trace starts none.

use celeriac::{App, Task, TaskContext, TaskError};
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use std::time::Duration;
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

struct Ping;

impl Task for Ping {
    const NAME: &'static str = "trace.ping";
    type Args = u32;
    type Output = u32;

    async fn run(_ctx: TaskContext, n: u32) -> Result<u32, TaskError> {
        Ok(n + 1)
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_continues_the_trace_of_the_span_that_enqueued_it() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("celeriac-test")));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("jobs.db").display());
    let app = App::builder()
        .url(url.as_str())
        .task::<Ping>()
        .build()
        .await
        .expect("app");
    let worker = app.worker();
    let stop = worker.shutdown_handle();
    let running = tokio::spawn(worker.run());

    let traced = async { app.client().enqueue::<Ping>(1).await }
        .instrument(tracing::info_span!("request"))
        .await
        .expect("enqueue");
    let headers = traced.info().await.expect("info").job.headers;
    assert!(
        headers.contains_key(celeriac::trace::TRACEPARENT),
        "the job carries the trace context: {headers:?}"
    );
    let untraced = app.client().enqueue::<Ping>(2).await.expect("enqueue");
    for h in [&traced, &untraced] {
        h.wait(Duration::from_secs(10)).await.expect("the job runs");
    }
    stop.graceful();
    running.await.expect("joins").expect("the worker stops");
    let _ = provider.force_flush();

    let spans = exporter.get_finished_spans().expect("spans");
    let request = named(&spans, "request");
    assert_eq!(
        request.len(),
        1,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let jobs = named(&spans, "job");
    assert_eq!(jobs.len(), 2, "a span per job");
    let trace = request[0].span_context.trace_id();
    let in_trace: Vec<_> = jobs
        .iter()
        .filter(|j| j.span_context.trace_id() == trace)
        .collect();
    assert_eq!(
        in_trace.len(),
        1,
        "only the job enqueued in the request's trace joins it"
    );
    assert_eq!(
        in_trace[0].parent_span_id,
        request[0].span_context.span_id(),
        "the job's span is a child of the span that enqueued it"
    );
}
