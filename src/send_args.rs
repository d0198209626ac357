//! Ingest's flags for sending agents' replies: where Meta's Graph API and
//! YCloud's API are (tests and staging point them at fakes), how long one
//! send may take, and how transient failures are retried.

use clap::Args;
use faro_ingest::SendConfig;

#[derive(Args, Clone, Debug)]
pub struct SendArgs {
    /// Meta's Graph API root, without the version.
    #[arg(
        long = "graph-base-url",
        env = "FARO_GRAPH_BASE_URL",
        default_value = "https://graph.facebook.com"
    )]
    pub graph_base_url: String,
    /// The Graph API version in every send's path.
    #[arg(
        long = "graph-api-version",
        env = "FARO_GRAPH_API_VERSION",
        default_value = "v23.0"
    )]
    pub graph_api_version: String,
    /// YCloud's API root.
    #[arg(
        long = "ycloud-base-url",
        env = "FARO_YCLOUD_BASE_URL",
        default_value = "https://api.ycloud.com/v2"
    )]
    pub ycloud_base_url: String,
    /// The whole of one send to a platform (ms).
    #[arg(
        long = "send-timeout-ms",
        env = "FARO_SEND_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub send_timeout_ms: u64,
    /// Sends a reply gets before a transient failure (5xx, timeout, rate
    /// limit) marks it failed.
    #[arg(
        long = "send-attempts",
        env = "FARO_SEND_ATTEMPTS",
        default_value_t = 5
    )]
    pub send_attempts: u32,
    /// Cap (ms) of the first delay between sends, doubled each time (full jitter).
    #[arg(
        long = "send-retry-base-ms",
        env = "FARO_SEND_RETRY_BASE_MS",
        default_value_t = 500
    )]
    pub send_retry_base_ms: u64,
    /// The longest wait between sends (ms).
    #[arg(
        long = "send-retry-max-ms",
        env = "FARO_SEND_RETRY_MAX_MS",
        default_value_t = 30_000
    )]
    pub send_retry_max_ms: u64,
    /// Replies in flight per ingest process.
    #[arg(
        long = "send-concurrency",
        env = "FARO_SEND_CONCURRENCY",
        default_value_t = 256
    )]
    pub send_concurrency: usize,
}

impl SendArgs {
    pub fn config(&self) -> SendConfig {
        SendConfig {
            graph_base_url: self.graph_base_url.clone(),
            graph_api_version: self.graph_api_version.clone(),
            ycloud_base_url: self.ycloud_base_url.clone(),
            timeout_ms: self.send_timeout_ms,
            attempts: self.send_attempts,
            retry_base_ms: self.send_retry_base_ms,
            retry_max_ms: self.send_retry_max_ms,
            concurrency: self.send_concurrency,
        }
    }
}
