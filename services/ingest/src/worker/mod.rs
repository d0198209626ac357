//! One worker: read a batch, parse, store, publish, ack. In that order, so
//! nothing is acknowledged before it is stored and announced.

use std::time::{Duration, Instant};

use faro_proto::{
    conversations::v1::{ChannelEvent, StoreEventsRequest, StoreEventsResponse},
    from_timestamp,
    ingest::v1::Provider,
};
use fred::clients::Client;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    ConversationsClient,
    batch::{chunks, rejected_json, rejected_summary, stamp_arrivals},
    parse,
    publish::{HistoryBounds, events_of, publish_all},
    queue::{self, Entry, Keys},
    retry::{self, Class},
};

mod finish;
mod observe;

const BLOCK_MS: u64 = 1000;
/// Calls per chunk of a batch in one pass: one quick retry rides out a blip
/// (a deadlock victim, a reconnect); longer failures go to the retry set.
pub(crate) const STORE_PASS_ATTEMPTS: u32 = 2;
/// The most the pause before that quick retry lasts.
pub(crate) const STORE_PASS_PAUSE: Duration = Duration::from_millis(200);

pub(crate) struct Worker {
    pub redis: Client,
    pub publisher: Client,
    pub conversations: ConversationsClient,
    pub keys: Keys,
    pub consumer: String,
    pub batch: usize,
    pub claim_idle: Duration,
    pub history: HistoryBounds,
    /// The deadline of each store call, also sent to conversations.
    pub store_deadline: Duration,
    pub retry: retry::Policy,
    pub metrics: crate::metrics::Metrics,
}

/// A decoded, parsed job awaiting storage.
struct Ready {
    id: String,
    /// Kept whole, so that a job conversations rejects is dead-lettered re-drivable.
    job: faro_proto::ingest::v1::Job,
    events: Vec<ChannelEvent>,
    /// Parts of the payload that can never be stored: dead-lettered with the ack.
    rejected: Vec<parse::Rejected>,
    /// The number of this attempt: the failed ones written into the job, plus
    /// the deliveries Redis counted (more than one if workers died with it).
    attempt: u32,
    /// When the edge received the webhook, for the arrival-to-stored lag.
    received_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a store pass did not succeed.
enum Stored {
    /// Stored; `redelivered` when some call may have been a second try of
    /// one that committed unheard, so everything is to be announced again.
    Done {
        outcome: StoreEventsResponse,
        redelivered: bool,
    },
    Failed {
        class: Class,
        error: String,
    },
    /// Stopping: the jobs stay pending for the next worker, no attempt counted.
    Stopped,
}

impl Worker {
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        tracing::info!(consumer = %self.consumer, "ingest worker started");
        let mut last_claim = Instant::now() - self.claim_idle;
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let result = match retry::promote_due(&self.redis, &self.keys, self.batch).await {
                Err(e) => Err(e),
                Ok(promoted) => {
                    if promoted > 0 {
                        tracing::debug!(count = promoted, "due retries back in the stream");
                    }
                    if last_claim.elapsed() >= self.claim_idle / 2 {
                        last_claim = Instant::now();
                        self.claim_and_process(&stop).await
                    } else {
                        self.read_and_process(&stop).await
                    }
                }
            };
            match result {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    if queue::is_nogroup(&e) {
                        tracing::warn!("consumer group missing (redis restarted?): recreating");
                        let _ = queue::ensure_group(&self.redis, &self.keys).await;
                    } else {
                        tracing::warn!(error = %e, consumer = %self.consumer, "worker redis error");
                    }
                    let pause = retry::redis_backoff(failures);
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
        queue::quit(&self.redis).await;
        tracing::info!(consumer = %self.consumer, "ingest worker stopped");
    }

