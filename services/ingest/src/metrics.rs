//! ingest's Prometheus metrics, in the service's own registry, served on its
//! operator listener (`--ingest-metrics-listen`). The queue's figures are
//! read from Redis on each scrape (`stats::queue_stats`, the same figures as
//! `QueueStats`): every ingest process reports the same shared queue, so
//! aggregate them with `max`, not `sum`.
//!
//! The same recording points count for the edge's diagnostics
//! (`faro_proto::diag`: processed, failed, dead letters, the `stored`
//! latency, by platform). Without a metrics listener neither is recorded.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{ChannelEvent, channel_event::Kind},
    diag::Diag,
    ingest::v1::Job,
    metrics::{
        Counter, Family, Gauge, Histogram, Refresh, Registry, duration_histogram, lag_buckets,
        seconds_between, size_buckets,
    },
};
use prometheus_client::{encoding::EncodeLabelSet, metrics::gauge::Gauge as FloatGauge};

use crate::queue::Keys;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Class {
    pub class: &'static str,
}

/// The queue's figures, set on each scrape.
#[derive(Clone, Default)]
struct Queue {
    length: Gauge,
    pending: Gauge,
    oldest_pending_age: FloatGauge<f64, std::sync::atomic::AtomicU64>,
    scheduled_retries: Gauge,
    dead_letters: Gauge,
    consumers: Gauge,
}

/// Every metric ingest records. Cloning shares the series.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub submitted: Counter,
    pub store_duration: Histogram,
    pub store_batch: Histogram,
    pub platform_lag: Histogram,
    pub stored_lag: Histogram,
    pub dead_lettered: Family<Class, Counter>,
    pub retries: Counter,
    queue: Queue,
    /// False without a metrics listener: nothing is recorded.
    on: bool,
    diag: Diag,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            submitted: Counter::default(),
            store_duration: duration_histogram(),
            store_batch: Histogram::new(size_buckets()),
            platform_lag: Histogram::new(lag_buckets()),
            stored_lag: Histogram::new(lag_buckets()),
            dead_lettered: Family::default(),
            retries: Counter::default(),
            queue: Queue::default(),
            on: false,
            diag: Diag::off(),
        }
    }
}

impl Metrics {
    /// `diag` on or not, Prometheus figures are recorded only when `on`.
    pub(crate) fn new(registry: &mut Registry, on: bool, diag: Diag) -> Self {
        let m = Self {
            on,
            diag,
            ..Self::default()
        };
        let r = registry;
        r.register(
            "ingest_jobs_submitted",
            "Webhooks queued by Submit (XADD acknowledged)",
            m.submitted.clone(),
        );
        r.register(
            "message_storage_duration_seconds",
            "Duration of each StoreEvents call to conversations, failed ones included",
            m.store_duration.clone(),
        );
        r.register(
            "ingest_store_batch_events",
            "Events sent in one StoreEvents call",
            m.store_batch.clone(),
        );
        r.register(
            "message_lag_platform_to_received_seconds",
            "From a message's platform timestamp to its webhook's arrival at the edge",
            m.platform_lag.clone(),
        );
        r.register(
            "message_lag_received_to_stored_seconds",
            "From a webhook's arrival at the edge to its job stored by conversations",
            m.stored_lag.clone(),
        );
        r.register(
            "ingest_jobs_dead_lettered",
            "Jobs (or parts of jobs: class partial) moved to the dead letters, by class",
            m.dead_lettered.clone(),
        );
        r.register(
            "ingest_retries_scheduled",
            "Jobs put in the retry set after a failed store",
            m.retries.clone(),
        );
        let q = &m.queue;
        r.register(
            "ingest_queue_length",
            "Jobs in the stream, pending ones included (read on scrape)",
            q.length.clone(),
        );
        r.register(
            "ingest_queue_pending",
            "Jobs read by a worker and not acknowledged yet (read on scrape)",
            q.pending.clone(),
        );
        r.register(
            "ingest_queue_oldest_pending_age_seconds",
            "Age of the oldest pending job, by Redis' clock (read on scrape)",
            q.oldest_pending_age.clone(),
        );
        r.register(
            "ingest_queue_scheduled_retries",
            "Jobs waiting in the retry set (read on scrape)",
            q.scheduled_retries.clone(),
        );
        r.register(
            "ingest_queue_dead_letters",
            "Entries in the dead-letter stream (read on scrape)",
            q.dead_letters.clone(),
        );
        r.register(
            "ingest_queue_consumers",
            "Consumers known to the workers' group (read on scrape)",
            q.consumers.clone(),
        );
        m
    }

