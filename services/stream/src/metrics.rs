//! The stream service's Prometheus metrics, in its own registry, served on
//! its operator listener (`--stream-metrics-listen`).

use std::sync::Arc;

use faro_proto::metrics::{Gauge, Refresh, Registry};

use crate::hub::Hub;

/// Registers the hub's counters, and a gauge of its subscribers read on
/// each scrape; returns the hook that reads it.
pub(crate) fn register(registry: &mut Registry, hub: &Arc<Hub>) -> Refresh {
    let subscribers = Gauge::<i64>::default();
    registry.register(
        "stream_subscribers",
        "gRPC Subscribe streams open now (one per tenant per edge process)",
        subscribers.clone(),
    );
    registry.register(
        "stream_slow_subscribers_dropped",
        "Subscribe streams ended with DATA_LOSS because their buffer was full",
        hub.slow_dropped.clone(),
    );
    registry.register(
        "stream_events_dispatched",
        "Live events handed to their tenant's subscribers",
        hub.dispatched.clone(),
    );
    let hub = hub.clone();
    faro_proto::metrics::refresh(move || {
        subscribers.set(i64::try_from(hub.subscribers()).unwrap_or(i64::MAX));
        std::future::ready(())
    })
}
