//! Who may call which RPC. A peer that passed the TLS handshake is
//! authenticated; this layer authorizes each call against [`RULES`] by the
//! identity in its certificate. Anything not in the table is refused, so a new
//! RPC is unreachable until someone decides who may call it.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{
    Status,
    body::Body,
    transport::server::{TcpConnectInfo, TlsConnectInfo},
};

use super::Identity::{self, Edge, Ingest, Operator};

/// Any identity the CA vouches for.
const ANYONE: &[Identity] = &Identity::ALL;

/// `(service, method or "*", who may call)`: the first matching row decides.
/// Why each row is as it is: ARCHITECTURE.md, "Service authentication".
const RULES: &[(&str, &str, &[Identity])] = &[
    // The edge routes webhooks and answers Meta's verification challenge;
    // operators resolve routes when they debug a delivery.
    (CONV, "ResolveChannelAccounts", &[Edge, Operator]),
    (CONV, "CheckVerifyToken", &[Edge]),
    // Only ingest writes: a forged StoreEvents would plant messages in any tenant.
    (CONV, "StoreEvents", &[Ingest]),
    (CONV, "ListConversations", &[Edge, Operator]),
    // The edge checks the location of a conversation an agent types in.
    (CONV, "GetConversation", &[Edge, Operator]),
    (CONV, "ListMessages", &[Edge, Operator]),
    (CONV, "ListConversationEvents", &[Edge, Operator]),
    // Agents' edits and read markers, through the edge (issue 13).
    (CONV, "UpdateConversation", &[Edge, Operator]),
    (CONV, "MarkRead", &[Edge, Operator]),
    // The edge asks whether an agent's tenant and the agent are enabled.
    (CONV, "CheckAgentAccess", &[Edge, Operator]),
    // ingest publishes agents' edits from the outbox and deletes them.
    (CONV, "ClaimOutbox", &[Ingest]),
    (CONV, "AckOutbox", &[Ingest]),
    ("faro.conversations.v1.AdminService", "*", &[Operator]),
    // Send credentials are set by operators only; the reply path (store,
    // fetch with the credential, record the outcome) is ingest's alone.
    (REPLIES, "SetChannelCredential", &[Operator]),
    (REPLIES, "*", &[Ingest]),
    // Agents' replies enter through the edge.
    ("faro.ingest.v1.SendService", "*", &[Edge]),
    ("faro.ingest.v1.IngestService", "Submit", &[Edge]),
    // Agents' changes published as live events: only the edge makes them.
    ("faro.ingest.v1.IngestService", "Announce", &[Edge]),
    // The dead-letter RPCs: operators directly (`faro dlq`), and the edge's
    // /api/v1/admin/ routes, which hold their own admin token.
    ("faro.ingest.v1.IngestService", "*", &[Edge, Operator]),
    // Subscribe, History, Relay (typing indicators between edges).
    ("faro.stream.v1.StreamService", "*", &[Edge]),
    ("grpc.health.v1.Health", "*", ANYONE),
    ("grpc.reflection.v1.ServerReflection", "*", ANYONE),
    ("grpc.reflection.v1alpha.ServerReflection", "*", ANYONE),
];

const CONV: &str = "faro.conversations.v1.ConversationsService";
const REPLIES: &str = "faro.conversations.v1.RepliesService";

/// Whether `who` may call the RPC at `path` (`/package.Service/Method`).
pub fn allowed(path: &str, who: Identity) -> bool {
    let Some((service, method)) = path.strip_prefix('/').and_then(|p| p.split_once('/')) else {
        return false;
    };
    RULES
        .iter()
        .find(|(s, m, _)| *s == service && (*m == "*" || *m == method))
        .is_some_and(|(_, _, who_may)| who_may.contains(&who))
}

/// Installs [`Authorize`] on a server; `enforce` is false for a plaintext one
/// (there is no identity to check).
#[derive(Clone, Copy, Debug)]
pub struct AuthorizeLayer {
    enforce: bool,
}

