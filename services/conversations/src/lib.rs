//! The conversations service: the only owner of Postgres.
//!
//! It threads normalized inbound events into conversations per (tenant,
//! location, channel, customer), stores each exactly once (a unique key on
//! (tenant_id, channel, channel_message_id) and `ON CONFLICT`), and answers the
//! edge's webhook-routing lookups. Every query runs as a role that neither owns
//! the tables nor bypasses row-level security, with the tenant set per
//! transaction (see [`db::tenant_tx`]); the routing lookups go through two
//! narrow `SECURITY DEFINER` functions instead. Expiring events that waited too
//! long runs across tenants too, so it has a role of its own (`faro_sweeper`),
//! and so do operator RPCs that span tenants (`faro_operator`: listing and
//! disabling tenants and apps, re-sealing secrets).

mod account_events;
mod admin;
mod channel_accounts;
mod config;
mod conv_events;
mod crypto;
mod customers;
mod db;
mod directory;
mod error;
mod events;
mod grpc;
mod inbox;
mod metrics;
mod outbox;
mod replies;
mod reseal;
mod rows;
mod store;

use std::sync::Arc;

use faro_proto::{
    GrpcServer,
    conversations::v1::{
        admin_service_server::AdminServiceServer,
        conversations_service_server::ConversationsServiceServer,
        replies_service_server::RepliesServiceServer,
    },
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;
pub use crypto::SecretBox;
#[doc(hidden)]
pub use customers::LOOKUP_SQL as CUSTOMER_LOOKUP_SQL;
pub use db::{
    APP_ROLE, OPERATOR_ROLE, SWEEPER_ROLE, app_connect_options, expire_pending, migrate,
    operator_connect_options, sweeper_connect_options,
};
pub use error::Error;

/// Serves the conversations and admin gRPC services on `listener` until
/// `shutdown` fires, then drains in-flight calls and closes the pool.
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
    // Ours to cancel on the way out (it stops the sweeper); the caller's token is left alone.
    let shutdown = shutdown.child_token();
    let secrets = SecretBox::from_specs(&config.encryption_keys)?;
    let pool = db::connect_app(&config).await?;
    let sweeper_pool = db::sweeper_pool(&config)?;
    let operator_pool = db::operator_pool(&config)?;
    let mut registry = faro_proto::metrics::Registry::default();
    let (recorded, refresh) = metrics::Metrics::new(&mut registry, &pool, metrics.is_some());
    if let Some(l) = metrics {
        tokio::spawn(faro_proto::metrics::serve(
            Arc::new(registry),
            Some(refresh),
            l,
            shutdown.clone(),
        ));
    }
    let service = grpc::Service {
        pool: pool.clone(),
        operator: operator_pool.clone(),
        secrets: Arc::new(secrets),
        replies: replies::Creator::start(pool.clone(), recorded.clone()),
        metrics: recorded,
    };
    tracing::info!(addr = ?listener.local_addr().ok(), "conversations service listening");
    let sweeper = tokio::spawn(sweep_pending(
        sweeper_pool.clone(),
        config.pending_ttl,
        shutdown.clone(),
    ));
    let served = GrpcServer::new()
        .tls(config.tls.clone())
        .add_service(
            ConversationsServiceServer::new(service.clone())
                .max_decoding_message_size(faro_proto::MAX_GRPC_MESSAGE_BYTES),
        )
        .add_service(RepliesServiceServer::new(service.clone()))
        .add_service(AdminServiceServer::new(service))
        .serve(listener, shutdown.clone())
        .await;
    shutdown.cancel();
    let _ = sweeper.await;
    sweeper_pool.close().await;
    operator_pool.close().await;
    pool.close().await;
    served.map_err(|e| Error::Serve(e.to_string()))
}

/// Drops events that waited longer than `ttl` for a message that never came.
async fn sweep_pending(pool: sqlx::PgPool, ttl: std::time::Duration, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        match db::expire_pending(&pool, ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "dropped events whose message never arrived"),
            Err(e) => tracing::warn!(error = %e, "expiring pending events failed"),
        }
    }
}
