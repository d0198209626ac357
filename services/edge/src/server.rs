//! The HTTP server: accept, route, and drain on shutdown.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, State, admin,
    conn_limits::ConnLimits,
    error::{ApiError, ErrorCode, json_response},
    inbox,
    limits::{HTTP1_MAX_HEAD_BYTES, HTTP1_MAX_HEADERS, headers_too_large},
    live::{self, http::Body},
    replies,
    router::{self, Route},
    webhook, ws,
};

fn boxed(r: Response<Full<Bytes>>) -> Response<Body> {
    r.map(BodyExt::boxed)
}

/// The client's address, in each request's extensions (for the audit log
/// and the per-address rate limit): the peer's, or behind a trusted proxy the
/// one it names (`client_addr`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub SocketAddr);

fn client_ip<B>(req: &Request<B>) -> std::net::IpAddr {
    req.extensions()
        .get::<ClientAddr>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip())
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let Some(matched) = router::route(req.uri().path()) else {
        return boxed(refused(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        )));
    };
    let spec = matched.spec;
    if let Some(r) = spec.admin() {
        return boxed(admin::handle(&state, spec, r, matched.param, req).await);
    }
    let Some(route) = spec.route_for(req.method().as_str()) else {
        return boxed(router::method_not_allowed(spec));
    };
    let result = match route {
        Route::MessagePoll => live::http::poll(&state, req.headers(), req.uri().query()).await,
        Route::MessageEvents => live::http::sse(&state, req.headers(), req.uri().query()).await,
        Route::Reply => replies::handle(&state, matched.param, req).await.map(boxed),
        r => handle_full(state, r, matched.param, req).await.map(boxed),
    };
    result.unwrap_or_else(|e| boxed(refused(e)))
}

/// An error as its answer, logged: failures at warn, refusals at debug.
pub(crate) fn refused(e: ApiError) -> Response<Full<Bytes>> {
    if e.status.is_server_error() {
        tracing::warn!(status = e.status.as_u16(), code = e.code, "request failed");
    } else {
        tracing::debug!(status = e.status.as_u16(), code = e.code, "request refused");
    }
    e.into_response()
}

/// The routes whose answers are whole bodies.
async fn handle_full(
    state: Arc<State>,
    route: Route,
    param: Option<String>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    match route {
        Route::Health => Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::OpenApi => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                router::OPENAPI_JSON.as_bytes(),
            )));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
        Route::Handshake(p) => {
            webhook::handshake(&state, p, client_ip(&req), req.uri().query()).await
        }
        Route::Webhook(p) => {
            let arrived = std::time::Instant::now();
            let ip = client_ip(&req);
            let (parts, body) = req.into_parts();
            let mut attempt = crate::diag::Attempt::default();
            let answer = webhook::deliver(&state, p, ip, &parts.headers, body, &mut attempt).await;
            let (status, code) = match &answer {
                Ok(r) => (r.status().as_u16(), None),
                Err(e) => (e.status.as_u16(), Some(e.code)),
            };
            state
                .metrics
                .webhook(p.name(), status, code, arrived.elapsed());
            crate::diag::record(&state.diag, p.name(), arrived, status, code, &attempt);
            answer
        }
        Route::MessageStream => ws::handle(state.clone(), req).await,
        Route::Inbox(r) => inbox::handle(&state, r, param, req).await,
        Route::MessagePoll | Route::MessageEvents | Route::Admin(_) | Route::Reply => Err(
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route"),
        ),
    }
}

/// Accept errors (out of file descriptors, mostly) back off up to this long.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

pub(crate) async fn serve(
    state: Arc<State>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A client that trickles its headers does not hold a connection forever.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(HTTP1_MAX_HEAD_BYTES)
        .max_headers(HTTP1_MAX_HEADERS);
    // HTTP/2 peers that vanish are found by pings; streams per connection are bounded.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .max_concurrent_streams(256)
        .max_header_list_size(HTTP1_MAX_HEAD_BYTES as u32);
    let limits = ConnLimits::new(
        state.config.max_connections,
        state.config.max_connections_per_ip,
    );
    let first_byte = state.config.first_byte_timeout();
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        // At the cap, wait here: further clients queue in the kernel's backlog.
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = limits.total_slot() => slot,
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(10);
                    a
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            },
        };
        let proxy = state.config.trusted_proxies.contains(peer.ip());
        let admitted = if proxy {
            Some(limits.admit_proxy(slot))
        } else {
            limits.admit(slot, peer.ip())
        };
        let Some(slot) = admitted else {
            tracing::debug!(ip = %peer.ip(), "too many connections from one address; refused");
            limits.refuse(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = tower::service_fn(move |mut req: Request<Incoming>| {
            let state = state.clone();
            let client = if proxy {
                let ip = state
                    .config
                    .trusted_proxies
                    .client_ip(peer.ip(), req.headers());
                SocketAddr::new(ip, peer.port())
            } else {
                peer
            };
            req.extensions_mut().insert(ClientAddr(client));
            async move {
                let response = match headers_too_large(&state.config.client_limits, req.headers()) {
                    Some(e) => boxed(e.into_response()),
                    None => handle(state.clone(), req).await,
                };
                if let Some(ErrorCode(code)) = response.extensions().get::<ErrorCode>() {
                    state.metrics.http_error(response.status().as_u16(), code);
                }
                Ok::<_, Infallible>(response)
            }
        });
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // hyper's header timer starts at the first byte; a connection that
            // sends nothing is timed here, from accept.
            let mut probe = [0u8; 1];
            tokio::select! {
                () = shutdown.cancelled() => return,
                first = tokio::time::timeout(first_byte, stream.peek(&mut probe)) => {
                    if !matches!(first, Ok(Ok(n)) if n > 0) {
                        tracing::debug!(%peer, "connection sent nothing in time; closed");
                        return;
                    }
                }
            }
            let conn = builder.serve_connection_with_upgrades(
                TokioIo::new(stream),
                TowerToHyperService::new(service),
            );
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("edge drained"),
        () = tokio::time::sleep(state.config.drain()) => {
            tracing::warn!("edge drain deadline passed; closing remaining connections");
        }
    }
    Ok(())
}