    /// Reads the queue's figures from Redis into the gauges; a failure
    /// leaves the last values (and is logged at debug).
    pub(crate) fn refresh(&self, redis: fred::clients::Client, keys: Arc<Keys>) -> Refresh {
        let queue = self.queue.clone();
        faro_proto::metrics::refresh(move || {
            let (queue, redis, keys) = (queue.clone(), redis.clone(), keys.clone());
            async move {
                match crate::stats::queue_stats(&redis, &keys).await {
                    Ok(s) => {
                        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                        queue.length.set(int(s.stream_length));
                        queue.pending.set(int(s.pending));
                        queue
                            .oldest_pending_age
                            .set(Duration::from_millis(s.oldest_pending_age_ms).as_secs_f64());
                        queue.scheduled_retries.set(int(s.scheduled_retries));
                        queue.dead_letters.set(int(s.dead_letters));
                        queue.consumers.set(int(s.consumers.len() as u64));
                    }
                    Err(e) => tracing::debug!(error = %e, "queue figures unavailable for metrics"),
                }
            }
        })
    }

    /// The platform-to-arrival lag of each message in a job seen for the
    /// first time (clamped at zero: the platform's clock is not ours).
    pub(crate) fn platform_lags(&self, received_at: DateTime<Utc>, events: &[ChannelEvent]) {
        if !self.on {
            return;
        }
        for e in events {
            if let Some(Kind::Message(m)) = &e.kind
                && let Some(at) = faro_proto::from_timestamp(m.timestamp.as_ref())
            {
                self.platform_lag
                    .observe(seconds_between(at, received_at).max(0.0));
            }
        }
    }

    /// A job's arrival-to-stored lag, observed once it is stored.
    pub(crate) fn stored(&self, job: &Job, received_at: Option<DateTime<Utc>>) {
        if let Some(at) = received_at.filter(|_| self.on) {
            let secs = seconds_between(at, Utc::now()).max(0.0);
            self.stored_lag.observe(secs);
            let took = Duration::from_secs_f64(secs.min(1e9));
            self.diag.latency(platform(Some(job)), "stored", took);
        }
    }

    /// A job queued by `Submit`.
    pub(crate) fn submitted(&self) {
        if self.on {
            self.submitted.inc();
        }
    }

    /// One `StoreEvents` call of `events` events that took `took`.
    pub(crate) fn store_call(&self, events: usize, took: Duration) {
        if self.on {
            self.store_batch.observe(events as f64);
            self.store_duration.observe(took.as_secs_f64());
        }
    }

    /// A job whose store failed, scheduled for a retry.
    pub(crate) fn retry(&self, job: &Job) {
        if self.on {
            self.retries.inc();
            self.diag.count(platform(Some(job)), "failed", "", 1);
        }
    }

    /// A job (or part of one: `partial`) dead-lettered, of `class`.
    pub(crate) fn dead_letter(&self, job: Option<&Job>, class: &'static str) {
        if self.on {
            self.dead_lettered.get_or_create(&Class { class }).inc();
            self.diag.count(platform(job), "dead_letters", class, 1);
        }
    }

    /// Jobs stored, announced and acknowledged, each once (an id may come
    /// twice in a batch); `partial` when parts of it were dead-lettered with
    /// the ack.
    pub(crate) fn acked<'a>(&self, jobs: impl Iterator<Item = (&'a str, &'a Job, bool)>) {
        if !self.on {
            return;
        }
        let mut seen = std::collections::HashSet::new();
        for (_, job, partial) in jobs.filter(|(id, ..)| seen.insert(*id)) {
            self.diag.count(platform(Some(job)), "processed", "", 1);
            if partial {
                self.dead_letter(Some(job), "partial");
            }
        }
    }

    /// Flushes the diagnostics' last figures (at shutdown).
    pub(crate) async fn close(&self) {
        self.diag.close().await;
    }
}

/// A job's platform as the diagnostics name it.
fn platform(job: Option<&Job>) -> &'static str {
    job.and_then(|j| j.submission.as_ref())
        .and_then(|s| faro_proto::dead_letters::provider_name(s.provider()))
        .unwrap_or("unknown")
}
