//! The fallbacks for clients that cannot hold a WebSocket, with the same
//! positions and the same promise (no gap, no duplicate, or "reload"):
//! `GET /api/v1/messages/poll` (long-poll) and `GET /api/v1/messages/events`
//! (Server-Sent Events; `Last-Event-ID` resumes).

use std::{collections::HashSet, convert::Infallible, sync::Arc, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};
use faro_proto::stream::v1::{HistoryRequest, Position};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use super::{
    Hub, Listener, LiveEvent, RESYNC,
    catch_up::{CatchUp, catch_up, covered, format_position, parse_position},
};
use crate::{State, auth::presented_token, error::ApiError, limits::Held, query_param};

pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A long-poll waits at most this long for an event.
const MAX_POLL: Duration = Duration::from_secs(30);
/// SSE comments keep proxies from closing a quiet stream.
const SSE_KEEPALIVE: Duration = Duration::from_secs(15);

fn not_recovered() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "not_recovered",
        "events after this position are no longer kept: reload from the API, then resume from now",
    )
}

/// The agent's tenant and locations, and the position it resumes from.
struct Client {
    tenant: String,
    locations: HashSet<String>,
    since: Option<Position>,
    /// The agent's slot among its requests in progress, held to the end.
    slot: Held,
}

/// Validates the agent's JWT and spends one of its requests.
async fn client(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Client, ApiError> {
    let presented = presented_token(headers, query)?;
    let claims = state.agent_claims(&presented.token).await?;
    let since = query_param(query, "since")
        .or_else(|| {
            headers
                .get("last-event-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .filter(|s| !s.is_empty())
        .map(|s| parse_position(&s))
        .transpose()?;
    Ok(Client {
        slot: state.slots.request(&claims)?,
        tenant: claims.tenant_id.to_string(),
        locations: claims.locations(),
        since,
    })
}

/// The tenant's latest position, for a client that has seen nothing yet.
async fn latest(hub: &Hub, tenant: &str) -> Result<Option<Position>, tonic::Status> {
    Ok(hub
        .client()
        .history(HistoryRequest {
            tenant_id: tenant.to_owned(),
            location_ids: Vec::new(),
            since: Some(Position::default()),
            limit: 1,
        })
        .await?
        .into_inner()
        .latest)
}

/// Joins the live feed, then replays from `since`: what comes first, and
/// where live events take over.
async fn start(
    hub: &Arc<Hub>,
    c: &Client,
) -> Result<(Listener, Vec<Arc<LiveEvent>>, Option<Position>), ApiError> {
    let upstream = |s: tonic::Status| ApiError::upstream("stream", &s);
    let listener = hub
        .join(&c.tenant, c.locations.clone(), None)
        .await
        .map_err(upstream)?;
    let Some(since) = c.since.clone() else {
        return Ok((listener, Vec::new(), None));
    };
    match catch_up(hub, &c.tenant, &c.locations, since)
        .await
        .map_err(upstream)?
    {
        CatchUp::Recovered { events, upto } => Ok((listener, events, Some(upto))),
        CatchUp::NotRecovered => Err(not_recovered()),
    }
}

/// `GET /api/v1/messages/poll?since=<position>&timeout=<seconds>`: the events
/// after `since` at once if there are any, else the first ones to come within
/// `timeout` (at most 30 s), else none; always with the position to poll from next.
pub(crate) async fn poll(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let c = client(state, headers, query).await?;
    let wait = match query_param(query, "timeout") {
        None => MAX_POLL,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| *d <= MAX_POLL)
            .ok_or_else(|| ApiError::bad_request("invalid_timeout", "timeout is 0..=30 seconds"))?,
    };
    let (mut listener, mut events, mut upto) = start(&state.live, &c).await?;
    if events.is_empty() {
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        let ended = listener.ended();
        loop {
            tokio::select! {
                () = &mut deadline => break,
                () = ended.cancelled() => break,
                e = listener.events.recv() => match e {
                    Some(e) => {
                        listener.taken(&e);
                        if !covered(upto.as_ref(), &e) {
                            events.push(e);
                            // Whatever else is already here goes in the same answer.
                            while let Ok(e) = listener.events.try_recv() {
                                listener.taken(&e);
                                events.push(e);
                            }
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
    }
    if let Some(p) = events.last().and_then(|e| e.position()) {
        upto = Some(p);
    } else if upto.is_none() {
        upto = latest(&state.live, &c.tenant)
            .await
            .map_err(|s| ApiError::upstream("stream", &s))?;
    }
    let mut body = BytesMut::from(&b"{\"events\":["[..]);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&e.json);
    }
    body.put_slice(b"],\"position\":");
    body.put_slice(
        serde_json::to_string(&upto.as_ref().map(format_position))
            .unwrap_or_else(|_| "null".into())
            .as_bytes(),
    );
    body.put_u8(b'}');
    let mut response = Response::new(
        http_body_util::Full::new(body.freeze())
            .map_err(|never| match never {})
            .boxed(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

fn sse_event(e: &LiveEvent) -> Bytes {
    let mut b = BytesMut::with_capacity(e.json.len() + 64);
    if let Some(p) = e.position() {
        b.put_slice(b"id: ");
        b.put_slice(format_position(&p).as_bytes());
        b.put_u8(b'\n');
    }
    b.put_slice(b"event: ");
    b.put_slice(e.kind.as_bytes());
    b.put_slice(b"\ndata: ");
    // JSON from serde_json has no raw newlines: one data line.
    b.put_slice(&e.json);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// `GET /api/v1/messages/events`: Server-Sent Events; `Last-Event-ID` (sent by
/// browsers on reconnect) or `?since=` resumes. A position history no longer
/// holds is a 409 (EventSource then stops: reload, reconnect without it).
pub(crate) async fn sse(
    state: &State,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<Response<Body>, ApiError> {
    let c = client(state, headers, query).await?;
    let (mut listener, replay, upto) = start(&state.live, &c).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let write_timeout = state.config.ws_limits().write_timeout;
    let shutdown = state.shutdown.clone();
    let slot = c.slot;
    tokio::spawn(async move {
        let _slot = slot;
        let send = |b: Bytes| tx.send_timeout(b, write_timeout);
        for e in &replay {
            if send(sse_event(e)).await.is_err() {
                return;
            }
        }
        let ended = listener.ended();
        let mut keepalive = tokio::time::interval(SSE_KEEPALIVE);
        keepalive.tick().await;
        loop {
            let chunk = tokio::select! {
                biased;
                () = ended.cancelled() => {
                    let end = listener.end().unwrap_or(RESYNC);
                    let _ = send(Bytes::from(format!(
                        "event: close\ndata: {}\n\n",
                        serde_json::json!({"code": end.code, "reason": end.reason})
                    ))).await;
                    return;
                }
                () = shutdown.cancelled() => return,
                // The client left: give its slot back now, not at the next write.
                () = tx.closed() => return,
                _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
                e = listener.events.recv() => match e {
                    Some(e) => {
                        listener.taken(&e);
                        if covered(upto.as_ref(), &e) {
                            continue;
                        }
                        sse_event(&e)
                    }
                    None => return,
                },
            };
            // A client that does not take its events in time is dropped.
            if send(chunk).await.is_err() {
                return;
            }
        }
    });
    let body = StreamBody::new(ReceiverStream::new(rx).map(|b| Ok(Frame::data(b))));
    let mut response = Response::new(BodyExt::boxed(body));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}
