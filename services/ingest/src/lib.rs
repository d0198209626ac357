//! The ingest service: durable queueing of verified webhooks and the workers
//! that turn them into stored, published events.
//!
//! `Submit` appends the raw payload to a Redis stream and returns only once
//! Redis has it; the edge answers Meta 200 after that. Workers in a consumer
//! group read batches, parse every event, store them through the conversations
//! service, publish what changed to Redis pub/sub, and only then XACK. A worker
//! that dies leaves its entries pending; another worker reclaims them after
//! `claim_idle` and stores them again, which the unique key makes a no-op.

mod config;
mod error;
mod grpc;
pub mod parse;
mod publish;
mod queue;
mod worker;

use std::sync::Arc;

use faro_proto::{GrpcServer, ingest::v1::ingest_service_server::IngestServiceServer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::Config;
pub use error::Error;
pub use queue::Keys;

/// The conversations client the workers store through.
pub type ConversationsClient =
    faro_proto::conversations::v1::conversations_service_client::ConversationsServiceClient<
        tonic::transport::Channel,
    >;

/// Serves `Submit` and runs `config.workers` workers until `shutdown` fires.
/// Stops accepting first, then lets workers finish the batch in hand.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let keys = Keys::new(&config.key_prefix);
    let producer = queue::connect(&config.redis_url).await?;
    queue::ensure_group(&producer, &keys).await?;
    let conversations = ConversationsClient::new(
        tonic::transport::Endpoint::from_shared(config.conversations_url.clone())
            .map_err(|e| Error::Config(format!("conversations url: {e}")))?
            .connect_lazy(),
    )
    .max_decoding_message_size(faro_proto::MAX_GRPC_MESSAGE_BYTES);

    let workers = TaskTracker::new();
    let worker_stop = CancellationToken::new();
    for n in 0..config.workers {
        let consumer = queue::connect(&config.redis_url).await?;
        let w = worker::Worker {
            redis: consumer,
            publisher: producer.clone(),
            conversations: conversations.clone(),
            keys: keys.clone(),
            consumer: format!("{}-{n}", config.consumer_name()),
            batch: config.batch_size,
            claim_idle: config.claim_idle(),
        };
        workers.spawn(w.run(worker_stop.clone()));
    }
    workers.close();

    let service = grpc::Ingest {
        redis: producer.clone(),
        keys: Arc::new(keys),
    };
    tracing::info!(addr = ?listener.local_addr().ok(), workers = config.workers, "ingest service listening");
    let served = GrpcServer::new()
        .add_service(
            IngestServiceServer::new(service)
                .max_decoding_message_size(faro_proto::MAX_GRPC_MESSAGE_BYTES),
        )
        .serve(listener, shutdown)
        .await;
    // Stage two: the gRPC server has drained; now stop the workers.
    worker_stop.cancel();
    workers.wait().await;
    queue::quit(&producer).await;
    served.map_err(|e| Error::Serve(e.to_string()))
}