impl AuthorizeLayer {
    pub fn new(enforce: bool) -> Self {
        Self { enforce }
    }
}

impl<S> tower_layer::Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize {
            inner,
            enforce: self.enforce,
        }
    }
}

/// Refuses a call whose peer may not make it, before any handler runs.
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    enforce: bool,
}

/// The caller's identity, or why there is none.
fn caller(req: &http::Request<Body>) -> Result<Identity, Status> {
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    Identity::of_certificate(leaf).ok_or_else(|| {
        Status::unauthenticated("the client certificate names no FARO identity (spiffe://faro/...)")
    })
}

fn check(req: &http::Request<Body>) -> Result<(), Status> {
    let who = caller(req)?;
    let path = req.uri().path();
    if allowed(path, who) {
        return Ok(());
    }
    tracing::warn!(caller = %who, rpc = path, "rpc refused for this identity");
    Err(Status::permission_denied(format!(
        "{who} may not call {path}"
    )))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower_service::Service<http::Request<Body>> for Authorize<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if self.enforce
            && let Err(status) = check(&req)
        {
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let fut = self.inner.call(req);
        Box::pin(fut)
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    /// Every RPC FARO serves has a row (else it is unreachable under mTLS),
    /// and every row names an RPC that exists (else it is a typo).
    #[test]
    fn every_rpc_has_a_rule_and_every_rule_an_rpc() {
        let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    paths.push((full.clone(), method.name().to_owned()));
                }
            }
        }
        for (service, method) in &paths {
            let path = format!("/{service}/{method}");
            assert!(
                Identity::ALL.iter().any(|who| allowed(&path, *who)),
                "{path} has no rule: nobody could call it"
            );
        }
        for (service, method, _) in RULES.iter().filter(|r| r.0.starts_with("faro.")) {
            assert!(
                paths
                    .iter()
                    .any(|(s, m)| s == service && (*method == "*" || m == method)),
                "rule for /{service}/{method} names no RPC"
            );
        }
    }

    #[test]
    fn the_table_separates_writers_readers_and_operators() {
        let conv = |m: &str| format!("/{CONV}/{m}");
        assert!(allowed(&conv("StoreEvents"), Ingest));
        assert!(!allowed(&conv("StoreEvents"), Edge));
        assert!(!allowed(&conv("StoreEvents"), Operator));
        assert!(allowed(&conv("ResolveChannelAccounts"), Edge));
        assert!(!allowed(&conv("ResolveChannelAccounts"), Ingest));
        assert!(allowed(&conv("GetConversation"), Edge));
        assert!(allowed("/faro.stream.v1.StreamService/Relay", Edge));
        let admin = "/faro.conversations.v1.AdminService/CreateTenant";
        assert!(allowed(admin, Operator));
        for who in [Edge, Ingest, Identity::Stream, Identity::Conversations] {
            assert!(!allowed(admin, who), "{who}");
        }
        assert!(allowed("/faro.ingest.v1.IngestService/Submit", Edge));
        assert!(!allowed("/faro.ingest.v1.IngestService/Submit", Operator));
        assert!(allowed("/faro.stream.v1.StreamService/Subscribe", Edge));
        assert!(!allowed("/faro.stream.v1.StreamService/Subscribe", Ingest));
        assert!(allowed("/grpc.health.v1.Health/Check", Identity::Stream));
        assert!(!allowed("/faro.unknown.v1.X/Y", Operator));
        assert!(!allowed("garbage", Operator));
        let replies = |m: &str| format!("/{REPLIES}/{m}");
        assert!(allowed(&replies("CreateReply"), Ingest));
        assert!(!allowed(&replies("CreateReply"), Edge));
        assert!(!allowed(&replies("GetReplyDelivery"), Operator));
        assert!(allowed(&replies("SetChannelCredential"), Operator));
        assert!(!allowed(&replies("SetChannelCredential"), Ingest));
        assert!(allowed("/faro.ingest.v1.SendService/SendReply", Edge));
        assert!(!allowed("/faro.ingest.v1.SendService/SendReply", Operator));
    }
}
