//! The agents' WebSocket: one server-streaming gRPC subscription per socket,
//! each event forwarded as a JSON text frame.
//!
//! The subscription is opened before answering 101, so an event stored after
//! the handshake completes is never missed, and an unavailable stream service
//! is a 503 rather than a socket that stays silent. If the stream service ends
//! the subscription with DATA_LOSS the socket is closed with code 4001: the
//! client reloads from the API and reconnects.
//!
//! No client can slow another: each socket has a drainer task that reads its
//! gRPC stream at once into a bounded queue (the subscriptions share one HTTP/2
//! connection, whose flow-control window an unread stream would otherwise
//! fill), and a writer whose every write has a deadline. A client whose queue
//! overflows is closed with 4002; one whose write misses the deadline is
//! dropped without a close frame (there is no way to write one).

mod masked;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use faro_proto::stream::v1::{Event, SubscribeRequest};
use fastwebsockets::{CloseCode, Frame, OpCode, Payload, WebSocketError, upgrade};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Streaming};

use crate::{State, auth::presented_token, error::ApiError, events};

/// Close code telling the client to reload state before reconnecting.
const CLOSE_RESYNC: u16 = 4001;

pub(crate) async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let presented = presented_token(req.headers(), req.uri().query())?;
    let claims = state.jwt.validate(&presented.token)?;
    if !upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        ));
    }
    let subscription = state
        .stream
        .clone()
        .subscribe(SubscribeRequest {
            tenant_id: claims.tenant_id.to_string(),
            location_ids: claims
                .location_ids
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
            since: None,
        })
        .await
        .map_err(|s| ApiError::upstream("stream", &s))?
        .into_inner();
    let (response, upgraded) = upgrade::upgrade(&mut req).map_err(|e| {
        ApiError::bad_request("invalid_upgrade", format!("invalid WebSocket upgrade: {e}"))
    })?;
    let (mut parts, _) = response.into_parts();
    if let Some(p) = presented.protocol {
        parts
            .headers
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    tracing::debug!(sub = %claims.sub, tenant = %claims.tenant_id, "agent connected");
    let shutdown = state.shutdown.clone();
    let limits = state.config.ws_limits();
    tokio::spawn(async move {
        match upgraded.await {
            Ok(ws) => {
                if let Err(e) = pump(ws, subscription, shutdown, limits).await {
                    tracing::debug!(error = %e, "websocket ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

/// What the client's reader reports to the writer.
enum FromClient {
    Ping(Vec<u8>),
    /// Any other frame (a pong, mostly): the client is alive.
    Alive,
    /// The client closed, or broke the protocol: answer with this close code.
    Close(u16, &'static str),
    /// The connection is gone; nothing more can be written.
    Gone,
}

/// The server pings this often and gives up on a client silent for twice as
/// long: a peer that vanished without a FIN would otherwise hold its
/// subscription until TCP keepalive noticed, hours later.
const PING_EVERY: Duration = Duration::from_secs(30);

/// Agents send nothing but control frames yet; anything bigger closes with 1009.
const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Frames waiting for one socket, at most (the byte budget usually binds first).
const QUEUE_FRAMES: usize = 1024;

/// Close code for a client that could not keep up: its queue overflowed or a
/// write missed its deadline. Events were dropped: reload, then reconnect.
pub(crate) const CLOSE_TOO_SLOW: u16 = 4002;

type Socket = fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
type Writer = fastwebsockets::WebSocketWrite<
    tokio::io::WriteHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;

/// Per-socket limits, from the edge's configuration.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub write_timeout: Duration,
    pub queue_bytes: usize,
}

/// How the subscription ended, as the drainer saw it.
struct End {
    code: u16,
    reason: &'static [u8],
}

/// Reads the gRPC stream as fast as it arrives, whatever the client does, into
/// a bounded queue. Because this never waits on the socket, one client that
/// stops reading cannot hold the HTTP/2 flow-control window shared by every
/// subscription to the stream service. On overflow it gives up: `too_slow` is
/// cancelled and the subscription is dropped (RST_STREAM frees its window).
async fn drain(
    mut events: Streaming<Event>,
    out: mpsc::Sender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    queue_bytes: usize,
    too_slow: CancellationToken,
) -> End {
    loop {
        let event = match events.message().await {
            Ok(Some(e)) => e,
            Ok(None) => {
                return End {
                    code: CloseCode::Away.into(),
                    reason: b"stream ended",
                };
            }
            Err(s) if s.code() == Code::DataLoss => {
                return End {
                    code: CLOSE_RESYNC,
                    reason: b"events were missed; reload",
                };
            }
            Err(s) => {
                tracing::warn!(code = ?s.code(), "live subscription failed");
                return End {
                    code: 1011,
                    reason: b"live subscription failed",
                };
            }
        };
        let Some(json) = events::to_json(&event) else {
            continue;
        };
        let len = json.len();
        let over_budget = queued.fetch_add(len, Ordering::AcqRel) + len > queue_bytes;
        if over_budget || out.try_send(json.into_bytes()).is_err() {
            if out.is_closed() {
                return End {
                    code: CloseCode::Normal.into(),
                    reason: b"",
                };
            }
            tracing::debug!(
                queued = queued.load(Ordering::Relaxed),
                "websocket client too slow; closing"
            );
            too_slow.cancel();
            return End {
                code: CLOSE_TOO_SLOW,
                reason: b"too slow; events were dropped: reload",
            };
        }
    }
}

/// Reads the client's frames and reports them to the writer.
async fn read_client<R: tokio::io::AsyncRead + Unpin>(
    mut rx: fastwebsockets::WebSocketRead<R>,
    client_tx: mpsc::Sender<FromClient>,
) {
    loop {
        let frame = rx
            .read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) })
            .await;
        let msg = match frame {
            Ok(f) if f.opcode == OpCode::Ping => FromClient::Ping(f.payload.to_vec()),
            Ok(f) if f.opcode == OpCode::Close => FromClient::Close(CloseCode::Normal.into(), ""),
            Ok(_) => FromClient::Alive, // agents have nothing else to say here yet
            Err(WebSocketError::FrameTooLarge) => {
                FromClient::Close(CloseCode::Size.into(), "message too big")
            }
            Err(WebSocketError::IoError(e)) if masked::is_unmasked(&e) => {
                FromClient::Close(CloseCode::Protocol.into(), "client frames must be masked")
            }
            Err(
                WebSocketError::ConnectionClosed
                | WebSocketError::UnexpectedEOF
                | WebSocketError::IoError(_),
            ) => FromClient::Gone,
            Err(_) => FromClient::Close(CloseCode::Protocol.into(), "protocol error"),
        };
        let last = !matches!(msg, FromClient::Ping(_) | FromClient::Alive);
        if client_tx.send(msg).await.is_err() || last {
            break;
        }
    }
}

/// Writes one frame, or fails once the deadline passes: a socket whose
/// client stopped reading must not hold its task (and its queue) forever.
async fn write(
    tx: &mut Writer,
    frame: Frame<'_>,
    deadline: Duration,
) -> Result<(), WebSocketError> {
    match tokio::time::timeout(deadline, tx.write_frame(frame)).await {
        Ok(r) => r,
        Err(_) => Err(WebSocketError::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "websocket write deadline passed",
        ))),
    }
}

async fn pump(
    mut ws: Socket,
    events: Streaming<Event>,
    shutdown: CancellationToken,
    limits: Limits,
) -> Result<(), WebSocketError> {
    // Control frames are answered here, by the only writer.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    ws.set_max_message_size(MAX_CLIENT_MESSAGE);
    let (rx, mut tx) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (masked::MaskChecked::new(r), w)
    });
    let (client_tx, mut client_rx) = mpsc::channel::<FromClient>(8);
    let reader = tokio::spawn(read_client(rx, client_tx));
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(QUEUE_FRAMES);
    let queued = Arc::new(AtomicUsize::new(0));
    let too_slow = CancellationToken::new();
    let mut drainer = tokio::spawn(drain(
        events,
        out_tx,
        queued.clone(),
        limits.queue_bytes,
        too_slow.clone(),
    ));
    let deadline = limits.write_timeout;
    let mut keepalive = tokio::time::interval(PING_EVERY);
    keepalive.tick().await;
    let mut last_seen = Instant::now();
    let result = loop {
        tokio::select! {
            biased;
            () = too_slow.cancelled() => {
                break write(&mut tx, Frame::close(CLOSE_TOO_SLOW, b"too slow; events were dropped: reload"), deadline).await;
            }
            () = shutdown.cancelled() => {
                break write(&mut tx, Frame::close(CloseCode::Away.into(), b"server shutting down"), deadline).await;
            }
            _ = keepalive.tick() => {
                if last_seen.elapsed() > 2 * PING_EVERY {
                    break write(&mut tx, Frame::close(CloseCode::Away.into(), b"ping timeout"), deadline).await;
                }
                if let Err(e) = write(&mut tx, Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")), deadline).await {
                    break Err(e);
                }
            }
            from_client = client_rx.recv() => match from_client {
                Some(FromClient::Ping(p)) => {
                    last_seen = Instant::now();
                    if let Err(e) = write(&mut tx, Frame::pong(Payload::Owned(p)), deadline).await {
                        break Err(e);
                    }
                }
                Some(FromClient::Alive) => last_seen = Instant::now(),
                Some(FromClient::Close(code, reason)) => {
                    break write(&mut tx, Frame::close(code, reason.as_bytes()), deadline).await;
                }
                Some(FromClient::Gone) | None => break Ok(()),
            },
            frame = out_rx.recv() => match frame {
                Some(json) => {
                    queued.fetch_sub(json.len(), Ordering::AcqRel);
                    if let Err(e) = write(&mut tx, Frame::text(Payload::Owned(json)), deadline).await {
                        break Err(e);
                    }
                }
                // The drainer is done and everything it queued is written.
                None => {
                    let end = (&mut drainer).await.unwrap_or(End { code: 1011, reason: b"" });
                    break write(&mut tx, Frame::close(end.code, end.reason), deadline).await;
                }
            },
        }
    };
    // Both halves must go for the connection to close: the reader holds one.
    reader.abort();
    drainer.abort();
    result
}
