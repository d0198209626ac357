//! Replies (issue 14): ingest's `SendService` takes an agent's reply from the
//! edge, has conversations check and store it (`CreateReply`: outbound,
//! `pending`), announces it (`message.created`) and queues it on a Redis
//! stream of its own, `{prefix}{ingest}:replies` (consumer group `senders`),
//! so that replies never wait behind webhooks nor hold them up. Reply
//! workers ([`worker`]) send it through the platform ([`platform`]) and
//! record the outcome (`message.updated`).

mod config;
mod platform;
mod queue;
mod record;
mod worker;

use std::sync::Arc;

use faro_proto::{
    conversations::v1::{CreateReplyRequest, CreateReplyResponse},
    ingest::v1::{ReplyJob, send_service_server::SendService},
};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

pub use config::SendConfig;
pub(crate) use worker::ReplyWorker;

use crate::{publish, queue::Keys};

/// The conversations client of the reply path.
pub(crate) type RepliesClient =
    faro_proto::conversations::v1::replies_service_client::RepliesServiceClient<
        faro_proto::client::Traced,
    >;

pub(crate) struct Send {
    pub redis: fred::clients::Client,
    pub keys: Arc<Keys>,
    pub replies: RepliesClient,
    pub history: publish::HistoryBounds,
    pub ready: watch::Receiver<bool>,
}

/// A status from conversations passed on with its code, message and the
/// broken rule (nothing else of its metadata).
fn forward(s: &Status) -> Status {
    let mut out = Status::new(s.code(), s.message());
    if let Some(rule) = s.metadata().get(faro_proto::RULE_METADATA) {
        out.metadata_mut()
            .insert(faro_proto::RULE_METADATA, rule.clone());
    }
    out
}

#[tonic::async_trait]
impl SendService for Send {
    async fn send_reply(
        &self,
        request: Request<CreateReplyRequest>,
    ) -> Result<Response<CreateReplyResponse>, Status> {
        if !*self.ready.borrow() {
            return Err(Status::unavailable("queue unavailable"));
        }
        let answer = self
            .replies
            .clone()
            .create_reply(request.into_inner())
            .await
            .map_err(|s| forward(&s))?
            .into_inner();
        let message = answer
            .stored
            .as_ref()
            .and_then(|s| s.message.as_ref())
            .ok_or_else(|| Status::internal("conversations returned no message"))?;
        // A repeated request whose reply is still pending queues it again: the
        // first job may have been lost. The reply's claim keeps it sent once.
        let queue_it = answer.created || message.status == "pending";
        let job = ReplyJob {
            tenant_id: message.tenant_id.clone(),
            message_id: message.id.clone(),
        };
        if answer.created
            && let Some(stored) = answer.stored.clone()
        {
            // Announced before it is queued, so `message.updated` never precedes it.
            let events = publish::events_of(
                faro_proto::conversations::v1::StoreEventsResponse {
                    stored: vec![stored],
                    ..Default::default()
                },
                false,
            );
            if let Err(e) =
                publish::publish_all(&self.redis, &self.keys, self.history, events).await
            {
                tracing::warn!(error = %e, "a new reply was not announced live");
            }
        }
        if queue_it {
            queue::enqueue(&self.redis, &self.keys, &job)
                .await
                .map_err(|e| Status::from(crate::Error::from(e)))?;
        }
        Ok(Response::new(answer))
    }
}
