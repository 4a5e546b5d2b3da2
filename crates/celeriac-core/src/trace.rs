//! Trace context across the queue: the W3C `traceparent` (and `tracestate`) of the span that
//! enqueues a job travel in the job's headers, and the worker's span for the job continues that
//! trace, so a request and the jobs it caused (and their workflow steps) form one trace in any
//! OpenTelemetry backend.
//!
//! With the `otel` feature, the context comes from the current `tracing` span through
//! `tracing-opentelemetry`: install its layer in the subscriber, with the exporter of your
//! choice (see the README). Without the feature, or without the layer, headers a caller sets
//! by hand still travel, and nothing else happens.

use std::collections::BTreeMap;

/// The header of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The header of vendor-specific trace state, travelling with [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

/// Puts the current span's trace context into `headers`, unless they carry one already (a
/// job enqueued on behalf of another keeps that one's).
pub fn inject_current(headers: &mut BTreeMap<String, String>) {
    #[cfg(feature = "otel")]
    otel::inject_current(headers);
    #[cfg(not(feature = "otel"))]
    let _ = headers;
}

/// Makes `span` (a job's) continue the trace whose context `headers` carry, if they do.
pub fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
    #[cfg(feature = "otel")]
    otel::continue_trace(span, headers);
    #[cfg(not(feature = "otel"))]
    let _ = (span, headers);
}

#[cfg(feature = "otel")]
mod otel {
    use super::TRACEPARENT;
    use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use std::collections::BTreeMap;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    struct Headers<'a>(&'a mut BTreeMap<String, String>);

    impl Injector for Headers<'_> {
        fn set(&mut self, key: &str, value: String) {
            self.0.insert(key.to_string(), value);
        }
    }

    struct ReadHeaders<'a>(&'a BTreeMap<String, String>);

    impl Extractor for ReadHeaders<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).map(String::as_str)
        }

        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(String::as_str).collect()
        }
    }

    pub(super) fn inject_current(headers: &mut BTreeMap<String, String>) {
        if headers.contains_key(TRACEPARENT) {
            return;
        }
        let cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            return;
        }
        TraceContextPropagator::new().inject_context(&cx, &mut Headers(headers));
    }

    pub(super) fn continue_trace(span: &tracing::Span, headers: &BTreeMap<String, String>) {
        if !headers.contains_key(TRACEPARENT) {
            return;
        }
        let cx = TraceContextPropagator::new().extract(&ReadHeaders(headers));
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}
