//! The HTTP server: accept, route, and drain on shutdown.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
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
    Error, State,
    error::{ApiError, json_response},
    webhook::{self, Platform},
    ws,
};

/// Every path the edge serves, parsed once and matched.
enum Route {
    Health,
    Webhook(Platform),
    MessageStream,
}

fn route(path: &str) -> Option<Route> {
    match path.trim_end_matches('/') {
        "/healthz" => Some(Route::Health),
        "/api/v1/messages/stream" => Some(Route::MessageStream),
        p => p
            .strip_prefix("/api/v1/webhooks/")
            .and_then(Platform::from_path)
            .map(Route::Webhook),
    }
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("allowed: {allowed}"),
    )
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let result = match (route(req.uri().path()), req.method()) {
        (Some(Route::Health), &Method::GET) => {
            Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
        }
        (Some(Route::Health), _) => Err(method_not_allowed("GET")),
        (Some(Route::Webhook(p)), &Method::GET) => {
            webhook::handshake(&state, p, req.uri().query()).await
        }
        (Some(Route::Webhook(p)), &Method::POST) => {
            let (parts, body) = req.into_parts();
            webhook::deliver(&state, p, &parts.headers, body).await
        }
        (Some(Route::Webhook(p)), _) if !p.has_handshake() => Err(method_not_allowed("POST")),
        (Some(Route::Webhook(_)), _) => Err(method_not_allowed("GET, POST")),
        (Some(Route::MessageStream), &Method::GET) => ws::handle(state.clone(), req).await,
        (Some(Route::MessageStream), _) => Err(method_not_allowed("GET")),
        (None, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        )),
    };
    result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            tracing::warn!(status = e.status.as_u16(), code = e.code, "request failed");
        } else {
            tracing::debug!(status = e.status.as_u16(), code = e.code, "request refused");
        }
        e.into_response()
    })
}

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
        .header_read_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = tower::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        });
        let conn = builder.serve_connection_with_upgrades(
            TokioIo::new(stream),
            TowerToHyperService::new(service),
        );
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
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
