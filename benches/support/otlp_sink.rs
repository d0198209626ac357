//! For `FARO_BENCH_OTLP=1`: an OTLP collector on loopback that counts the
//! spans it is sent, and the bench process's tracing subscriber exporting to
//! it (the four in-process services share it, as in `faro all`). Measures
//! what exporting traces costs; the bench's own process, so a global
//! subscriber is its binary's choice, as in `faro`'s main.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::prelude::*;

#[derive(Clone, Default)]
pub struct Sink(pub Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts the sink and installs the exporting subscriber; keep the provider
/// until the end (shut it down to flush).
pub async fn install() -> (Sink, SdkTracerProvider) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sink = Sink::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{addr}"))
        .build()
        .expect("exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .build();
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "info,sqlx=warn,fred=warn,h2=warn",
        ))
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
        .init();
    (sink, provider)
}
