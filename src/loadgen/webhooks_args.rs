//! The flags of `faro loadgen webhooks` (what to send, how fast, where to
//! check it), apart from the generator that reads them.

use std::{net::SocketAddr, path::PathBuf};

use clap::Args;

#[derive(Args)]
pub struct WebhooksArgs {
    /// The edge's address (host:port, plain HTTP).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(super) edge: SocketAddr,
    /// The Meta app's secret (WhatsApp, Messenger and Instagram bodies).
    #[arg(
        long = "app-secret",
        env = "FARO_LOADGEN_APP_SECRET",
        hide_env_values = true
    )]
    pub(super) app_secret: String,
    /// The YCloud endpoint's secret (YCloud bodies).
    #[arg(
        long = "ycloud-secret",
        env = "FARO_LOADGEN_YCLOUD_SECRET",
        hide_env_values = true
    )]
    pub(super) ycloud_secret: Option<String>,
    /// WhatsApp phone number ids to send to (comma separated or repeated).
    #[arg(long, value_delimiter = ',')]
    pub(super) whatsapp: Vec<String>,
    /// Messenger page ids.
    #[arg(long, value_delimiter = ',')]
    pub(super) messenger: Vec<String>,
    /// Instagram account ids.
    #[arg(long, value_delimiter = ',')]
    pub(super) instagram: Vec<String>,
    /// YCloud business numbers (as YCloud writes them, e.g. +15550783881).
    #[arg(long, value_delimiter = ',')]
    pub(super) ycloud: Vec<String>,
    /// Distinct customers per account (each is its own conversation).
    #[arg(long, default_value_t = 100)]
    pub(super) customers: usize,
    /// WhatsApp messages per webhook (Meta batches entries in one POST).
    #[arg(long, default_value_t = 1)]
    pub(super) batch: usize,
    /// Every Nth WhatsApp webhook is a delivery status instead (0: none).
    #[arg(long = "status-every", default_value_t = 0)]
    pub(super) status_every: usize,
    /// Every Nth message is media instead of text, images and documents in
    /// turn: WhatsApp and YCloud image/document with a media id,
    /// Messenger/Instagram image/file attachments (0: text only).
    #[arg(long = "media-every", default_value_t = 0)]
    pub(super) media_every: usize,
    /// Open loop: webhooks per second, on schedule whatever the answers take.
    #[arg(long)]
    pub(super) rate: Option<f64>,
    /// Closed loop (without --rate): workers, each posting back to back.
    #[arg(long, default_value_t = 16)]
    pub(super) concurrency: usize,
    /// Open loop: connections to the edge at most. A webhook due while all
    /// are busy waits for one, still timed from when it was due.
    #[arg(long = "max-connections", default_value_t = 512)]
    pub(super) max_connections: usize,
    /// Stop after this many webhooks.
    #[arg(long)]
    pub(super) count: Option<usize>,
    /// Stop after this long.
    #[arg(long = "duration-secs")]
    pub(super) duration_secs: Option<f64>,
    /// WebSocket URL of an edge's live stream, for the end-to-end times.
    #[arg(long = "ws-url")]
    pub(super) ws_url: Option<String>,
    /// Agent JWTs, one per tenant sent to: one subscriber each.
    #[arg(
        long = "token",
        env = "FARO_TOKEN",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub(super) tokens: Vec<String>,
    /// Postgres, as a role that sees every tenant: checks lost = 0 and
    /// duplicated = 0 after the run.
    #[arg(
        long = "database-url",
        env = "FARO_LOADGEN_DATABASE_URL",
        hide_env_values = true
    )]
    pub(super) database_url: Option<String>,
    /// After the load, wait this long at most for frames and stored rows.
    #[arg(long = "drain-secs", default_value_t = 30)]
    pub(super) drain_secs: u64,
    /// Ids and texts carry `<marker>-<n>`: make it unique per run.
    #[arg(long, default_value = "lg")]
    pub(super) marker: String,
    /// Where the results go (JSON); standard output without it.
    #[arg(long)]
    pub(super) out: Option<PathBuf>,
    #[command(flatten)]
    pub(super) provision: super::provision::ProvisionArgs,
}
