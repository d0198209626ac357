//! The agents' WebSocket: the tenant's live events as JSON text frames.
//!
//! The socket joins its tenant's live feed (`crate::live`) before answering
//! 101, so an event stored after the handshake completes is never missed, and
//! an unavailable stream service is a 503 rather than a socket that stays
//! silent. With `?since=<epoch>:<offset>` (the `position` of the last event the
//! client saw) the events it missed are replayed first, then live ones follow
//! with no gap and no duplicate; a position history no longer holds closes the
//! socket with 4001 (reload from the API).
//!
//! The writer's every write has a deadline: a client that stops reading is
//! dropped without a close frame (there is no way to write one), and one whose
//! queue overflows is closed with 4002; neither slows anyone else.
//!
//! Agents send JSON text frames too (`client_frames`): `ping`, answered with a
//! `pong`, and `typing`, relayed to the tenant's other agents (`typing`).
//! The reader handles them in order, off the writer's path.

mod client_frames;
mod reader;
mod typing;

pub(crate) use typing::{ConversationLocations, TypingLimit};

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use faro_proto::stream::v1::Position;
use fastwebsockets::{CloseCode, Frame, OpCode, Payload, Role, WebSocketError, upgrade};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    State,
    auth::presented_token,
    error::ApiError,
    limits::WsSlot,
    live::{
        Listener, LiveEvent, RESYNC,
        catch_up::{CatchUp, catch_up, covered, parse_position},
    },
    query_param,
};

