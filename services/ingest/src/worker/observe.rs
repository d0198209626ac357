//! What a worker tells operators about its jobs: the span each batch runs
//! in, continuing the webhooks' traces across the queue, and the seed's
//! `webhook.processed` / `message.stored` events (target `faro::event`).

use faro_proto::{conversations::v1::StoreEventsResponse, ingest::v1::Provider};
use tracing::Span;

use super::Ready;

/// The `worker.job` span of a batch. A span has one parent: it continues the
/// first traced job's trace and links every other job's, so that a batch of
/// one (the usual case at low load) is a plain child of its `ingest.submit`.
pub(super) fn job_span(ready: &[Ready]) -> Span {
    let span = tracing::info_span!("worker.job", jobs = ready.len(), otel.kind = "consumer");
    let mut carried = ready
        .iter()
        .filter_map(|r| r.job.submission.as_ref())
        .map(|s| s.traceparent.as_str())
        .filter(|t| !t.is_empty());
    if let Some(first) = carried.next() {
        faro_proto::trace::continue_from(&span, first);
        for other in carried {
            faro_proto::trace::link(&span, other);
        }
    }
    span
}

/// The platform as the edge's `webhook.*` events name it.
fn platform(provider: i32) -> &'static str {
    match Provider::try_from(provider) {
        Ok(Provider::WhatsappCloud) => "whatsapp",
        Ok(Provider::Messenger) => "messenger",
        Ok(Provider::Instagram) => "instagram",
        Ok(Provider::Ycloud) => "ycloud",
        _ => "unknown",
    }
}

fn ms_since(t: Option<chrono::DateTime<chrono::Utc>>) -> f64 {
    t.and_then(|t| (chrono::Utc::now() - t).num_microseconds())
        .map_or(0.0, |us| us as f64 / 1e3)
}

/// `message.stored`, one per message the store created (debug: one line per
/// message is too dear on the hot path at info). Ids and timing only.
pub(super) fn stored(outcome: &StoreEventsResponse) {
    if !tracing::enabled!(target: "faro::event", tracing::Level::DEBUG) {
        return;
    }
    for m in outcome.stored.iter().filter_map(|s| s.message.as_ref()) {
        tracing::debug!(
            target: "faro::event",
            event = "message.stored",
            tenant = %m.tenant_id,
            message_id = %m.id,
            conversation_id = %m.conversation_id,
            channel_message_id = %m.channel_message_id,
            // Platform timestamp to stored.
            latency_ms = ms_since(faro_proto::from_timestamp(m.timestamp.as_ref())),
            "message stored"
        );
    }
}

/// `webhook.processed`, one per job stored, published and acked.
pub(super) fn processed(jobs: &[Ready]) {
    for r in jobs {
        let Some(s) = r.job.submission.as_ref() else {
            continue;
        };
        let platform = platform(s.provider);
        tracing::info!(
            target: "faro::event",
            event = "webhook.processed",
            platform,
            tenant = s.routes.first().map_or("", |r| r.tenant_id.as_str()),
            job_id = %r.id,
            request_id = %s.request_id,
            attempt = r.attempt,
            events = r.events.len(),
            rejected = r.rejected.len(),
            // Edge received to acked here.
            latency_ms = ms_since(r.received_at),
            "webhook processed"
        );
    }
}
