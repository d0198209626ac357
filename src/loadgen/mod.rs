//! `faro loadgen`: load generators for the benchmarks in docs/BENCHMARKS.md.
//!
//! Each generator is a subcommand whose results are JSON, so a script can
//! start several processes (one process's open-files limit or CPU is often
//! the bottleneck before FARO's) and merge what they report:
//!
//! - `sockets`: many idle agent WebSockets that wait for marked events and
//!   record when each socket got each one;
//! - `publish`: marked events, relayed straight to the stream service (only
//!   the fan-out is timed) or as signed webhooks (the whole pipeline);
//! - `report`: the merge: per event, latency percentiles over every socket.
//!
//! - `webhooks`: signed webhooks of every platform at a fixed rate or from
//!   N workers, timed to the ack and to the agent's frame, then checked
//!   against Postgres (lost = 0, duplicated = 0);
//! - `bare-server`: hyper and an HMAC check, nothing else: the ceiling
//!   `scripts/bench-limits` sets FARO's edge against.

mod bare;
mod http;
mod payloads;
mod provision;
mod publish;
mod report;
mod sockets;
mod webhooks;
mod webhooks_args;
mod webhooks_report;

use std::{
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use clap::Subcommand;

#[derive(Subcommand)]
pub enum LoadgenCommand {
    /// Open many idle WebSockets, wait for marked events, write when each socket got each (JSON).
    Sockets(sockets::SocketsArgs),
    /// Publish marked events (a relayed typing indicator or a signed webhook); write when (JSON).
    Publish(publish::PublishArgs),
    /// Merge `sockets` and `publish` results: latency percentiles per event over every socket (JSON).
    Report(report::ReportArgs),
    /// Signed webhooks (WhatsApp, Messenger, Instagram, YCloud) open or closed loop; ack and
    /// end-to-end latency, throughput, errors; lost/duplicated checked in Postgres (JSON).
    Webhooks(Box<webhooks::WebhooksArgs>),
    /// A bare hyper server that checks each POST's HMAC and answers 200: the
    /// ceiling `scripts/bench-limits` compares FARO's edge with.
    BareServer(bare::BareServerArgs),
}

pub async fn run(cmd: LoadgenCommand) -> anyhow::Result<()> {
    match cmd {
        LoadgenCommand::Sockets(args) => sockets::run(args).await,
        LoadgenCommand::Publish(args) => publish::run(args).await,
        LoadgenCommand::Report(args) => report::run(&args),
        LoadgenCommand::Webhooks(args) => webhooks::run(*args).await,
        LoadgenCommand::BareServer(args) => bare::run(args).await,
    }
}

/// Wall-clock microseconds: results of different processes on one host
/// compare through this clock.
fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The text every marked event carries: `<marker>-<n>`.
fn marked_text(marker: &str, n: usize) -> String {
    format!("{marker}-{n}")
}

/// A marker goes into JSON strings verbatim: letters, digits, `_` and `.` only.
fn check_marker(marker: &str) -> anyhow::Result<()> {
    if marker.is_empty()
        || marker.len() > 64
        || !marker
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        anyhow::bail!("--marker must be 1..=64 letters, digits, '_' or '.'");
    }
    Ok(())
}

/// Writes `value` to `out`, or prints it when there is no file.
fn write_json(out: Option<&Path>, value: &serde_json::Value) -> anyhow::Result<()> {
    match out {
        Some(path) => std::fs::write(path, format!("{value}\n"))
            .with_context(|| format!("writing {}", path.display())),
        None => {
            println!("{value}");
            Ok(())
        }
    }
}

fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}
