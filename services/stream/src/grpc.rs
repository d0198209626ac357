use std::{
    collections::HashSet,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use faro_proto::stream::v1::{
    HistoryRequest, HistoryResponse, SubscribeRequest, stream_service_server::StreamService,
};
use futures::Stream as FuturesStream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::hub::{Hub, Item};

pub(crate) struct Stream {
    pub hub: Arc<Hub>,
    /// False until the Redis subscription first stands: a subscriber taken
    /// before would silently miss what is published meanwhile.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

/// A subscriber's event stream; leaving the hub when tonic drops it (the client went away).
pub struct Subscription {
    hub: Arc<Hub>,
    tenant: String,
    id: u64,
    rx: mpsc::Receiver<Item>,
}

impl FuturesStream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.tenant, self.id);
        tracing::debug!(tenant = %self.tenant, subscriber = self.id, "subscriber left");
    }
}

fn valid_id(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok()
}

#[tonic::async_trait]
impl StreamService for Stream {
    type SubscribeStream = Subscription;

    async fn history(
        &self,
        _request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        // Positions are being built (issue 9); until then there is no history.
        Err(Status::unimplemented("history is not available yet"))
    }

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        if !*self.ready.borrow() {
            return Err(Status::unavailable(
                "live events unavailable: redis not reached yet",
            ));
        }
        let req = request.into_inner();
        if !valid_id(&req.tenant_id) {
            return Err(Status::invalid_argument("tenant_id must be a UUID"));
        }
        if !req.location_ids.iter().all(|l| valid_id(l)) {
            return Err(Status::invalid_argument("location_ids must be UUIDs"));
        }
        let locations: HashSet<String> = req.location_ids.into_iter().collect();
        let Some((id, rx)) = self.hub.subscribe(req.tenant_id.clone(), locations) else {
            return Err(Status::unavailable("stream service is shutting down"));
        };
        tracing::debug!(tenant = %req.tenant_id, subscriber = id, "subscriber joined");
        Ok(Response::new(Subscription {
            hub: self.hub.clone(),
            tenant: req.tenant_id,
            id,
            rx,
        }))
    }
}
