//! The edge's Prometheus metrics, registered in the edge's own registry and
//! served on its operator listener (`--edge-metrics-listen`), never on the
//! public port. Labels are bounded: a platform, an HTTP status, an error code.
//! No tenant, account or message id is ever a label.

use std::time::Duration;

use faro_proto::metrics::{
    Counter, Family, Gauge, Histogram, Registry, duration_histogram, lag_buckets,
};
use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Received {
    pub platform: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Platform {
    pub platform: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Refused {
    pub platform: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpError {
    pub status: u16,
    pub code: &'static str,
}

/// Every metric the edge records. Cloning shares the series.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub webhook_received: Family<Received, Counter>,
    pub webhook_duration: Family<Platform, Histogram>,
    pub signature_failures: Family<Refused, Counter>,
    pub http_errors: Family<HttpError, Counter>,
    pub delivery_latency: Histogram,
    pub websockets: Gauge,
    pub slow_consumers: Counter,
    /// False without an operator listener: the per-request figures are not
    /// recorded at all (see `run_with_metrics`).
    pub on: bool,
}

impl Metrics {
    pub(crate) fn new(registry: &mut Registry, on: bool) -> Self {
        let m = Self {
            webhook_received: Family::default(),
            webhook_duration: Family::new_with_constructor(duration_histogram),
            signature_failures: Family::default(),
            http_errors: Family::default(),
            delivery_latency: Histogram::new(lag_buckets()),
            websockets: Gauge::default(),
            slow_consumers: Counter::default(),
            on,
        };
        registry.register(
            "webhook_received",
            "Webhook deliveries (POST) by platform and the HTTP status answered",
            m.webhook_received.clone(),
        );
        registry.register(
            "webhook_processing_duration_seconds",
            "From a webhook's arrival to its 200 (verified and queued in Redis)",
            m.webhook_duration.clone(),
        );
        registry.register(
            "webhook_signature_failures",
            "Webhooks refused for their signature: missing, malformed, stale or not matching",
            m.signature_failures.clone(),
        );
        registry.register(
            "edge_http_errors",
            "Requests the edge answered 4xx or 5xx, by status and error code (any route)",
            m.http_errors.clone(),
        );
        registry.register(
            "real_time_delivery_latency_seconds",
            "From an event's publication by ingest to its write to an agent's WebSocket",
            m.delivery_latency.clone(),
        );
        registry.register(
            "edge_websockets_connected",
            "Agents' WebSockets open now",
            m.websockets.clone(),
        );
        registry.register(
            "edge_slow_consumers_dropped",
            "Live clients closed because their queue overflowed (4002)",
            m.slow_consumers.clone(),
        );
        m
    }

    /// A webhook POST answered `status` after `took` (the duration counts
    /// only deliveries answered 200), or refused with `code`.
    pub(crate) fn webhook(
        &self,
        platform: &'static str,
        status: u16,
        code: Option<&'static str>,
        took: Duration,
    ) {
        if !self.on {
            return;
        }
        self.webhook_received
            .get_or_create(&Received { platform, status })
            .inc();
        if status == 200 {
            self.webhook_duration
                .get_or_create(&Platform { platform })
                .observe(took.as_secs_f64());
        }
        if let Some(reason @ ("missing_signature" | "invalid_signature" | "stale_signature")) = code
        {
            self.signature_failures
                .get_or_create(&Refused { platform, reason })
                .inc();
        }
    }

    pub(crate) fn http_error(&self, status: u16, code: &'static str) {
        if !self.on {
            return;
        }
        self.http_errors
            .get_or_create(&HttpError { status, code })
            .inc();
    }
}

/// Counts one open WebSocket while it lives.
pub(crate) struct Connected(Gauge);

impl Connected {
    pub(crate) fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}
