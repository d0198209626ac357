use std::{
    collections::{HashSet, VecDeque},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use faro_proto::stream::v1::{
    Event, HistoryRequest, HistoryResponse, Position, RelayRequest, RelayResponse,
    SubscribeRequest, stream_service_server::StreamService,
};
use futures::Stream as FuturesStream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::{
    history::{self, Pos, Reader},
    hub::{Hub, Item},
    relay,
};

pub(crate) struct Stream {
    pub hub: Arc<Hub>,
    /// False until the Redis subscription first stands: a subscriber taken
    /// before would silently miss what is published meanwhile.
    pub ready: tokio::sync::watch::Receiver<bool>,
    pub reader: Arc<Reader>,
    /// The most events one replay reads.
    pub replay_bound: usize,
    /// Publishes relayed (ephemeral) events.
    pub redis: fred::clients::Client,
    pub prefix: String,
}

/// A subscriber's event stream; leaving the hub when tonic drops it (the client went away).
pub struct Subscription {
    hub: Arc<Hub>,
    tenant: String,
    id: u64,
    rx: mpsc::Receiver<Item>,
    /// Events from history, sent before any live one.
    replay: VecDeque<Event>,
    /// With a position: the epoch, and the offset up to which history was
    /// replayed (live copies up to it are skipped).
    resumed: Option<Pos>,
    /// An error was sent: the stream is over.
    ended: bool,
}

impl FuturesStream for Subscription {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(e) = self.replay.pop_front() {
            return Poll::Ready(Some(Ok(e)));
        }
        loop {
            let item = std::task::ready!(self.rx.poll_recv(cx));
            let Some(Ok(event)) = item else {
                self.ended = item.is_some();
                return Poll::Ready(item);
            };
            let Some(at) = &self.resumed else {
                return Poll::Ready(Some(Ok(event)));
            };
            if event.epoch.is_empty() {
                return Poll::Ready(Some(Ok(event)));
            }
            if event.epoch != at.epoch {
                self.ended = true;
                return Poll::Ready(Some(Err(Status::data_loss(
                    "the tenant's event history was lost: reload",
                ))));
            }
            if event.offset > at.offset {
                return Poll::Ready(Some(Ok(event)));
            }
        }
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

fn check_scope(tenant: &str, locations: &[String]) -> Result<(), Status> {
    if !valid_id(tenant) {
        return Err(Status::invalid_argument("tenant_id must be a UUID"));
    }
    if !locations.iter().all(|l| valid_id(l)) {
        return Err(Status::invalid_argument("location_ids must be UUIDs"));
    }
    Ok(())
}

fn matches(locations: &HashSet<String>, e: &Event) -> bool {
    locations.is_empty() || locations.contains(&e.location_id)
}

fn position(p: Pos) -> Position {
    Position {
        epoch: p.epoch,
        offset: p.offset,
    }
}

fn unavailable(e: &history::ReadError) -> Status {
    tracing::warn!(error = %e, "reading history failed");
    Status::unavailable("event history unavailable: retry")
}

const NOT_RECOVERED: &str =
    "position not recovered: older than history or of another epoch; reload";

#[tonic::async_trait]
impl StreamService for Stream {
    type SubscribeStream = Subscription;

    async fn history(
        &self,
        request: Request<HistoryRequest>,
    ) -> Result<Response<HistoryResponse>, Status> {
        if !*self.ready.borrow() {
            return Err(Status::unavailable(
                "history unavailable: redis not reached yet",
            ));
        }
        let req = request.into_inner();
        check_scope(&req.tenant_id, &req.location_ids)?;
        let locations: HashSet<String> = req.location_ids.into_iter().collect();
        let limit = match usize::try_from(req.limit).unwrap_or(usize::MAX) {
            0 => history::PAGE,
            n => n.min(history::PAGE),
        };
        let Some(since) = req.since else {
            // No position: only where the tenant stands.
            let latest = self
                .reader
                .latest(&req.tenant_id)
                .await
                .map_err(|e| unavailable(&e))?;
            return Ok(Response::new(HistoryResponse {
                recovered: true,
                events: Vec::new(),
                latest: Some(position(latest)),
                more: false,
            }));
        };
        let mut at = Pos {
            epoch: since.epoch,
            offset: since.offset,
        };
        let mut events = Vec::new();
        loop {
            let page = self
                .reader
                .read(&req.tenant_id, Some(&at))
                .await
                .map_err(|e| unavailable(&e))?;
            if !page.recovered {
                return Ok(Response::new(HistoryResponse {
                    recovered: false,
                    events: Vec::new(),
                    latest: Some(position(page.latest)),
                    more: false,
                }));
            }
            for e in page.events {
                at.offset = e.offset;
                if matches(&locations, &e) {
                    events.push(e);
                    if events.len() == limit {
                        let more = at.offset < page.latest.offset;
                        return Ok(Response::new(HistoryResponse {
                            recovered: true,
                            events,
                            latest: Some(position(page.latest)),
                            more,
                        }));
                    }
                }
            }
            if !page.full {
                return Ok(Response::new(HistoryResponse {
                    recovered: true,
                    events,
                    latest: Some(position(page.latest)),
                    more: false,
                }));
            }
        }
    }

    async fn relay(
        &self,
        request: Request<RelayRequest>,
    ) -> Result<Response<RelayResponse>, Status> {
        if !*self.ready.borrow() {
            return Err(Status::unavailable(
                "relay unavailable: redis not reached yet",
            ));
        }
        let event = relay::event(request.into_inner())?;
        relay::publish(&self.redis, &self.prefix, &event).await?;
        Ok(Response::new(RelayResponse {}))
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
        check_scope(&req.tenant_id, &req.location_ids)?;
        let locations: HashSet<String> = req.location_ids.into_iter().collect();
        // Live first, then history: what is published meanwhile waits in the
        // subscriber's buffer, and copies of replayed events are skipped.
        let Some((id, rx)) = self.hub.subscribe(req.tenant_id.clone(), locations.clone()) else {
            return Err(Status::unavailable("stream service is shutting down"));
        };
        let mut sub = Subscription {
            hub: self.hub.clone(),
            tenant: req.tenant_id.clone(),
            id,
            rx,
            replay: VecDeque::new(),
            resumed: None,
            ended: false,
        };
        match req.since {
            None => {
                // Where a resync after a Redis reconnect would start, if no
                // event reaches this tenant before it. Best effort, and in
                // the background: a slow Redis does not hold the subscriber.
                let (hub, reader, tenant) =
                    (self.hub.clone(), self.reader.clone(), req.tenant_id.clone());
                tokio::spawn(async move {
                    match reader.latest(&tenant).await {
                        Ok(latest) => hub.set_baseline(&tenant, &latest),
                        Err(e) => tracing::debug!(error = %e, "no baseline position"),
                    }
                });
            }
            Some(since) => {
                let since = Pos {
                    epoch: since.epoch,
                    offset: since.offset,
                };
                let found =
                    history::all_after(&self.reader, &req.tenant_id, &since, self.replay_bound)
                        .await
                        .map_err(|e| unavailable(&e))?;
                let Some(found) = found else {
                    return Err(Status::out_of_range(NOT_RECOVERED));
                };
                if !found.complete {
                    return Err(Status::unavailable(
                        "history grew faster than it could be replayed: retry",
                    ));
                }
                self.hub.set_baseline(&req.tenant_id, &found.end);
                sub.replay = found
                    .events
                    .into_iter()
                    .filter(|e| matches(&locations, e))
                    .collect();
                sub.resumed = Some(found.end);
            }
        }
        tracing::debug!(tenant = %req.tenant_id, subscriber = id, "subscriber joined");
        Ok(Response::new(sub))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn event(epoch: &str, offset: u64) -> Event {
        Event {
            tenant_id: "t".into(),
            epoch: epoch.into(),
            offset,
            ..Default::default()
        }
    }

    fn resumed(hub: &Arc<Hub>, replay: &[u64], at: u64) -> Subscription {
        let (id, rx) = hub.subscribe("t".into(), HashSet::new()).expect("open");
        Subscription {
            hub: hub.clone(),
            tenant: "t".into(),
            id,
            rx,
            replay: replay.iter().map(|o| event("e", *o)).collect(),
            resumed: Some(Pos {
                epoch: "e".into(),
                offset: at,
            }),
            ended: false,
        }
    }

    #[tokio::test]
    async fn history_then_live_without_the_copies_of_replayed_events() {
        let hub = Arc::new(Hub::new(16));
        let mut sub = resumed(&hub, &[4, 5, 6], 6);
        // Published while history was read: live copies of 5 and 6, then 7.
        for o in [5, 6, 7] {
            hub.dispatch(&event("e", o));
        }
        let mut offsets = Vec::new();
        for _ in 0..4 {
            offsets.push(sub.next().await.and_then(Result::ok).map(|e| e.offset));
        }
        assert_eq!(offsets, [Some(4), Some(5), Some(6), Some(7)]);
    }

    #[tokio::test]
    async fn a_live_event_of_another_epoch_ends_a_resumed_stream() {
        let hub = Arc::new(Hub::new(16));
        let mut sub = resumed(&hub, &[], 3);
        let (_, mut other) = hub.subscribe("t".into(), HashSet::new()).expect("open");
        // The hub itself tracks no position yet: it delivers.
        hub.dispatch(&event("new", 1));
        assert!(other.recv().await.is_some());
        let err = sub.next().await.and_then(Result::err).map(|s| s.code());
        assert_eq!(err, Some(tonic::Code::DataLoss));
        assert!(sub.next().await.is_none());
    }
}
