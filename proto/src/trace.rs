//! W3C trace context across FARO's hops, so that one webhook makes one trace
//! from the edge to the agent's WebSocket.
//!
//! Spans are ordinary `tracing` spans; whether they are exported is decided
//! once, in the binary, by installing (or not) a `tracing-opentelemetry`
//! layer. Everything here reads the context of a span through that layer: with
//! no layer installed every span's context is invalid, so nothing is injected,
//! nothing is parsed and the hop costs a lookup. No propagator is registered
//! process-wide: the one W3C propagator is used directly.
//!
//! The hops: gRPC metadata (client [`Propagate`], server [`server_span`]), the
//! Redis job (`SubmitRequest.traceparent`) and the published stream `Event`
//! (`Event.traceparent`), each a `traceparent` string continued by
//! [`continue_from`].

use std::collections::HashMap;

use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The context of `span` when it is exported; `None` otherwise (no exporter,
/// or a span the filter disabled), which keeps the untraced path free.
fn exported(span: &Span) -> Option<Context> {
    if span.is_disabled() {
        return None;
    }
    let cx = span.context();
    cx.span().span_context().is_valid().then_some(cx)
}

/// The `traceparent` of the current span, to carry in a job or an event.
pub fn traceparent() -> Option<String> {
    traceparent_of(&Span::current())
}

/// The `traceparent` of `span`, when it is exported.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = exported(span)?;
    let mut carrier = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// Makes `span` a child of the carried `traceparent` (empty or malformed:
/// `span` stays where it is). Call before the span is first entered.
pub fn continue_from(span: &Span, traceparent: &str) {
    if let Some(cx) = parse(span, traceparent) {
        let _ = span.set_parent(cx);
    }
}

/// Links `span` to the carried `traceparent`: for a span that serves more
/// than one trace (a worker's batch of jobs) and can have only one parent.
pub fn link(span: &Span, traceparent: &str) {
    if let Some(cx) = parse(span, traceparent) {
        span.add_link(cx.span().span_context().clone());
    }
}

fn parse(span: &Span, traceparent: &str) -> Option<Context> {
    if traceparent.is_empty() || span.is_disabled() {
        return None;
    }
    let carrier = One(traceparent);
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// A carrier holding just a `traceparent`.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Makes `span` a child of the trace context in `headers` (an HTTP request's,
/// or a gRPC call's metadata), when there is one.
pub fn continue_from_headers(span: &Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The span every gRPC call a FARO server answers runs in (tonic's
/// `Server::trace_fn`), continuing the caller's trace from the metadata that
/// [`Propagate`] wrote. Named after the RPC's path.
pub fn server_span(request: &http::Request<()>) -> Span {
    let span = tracing::info_span!(
        target: "faro::trace",
        "grpc.server",
        otel.name = request.uri().path(),
        otel.kind = "server",
    );
    continue_from_headers(&span, request.headers());
    span
}

struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// The client side of the gRPC hop: writes the calling span's context into
/// each request's metadata (`traceparent`, `tracestate`). Installed by
/// [`crate::client`] on every FARO client, so each service gets it once.
#[derive(Clone, Copy, Debug, Default)]
pub struct Propagate;

impl tonic::service::Interceptor for Propagate {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(cx) = exported(&Span::current()) {
            TraceContextPropagator::new()
                .inject_context(&cx, &mut Metadata(request.metadata_mut()));
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_nothing_is_carried() {
        let span = tracing::info_span!("x");
        let _in = span.enter();
        assert_eq!(traceparent(), None);
        let mut request = tonic::Request::new(());
        request = tonic::service::Interceptor::call(&mut Propagate, request).expect("ok");
        assert!(request.metadata().get("traceparent").is_none());
    }
}
