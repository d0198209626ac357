//! The stream service: live events to connected agents.
//!
//! One Redis pattern subscription per process (not one per client) receives
//! every tenant's events; the [`hub::Hub`] fans each one out to the gRPC
//! `Subscribe` streams of that tenant whose location filter matches. A
//! subscriber that cannot keep up, or events lost while Redis was unreachable,
//! end the affected streams with `DATA_LOSS` rather than leaving a silent gap:
//! the client reloads from the conversations API and subscribes again.

mod config;
mod error;
mod grpc;
mod hub;

use std::sync::Arc;

use faro_proto::{GrpcServer, redis_keys, stream::v1::stream_service_server::StreamServiceServer};
use fred::{
    clients::SubscriberClient,
    interfaces::{ClientLike, EventInterface, PubsubInterface},
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
};
use tokio::{
    net::TcpListener,
    sync::{broadcast::error::RecvError, watch},
};
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
    config.validate()?;
    // Ours to cancel on the way out; the caller's token is left alone.
    let shutdown = shutdown.child_token();
    let redis_config = RedisConfig::from_url(&config.redis_url)
        .map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
    let subscriber = Builder::from_config(redis_config)
        .with_performance_config(|p| {
            p.broadcast_channel_capacity = 16 * 1024;
            p.default_command_timeout = std::time::Duration::from_secs(5);
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .build_subscriber_client()?;
    let hub = Arc::new(hub::Hub::new(config.subscriber_buffer));

    // Every (re)connection after the first may have missed events.
    let mut reconnects = subscriber.reconnect_rx();
    let mut messages = subscriber.message_rx();
    let pattern = redis_keys::events_pattern(&config.key_prefix);
    // Listen at once, even while Redis is unreachable: NOT_SERVING and
    // UNAVAILABLE until the subscription stands, rather than a dead process.
    let (ready_tx, ready) = watch::channel(false);
    let subscribing = tokio::spawn(subscribe(
        subscriber.clone(),
        pattern.clone(),
        ready_tx,
        shutdown.clone(),
    ));

    let fanout = {
        let hub = hub.clone();
        let prefix = config.key_prefix.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let mut connections = 0u64;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    r = reconnects.recv() => {
                        connections += 1;
                        if connections > 1 || r.is_err() {
                            hub.fail_all("redis reconnected; live events may have been missed");
                        }
                    }
                    m = messages.recv() => match m {
                        Ok(m) => hub.dispatch_raw(&prefix, &m.channel, &m.value),
                        Err(RecvError::Lagged(n)) => {
                            tracing::warn!(dropped = n, "stream fan-out fell behind redis");
                            hub.fail_all("stream service fell behind; live events were dropped");
                        }
                        Err(RecvError::Closed) => break,
                    },
                }
            }
        })
    };

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
    };
    let served = GrpcServer::new()
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
    served.map_err(|e| Error::Serve(e.to_string()))
}

/// Connects and subscribes to `pattern`, retrying with backoff while Redis is
/// unreachable; then reports ready. Later reconnections resubscribe on their own.
async fn subscribe(
    subscriber: SubscriberClient,
    pattern: String,
    ready: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut pause = std::time::Duration::from_millis(100);
    let mut connected = false;
    loop {
        let attempt = async {
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
