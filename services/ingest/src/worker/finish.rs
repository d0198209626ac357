//! How a worker finishes its jobs: publish and ack what was stored, retry or
//! dead-letter what failed.

use std::collections::HashSet;

use faro_proto::conversations::v1::StoreEventsResponse;

use super::{
    Class, Ready, Worker, events_of, publish_all, queue, rejected_json, rejected_summary, retry,
};

impl Worker {
    /// A job whose store failed: dead-lettered if retrying cannot help or it
    /// has had its attempts, otherwise scheduled for a retry after a backoff.
    pub(super) async fn failed(&self, r: &Ready, class: Class, error: &str) {
        let mut job = r.job.clone();
        retry::record_failure(&mut job, &r.id, r.attempt, error);
        if class == Class::Permanent {
            self.dead_letter(&r.id, Some(&job), error, "permanent")
                .await;
            return;
        }
        if r.attempt >= self.retry.attempts {
            let why = format!("failed {} attempts; the last: {error}", r.attempt);
            self.dead_letter(&r.id, Some(&job), &why, "exhausted").await;
            return;
        }
        let delay = self.retry.delay(r.attempt);
        match retry::schedule(&self.redis, &self.keys, &r.id, &job, delay).await {
            Ok(_) => {
                self.metrics.retry(&r.job);
            }
            Err(e) => {
                tracing::warn!(error = %e, job = %r.id, "scheduling a retry failed; job stays pending");
                return;
            }
        }
        tracing::warn!(
                job = %r.id,
                attempt = r.attempt,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error,
                "store failed; job scheduled for a retry"
        );
    }

    pub(super) async fn publish_and_ack(
        &self,
        jobs: &[Ready],
        outcome: StoreEventsResponse,
        redelivered: bool,
    ) {
        // A redelivered job may have been stored but not announced before its
        // worker died: announce everything again (clients dedupe by message id).
        super::observe::stored(&outcome);
        let events = events_of(outcome, redelivered);
        if let Err(e) = publish_all(&self.publisher, &self.keys, self.history, events).await {
            tracing::warn!(error = %e, "publish failed; jobs stay pending");
            return;
        }
        let ids: Vec<String> = jobs
            .iter()
            .map(|j| j.id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut listed = HashSet::new();
        let partly_dead: Vec<queue::PartlyDead<'_>> = jobs
            .iter()
            .filter(|j| !j.rejected.is_empty() && listed.insert(j.id.as_str()))
            .map(|j| queue::PartlyDead {
                id: &j.id,
                job: &j.job,
                error: rejected_summary(&j.rejected),
                rejected: rejected_json(&j.rejected),
            })
            .collect();
        match queue::ack(&self.redis, &self.keys, &ids, &partly_dead).await {
            Ok(_) => {
                let acked = jobs
                    .iter()
                    .map(|j| (j.id.as_str(), &j.job, !j.rejected.is_empty()));
                self.metrics.acked(acked);
                super::observe::processed(jobs);
            }
            Err(e) => {
                tracing::warn!(error = %e, "ack failed; jobs will be redelivered and deduplicated")
            }
        };
    }

    pub(super) async fn dead_letter(
        &self,
        id: &str,
        job: Option<&faro_proto::ingest::v1::Job>,
        error: &str,
        class: &'static str,
    ) {
        tracing::error!(job = %id, error, class, "job cannot be processed; dead-lettered");
        match queue::dead_letter(&self.redis, &self.keys, id, job, error, class).await {
            Ok(_) => self.metrics.dead_letter(job, class),
            Err(e) => {
                tracing::warn!(error = %e, job = %id, "dead-lettering failed; job stays pending")
            }
        };
    }
}
