//! The edge's bounds on what one client may make it hold, as flags and
//! `FARO_` variables (`faro_edge::ClientLimits`; validated when the edge starts).

use clap::Args;

#[derive(Args, Clone)]
pub struct ClientLimitArgs {
    /// WebSockets one tenant may hold open on one edge (429 beyond).
    #[arg(
        long = "ws-max-per-tenant",
        env = "FARO_WS_MAX_PER_TENANT",
        default_value_t = 1_000
    )]
    pub ws_per_tenant: usize,
    /// WebSockets one agent (JWT `sub`) may hold open on one edge (429 beyond).
    #[arg(
        long = "ws-max-per-agent",
        env = "FARO_WS_MAX_PER_AGENT",
        default_value_t = 16
    )]
    pub ws_per_agent: usize,
    /// Long-polls and event streams one agent may have in progress on one edge.
    #[arg(
        long = "rest-max-per-agent",
        env = "FARO_REST_MAX_PER_AGENT",
        default_value_t = 8
    )]
    pub rest_per_agent: usize,
    /// Largest WebSocket frame a client may send, in bytes (closed with 1009 beyond).
    #[arg(
        long = "ws-max-frame-bytes",
        env = "FARO_WS_MAX_FRAME_BYTES",
        default_value_t = 64 * 1024
    )]
    pub ws_max_frame_bytes: usize,
    /// Headers one request may carry (431 beyond).
    #[arg(long = "max-headers", env = "FARO_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,
    /// Bytes of header names and values one request may carry (431 beyond).
    #[arg(
        long = "max-header-bytes",
        env = "FARO_MAX_HEADER_BYTES",
        default_value_t = 32 * 1024
    )]
    pub max_header_bytes: usize,
    /// How deep a webhook body may nest (400 beyond; at most 128).
    #[arg(
        long = "json-max-depth",
        env = "FARO_JSON_MAX_DEPTH",
        default_value_t = 64
    )]
    pub json_max_depth: usize,
    /// Array elements and object members one webhook body may hold (400 beyond).
    #[arg(
        long = "json-max-elements",
        env = "FARO_JSON_MAX_ELEMENTS",
        default_value_t = 100_000
    )]
    pub json_max_elements: usize,
    /// Distinct accounts one webhook body may name (400 beyond).
    #[arg(
        long = "webhook-max-accounts",
        env = "FARO_WEBHOOK_MAX_ACCOUNTS",
        default_value_t = 1_000
    )]
    pub webhook_max_accounts: usize,
    /// Elements of one webhook body's `entry` array (400 beyond).
    #[arg(
        long = "webhook-max-entries",
        env = "FARO_WEBHOOK_MAX_ENTRIES",
        default_value_t = 1_000
    )]
    pub webhook_max_entries: usize,
}

impl ClientLimitArgs {
    pub fn edge(&self) -> faro_edge::ClientLimits {
        faro_edge::ClientLimits {
            ws_per_tenant: self.ws_per_tenant,
            ws_per_agent: self.ws_per_agent,
            rest_per_agent: self.rest_per_agent,
            ws_max_frame_bytes: self.ws_max_frame_bytes,
            max_headers: self.max_headers,
            max_header_bytes: self.max_header_bytes,
            json_max_depth: self.json_max_depth,
            json_max_elements: self.json_max_elements,
            webhook_max_accounts: self.webhook_max_accounts,
            webhook_max_entries: self.webhook_max_entries,
        }
    }
}
