//! The ingest service: durable queueing of verified webhooks and the workers
//! that turn them into stored, published events.
//!
//! `Submit` appends the raw payload to a Redis stream and returns only once
//! Redis has it; the edge answers Meta 200 after that. Workers in a consumer
//! group read batches, parse every event, store them through the conversations
//! service, publish what changed to Redis pub/sub, and only then XACK. A worker
//! that dies leaves its entries pending; another worker reclaims them after
//! `claim_idle` and stores them again, which the unique key makes a no-op.
//! A job whose store fails transiently is retried later from a sorted set,
//! with backoff, up to its attempts; then, or at once if retrying cannot
//! help, it is dead-lettered whole with its error history.

mod batch;
mod config;
mod dlq;
mod error;
mod grpc;
mod metrics;
pub mod parse;
mod publish;
mod queue;
mod redis_check;
mod replies;
mod retry;
mod stats;
mod worker;

use std::sync::Arc;

use faro_proto::{
    GrpcServer,
    ingest::v1::{
        ingest_service_server::IngestServiceServer, send_service_server::SendServiceServer,
    },
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use config::Config;
pub use error::Error;
pub use queue::Keys;
pub use replies::SendConfig;

/// The conversations client the workers store through.
pub type ConversationsClient =
    faro_proto::conversations::v1::conversations_service_client::ConversationsServiceClient<
        faro_proto::client::Traced,
    >;

/// Serves `Submit` and runs `config.workers` workers until `shutdown` fires.
/// Stops accepting first, then lets workers finish the batch in hand.
///
/// Listens at once, even while Redis is unreachable: until it is reached
/// (retried with backoff), health says NOT_SERVING and `Submit` answers
/// UNAVAILABLE, which the edge turns into a 503 so that Meta retries.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_metrics(config, listener, None, shutdown).await
}

/// [`run`], and `GET /metrics` (Prometheus text) on `metrics`, an operator
/// listener: the queue's figures are read from Redis on each scrape. Without
/// it nothing is recorded (Prometheus figures and diagnostics alike).
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    let keys = Keys::new(&config.key_prefix);
    let producer = queue::client(&config.redis_url)?;
    let mut registry = faro_proto::metrics::Registry::default();
    let diag = match metrics {
        Some(_) => faro_proto::diag::Diag::start(&config.redis_url, &config.key_prefix)
            .map_err(Error::Config)?,
        None => faro_proto::diag::Diag::off(),
    };
    let recorded = metrics::Metrics::new(&mut registry, metrics.is_some(), diag);
    if let Some(l) = metrics {
        let refresh = recorded.refresh(producer.clone(), Arc::new(keys.clone()));
        tokio::spawn(faro_proto::metrics::serve(
            Arc::new(registry),
            Some(refresh),
            l,
            shutdown.clone(),
        ));
    }
    let conversations = faro_proto::client::conversations(
        faro_proto::client::channel(
            "conversations",
            &config.conversations_url,
            config.store_deadline(),
            config.tls.as_ref(),
        )
        .map_err(Error::Config)?,
    );
    let replies = faro_proto::client::replies(
        faro_proto::client::channel(
            "conversations",
            &config.conversations_url,
            config.store_deadline(),
            config.tls.as_ref(),
        )
        .map_err(Error::Config)?,
    );
    let http = config.send.http_client()?;
    let sender = queue::worker_client(&config.redis_url)?;
    let consumers = (0..config.workers)
        .map(|_| queue::worker_client(&config.redis_url))
        .collect::<Result<Vec<_>, _>>()?;

    let workers = TaskTracker::new();
    let worker_stop = CancellationToken::new();
    let (ready_tx, ready) = watch::channel(false);
    workers.spawn(start_workers(
        Startup {
            producer: producer.clone(),
            consumers,
            conversations,
            replies: replies.clone(),
            sender,
            http,
            keys: keys.clone(),
            config: config.clone(),
            workers: workers.clone(),
            ready: ready_tx,
            metrics: recorded.clone(),
        },
        worker_stop.clone(),
    ));
    workers.close();

    // Redis is normally there: wait for it briefly so that a normal start
    // never answers UNAVAILABLE; past this, serve and say NOT_SERVING.
    let _ = tokio::time::timeout(faro_proto::STARTUP_GRACE, ready.clone().wait_for(|r| *r)).await;
    let send = replies::Send {
        redis: producer.clone(),
        keys: Arc::new(keys.clone()),
        replies,
        history: config.history(),
        ready: ready.clone(),
    };
    let service = grpc::Ingest {
        redis: producer.clone(),
        keys: Arc::new(keys),
        ready: ready.clone(),
        metrics: recorded.clone(),
        history: config.history(),
    };
    tracing::info!(addr = ?listener.local_addr().ok(), workers = config.workers, "ingest service listening");
    let served = GrpcServer::new()
        .tls(config.tls.clone())
        .add_service(
            IngestServiceServer::new(service)
                .max_decoding_message_size(faro_proto::MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(SendServiceServer::new(send))
        .ready_when(ready)
        .serve(listener, shutdown)
        .await;
    // Stage two: the gRPC server has drained; now stop the workers.
    worker_stop.cancel();
    workers.wait().await;
    recorded.close().await;
    queue::quit(&producer).await;
    served.map_err(|e| Error::Serve(e.to_string()))
}

/// What starting the workers needs once Redis answers.
struct Startup {
    producer: fred::clients::Client,
    consumers: Vec<fred::clients::Client>,
    conversations: ConversationsClient,
    replies: replies::RepliesClient,
    /// The reply worker's own connection (its reads block).
    sender: fred::clients::Client,
    http: reqwest::Client,
    keys: Keys,
    config: Config,
    workers: TaskTracker,
    ready: watch::Sender<bool>,
    metrics: metrics::Metrics,
}

/// Waits for Redis, makes sure the consumer group exists, reports ready, then
/// starts the workers (each on a connection of its own).
async fn start_workers(s: Startup, stop: CancellationToken) {
    if !queue::connect(&s.producer, &stop).await {
        return;
    }
    let mut pause = std::time::Duration::from_millis(100);
    while let Err(e) = queue::ensure_group(&s.producer, &s.keys).await {
        tracing::warn!(error = %e, "cannot create the consumer group; retrying");
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
    redis_check::warn_if_lossy(&s.producer).await;
    tracing::info!("redis reached; taking jobs");
    s.ready.send_replace(true);
    if queue::connect(&s.sender, &stop).await {
        let r = replies::ReplyWorker {
            redis: s.sender,
            publisher: s.producer.clone(),
            replies: s.replies,
            keys: Arc::new(s.keys.clone()),
            consumer: format!("{}-replies", s.config.consumer_name()),
            http: s.http,
            send: Arc::new(s.config.send.clone()),
            history: s.config.history(),
        };
        s.workers.spawn(r.run(stop.clone()));
    }
    for (n, consumer) in s.consumers.into_iter().enumerate() {
        if !queue::connect(&consumer, &stop).await {
            return;
        }
        let w = worker::Worker {
            redis: consumer,
            publisher: s.producer.clone(),
            conversations: s.conversations.clone(),
            keys: s.keys.clone(),
            consumer: format!("{}-{n}", s.config.consumer_name()),
            batch: s.config.batch_size,
            claim_idle: s.config.claim_idle(),
            history: s.config.history(),
            store_deadline: s.config.store_deadline(),
            retry: s.config.retry_policy(),
            metrics: s.metrics.clone(),
        };
        s.workers.spawn(w.run(stop.clone()));
    }
}
