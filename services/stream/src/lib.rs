//! The stream service: live events to connected agents.
//!
//! One Redis pattern subscription per process (not one per client) receives
//! every tenant's events; the [`hub::Hub`] fans each one out to the gRPC
//! `Subscribe` streams of that tenant whose location filter matches. A
//! subscriber that cannot keep up ends with `DATA_LOSS` rather than leaving a
//! silent gap: the client resumes from its last position.
//!
//! Every event carries its tenant's position (epoch, offset), assigned by
//! ingest when it publishes, which also keeps it in the tenant's bounded
//! history ([`history`]). `Subscribe` with a position replays history before
//! live events; `History` reads it. Events the subscription missed (a Redis
//! reconnect) are read from history too ([`fanout`]): only a tenant whose
//! history no longer holds them has its streams ended with `DATA_LOSS`.
//!
//! `Relay` publishes ephemeral events (typing indicators) on the same
//! channels without a position ([`relay`]): every process delivers them as
//! they come, and history never holds them.

mod config;
mod error;
mod fanout;
mod grpc;
mod history;
mod hub;
mod metrics;
mod relay;

use std::sync::Arc;

use faro_proto::{GrpcServer, redis_keys, stream::v1::stream_service_server::StreamServiceServer};
use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
};
use tokio::{net::TcpListener, sync::watch};
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use error::Error;

/// Serves `Subscribe` on `listener` until `shutdown` fires. Then every live
/// stream is ended at once (they never end by themselves, and the server's
/// drain would wait for them), and the server drains what is left.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    run_with_metrics(config, listener, None, shutdown).await
}

/// [`run`], and `GET /metrics` (Prometheus text) on `metrics`, an operator
/// listener.
pub async fn run_with_metrics(
    config: Config,
    listener: TcpListener,
    metrics: Option<TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate()?;
    // Ours to cancel on the way out; the caller's token is left alone.
    let shutdown = shutdown.child_token();
    let redis_config = RedisConfig::from_url(&config.redis_url)
        .map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
    let commands = Builder::from_config(redis_config.clone())
        .with_performance_config(|p| {
            p.default_command_timeout = std::time::Duration::from_secs(5);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build()?;
    let reader = Arc::new(history::Reader::new(
        commands.clone(),
        config.key_prefix.clone(),
    ));
    let subscriber = Builder::from_config(redis_config)
        .with_performance_config(|p| {
            p.broadcast_channel_capacity = 16 * 1024;
            p.default_command_timeout = std::time::Duration::from_secs(5);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_subscriber_client()?;
    let hub = Arc::new(hub::Hub::new(config.subscriber_buffer));
    if let Some(l) = metrics {
        let mut registry = faro_proto::metrics::Registry::default();
        let refresh = metrics::register(&mut registry, &hub);
        tokio::spawn(faro_proto::metrics::serve(
            Arc::new(registry),
            Some(refresh),
            l,
            shutdown.clone(),
        ));
    }

    let pattern = redis_keys::events_pattern(&config.key_prefix);
    // Listen at once, even while Redis is unreachable: NOT_SERVING and
    // UNAVAILABLE until the subscription stands, rather than a dead process.
    let (ready_tx, ready) = watch::channel(false);
    let fanout = tokio::spawn(
        fanout::Fanout {
            hub: hub.clone(),
            reader: reader.clone(),
            subscriber: subscriber.clone(),
            prefix: config.key_prefix.clone(),
            pattern: pattern.clone(),
            bound: config.replay_bound(),
            // Every (re)connection after the first may have missed events.
            reconnects: subscriber.reconnect_rx(),
            messages: subscriber.message_rx(),
        }
        .run(shutdown.clone()),
    );
    let subscribing = tokio::spawn(subscribe(
        subscriber.clone(),
        commands.clone(),
        pattern.clone(),
        ready_tx,
        shutdown.clone(),
    ));

    tracing::info!(addr = ?listener.local_addr().ok(), %pattern, "stream service listening");
    let closer = {
        let (hub, stop) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move {
            stop.cancelled().await;
            tracing::info!(subscribers = hub.subscribers(), "closing live streams");
            hub.close_all();
        })
    };
    // Redis is normally there: wait for it briefly so that a normal start
    // never answers UNAVAILABLE; past this, serve and say NOT_SERVING.
    let _ = tokio::time::timeout(faro_proto::STARTUP_GRACE, ready.clone().wait_for(|r| *r)).await;
    let service = grpc::Stream {
        hub: hub.clone(),
        ready: ready.clone(),
        reader,
        replay_bound: config.replay_bound(),
        redis: commands.clone(),
        prefix: config.key_prefix.clone(),
    };
    let served = GrpcServer::new()
        .tls(config.tls.clone())
        .add_service(StreamServiceServer::new(service))
        .ready_when(ready)
        .serve(listener, shutdown.clone())
        .await;
    shutdown.cancel();
    let _ = subscribing.await;
    let _ = closer.await;
    let _ = fanout.await;
    if let Err(e) = subscriber.quit().await {
        tracing::debug!(error = %e, "redis quit");
    }
    if let Err(e) = commands.quit().await {
        tracing::debug!(error = %e, "redis quit");
    }
    served.map_err(|e| Error::Serve(e.to_string()))
}

/// Connects (both clients) and subscribes to `pattern`, retrying with backoff
/// while Redis is unreachable; then reports ready. Later reconnections
/// resubscribe on their own.
async fn subscribe(
    subscriber: SubscriberClient,
    commands: Client,
    pattern: String,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut pause = std::time::Duration::from_millis(100);
    let mut connected = false;
    let mut commands_connected = false;
    loop {
        let attempt = async {
            if !commands_connected {
                commands.init().await?;
                commands_connected = true;
            }
            if !connected {
                subscriber.init().await?;
                connected = true;
                // Keeps the subscription across the client's own reconnections.
                let _resubscribe = subscriber.manage_subscriptions();
            }
            subscriber.psubscribe(pattern.clone()).await
        };
        let result = tokio::select! {
            () = stop.cancelled() => return,
            r = attempt => r,
        };
        match result {
            Ok(()) => break,
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                "redis unreachable; retrying"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
    tracing::info!(%pattern, "subscribed to live events");
    ready.send_replace(true);
}
