//! FARO's gRPC contracts, generated once for the whole workspace, plus the small
//! amount of plumbing every gRPC service shares: health, reflection and a
//! graceful serve loop.
//!
//! Packages are versioned (`faro.<service>.v1`); add a field or an RPC in the
//! `.proto` and every crate sees it on the next build.

pub mod conversations {
    pub mod v1 {
        tonic::include_proto!("faro.conversations.v1");
    }
}

pub mod ingest {
    pub mod v1 {
        tonic::include_proto!("faro.ingest.v1");
    }
}

pub mod stream {
    pub mod v1 {
        tonic::include_proto!("faro.stream.v1");
    }
}

pub mod account;
pub mod client;
pub mod dead_letters;
pub mod diag;
mod drain;
pub mod metrics;
pub mod mtls;
mod names;
mod serve;
mod time;
pub mod trace;

pub use account::{AccountId, account_id};
pub use names::{
    channel_from_name, channel_name, conversation_event_kind_from_name,
    conversation_event_kind_name, direction_name, sender_type_name,
};
pub use serve::{DRAIN_DEADLINE, GrpcServer, reflection_service};
pub use time::{from_timestamp, to_timestamp};

/// The gRPC metadata key naming the platform rule a FAILED_PRECONDITION
/// reports (`window_closed`, `text_too_long`, …): the edge answers 422 with it.
pub const RULE_METADATA: &str = "faro-rule";

/// The largest webhook body FARO accepts; the edge's limit may only be lower.
pub const MAX_WEBHOOK_BYTES: usize = 3 * 1024 * 1024;

/// The largest gRPC message a FARO service accepts. tonic's default (4 MiB)
/// is below a maximal webhook plus its envelope, and a batch of events can be
/// larger still; senders keep their messages under half of this.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// How long a service that needs Redis waits for it before serving anyway
/// (NOT_SERVING, UNAVAILABLE) while it keeps retrying in the background.
pub const STARTUP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The encoded `FileDescriptorSet` of every FARO package, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faro_descriptor");

/// Redis names shared by more than one service: the pub/sub contract between
/// ingest (publisher) and stream (subscriber).
pub mod redis_keys {
    /// The channel a tenant's live events are published on.
    pub fn events_channel(prefix: &str, tenant_id: &str) -> String {
        format!("{prefix}events:{tenant_id}")
    }

    /// The one pattern a stream process subscribes to.
    pub fn events_pattern(prefix: &str) -> String {
        format!("{prefix}events:*")
    }

    /// The tenant id of a channel named by [`events_channel`].
    pub fn tenant_of_channel<'a>(prefix: &str, channel: &'a str) -> Option<&'a str> {
        channel.strip_prefix(prefix)?.strip_prefix("events:")
    }

    /// A tenant's bounded event history: a stream whose entry ids are
    /// `<offset>-0`, each with the publish time (`t`, ms) and the encoded event
    /// (`e`). The hash tag keeps it in one Redis Cluster slot with
    /// [`events_meta`], so that one script may touch both.
    pub fn events_history(prefix: &str, tenant_id: &str) -> String {
        format!("{prefix}{{t:{tenant_id}}}:history")
    }

    /// A tenant's position counter: a hash with the `epoch` (a random id,
    /// renewed whenever the hash is lost with its history) and the last
    /// `offset` assigned.
    pub fn events_meta(prefix: &str, tenant_id: &str) -> String {
        format!("{prefix}{{t:{tenant_id}}}:meta")
    }
}
