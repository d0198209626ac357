use std::sync::Arc;

use faro_proto::ingest::v1::{
    GetDeadLetterRequest, GetDeadLetterResponse, Job, ListDeadLettersRequest,
    ListDeadLettersResponse, Provider, PurgeDeadLettersRequest, PurgeDeadLettersResponse,
    QueueStatsRequest, QueueStatsResponse, RetryDeadLettersRequest, RetryDeadLettersResponse,
    SubmitRequest, SubmitResponse, ingest_service_server::IngestService,
};
use faro_proto::{
    ingest::v1::{AnnounceRequest, AnnounceResponse},
    stream::v1::event::Kind,
};
use fred::clients::Client;
use tonic::{Request, Response, Status};

use crate::{Error, dlq, queue, stats};

/// Largest payload accepted; the edge enforces the same or a smaller limit.
const MAX_PAYLOAD: usize = faro_proto::MAX_WEBHOOK_BYTES;

pub(crate) struct Ingest {
    pub redis: Client,
    pub keys: Arc<queue::Keys>,
    /// False until Redis was first reached: answer at once rather than queue
    /// the command behind a connection that does not exist.
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub metrics: crate::metrics::Metrics,
    /// The workers' history bounds: announced changes share the tenant's history.
    pub history: crate::publish::HistoryBounds,
}

/// Events one Announce may carry.
const MAX_ANNOUNCED: usize = 100;

/// Only agents' changes may be announced this way, each for a tenant and a
/// location (live frames are filtered by location) and with no position yet:
/// the publish script assigns it.
fn validate_announced(req: &AnnounceRequest) -> Result<(), Error> {
    if req.events.is_empty() || req.events.len() > MAX_ANNOUNCED {
        return Err(Error::InvalidArgument(format!(
            "events must hold 1..={MAX_ANNOUNCED} events"
        )));
    }
    for e in &req.events {
        if !matches!(e.kind, Some(Kind::ConversationUpdated(_))) {
            return Err(Error::InvalidArgument(
                "only conversation_updated events may be announced".into(),
            ));
        }
        if uuid::Uuid::parse_str(&e.tenant_id).is_err()
            || uuid::Uuid::parse_str(&e.location_id).is_err()
        {
            return Err(Error::InvalidArgument(
                "tenant_id and location_id must be UUIDs".into(),
            ));
        }
        if e.offset != 0 || !e.epoch.is_empty() {
            return Err(Error::InvalidArgument(
                "offset and epoch are assigned when published".into(),
            ));
        }
    }
    Ok(())
}

/// The furthest ahead a paced webhook may be scheduled.
const MAX_DEFER_MS: u64 = 24 * 3_600_000;

fn validate(req: &SubmitRequest) -> Result<(), Error> {
    if Provider::try_from(req.provider).unwrap_or(Provider::Unspecified) == Provider::Unspecified {
        return Err(Error::InvalidArgument("provider must be set".into()));
    }
    if req.payload.is_empty() || req.payload.len() > MAX_PAYLOAD {
        return Err(Error::InvalidArgument(format!(
            "payload must be 1..={MAX_PAYLOAD} bytes"
        )));
    }
    if req.routes.is_empty() {
        return Err(Error::InvalidArgument(
            "at least one verified route is required".into(),
        ));
    }
    if req.defer_ms > MAX_DEFER_MS {
        return Err(Error::InvalidArgument(format!(
            "defer_ms must be at most {MAX_DEFER_MS} (one day)"
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl IngestService for Ingest {
    #[tracing::instrument(name = "ingest.submit", skip_all)]
    async fn submit(
        &self,
        request: Request<SubmitRequest>,
    ) -> Result<Response<SubmitResponse>, Status> {
        if !*self.ready.borrow() {
            return Err(Status::unavailable(
                "queue unavailable: redis not reached yet",
            ));
        }
        let mut submission = request.into_inner();
        validate(&submission)?;
        // The worker continues the trace from here, across the queue.
        if let Some(traceparent) = faro_proto::trace::traceparent() {
            submission.traceparent = traceparent;
        }
        let defer = std::time::Duration::from_millis(submission.defer_ms);
        let job = Job {
            submission: Some(submission),
            ..Job::default()
        };
        let job_id = if defer.is_zero() {
            queue::enqueue(&self.redis, &self.keys, &job).await?
        } else {
            crate::retry::defer(&self.redis, &self.keys, &job, defer)
                .await
                .map_err(Error::from)?
        };
        self.metrics.submitted();
        tracing::debug!(%job_id, defer_ms = defer.as_millis() as u64, "job queued");
        Ok(Response::new(SubmitResponse { job_id }))
    }

    async fn list_dead_letters(
        &self,
        request: Request<ListDeadLettersRequest>,
    ) -> Result<Response<ListDeadLettersResponse>, Status> {
        self.redis_ready()?;
        Ok(Response::new(
            dlq::list(&self.redis, &self.keys, request.get_ref()).await?,
        ))
    }

    async fn get_dead_letter(
        &self,
        request: Request<GetDeadLetterRequest>,
    ) -> Result<Response<GetDeadLetterResponse>, Status> {
        self.redis_ready()?;
        Ok(Response::new(
            dlq::get(&self.redis, &self.keys, &request.get_ref().id).await?,
        ))
    }

    async fn retry_dead_letters(
        &self,
        request: Request<RetryDeadLettersRequest>,
    ) -> Result<Response<RetryDeadLettersResponse>, Status> {
        self.redis_ready()?;
        let selection = request.get_ref().selection.as_ref();
        Ok(Response::new(
            dlq::retry(&self.redis, &self.keys, selection).await?,
        ))
    }

    async fn purge_dead_letters(
        &self,
        request: Request<PurgeDeadLettersRequest>,
    ) -> Result<Response<PurgeDeadLettersResponse>, Status> {
        self.redis_ready()?;
        let selection = request.get_ref().selection.as_ref();
        Ok(Response::new(
            dlq::purge(&self.redis, &self.keys, selection).await?,
        ))
    }

    async fn announce(
        &self,
        request: Request<AnnounceRequest>,
    ) -> Result<Response<AnnounceResponse>, Status> {
        self.redis_ready()?;
        let req = request.into_inner();
        validate_announced(&req)?;
        crate::publish::publish_all(&self.redis, &self.keys, self.history, req.events)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "announcing agents' changes failed");
                Status::unavailable("live events unavailable; retry")
            })?;
        Ok(Response::new(AnnounceResponse {}))
    }

    async fn queue_stats(
        &self,
        _request: Request<QueueStatsRequest>,
    ) -> Result<Response<QueueStatsResponse>, Status> {
        self.redis_ready()?;
        Ok(Response::new(
            stats::queue_stats(&self.redis, &self.keys).await?,
        ))
    }
}

impl Ingest {
    fn redis_ready(&self) -> Result<(), Status> {
        if *self.ready.borrow() {
            Ok(())
        } else {
            Err(Status::unavailable(
                "queue unavailable: redis not reached yet",
            ))
        }
    }
}
