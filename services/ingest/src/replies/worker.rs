//! A reply worker: reads the reply stream a batch at a time, claims the
//! whole batch in one call (`ClaimReplies`), sends the claimed replies
//! concurrently (up to `concurrency` in flight, each with its own retries),
//! and hands each platform answer to the recorder ([`super::record`]), which
//! records, announces and acknowledges them in batches too. Per reply this
//! is a share of two conversations transactions instead of two of its own.
//!
//! A reply left pending by a worker that died is reclaimed after
//! [`CLAIM_IDLE`] and its claim (its stream id) taken over, so it is sent by
//! one job at a time.

use std::{sync::Arc, time::Duration};

use faro_proto::{
    conversations::v1::{ClaimRepliesRequest, GetReplyDeliveryRequest, ReplyDelivery},
    ingest::v1::ReplyJob,
};
use fred::clients::Client;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    RepliesClient, SendConfig,
    platform::{self, Outcome},
    queue,
    record::{Answer, Recorder},
};
use crate::{publish, queue::Keys};

/// Longer than a reply's whole send (attempts, timeouts and backoff) usually takes.
const CLAIM_IDLE: Duration = Duration::from_secs(300);
const READ_BLOCK_MS: u64 = 1000;
/// Entries one read takes (and one claim call carries).
const READ_MAX: usize = 64;
/// Calls claiming a batch gets before its jobs are left to the reclaim.
pub(super) const RPC_ATTEMPTS: u32 = 8;

#[derive(Clone)]
pub(crate) struct ReplyWorker {
    pub redis: Client,
    pub publisher: Client,
    pub replies: RepliesClient,
    pub keys: Arc<Keys>,
    pub consumer: String,
    pub http: reqwest::Client,
    pub send: Arc<SendConfig>,
    pub history: publish::HistoryBounds,
}