pub(crate) async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let presented = presented_token(req.headers(), req.uri().query())?;
    let claims = state.agent_claims(&presented.token).await?;
    if !upgrade::is_upgrade_request(&req) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this endpoint speaks WebSocket only",
        ));
    }
    // Refused before anything is joined or upgraded; held until the socket ends.
    let slot = state.slots.websocket(&claims)?;
    let since = query_param(req.uri().query(), "since")
        .map(|s| parse_position(&s))
        .transpose()?;
    let tenant = claims.tenant_id.to_string();
    let locations = claims.locations();
    // Joined before 101 (and before catching up): nothing published from
    // here on can be missed.
    let listener = state
        .live
        .join(&tenant, locations.clone(), Some(claims.sub.clone()))
        .await
        .map_err(|s| ApiError::upstream("stream", &s))?;
    let start = match since {
        None => Start::Live,
        Some(since) => match catch_up(&state.live, &tenant, &locations, since)
            .await
            .map_err(|s| ApiError::upstream("stream", &s))?
        {
            CatchUp::Recovered { events, upto } => Start::Replay { events, upto },
            CatchUp::NotRecovered => Start::NotRecovered,
        },
    };
    let (response, upgraded) = upgrade::upgrade(&mut req).map_err(|e| {
        ApiError::bad_request("invalid_upgrade", format!("invalid WebSocket upgrade: {e}"))
    })?;
    let (mut parts, _) = response.into_parts();
    if let Some(p) = presented.protocol {
        parts
            .headers
            .insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    tracing::debug!(sub = %claims.sub, %tenant, "agent connected");
    let shutdown = state.shutdown.clone();
    let limits = state.config.ws_limits();
    let sender = crate::replies::Sender::of(&state, &claims);
    let frames = client_frames::ClientFrames::new(typing::Typing::new(
        tenant,
        claims.sub,
        locations,
        limits.typing,
        state.conversation_locations.clone(),
        state.live.client(),
    ))
    .with_sender(sender);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(ws) => {
                if let Err(e) = pump(ws, slot, listener, start, shutdown, limits, frames).await {
                    tracing::debug!(error = %e, "websocket ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

/// How a socket begins.
enum Start {
    /// Live events from now on.
    Live,
    /// These missed events first, then live ones after `upto`.
    Replay {
        events: Vec<Arc<LiveEvent>>,
        upto: Position,
    },
    /// The position is gone from history: close with 4001 at once.
    NotRecovered,
}

/// What the client's reader reports to the writer.
enum FromClient {
    Ping(Vec<u8>),
    /// Any other frame (a pong, mostly): the client is alive.
    Alive,
    /// A client frame was answered with this text frame.
    Reply(Bytes),
    /// The client closed, or broke the protocol: answer with this close code.
    Close(u16, &'static str),
    /// The connection is gone; nothing more can be written.
    Gone,
}

type Socket = fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
type Writer = fastwebsockets::WebSocketWrite<
    tokio::io::WriteHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;

/// Per-socket limits, from the edge's configuration.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub write_timeout: Duration,
    /// The server pings this often and gives up on a client silent for twice
    /// as long: a peer that vanished without a FIN would otherwise hold its
    /// socket until TCP keepalive noticed, hours later.
    pub ping_every: Duration,
    /// Typing frames one socket may send.
    pub typing: TypingLimit,
    /// A client frame larger than this closes the socket with 1009; it is
    /// refused from its header, before its payload is read.
    pub max_client_frame: usize,
}

/// Reads the client's frames and reports them to the writer.
async fn read_client<R: tokio::io::AsyncRead + Unpin>(
    mut rx: reader::ClientReader<R>,
    client_tx: mpsc::Sender<FromClient>,
    mut frames: client_frames::ClientFrames,
) {
    loop {
        let msg = match rx.read_frame().await {
            Ok(f) if f.opcode == OpCode::Ping => FromClient::Ping(f.payload),
            Ok(f) if f.opcode == OpCode::Close => FromClient::Close(CloseCode::Normal.into(), ""),
            Ok(f) => match frames.on_frame(f.opcode, f.fin, &f.payload).await {
                Some(reply) => FromClient::Reply(reply),
                None => FromClient::Alive,
            },
            Err(reader::ReadError::TooLarge) => {
                FromClient::Close(CloseCode::Size.into(), "message too big")
            }
            Err(reader::ReadError::Unmasked) => {
                FromClient::Close(CloseCode::Protocol.into(), "client frames must be masked")
            }
            Err(reader::ReadError::Gone) => FromClient::Gone,
            Err(reader::ReadError::Protocol(why)) => {
                FromClient::Close(CloseCode::Protocol.into(), why)
            }
        };
        let last = !matches!(
            msg,
            FromClient::Ping(_) | FromClient::Alive | FromClient::Reply(_)
        );
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
    ws: Socket,
    slot: WsSlot,
    mut listener: Listener,
    start: Start,
    shutdown: CancellationToken,
    limits: Limits,
    frames: client_frames::ClientFrames,
) -> Result<(), WebSocketError> {
    let _connected = crate::metrics::Connected::new(&listener.metrics().websockets);
    // Frames are read by `reader` (no buffer while idle); fastwebsockets
    // only writes. Its own read half, with its 8 KiB buffer, goes at once:
    // nothing has been read into it before the first frame.
    let (r, w) = tokio::io::split(ws.into_inner());
    let (_, mut tx) = fastwebsockets::after_handshake_split(tokio::io::empty(), w, Role::Server);
    let rx = reader::ClientReader::new(r, limits.max_client_frame);
    let (client_tx, mut client_rx) = mpsc::channel::<FromClient>(8);
    let reader = tokio::spawn(read_client(rx, client_tx, frames));
    let result = run(
        &mut tx,
        &mut listener,
        &mut client_rx,
        start,
        &shutdown,
        limits,
    )
    .await;
    // Free before the connection closes: a client that saw it close may
    // open another at once.
    drop(slot);
    // Both halves must go for the connection to close: the reader holds one.
    reader.abort();
    result
}

async fn run(
    tx: &mut Writer,
    listener: &mut Listener,
    client_rx: &mut mpsc::Receiver<FromClient>,
    start: Start,
    shutdown: &CancellationToken,
    limits: Limits,
) -> Result<(), WebSocketError> {
    let deadline = limits.write_timeout;
    let upto = match start {
        Start::Live => None,
        Start::NotRecovered => {
            return write(
                tx,
                Frame::close(RESYNC.code, RESYNC.reason.as_bytes()),
                deadline,
            )
            .await;
        }
        Start::Replay { events, upto } => {
            for e in events {
                write(tx, Frame::text(Payload::Borrowed(&e.json)), deadline).await?;
            }
            Some(upto)
        }
    };
    let mut keepalive = tokio::time::interval(limits.ping_every);
    keepalive.tick().await;
    let mut last_seen = Instant::now();
    let ended = listener.ended();
    loop {
        tokio::select! {
            biased;
            () = ended.cancelled() => {
                let end = listener.end().unwrap_or(RESYNC);
                return write(tx, Frame::close(end.code, end.reason.as_bytes()), deadline).await;
            }
            () = shutdown.cancelled() => {
                return write(tx, Frame::close(CloseCode::Away.into(), b"server shutting down"), deadline).await;
            }
            _ = keepalive.tick() => {
                if last_seen.elapsed() > 2 * limits.ping_every {
                    return write(tx, Frame::close(CloseCode::Away.into(), b"ping timeout"), deadline).await;
                }
                write(tx, Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")), deadline).await?;
            }
            from_client = client_rx.recv() => match from_client {
                Some(FromClient::Ping(p)) => {
                    last_seen = Instant::now();
                    write(tx, Frame::pong(Payload::Owned(p)), deadline).await?;
                }
                Some(FromClient::Alive) => last_seen = Instant::now(),
                Some(FromClient::Reply(text)) => {
                    last_seen = Instant::now();
                    write(tx, Frame::text(Payload::Borrowed(&text)), deadline).await?;
                }
                Some(FromClient::Close(code, reason)) => {
                    return write(tx, Frame::close(code, reason.as_bytes()), deadline).await;
                }
                Some(FromClient::Gone) | None => return Ok(()),
            },
            event = listener.events.recv() => match event {
                Some(e) => {
                    listener.taken(&e);
                    if !covered(upto.as_ref(), &e) {
                        write(tx, Frame::text(Payload::Borrowed(&e.json)), deadline)
                            .instrument(e.send_span())
                            .await?;
                        listener.delivered(&e);
                    }
                }
                None => {
                    let end = listener.end().unwrap_or(RESYNC);
                    return write(tx, Frame::close(end.code, end.reason.as_bytes()), deadline).await;
                }
            },
        }
    }
}
