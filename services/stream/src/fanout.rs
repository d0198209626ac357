//! The one loop that hands Redis's pub/sub messages to the hub, in order,
//! and fills from history what the subscription missed (a reconnect, or a
//! fan-out that fell behind) instead of cutting every subscriber off.

use std::sync::Arc;

use faro_proto::stream::v1::Event;
use fred::{clients::SubscriberClient, interfaces::PubsubInterface};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    history::{self, Pos, Reader},
    hub::{Hub, Outcome},
};

pub(crate) struct Fanout {
    pub hub: Arc<Hub>,
    pub reader: Arc<Reader>,
    pub subscriber: SubscriberClient,
    pub prefix: String,
    pub pattern: String,
    /// The most events read from history for one tenant in one catch-up.
    pub bound: usize,
    /// Taken before the first connection, so that it counts as the first.
    pub reconnects: tokio::sync::broadcast::Receiver<fred::types::config::Server>,
    pub messages: tokio::sync::broadcast::Receiver<fred::types::Message>,
}

impl Fanout {
    pub(crate) async fn run(mut self, stop: CancellationToken) {
        let mut connections = 0u64;
        loop {
            let work = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                r = self.reconnects.recv() => {
                    connections += 1;
                    if connections > 1 || r.is_err() {
                        Work::Resync { resubscribe: true }
                    } else {
                        continue;
                    }
                }
                m = self.messages.recv() => match m {
                    Ok(m) => match Hub::decode(&self.prefix, &m.channel, &m.value) {
                        Some(event) => Work::Event(Box::new(event)),
                        None => continue,
                    },
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!(dropped = n, "stream fan-out fell behind redis; resuming from history");
                        Work::Resync { resubscribe: false }
                    }
                    Err(RecvError::Closed) => break,
                },
            };
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.work(work) => {}
            }
        }
    }

    async fn work(&self, work: Work) {
        match work {
            Work::Event(mut event) if !event.traceparent.is_empty() => {
                let span = tracing::info_span!("stream.fanout", otel.kind = "consumer");
                faro_proto::trace::continue_from(&span, &event.traceparent);
                // The edges' WebSocket writes are this span's children.
                if let Some(t) = faro_proto::trace::traceparent_of(&span) {
                    event.traceparent = t;
                }
                self.dispatch(*event).instrument(span).await;
            }
            Work::Event(event) => self.dispatch(*event).await,
            Work::Resync { resubscribe } => {
                if resubscribe {
                    // The subscription stands again before history is read:
                    // whatever is published after the read arrives live.
                    if let Err(e) = self.subscriber.psubscribe(self.pattern.clone()).await {
                        tracing::warn!(error = %e, "resubscribing after a reconnect failed");
                    }
                }
                self.resync().await;
            }
        }
    }

    /// Dispatches an event, first filling a gap before it from history.
    async fn dispatch(&self, event: Event) {
        match self.hub.dispatch(&event) {
            Outcome::Delivered | Outcome::Duplicate => {}
            Outcome::Gap(from) => {
                let tenant = event.tenant_id.clone();
                self.catch_up(&tenant, &from).await;
                let _ = self.hub.dispatch(&event);
            }
            Outcome::EpochChanged => self.hub.fail_tenant(
                &event.tenant_id,
                "the tenant's event history was lost: reload",
            ),
        }
    }

    /// After a reconnect: every subscribed tenant's events after the last
    /// one dispatched, from history.
    async fn resync(&self) {
        let positions = self.hub.positions();
        tracing::info!(
            tenants = positions.len(),
            "resuming live streams from history"
        );
        for (tenant, pos) in positions {
            match pos {
                Some(pos) => self.catch_up(&tenant, &pos).await,
                None => self.hub.fail_tenant(
                    &tenant,
                    "redis reconnected; live events may have been missed",
                ),
            }
        }
    }

    /// Dispatches the tenant's events after `from`, or fails its
    /// subscribers when history no longer holds them.
    async fn catch_up(&self, tenant: &str, from: &Pos) {
        match history::all_after(&self.reader, tenant, from, self.bound).await {
            Ok(Some(found)) if found.complete => {
                tracing::debug!(%tenant, events = found.events.len(), "caught up from history");
                for e in found.events {
                    if self.hub.dispatch(&e) == Outcome::EpochChanged {
                        self.hub
                            .fail_tenant(tenant, "the tenant's event history was lost: reload");
                        return;
                    }
                }
            }
            Ok(Some(_)) => self.hub.fail_tenant(
                tenant,
                "too many live events were missed to catch up: resume",
            ),
            Ok(None) => self.hub.fail_tenant(
                tenant,
                "live events were missed that history no longer holds: reload",
            ),
            Err(e) => {
                tracing::warn!(%tenant, error = %e, "reading history failed");
                self.hub.fail_tenant(
                    tenant,
                    "live events may have been missed and history is unreachable: resume",
                );
            }
        }
    }
}

enum Work {
    Event(Box<Event>),
    Resync { resubscribe: bool },
}
