//! The one way a FARO service builds a client of another: every channel has a
//! connect timeout, a deadline on each call, HTTP/2 keep-alive and the shared
//! message size limit, so no call between services can wait forever.

use std::time::Duration;

use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{MAX_GRPC_MESSAGE_BYTES, mtls::Tls};

/// How long establishing a connection may take before the call fails.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// A ping on an idle connection this often, so that a peer that vanished
/// without a FIN (a killed VM, a dropped NAT entry) is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// How long a keep-alive ping may go unanswered before the connection is dropped.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint of every FARO client: `url` (`name` says which service, for
/// errors) with a connect timeout, keep-alive and `deadline` on each call.
/// With `tls` it presents this process's certificate and trusts only servers
/// from its CA, and `url` must be `https://`; without it `url` must be
/// `http://`, so that a URL never silently means the other.
///
/// `deadline` bounds every call made on it until its response headers
/// arrive: the whole of a unary call, the opening of a stream (whose
/// messages then flow without a deadline). A caller that knows better sets a
/// shorter one per call with `Request::set_timeout`, which also tells the
/// server (`grpc-timeout`), so that it stops working on an abandoned call.
pub fn endpoint(
    name: &str,
    url: &str,
    deadline: Duration,
    tls: Option<&Tls>,
) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("{name} url {url:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(deadline)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match (tls, endpoint.uri().scheme_str()) {
        (Some(tls), Some("https")) => endpoint
            .tls_config(tls.client())
            .map_err(|e| format!("{name} TLS: {e}")),
        (None, Some("http")) => Ok(endpoint),
        (Some(_), _) => Err(format!(
            "{name} url {url:?} must be https:// when mTLS is on"
        )),
        (None, _) => Err(format!(
            "{name} url {url:?} must be http:// in plaintext mode (https:// needs --tls-ca, --tls-cert and --tls-key)"
        )),
    }
}

/// A lazily connected channel on [`endpoint`].
pub fn channel(
    name: &str,
    url: &str,
    deadline: Duration,
    tls: Option<&Tls>,
) -> Result<Channel, String> {
    Ok(endpoint(name, url, deadline, tls)?.connect_lazy())
}

/// A channel whose every call carries the caller's trace context
/// ([`crate::trace::Propagate`]): what every FARO client speaks through.
pub type Traced = InterceptedService<Channel, crate::trace::Propagate>;

macro_rules! client {
    ($(#[$doc:meta])* $name:ident, $client:ty) => {
        $(#[$doc])*
        pub fn $name(channel: Channel) -> $client {
            <$client>::new(InterceptedService::new(channel, crate::trace::Propagate))
                .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_GRPC_MESSAGE_BYTES)
        }
    };
}

client!(
    /// A conversations client with FARO's message size limits.
    conversations,
    crate::conversations::v1::conversations_service_client::ConversationsServiceClient<Traced>
);
client!(
    /// A conversations admin client with FARO's message size limits.
    admin,
    crate::conversations::v1::admin_service_client::AdminServiceClient<Traced>
);
client!(
    /// An ingest client with FARO's message size limits.
    ingest,
    crate::ingest::v1::ingest_service_client::IngestServiceClient<Traced>
);
client!(
    /// A stream client with FARO's message size limits.
    stream,
    crate::stream::v1::stream_service_client::StreamServiceClient<Traced>
);
client!(
    /// A client of conversations' reply store (ingest's reply path; operators
    /// set send credentials through it).
    replies,
    crate::conversations::v1::replies_service_client::RepliesServiceClient<Traced>
);
client!(
    /// A client of ingest's reply front door (the edge).
    send,
    crate::ingest::v1::send_service_client::SendServiceClient<Traced>
);
