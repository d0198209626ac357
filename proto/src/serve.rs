//! The serve loop every gRPC service shares, so that health, reflection and
//! graceful shutdown behave the same everywhere.

use std::{convert::Infallible, time::Duration};

use tokio::{net::TcpListener, sync::watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

/// Reflection that advertises exactly `served` plus health and reflection:
/// the descriptor set holds every FARO package, but `grpcurl list` on one
/// service must not show RPCs it does not serve.
fn reflection(served: &[&str]) -> tonic_reflection::server::Builder<'static> {
    let mut builder = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    for name in served.iter().copied().chain([
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]) {
        builder = builder.with_service_name(name);
    }
    builder
}

/// Server reflection (v1) for the services named in `served`.
pub fn reflection_service(
    served: &[&str],
) -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    // The descriptor sets are compiled in; failing to parse them is a build defect.
    reflection(served)
        .build_v1()
        .expect("embedded file descriptor sets are valid")
}

/// The pre-standard reflection API, which older grpcurl releases still ask for.
pub fn reflection_service_v1alpha(
    served: &[&str],
) -> tonic_reflection::server::v1alpha::ServerReflectionServer<
    impl tonic_reflection::server::v1alpha::ServerReflection,
> {
    reflection(served)
        .build_v1alpha()
        .expect("embedded file descriptor sets are valid")
}

/// How long a stopping server waits for the calls in flight before it closes
/// their connections: a server stream (a live subscription) may never end on
/// its own, and a process told to stop must stop.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// A set of gRPC services served together with `grpc.health.v1` and reflection.
pub struct GrpcServer {
    routes: Routes,
    names: Vec<&'static str>,
    ready: Option<watch::Receiver<bool>>,
    drain: Duration,
    tls: Option<crate::mtls::Tls>,
}

impl Default for GrpcServer {
    fn default() -> Self {
        Self {
            routes: Routes::default(),
            names: Vec::new(),
            ready: None,
            drain: DRAIN_DEADLINE,
            tls: None,
        }
    }
}

impl GrpcServer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces [`DRAIN_DEADLINE`].
    pub fn drain_deadline(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Serve over mutual TLS and authorize every call by the caller's
    /// identity ([`crate::mtls`]); `None` serves plaintext with no checks.
    pub fn tls(mut self, tls: Option<crate::mtls::Tls>) -> Self {
        self.tls = tls;
        self
    }

    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower_service::Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.routes = self.routes.add_service(svc);
        self
    }

    /// Health follows `ready` (NOT_SERVING while false) instead of reporting
    /// SERVING from the start: for a service that listens before its backing
    /// store (Redis) is reachable, so that callers get a quick UNAVAILABLE
    /// rather than a refused connection.
    pub fn ready_when(mut self, ready: watch::Receiver<bool>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// Serves until `shutdown` fires. Health flips to NOT_SERVING first so that
    /// load balancers stop routing here, then in-flight calls are drained for
    /// at most the drain deadline; connections still open then are closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let served = self.names.clone();
        let names: Vec<&str> = std::iter::once("").chain(self.names).collect();
        let status = |ready: bool| {
            if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            }
        };
        let initially = self.ready.as_ref().is_none_or(|r| *r.borrow());
        for name in &names {
            reporter.set_service_status(name, status(initially)).await;
        }
        if let Some(mut ready) = self.ready {
            let (reporter, names, stop) = (reporter.clone(), names.clone(), shutdown.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        changed = ready.changed() => if changed.is_err() { return },
                    }
                    let now = status(*ready.borrow_and_update());
                    for name in &names {
                        if stop.is_cancelled() {
                            return;
                        }
                        reporter.set_service_status(name, now).await;
                    }
                }
            });
        }
        let routes = self
            .routes
            .add_service(health)
            .add_service(reflection_service(&served))
            .add_service(reflection_service_v1alpha(&served));
        let force = CancellationToken::new();
        let incoming = {
            let force = force.clone();
            TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .map(move |io| io.map(|io| crate::drain::Drainable::new(io, force.clone())))
        };
        let stopping = shutdown.clone();
        let signal = async move {
            shutdown.cancelled().await;
            for name in &names {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.server())?;
        }
        let served = builder
            .trace_fn(crate::trace::server_span)
            .layer(crate::mtls::AuthorizeLayer::new(self.tls.is_some()))
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(served);
        tokio::select! {
            r = &mut served => return r,
            () = async {
                stopping.cancelled().await;
                tokio::time::sleep(self.drain).await;
            } => {}
        }
        tracing::warn!(
            deadline_ms = self.drain.as_millis(),
            "drain deadline passed; closing the connections still open"
        );
        force.cancel();
        served.await
    }
}

#[cfg(test)]
mod tests {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    use super::*;

    /// A health watch is a server stream that never ends by itself: without a
    /// drain deadline, stopping the server would wait for it forever.
    #[tokio::test]
    async fn a_stream_that_never_ends_does_not_hold_up_shutdown() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(
            GrpcServer::new()
                .drain_deadline(Duration::from_millis(100))
                .serve(listener, shutdown.clone()),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut client = HealthClient::new(channel);
        let mut watch = client
            .watch(HealthCheckRequest::default())
            .await
            .expect("watch")
            .into_inner();
        let first = watch.message().await.expect("status").expect("one");
        assert_eq!(first.status, ServingStatus::Serving as i32);

        shutdown.cancel();
        // A generous bound on a hang, not a timing claim.
        let stopped = tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the server stops despite the open stream");
        assert!(stopped.expect("join").is_ok());
        // The watcher may hear NOT_SERVING; then its stream ends (not hangs).
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(_)) = watch.message().await {}
        })
        .await
        .expect("the watcher's stream ends");
    }
}
