//! `faro`: the thin shell around FARO's four service libraries.
//!
//! `faro all` runs every service in one process, each on its own port and
//! talking to the others over gRPC exactly as when they run apart;
//! `faro edge|ingest|conversations|stream` runs one; `faro run --service ..`
//! runs any set. `faro dev` is the one-command demo. `faro loadgen` holds the
//! benchmarks' load generators. The remaining subcommands are operator tools
//! that print JSON.

mod admin;
mod admin_accounts;
mod admin_directory;
mod agent_cli;
mod dev;
mod dlq;
mod limits;
mod loadgen;
mod mtls;
mod rate_args;
mod send_args;
mod serve;
mod telemetry;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "faro", version, about = "Meta webhooks in, live inbox out")]
struct Cli {
    #[command(flatten)]
    log: telemetry::LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run all four services in this process.
    All(serve::ServeArgs),
    /// Run any set of services in this process.
    Run {
        /// A service to run; repeat for several.
        #[arg(long = "service", value_enum, required = true)]
        services: Vec<serve::Service>,
        #[command(flatten)]
        args: serve::ServeArgs,
    },
    /// Run the edge (webhooks and WebSockets).
    Edge(serve::ServeArgs),
    /// Run the ingest service and its workers.
    Ingest(serve::ServeArgs),
    /// Run the conversations service (Postgres).
    Conversations(serve::ServeArgs),
    /// Run the stream service (live events).
    Stream(serve::ServeArgs),
    /// Apply the database migrations as the database owner.
    Migrate {
        #[arg(long = "database-url", env = "DATABASE_URL")]
        database_url: String,
    },
    /// Migrate, create demo data if absent, run everything, print how to try it.
    Dev(dev::DevArgs),
    /// Operator actions against a running conversations service; print JSON.
    #[command(subcommand)]
    Admin(admin::AdminCommand),
    /// The dead-letter queue and queue figures of a running ingest service.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Issue an agent JWT for a tenant; prints JSON.
    Token(agent_cli::TokenArgs),
    /// Print the live events of a tenant from the edge's WebSocket.
    Watch(agent_cli::WatchArgs),
    /// Write a development CA and certificates for every service and an operator.
    Certs(mtls::CertsArgs),
    /// Check a gRPC server's grpc.health.v1 status (a probe that can hold a client certificate).
    Health(mtls::HealthArgs),
    /// Load generators for benchmarks (many WebSockets, marked events); print JSON.
    #[command(subcommand)]
    Loadgen(loadgen::LoadgenCommand),
}

impl Command {
    /// This process's name in exported traces.
    fn service_name(&self) -> &'static str {
        match self {
            Command::All(_) | Command::Dev(_) => "faro",
            Command::Run { .. } => "faro-run",
            Command::Edge(_) => "faro-edge",
            Command::Ingest(_) => "faro-ingest",
            Command::Conversations(_) => "faro-conversations",
            Command::Stream(_) => "faro-stream",
            _ => "faro-cli",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _guard = telemetry::init(&cli.log, cli.command.service_name())?;
    use serve::Service::*;
    match cli.command {
        Command::All(args) => serve::run(&[Edge, Ingest, Conversations, Stream], args).await,
        Command::Run { services, args } => serve::run(&services, args).await,
        Command::Edge(args) => serve::run(&[Edge], args).await,
        Command::Ingest(args) => serve::run(&[Ingest], args).await,
        Command::Conversations(args) => serve::run(&[Conversations], args).await,
        Command::Stream(args) => serve::run(&[Stream], args).await,
        Command::Migrate { database_url } => {
            faro_conversations::migrate(&database_url).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Dev(args) => dev::run(args).await,
        Command::Admin(cmd) => admin::run(cmd).await,
        Command::Dlq(cmd) => dlq::run(cmd).await,
        Command::Token(args) => agent_cli::token(args),
        Command::Watch(args) => agent_cli::watch(args).await,
        Command::Certs(args) => mtls::certs(&args),
        Command::Health(args) => mtls::health(&args).await,
        Command::Loadgen(cmd) => loadgen::run(cmd).await,
    }
}
