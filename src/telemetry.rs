//! One tracing setup for every mode of the binary: logs (pretty or JSON,
//! filtered by `--log`) and, when `--otlp-endpoint` is given, spans exported
//! by OTLP/gRPC. The tracer provider is this process's own, handed to its
//! layer: nothing is registered process-wide in OpenTelemetry, so library
//! code (and tests running many services in one process) never meets a
//! global provider.

use std::io::IsTerminal as _;

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Args)]
pub struct LogArgs {
    /// Log filter, as RUST_LOG (e.g. `info,faro_ingest=debug`).
    #[arg(
        long = "log",
        env = "RUST_LOG",
        default_value = "info,sqlx=warn,fred=warn,h2=warn",
        global = true
    )]
    pub filter: String,
    #[arg(
        long = "log-format",
        env = "FARO_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub format: LogFormat,
    /// Export traces by OTLP/gRPC to this collector (e.g.
    /// `http://otel-collector:4317`); unset, no span is exported and no
    /// trace context is carried.
    #[arg(
        long = "otlp-endpoint",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT",
        global = true
    )]
    pub otlp_endpoint: Option<String>,
    /// The share of new traces (webhooks) exported, 0.0 to 1.0; a trace a
    /// caller already sampled is always continued.
    #[arg(
        long = "otlp-sample-ratio",
        env = "FARO_OTLP_SAMPLE_RATIO",
        default_value_t = 1.0,
        global = true
    )]
    pub sample_ratio: f64,
}

/// Flushes the spans still buffered on drop.
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // The exporter's calls run on this runtime: let its other
            // threads serve them while this one waits.
            tokio::task::block_in_place(|| {
                if let Err(e) = provider.shutdown() {
                    eprintln!("flushing traces failed: {e}");
                }
            });
        }
    }
}

/// `service` names this process in the traces (`faro-edge`, `faro-all`, …).
/// Must be called inside the runtime (the exporter's channel lives on it).
pub fn init(args: &LogArgs, service: &str) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_new(&args.filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {:?}: {e}", args.filter))?;
    let (traces, provider) = match &args.otlp_endpoint {
        Some(endpoint) if !endpoint.is_empty() => {
            let provider = provider(endpoint, service, args.sample_ratio)?;
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("faro"));
            (Some(layer), Some(provider))
        }
        _ => (None, None),
    };
    // One filter for logs and spans alike: FARO's spans are at info, so the
    // default filter exports them. (A per-layer filter for the exporter
    // looked neater, but mixed with the log's per-layer EnvFilter it lost
    // events and span parents: tracing-subscriber 0.3.)
    let registry = tracing_subscriber::registry().with(filter).with(traces);
    match args.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
        // Colours only for a terminal: a log file or a collector gets plain
        // text, not escape codes around every field.
        LogFormat::Pretty => registry
            .with(
                fmt::layer()
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
    Ok(Guard(provider))
}

fn provider(endpoint: &str, service: &str, ratio: f64) -> anyhow::Result<SdkTracerProvider> {
    if !(0.0..=1.0).contains(&ratio) {
        anyhow::bail!("--otlp-sample-ratio must be within 0.0 and 1.0, not {ratio}");
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("OTLP exporter for {endpoint:?}: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}
