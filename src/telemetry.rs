//! One tracing setup for every mode of the binary.

use clap::{Args, ValueEnum};
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
}

/// Flushes on drop (a place for the trace exporter to come).
pub struct Guard;

pub fn init(args: &LogArgs) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_new(&args.filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {:?}: {e}", args.filter))?;
    let registry = tracing_subscriber::registry().with(filter);
    match args.format {
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .init(),
    }
    Ok(Guard)
}