    async fn read_and_process(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(), fred::error::Error> {
        let read = queue::read_new(
            &self.redis,
            &self.keys,
            &self.consumer,
            self.batch,
            BLOCK_MS,
        );
        // Stopping does not wait out the block: the read is dropped and
        // interrupted (see `queue::unblock` for why no job is lost).
        let entries = tokio::select! {
            r = read => r?,
            () = stop.cancelled() => {
                queue::unblock(&self.redis).await;
                return Ok(());
            }
        };
        let mut fresh = Vec::with_capacity(entries.len());
        let mut retried = Vec::new();
        for entry in entries {
            if let Some(r) = self.prepare(entry, 1).await {
                if r.job.attempt == 0 {
                    fresh.push(r);
                } else {
                    retried.push(r);
                }
            }
        }
        // A job that failed before shares no call with others: if it is a
        // poison job, it cannot fail its neighbours again.
        self.process(fresh, false, stop).await;
        let mut waiting: Vec<String> = retried.iter().map(|r| r.id.clone()).collect();
        for r in retried {
            self.hold(&waiting).await;
            waiting.remove(0);
            self.process(vec![r], true, stop).await;
        }
        Ok(())
    }

    /// Reclaimed jobs are processed one by one: one of them may be what made
    /// their worker die, and it must not take its neighbours down again.
    async fn claim_and_process(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(), fred::error::Error> {
        let idle_ms = u64::try_from(self.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let entries =
            queue::claim_stale(&self.redis, &self.keys, &self.consumer, idle_ms, self.batch)
                .await?;
        if !entries.is_empty() {
            tracing::info!(count = entries.len(), consumer = %self.consumer, "reclaimed abandoned jobs");
        }
        let mut waiting: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
        for entry in entries {
            self.hold(&waiting).await;
            waiting.remove(0);
            let deliveries = retry::deliveries(&self.redis, &self.keys, &entry.id).await?;
            if let Some(r) = self.prepare(entry, deliveries).await {
                self.process(vec![r], true, stop).await;
            }
        }
        Ok(())
    }

    /// Stores a batch in one pass. On a failure that may be one job's fault,
    /// each job is tried alone; failed jobs are retried later or dead-lettered.
    async fn process(&mut self, ready: Vec<Ready>, redelivered: bool, stop: &CancellationToken) {
        if ready.is_empty() {
            return;
        }
        let span = observe::job_span(&ready);
        self.process_traced(ready, redelivered, stop)
            .instrument(span)
            .await;
    }

    async fn process_traced(
        &mut self,
        ready: Vec<Ready>,
        redelivered: bool,
        stop: &CancellationToken,
    ) {
        let all: Vec<ChannelEvent> = ready.iter().flat_map(|r| r.events.clone()).collect();
        let ids: Vec<String> = ready.iter().map(|r| r.id.clone()).collect();
        let started = Instant::now();
        let events = all.len();
        match self.store(all, redelivered, &ids, stop).await {
            Stored::Done {
                outcome,
                redelivered,
            } => {
                let stored_in = started.elapsed();
                for r in ready.iter().filter(|r| !r.events.is_empty()) {
                    self.metrics.stored(&r.job, r.received_at);
                }
                self.publish_and_ack(&ready, outcome, redelivered).await;
                tracing::debug!(
                    jobs = ready.len(),
                    events,
                    store_ms = stored_in.as_millis(),
                    total_ms = started.elapsed().as_millis(),
                    "batch done"
                );
            }
            Stored::Stopped => {}
            Stored::Failed { class, error } if ready.len() > 1 && class != Class::Outage => {
                // Find the job at fault rather than failing its neighbours. The
                // failed call may have committed other tenants' parts (one
                // transaction per tenant) or earlier chunks, which now come
                // back as already stored: each retry is a redelivery, so that
                // they are announced.
                tracing::warn!(error = %error, jobs = ready.len(), "batch failed; storing its jobs one by one");
                for (n, r) in ready.iter().enumerate() {
                    self.hold(&ids[n..]).await;
                    let one = std::slice::from_ref(&r.id);
                    match self.store(r.events.clone(), true, one, stop).await {
                        Stored::Done { outcome, .. } => {
                            if !r.events.is_empty() {
                                self.metrics.stored(&r.job, r.received_at);
                            }
                            self.publish_and_ack(std::slice::from_ref(r), outcome, true)
                                .await;
                        }
                        Stored::Failed { class, error } => self.failed(r, class, &error).await,
                        Stored::Stopped => return,
                    }
                }
            }
            Stored::Failed { class, error } => {
                for r in &ready {
                    self.failed(r, class, &error).await;
                }
            }
        }
    }

    /// Resets the idle time of jobs this worker holds and is about to handle
    /// one by one: however long the ones before them take, each in its own
    /// store deadline, they never look abandoned to other workers.
    async fn hold(&self, ids: &[String]) {
        if ids.len() < 2 {
            return;
        }
        if let Err(e) = queue::touch(&self.redis, &self.keys, &self.consumer, ids).await {
            tracing::debug!(error = %e, "could not refresh the jobs' idle time");
        }
    }

    /// Decodes and parses an entry; one that never can be is dead-lettered
    /// here. `deliveries` is how often Redis handed it out. A job abandoned
    /// by dying workers as often as it may be tried is dead-lettered too.
    async fn prepare(&self, entry: Entry, deliveries: u32) -> Option<Ready> {
        let id = entry.id;
        let mut job = match entry.job {
            Ok(job) => job,
            Err(e) => {
                self.dead_letter(&id, None, &e, "permanent").await;
                return None;
            }
        };
        let attempt = job.attempt.saturating_add(deliveries.max(1));
        if attempt > self.retry.attempts {
            let error = format!(
                "abandoned: delivered {deliveries} times to workers that never finished it"
            );
            retry::record_failure(&mut job, &id, attempt - 1, &error);
            self.dead_letter(&id, Some(&job), &error, "exhausted").await;
            return None;
        }
        let Some(sub) = job.submission.as_ref() else {
            self.dead_letter(&id, Some(&job), "job has no submission", "permanent")
                .await;
            return None;
        };
        let provider = Provider::try_from(sub.provider).unwrap_or(Provider::Unspecified);
        let received_at = from_timestamp(sub.received_at.as_ref());
        let ctx = parse::Context {
            routes: &sub.routes,
            meta_app_id: &sub.meta_app_id,
            received_at: received_at.unwrap_or_else(chrono::Utc::now),
        };
        match parse::parse(provider, &sub.payload, &ctx) {
            Ok(mut parsed) => {
                let origin = if job.origin_id.is_empty() {
                    &id
                } else {
                    &job.origin_id
                };
                stamp_arrivals(origin, &mut parsed.events);
                if let Some(first) = parsed.rejected.first() {
                    tracing::warn!(job = %id, count = parsed.rejected.len(), reason = %first.reason,
                        "parts of a payload cannot be stored; they will be dead-lettered");
                }
                tracing::debug!(job = %id, events = parsed.events.len(), ignored = parsed.ignored, attempt, "job parsed");
                // Once per webhook: not again for a retry or a redelivery.
                if attempt == 1 && received_at.is_some() {
                    self.metrics.platform_lags(ctx.received_at, &parsed.events);
                }
                Some(Ready {
                    id,
                    job,
                    events: parsed.events,
                    rejected: parsed.rejected,
                    attempt,
                    received_at,
                })
            }
            Err(e) => {
                let error = e.to_string();
                retry::record_failure(&mut job, &id, attempt, &error);
                self.dead_letter(&id, Some(&job), &error, "permanent").await;
                None
            }
        }
    }

    /// Stores `events` (of the jobs `ids`) in chunks, each call with its
    /// deadline and one quick retry. A call that failed may still have
    /// committed (a deadline passed while conversations went on, an answer
    /// was lost): its retry is a redelivery, so that what it finds stored
    /// already is announced all the same.
    async fn store(
        &mut self,
        events: Vec<ChannelEvent>,
        mut redelivered: bool,
        ids: &[String],
        stop: &CancellationToken,
    ) -> Stored {
        let mut all = StoreEventsResponse::default();
        let mut touched = Instant::now();
        for chunk in chunks(&events) {
            let mut attempt = 0;
            loop {
                attempt += 1;
                // A pass may make several calls, each within its deadline:
                // keep the jobs from looking abandoned meanwhile.
                if touched.elapsed() >= self.store_deadline / 2 {
                    if let Err(e) = queue::touch(&self.redis, &self.keys, &self.consumer, ids).await
                    {
                        tracing::debug!(error = %e, "could not refresh the jobs' idle time");
                    }
                    touched = Instant::now();
                }
                redelivered |= attempt > 1;
                let mut request = tonic::Request::new(StoreEventsRequest {
                    events: chunk.to_vec(),
                    redelivered,
                });
                request.set_timeout(self.store_deadline);
                let call = Instant::now();
                let answer = self.conversations.store_events(request).await;
                self.metrics.store_call(chunk.len(), call.elapsed());
                match answer {
                    Ok(r) => {
                        let r = r.into_inner();
                        all.stored.extend(r.stored);
                        all.updated.extend(r.updated);
                        all.conversation_events.extend(r.conversation_events);
                        all.account_events.extend(r.account_events);
                        break;
                    }
                    Err(s) => {
                        let class = retry::classify(s.code());
                        if class != Class::Permanent && stop.is_cancelled() {
                            return Stored::Stopped;
                        }
                        if class == Class::Permanent || attempt >= STORE_PASS_ATTEMPTS {
                            let error = retry::describe(&s, class, self.store_deadline);
                            return Stored::Failed { class, error };
                        }
                        tracing::debug!(code = ?s.code(), attempt, "store failed; retrying");
                        let pause = rand::random_range(STORE_PASS_PAUSE / 2..=STORE_PASS_PAUSE);
                        tokio::select! {
                            () = stop.cancelled() => return Stored::Stopped,
                            () = tokio::time::sleep(pause) => {}
                        }
                    }
                }
            }
        }
        Stored::Done {
            outcome: all,
            redelivered,
        }
    }
}
