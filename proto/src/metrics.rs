//! Prometheus metrics: what every service shares to expose its own.
//!
//! Each service instance builds one [`Registry`] of its own (never a
//! process-wide one: tests and `faro all` run several services in one
//! process) and, when given an operator listener, serves it as Prometheus
//! text (format 0.0.4) at `GET /metrics` with [`serve`]. Figures that live
//! elsewhere (the queue's depth in Redis) are read on each scrape by a
//! [`Refresh`] hook, bounded by [`REFRESH_TIMEOUT`], so an idle process does
//! no such work and a scrape never hangs on a dead dependency.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus_client::{
    encoding::prometheus_text::CONTENT_TYPE,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Reads figures kept elsewhere into the registry's gauges before a scrape.
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A [`Refresh`] from an async closure.
pub fn refresh<F, Fut>(f: F) -> Refresh
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Arc::new(move || -> Pin<Box<dyn Future<Output = ()> + Send>> { Box::pin(f()) })
}

/// The longest a scrape waits for its [`Refresh`]; past it the gauges keep
/// their last values.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// Bounds (seconds) for request and store durations: 1 ms to about 16 s.
pub fn duration_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 15)
}

/// Bounds (seconds) for lags, from a live event's few milliseconds to a
/// platform's delay or a job's retries: 1 ms to about 9 minutes.
pub fn lag_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 20)
}

/// Bounds for counts of items (events in a store call): 1 to 4096.
pub fn size_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(1.0, 2.0, 13)
}

/// A duration histogram with [`duration_buckets`].
pub fn duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

/// The registry as Prometheus text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, registry);
    out
}

/// Seconds between two instants of the wall clock, negative if `to` is
/// earlier (clocks of different machines): callers clamp at zero.
pub fn seconds_between(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> f64 {
    (to - from)
        .num_microseconds()
        .map_or(0.0, |us| us as f64 / 1e6)
}

/// Serves `GET /metrics` (and nothing else: 404) on `listener` until
/// `shutdown` fires. Meant for an operator port, not a public one.
pub async fn serve(
    registry: Arc<Registry>,
    refresh: Option<Refresh>,
    listener: TcpListener,
    shutdown: CancellationToken,
) {
    tracing::info!(addr = ?listener.local_addr().ok(), "metrics listening");
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, _) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (registry, refresh, builder) = (registry.clone(), refresh.clone(), builder.clone());
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (registry, refresh) = (registry.clone(), refresh.clone());
                async move { Ok::<_, Infallible>(answer(&registry, refresh.as_ref(), &req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

async fn answer(
    registry: &Registry,
    refresh: Option<&Refresh>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            if let Some(refresh) = refresh
                && tokio::time::timeout(REFRESH_TIMEOUT, refresh())
                    .await
                    .is_err()
            {
                tracing::debug!("metrics refresh timed out; serving the last figures");
            }
            (StatusCode::OK, CONTENT_TYPE, encode(registry))
        }
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "allowed: GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}
