//! The serve loop every gRPC service shares, so that health, reflection and
//! graceful shutdown behave the same everywhere.

use std::convert::Infallible;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::ServingStatus;

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// Server reflection over FARO's packages and `grpc.health.v1`, so that
/// `grpcurl list` shows everything a service offers.
pub fn reflection_service() -> tonic_reflection::server::v1::ServerReflectionServer<
    impl tonic_reflection::server::v1::ServerReflection,
> {
    // The descriptor sets are compiled in; failing to parse them is a build defect.
    reflection()
        .build_v1()
        .expect("embedded file descriptor sets are valid")
}

/// The pre-standard reflection API, which older grpcurl releases still ask for.
pub fn reflection_service_v1alpha() -> tonic_reflection::server::v1alpha::ServerReflectionServer<
    impl tonic_reflection::server::v1alpha::ServerReflection,
> {
    reflection()
        .build_v1alpha()
        .expect("embedded file descriptor sets are valid")
}

/// A set of gRPC services served together with `grpc.health.v1` and reflection.
#[derive(Default)]
pub struct GrpcServer {
    routes: Routes,
    names: Vec<&'static str>,
}

impl GrpcServer {
    pub fn new() -> Self {
        Self::default()
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

    /// Serves until `shutdown` fires. Health flips to NOT_SERVING first so that
    /// load balancers stop routing here, then in-flight calls are drained.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let (reporter, health) = tonic_health::server::health_reporter();
        let names: Vec<&str> = std::iter::once("").chain(self.names).collect();
        for name in &names {
            reporter
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        let routes = self
            .routes
            .add_service(health)
            .add_service(reflection_service())
            .add_service(reflection_service_v1alpha());
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let signal = async move {
            shutdown.cancelled().await;
            for name in &names {
                reporter
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
        };
        Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, signal)
            .await
    }
}
