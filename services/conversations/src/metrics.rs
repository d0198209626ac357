//! The conversations service's Prometheus metrics, in its own registry,
//! served on its operator listener (`--conversations-metrics-listen`).

use faro_proto::metrics::{
    Counter, Gauge, Histogram, Refresh, Registry, duration_histogram, size_buckets,
};
use sqlx::PgPool;

/// What `StoreEvents` and the reply store record. Cloning shares the series.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub store_duration: Histogram,
    pub messages_stored: Counter,
    pub store_failures: Counter,
    /// `CreateReply` calls per transaction: whether replies arriving
    /// together are stored together (the gatherer's reason to exist).
    pub reply_batch_size: Histogram,
    pub reply_batch_duration: Histogram,
    /// False without a metrics listener: nothing is recorded.
    pub on: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            store_duration: duration_histogram(),
            messages_stored: Counter::default(),
            store_failures: Counter::default(),
            reply_batch_size: Histogram::new(size_buckets()),
            reply_batch_duration: duration_histogram(),
            on: false,
        }
    }
}

impl Metrics {
    /// Registers the metrics, and the pool's connections read on each
    /// scrape; returns the hook that reads them.
    pub(crate) fn new(registry: &mut Registry, pool: &PgPool, on: bool) -> (Self, Refresh) {
        let m = Self {
            on,
            ..Self::default()
        };
        registry.register(
            "conversations_store_duration_seconds",
            "Duration of StoreEvents as conversations serves it (its transactions)",
            m.store_duration.clone(),
        );
        registry.register(
            "conversations_messages_stored",
            "Messages newly inserted (duplicates of stored ones not counted)",
            m.messages_stored.clone(),
        );
        registry.register(
            "conversations_store_failures",
            "StoreEvents calls that failed",
            m.store_failures.clone(),
        );
        registry.register(
            "conversations_reply_batch_calls",
            "CreateReply calls stored by one transaction (gathered while the previous batch was stored)",
            m.reply_batch_size.clone(),
        );
        registry.register(
            "conversations_reply_batch_duration_seconds",
            "Duration of storing one batch of replies (its transaction)",
            m.reply_batch_duration.clone(),
        );
        let (size, idle) = (Gauge::<i64>::default(), Gauge::<i64>::default());
        registry.register(
            "conversations_db_connections",
            "Connections in the application's Postgres pool (read on scrape)",
            size.clone(),
        );
        registry.register(
            "conversations_db_connections_idle",
            "Idle connections in that pool (read on scrape)",
            idle.clone(),
        );
        let pool = pool.clone();
        let refresh = faro_proto::metrics::refresh(move || {
            size.set(i64::from(pool.size()));
            idle.set(i64::try_from(pool.num_idle()).unwrap_or(i64::MAX));
            std::future::ready(())
        });
        (m, refresh)
    }
}

impl Metrics {
    /// One `StoreEvents` served in `took`: `stored` new messages, or failed.
    pub(crate) fn stored(&self, took: std::time::Duration, stored: Option<usize>) {
        if !self.on {
            return;
        }
        self.store_duration.observe(took.as_secs_f64());
        match stored {
            Some(n) => self.messages_stored.inc_by(n as u64),
            None => self.store_failures.inc(),
        };
    }

    /// One batch of `calls` replies stored (or refused as a whole) in `took`.
    pub(crate) fn reply_batch(&self, calls: usize, took: std::time::Duration) {
        if !self.on {
            return;
        }
        self.reply_batch_size.observe(calls as f64);
        self.reply_batch_duration.observe(took.as_secs_f64());
    }
}
