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

mod serve;
mod time;

pub use serve::{GrpcServer, reflection_service};
pub use time::{from_timestamp, to_timestamp};

/// The encoded `FileDescriptorSet` of every FARO package, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("faro_descriptor");