/// Whether a conversations error is worth asking again at once.
pub(super) fn busy(s: &tonic::Status) -> bool {
    matches!(
        s.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// A job whose ids are not UUIDs names no reply: dropped, never sent to
/// conversations, where it would fail its whole batch.
fn well_formed(job: &ReplyJob) -> bool {
    uuid::Uuid::parse_str(&job.tenant_id).is_ok() && uuid::Uuid::parse_str(&job.message_id).is_ok()
}

impl ReplyWorker {
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut pause = Duration::from_millis(100);
        while let Err(e) = queue::ensure_group(&self.publisher, &self.keys).await {
            tracing::warn!(error = %e, "cannot create the reply consumer group; retrying");
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
        let (answers, recorder) = Recorder::start(
            self.publisher.clone(),
            self.replies.clone(),
            self.keys.clone(),
            self.history,
            stop.clone(),
        );
        let permits = Arc::new(Semaphore::new(self.send.concurrency));
        let tasks = TaskTracker::new();
        let mut last_claim = tokio::time::Instant::now();
        loop {
            if stop.is_cancelled() {
                break;
            }
            // Take a permit first: never read more than can be worked on.
            let Ok(first) = permits.clone().acquire_owned().await else {
                break;
            };
            let count = u64::try_from((permits.available_permits() + 1).min(READ_MAX)).unwrap_or(1);
            let read = if last_claim.elapsed() >= CLAIM_IDLE / 4 {
                last_claim = tokio::time::Instant::now();
                let idle = u64::try_from(CLAIM_IDLE.as_millis()).unwrap_or(u64::MAX);
                queue::claim_stale(&self.redis, &self.keys, &self.consumer, idle).await
            } else {
                tokio::select! {
                    () = stop.cancelled() => {
                        crate::queue::unblock(&self.redis).await;
                        break;
                    }
                    r = queue::read_new(&self.redis, &self.keys, &self.consumer, count, READ_BLOCK_MS) => r,
                }
            };
            let entries = match read {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "reading replies failed; retrying");
                    if crate::queue::is_nogroup(&e) {
                        // Redis lost the group (a restart without persistence).
                        let _ = queue::ensure_group(&self.publisher, &self.keys).await;
                    }
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                    continue;
                }
            };
            let claimed = self.claim(entries, &answers, &stop).await;
            let mut first = Some(first);
            for (id, job, delivery) in claimed {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let w = self.clone();
                let stop = stop.clone();
                let answers = answers.clone();
                tasks.spawn(async move {
                    if let Some(a) = w.send_one(id, job, delivery, &stop).await {
                        // The recorder outlives every sender: it ends when they do.
                        let _ = answers.send(a).await;
                    }
                    drop(permit);
                });
            }
        }
        // Replies in flight finish their current send; their retries stop.
        tasks.close();
        tasks.wait().await;
        drop(answers);
        let _ = recorder.await;
    }

    /// Claims a read's replies in one call; the entries that are not this
    /// job's to send (undecodable, naming no reply, held by another job, no
    /// longer pending) are acknowledged through the recorder.
    async fn claim(
        &self,
        entries: Vec<queue::Entry>,
        answers: &mpsc::Sender<Answer>,
        stop: &CancellationToken,
    ) -> Vec<(String, ReplyJob, ReplyDelivery)> {
        let mut jobs = Vec::with_capacity(entries.len());
        for (id, job) in entries {
            match job {
                Some(job) if well_formed(&job) => jobs.push((id, job)),
                _ => {
                    tracing::warn!(entry = id, "undecodable reply job dropped");
                    let _ = answers.send(Answer::skip(id)).await;
                }
            }
        }
        if jobs.is_empty() {
            return Vec::new();
        }
        let request = ClaimRepliesRequest {
            claims: jobs
                .iter()
                .map(|(id, job)| GetReplyDeliveryRequest {
                    tenant_id: job.tenant_id.clone(),
                    message_id: job.message_id.clone(),
                    claim: id.clone(),
                })
                .collect(),
        };
        let mut replies = self.replies.clone();
        // Conversations busy or restarting: asked again here, not after the
        // jobs' reclaim minutes later.
        let mut tries = 0;
        let answer = loop {
            tries += 1;
            match replies.claim_replies(request.clone()).await {
                Err(s) if tries < RPC_ATTEMPTS && !stop.is_cancelled() && busy(&s) => {
                    tokio::time::sleep(crate::retry::redis_backoff(tries)).await;
                }
                other => break other,
            }
        };
        let deliveries = match answer {
            Ok(a) => a.into_inner().deliveries,
            Err(s) => {
                // Left pending: reclaimed after CLAIM_IDLE, when conversations is back.
                tracing::warn!(entries = jobs.len(), code = ?s.code(), "reply deliveries not available");
                return Vec::new();
            }
        };
        let mut out = Vec::with_capacity(jobs.len());
        for ((id, job), delivery) in jobs.into_iter().zip(
            deliveries
                .into_iter()
                .map(Some)
                .chain(std::iter::repeat(None)),
        ) {
            match delivery {
                Some(d) if d.claimed => out.push((id, job, d)),
                _ => {
                    let _ = answers.send(Answer::skip(id)).await;
                }
            }
        }
        out
    }

    /// Sends one claimed reply, retrying transient failures; None when
    /// stopping mid-retry (left pending, reclaimed and resumed elsewhere).
    async fn send_one(
        &self,
        id: String,
        job: ReplyJob,
        delivery: ReplyDelivery,
        stop: &CancellationToken,
    ) -> Option<Answer> {
        let policy = self.send.retry();
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let started = std::time::Instant::now();
            let outcome = platform::send(&self.http, &self.send, &delivery).await;
            tracing::debug!(
                provider = delivery.provider,
                attempt,
                ms = started.elapsed().as_millis() as u64,
                "reply send"
            );
            match outcome {
                Outcome::Failed {
                    transient: true, ..
                } if attempt < policy.attempts => {
                    let wait = policy.delay(attempt);
                    tokio::select! {
                        () = stop.cancelled() => return None,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                o => break o,
            }
        };
        if matches!(outcome, Outcome::Failed { .. }) {
            tracing::info!(provider = delivery.provider, "reply failed");
        }
        Some(Answer::outcome(id, job, outcome))
    }
}
