//! A reply worker: reads the reply stream, and for each reply (many at once,
//! up to `concurrency`) claims it, sends it with retries, records the outcome
//! and announces it, then acknowledges it. A reply left pending by a worker
//! that died is reclaimed after [`CLAIM_IDLE`] and its claim (its stream id)
//! taken over, so it is sent by one job at a time.

use std::{sync::Arc, time::Duration};

use faro_proto::conversations::v1::{
    GetReplyDeliveryRequest, RecordReplyResultRequest, StoreEventsResponse,
};
use fred::clients::Client;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    RepliesClient, SendConfig,
    platform::{self, Outcome},
    queue,
};
use crate::{publish, queue::Keys};

/// Longer than a reply's whole send (attempts, timeouts and backoff) usually takes.
const CLAIM_IDLE: Duration = Duration::from_secs(300);
const READ_BLOCK_MS: u64 = 1000;
/// Calls recording a platform's answer gets (about 10 s in all).
const RECORD_ATTEMPTS: u32 = 8;

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
            let count = u64::try_from(permits.available_permits() + 1)
                .unwrap_or(1)
                .min(64);
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
            let mut first = Some(first);
            for (id, job) in entries {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let w = self.clone();
                let stop = stop.clone();
                tasks.spawn(async move {
                    w.process(&id, job, &stop).await;
                    drop(permit);
                });
            }
        }
        // Replies in flight finish their current send; their retries stop.
        tasks.close();
        tasks.wait().await;
    }

    async fn process(
        &self,
        id: &str,
        job: Option<faro_proto::ingest::v1::ReplyJob>,
        stop: &CancellationToken,
    ) {
        let Some(job) = job else {
            tracing::warn!(entry = id, "undecodable reply job dropped");
            self.ack(id).await;
            return;
        };
        let mut replies = self.replies.clone();
        // Conversations busy or restarting: asked again here, not after the
        // job's reclaim minutes later.
        let mut tries = 0;
        let delivery = loop {
            tries += 1;
            let answer = replies
                .get_reply_delivery(GetReplyDeliveryRequest {
                    tenant_id: job.tenant_id.clone(),
                    message_id: job.message_id.clone(),
                    claim: id.to_owned(),
                })
                .await;
            match answer {
                Err(s)
                    if tries < RECORD_ATTEMPTS
                        && !stop.is_cancelled()
                        && matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::DeadlineExceeded
                                | tonic::Code::ResourceExhausted
                        ) =>
                {
                    tokio::time::sleep(crate::retry::redis_backoff(tries)).await;
                }
                other => break other,
            }
        };
        let delivery = match delivery {
            Ok(d) => d.into_inner(),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::InvalidArgument
                ) =>
            {
                tracing::warn!(entry = id, code = ?s.code(), "reply job names no reply; dropped");
                self.ack(id).await;
                return;
            }
            Err(s) => {
                // Left pending: reclaimed after CLAIM_IDLE, when conversations is back.
                tracing::warn!(entry = id, code = ?s.code(), "reply delivery not available");
                return;
            }
        };
        if !delivery.claimed {
            self.ack(id).await;
            return;
        }
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
                        // Stopping: left pending, reclaimed and resumed by another worker.
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
                o => break o,
            }
        };
        let record = match outcome {
            Outcome::Sent(platform_id) => RecordReplyResultRequest {
                tenant_id: job.tenant_id,
                message_id: job.message_id,
                platform_message_id: platform_id,
                error_json: String::new(),
            },
            Outcome::Failed { error, .. } => {
                tracing::info!(provider = delivery.provider, "reply failed");
                RecordReplyResultRequest {
                    tenant_id: job.tenant_id,
                    message_id: job.message_id,
                    platform_message_id: String::new(),
                    error_json: error.to_string(),
                }
            }
        };
        // The platform has answered: recording it is retried here rather than
        // by reclaiming the job, which would send the reply again.
        let mut tries = 0;
        let stored = loop {
            tries += 1;
            match replies.record_reply_result(record.clone()).await {
                Ok(s) => break s.into_inner(),
                Err(s) if tries < RECORD_ATTEMPTS && !stop.is_cancelled() => {
                    tracing::warn!(entry = id, code = ?s.code(), "recording a reply's outcome failed; retrying");
                    tokio::time::sleep(crate::retry::redis_backoff(tries)).await;
                }
                Err(s) => {
                    tracing::warn!(entry = id, code = ?s.code(), "reply outcome not recorded");
                    return;
                }
            }
        };
        let events = publish::events_of(
            StoreEventsResponse {
                updated: vec![stored],
                ..Default::default()
            },
            false,
        );
        if let Err(e) =
            publish::publish_all(&self.publisher, &self.keys, self.history, events).await
        {
            tracing::warn!(error = %e, "a reply's outcome was not announced live");
        }
        self.ack(id).await;
    }

    async fn ack(&self, id: &str) {
        if let Err(e) = queue::ack(&self.publisher, &self.keys, id).await {
            tracing::warn!(error = %e, entry = id, "acknowledging a reply failed");
        }
    }
}
