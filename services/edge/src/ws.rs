//! The agents' WebSocket: one server-streaming gRPC subscription per socket,
//! each event forwarded as a JSON text frame.
//!
//! The subscription is opened before answering 101, so an event stored after
//! the handshake completes is never missed, and an unavailable stream service
//! is a 503 rather than a socket that stays silent. If the stream service ends
//! the subscription with DATA_LOSS the socket is closed with code 4001: the
//! client reloads from the API and reconnects.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use faro_proto::stream::v1::{Event, SubscribeRequest};
use fastwebsockets::{CloseCode, Frame, OpCode, Payload, WebSocketError, upgrade};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::mpsc;
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
    tokio::spawn(async move {
        match upgraded.await {
            Ok(ws) => {
                if let Err(e) = pump(ws, subscription, shutdown).await {
                    tracing::debug!(error = %e, "websocket ended with an error");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    Ok(Response::from_parts(parts, Full::new(Bytes::new())))
}

enum FromClient {
    Ping(Vec<u8>),
    /// Any other frame (a pong, mostly): the client is alive.
    Alive,
    Close,
}

/// The server pings this often and gives up on a client silent for twice as
/// long: a peer that vanished without a FIN would otherwise hold its
/// subscription until TCP keepalive noticed, hours later.
const PING_EVERY: Duration = Duration::from_secs(30);

type Socket = fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

async fn pump(
    mut ws: Socket,
    mut events: Streaming<Event>,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<(), WebSocketError> {
    // Control frames are answered here, by the only writer.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    ws.set_max_message_size(64 * 1024);
    let (mut rx, mut tx) = ws.split(tokio::io::split);
    let (client_tx, mut client_rx) = mpsc::channel::<FromClient>(8);
    let reader = tokio::spawn(async move {
        loop {
            let frame = rx
                .read_frame::<_, WebSocketError>(&mut |_| async { Ok(()) })
                .await;
            let msg = match frame {
                Ok(f) if f.opcode == OpCode::Ping => FromClient::Ping(f.payload.to_vec()),
                Ok(f) if f.opcode == OpCode::Close => FromClient::Close,
                Ok(_) => FromClient::Alive, // agents have nothing else to say here yet
                Err(_) => FromClient::Close,
            };
            let closing = matches!(msg, FromClient::Close);
            if client_tx.send(msg).await.is_err() || closing {
                break;
            }
        }
    });
    let mut keepalive = tokio::time::interval(PING_EVERY);
    keepalive.tick().await;
    let mut last_seen = Instant::now();
    let result = loop {
        tokio::select! {
            _ = keepalive.tick() => {
                if last_seen.elapsed() > 2 * PING_EVERY {
                    break tx.write_frame(Frame::close(CloseCode::Away.into(), b"ping timeout")).await;
                }
                tx.write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""))).await?;
            }
            () = shutdown.cancelled() => {
                break tx.write_frame(Frame::close(CloseCode::Away.into(), b"server shutting down")).await;
            }
            from_client = client_rx.recv() => match from_client {
                Some(FromClient::Ping(p)) => {
                    last_seen = Instant::now();
                    tx.write_frame(Frame::pong(Payload::Owned(p))).await?;
                }
                Some(FromClient::Alive) => last_seen = Instant::now(),
                Some(FromClient::Close) | None => {
                    break tx.write_frame(Frame::close(CloseCode::Normal.into(), b"")).await;
                }
            },
            event = events.message() => match event {
                Ok(Some(e)) => {
                    if let Some(json) = events::to_json(&e) {
                        tx.write_frame(Frame::text(Payload::Owned(json.into_bytes()))).await?;
                    }
                }
                Ok(None) => {
                    break tx.write_frame(Frame::close(CloseCode::Away.into(), b"stream ended")).await;
                }
                Err(s) if s.code() == Code::DataLoss => {
                    break tx.write_frame(Frame::close(CLOSE_RESYNC, b"events were missed; reload")).await;
                }
                Err(s) => {
                    tracing::warn!(code = ?s.code(), "live subscription failed");
                    break tx.write_frame(Frame::close(1011, b"live subscription failed")).await;
                }
            },
        }
    };
    reader.abort();
    result
}
