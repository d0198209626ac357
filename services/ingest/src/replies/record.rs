//! The reply worker's recorder: platform answers arrive one by one from the
//! sends; whatever has arrived is recorded in one call
//! (`RecordReplyResults`, one conversations transaction), announced in one
//! publish per tenant and acknowledged in one Redis transaction. While one
//! batch is being recorded the next gathers, so batches grow with the load
//! and a lone reply waits for nobody.

use std::sync::Arc;

use faro_proto::{
    conversations::v1::{RecordReplyResultRequest, RecordReplyResultsRequest, StoreEventsResponse},
    ingest::v1::ReplyJob,
};
use fred::clients::Client;
use serde_json::json;
use tokio::{sync::Semaphore, sync::mpsc, task::JoinHandle};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{RepliesClient, platform::Outcome, queue, worker::RPC_ATTEMPTS};
use crate::{publish, queue::Keys};

/// Answers one record call carries.
const BATCH_MAX: usize = 128;
/// Record calls in flight at once: one, so that the answers that come while
/// a batch is recorded are recorded together next. With 4, batches stayed
/// near one answer at 1,000 replies/s, one transaction each (see
/// conversations' reply gatherer, which measured the same).
const IN_FLIGHT: usize = 1;

/// A stream entry done with: acknowledged, after its outcome (if any) is recorded.
pub(super) struct Answer {
    id: String,
    record: Option<RecordReplyResultRequest>,
}

/// An id conversations would refuse (and with it the whole batch).
fn usable(platform_id: &str) -> bool {
    !platform_id.is_empty()
        && platform_id.len() <= 512
        && !platform_id.contains('\0')
        && !platform_id.starts_with("faro:")
}

impl Answer {
    /// Nothing to record: not this job's to send, or undecodable.
    pub(super) fn skip(id: String) -> Self {
        Self { id, record: None }
    }

    pub(super) fn outcome(id: String, job: ReplyJob, outcome: Outcome) -> Self {
        let (platform_message_id, error_json) = match outcome {
            Outcome::Sent(pid) if usable(&pid) => (pid, String::new()),
            Outcome::Sent(_) => (
                String::new(),
                json!({"error": {"message": "the platform accepted the reply but named it with an unusable id"}})
                    .to_string(),
            ),
            Outcome::Failed { error, .. } => (String::new(), error.to_string()),
        };
        Self {
            id,
            record: Some(RecordReplyResultRequest {
                tenant_id: job.tenant_id,
                message_id: job.message_id,
                platform_message_id,
                error_json,
            }),
        }
    }
}

#[derive(Clone)]
pub(super) struct Recorder {
    publisher: Client,
    replies: RepliesClient,
    keys: Arc<Keys>,
    history: publish::HistoryBounds,
    stop: CancellationToken,
}

impl Recorder {
    /// Starts the recorder; it ends once every sender is dropped and the
    /// answers sent are recorded.
    pub(super) fn start(
        publisher: Client,
        replies: RepliesClient,
        keys: Arc<Keys>,
        history: publish::HistoryBounds,
        stop: CancellationToken,
    ) -> (mpsc::Sender<Answer>, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let r = Self {
            publisher,
            replies,
            keys,
            history,
            stop,
        };
        (tx, tokio::spawn(r.run(rx)))
    }

    async fn run(self, mut rx: mpsc::Receiver<Answer>) {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let tasks = TaskTracker::new();
        while let Some(first) = rx.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break;
            };
            // Everything that arrived meanwhile joins this batch.
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX
                && let Ok(a) = rx.try_recv()
            {
                batch.push(a);
            }
            let r = self.clone();
            tasks.spawn(async move {
                r.flush(batch).await;
                drop(slot);
            });
        }
        tasks.close();
        tasks.wait().await;
    }

    /// Records, announces and acknowledges one batch. An outcome that
    /// cannot be recorded is left pending (reclaimed later, sent again).
    async fn flush(&self, batch: Vec<Answer>) {
        let (to_record, skipped): (Vec<Answer>, Vec<Answer>) =
            batch.into_iter().partition(|a| a.record.is_some());
        let mut done: Vec<String> = skipped.into_iter().map(|a| a.id).collect();
        if !to_record.is_empty() {
            let request = RecordReplyResultsRequest {
                results: to_record.iter().filter_map(|a| a.record.clone()).collect(),
            };
            if self.record(request).await {
                done.extend(to_record.into_iter().map(|a| a.id));
            }
        }
        if !done.is_empty()
            && let Err(e) = queue::ack_all(&self.publisher, &self.keys, &done).await
        {
            tracing::warn!(error = %e, entries = done.len(), "acknowledging replies failed");
        }
    }

    /// Records and announces; false if the outcomes are not recorded.
    async fn record(&self, request: RecordReplyResultsRequest) -> bool {
        let mut replies = self.replies.clone();
        // The platform has answered: recording it is retried here rather than
        // by reclaiming the jobs, which would send the replies again.
        let mut tries = 0;
        let stored = loop {
            tries += 1;
            match replies.record_reply_results(request.clone()).await {
                Ok(s) => break s.into_inner(),
                Err(s) if tries < RPC_ATTEMPTS && !self.stop.is_cancelled() => {
                    tracing::warn!(code = ?s.code(), "recording replies' outcomes failed; retrying");
                    tokio::time::sleep(crate::retry::redis_backoff(tries)).await;
                }
                Err(s) => {
                    tracing::warn!(entries = request.results.len(), code = ?s.code(), "reply outcomes not recorded");
                    return false;
                }
            }
        };
        let mut updated = stored.merged_echoes;
        updated.extend(stored.replies);
        let events = publish::events_of(
            StoreEventsResponse {
                updated,
                ..Default::default()
            },
            false,
        );
        if let Err(e) =
            publish::publish_all(&self.publisher, &self.keys, self.history, events).await
        {
            tracing::warn!(error = %e, "replies' outcomes were not announced live");
        }
        true
    }
}
