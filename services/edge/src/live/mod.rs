//! Live events at the edge: one upstream `Subscribe` per tenant, fanned out
//! locally to every socket, long-poll and SSE client of that tenant.
//!
//! A socket costs a queue and a location filter here, not an HTTP/2 stream of
//! its own to the stream service. Each event is rendered to JSON once and the
//! same bytes go to every recipient. The feed task only ever `try_send`s, so a
//! slow client can never hold the upstream stream (or the HTTP/2 connection
//! that all feeds share): its queue overflows and it alone is cut off.
//!
//! When the upstream stream breaks (DATA_LOSS, the stream service restarting)
//! the feed subscribes again from the last position it delivered, so clients
//! see neither a gap nor a duplicate; only when that position is no longer in
//! history are the tenant's clients told to reload (4001).
//!
//! Ephemeral events (typing indicators, which have no position) go to
//! WebSockets only, never back to their sender's own sockets: long-poll and
//! SSE deliver positioned events, which a client can resume from.

pub(crate) mod catch_up;
mod feed;
pub(crate) mod http;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use faro_proto::client::Traced;
use faro_proto::{
    metrics::Counter,
    stream::v1::{Event, Position, stream_service_client::StreamServiceClient},
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events;

/// Close code telling the client to reload state before reconnecting.
pub(crate) const CLOSE_RESYNC: u16 = 4001;
/// Close code for a client that could not keep up: its queue overflowed.
/// Events were dropped for it alone: resume from its last position.
pub(crate) const CLOSE_TOO_SLOW: u16 = 4002;

/// One event, rendered once, shared by every recipient.
#[derive(Debug)]
pub(crate) struct LiveEvent {
    pub epoch: String,
    pub offset: u64,
    pub location_id: String,
    /// The `type` of the JSON frame (`message.created`, …), for SSE's `event:`.
    pub kind: &'static str,
    pub json: Bytes,
    /// The agent (JWT `sub`) an ephemeral event comes from; `None` for stored events.
    pub sender: Option<String>,
    /// When ingest published it, for the delivery latency.
    pub published_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The stream event's id, for the `message.delivered` event.
    pub id: String,
    /// The trace the write continues; empty unless traces are exported.
    pub traceparent: String,
}

impl LiveEvent {
    pub(crate) fn render(e: &Event) -> Option<Arc<Self>> {
        let (kind, json) = events::render(e)?;
        Some(Arc::new(Self {
            epoch: e.epoch.clone(),
            offset: e.offset,
            location_id: e.location_id.clone(),
            kind,
            json: Bytes::from(json),
            sender: events::sender(e),
            published_at: faro_proto::from_timestamp(e.published_at.as_ref()),
            id: e.id.clone(),
            traceparent: e.traceparent.clone(),
        }))
    }

    /// The `ws.send` span of writing it to one socket: only for an event
    /// whose trace is exported, so an untraced write pays nothing.
    pub(crate) fn send_span(&self) -> tracing::Span {
        if self.traceparent.is_empty() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!("ws.send", kind = self.kind, otel.kind = "producer");
        faro_proto::trace::continue_from(&span, &self.traceparent);
        span
    }

    /// Without a position: relayed as it came, never stored or replayed.
    pub(crate) fn ephemeral(&self) -> bool {
        self.epoch.is_empty()
    }

    pub(crate) fn position(&self) -> Option<Position> {
        (!self.epoch.is_empty()).then(|| Position {
            epoch: self.epoch.clone(),
            offset: self.offset,
        })
    }
}

/// Why a client's live feed ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub code: u16,
    pub reason: &'static str,
}

pub(crate) const TOO_SLOW: End = End {
    code: CLOSE_TOO_SLOW,
    reason: "too slow; events were dropped: resume from your last position",
};
pub(crate) const RESYNC: End = End {
    code: CLOSE_RESYNC,
    reason: "events were missed; reload",
};
pub(crate) const SHUTTING_DOWN: End = End {
    code: 1001,
    reason: "server shutting down",
};

/// What one client holds: its queue of events and the signal that it ended.
pub(crate) struct Listener {
    pub events: mpsc::Receiver<Arc<LiveEvent>>,
    /// Bytes waiting in `events`; the writer subtracts what it takes.
    pub queued: Arc<AtomicUsize>,
    ended: Arc<OnceLock<End>>,
    cancelled: CancellationToken,
    _membership: Membership,
}

impl Listener {
    /// Cancelled when the hub ends this client's feed; then [`Listener::end`] says why.
    pub(crate) fn ended(&self) -> CancellationToken {
        self.cancelled.clone()
    }

    pub(crate) fn end(&self) -> Option<End> {
        self.ended.get().copied()
    }

    /// Takes a received event off the byte budget.
    pub(crate) fn taken(&self, e: &LiveEvent) {
        self.queued.fetch_sub(e.json.len(), Ordering::AcqRel);
    }

    /// A live event was written to the client: its publication-to-write
    /// latency is observed (clamped at zero: the clocks may differ).
    pub(crate) fn delivered(&self, e: &LiveEvent) {
        let metrics = &self._membership.hub.metrics;
        // The clock is read only for someone: metrics, or the debug event.
        let wanted = metrics.on || tracing::enabled!(target: "faro::event", tracing::Level::DEBUG);
        let secs = e
            .published_at
            .filter(|_| wanted)
            .map(|at| faro_proto::metrics::seconds_between(at, chrono::Utc::now()).max(0.0));
        if let Some(secs) = secs.filter(|_| metrics.on) {
            metrics.delivery_latency.observe(secs);
        }
        // One line per event and socket: debug, not to cost the hot path.
        tracing::debug!(
            target: "faro::event",
            event = "message.delivered",
            tenant = %self._membership.tenant,
            event_id = %e.id,
            kind = e.kind,
            // Published to written.
            latency_ms = secs.unwrap_or_default() * 1e3,
            "message delivered"
        );
    }

    /// The edge's metrics (for the sockets that hold this listener).
    pub(crate) fn metrics(&self) -> &crate::metrics::Metrics {
        &self._membership.hub.metrics
    }
}

/// Leaves the tenant's feed when the client goes.
struct Membership {
    hub: Arc<Hub>,
    tenant: String,
    id: u64,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.remove(&self.tenant, self.id);
    }
}

struct Member {
    /// Empty: every location.
    locations: HashSet<String>,
    /// A WebSocket's agent (JWT `sub`): it gets ephemeral events but its
    /// own. `None` (long-poll, SSE): positioned events only.
    agent: Option<String>,
    tx: mpsc::Sender<Arc<LiveEvent>>,
    queued: Arc<AtomicUsize>,
    ended: Arc<OnceLock<End>>,
    cancelled: CancellationToken,
}

impl Member {
    fn end(&self, why: End) {
        let _ = self.ended.set(why);
        self.cancelled.cancel();
    }

    /// Queues the event, or ends this member if it cannot keep up (counted
    /// in `slow`).
    fn offer(&self, e: &Arc<LiveEvent>, queue_bytes: usize, slow: &Counter) -> bool {
        if !self.locations.is_empty() && !self.locations.contains(&e.location_id) {
            return true;
        }
        if e.ephemeral() && (self.agent.is_none() || self.agent == e.sender) {
            return true;
        }
        let len = e.json.len();
        let over = self.queued.fetch_add(len, Ordering::AcqRel) + len > queue_bytes;
        if over || self.tx.try_send(e.clone()).is_err() {
            if !self.tx.is_closed() {
                slow.inc();
                self.end(TOO_SLOW);
            }
            return false;
        }
        true
    }
}

/// A tenant's shared upstream subscription and its local members.
struct Feed {
    /// By id: a socket leaving is found at once, not by a scan (tens of
    /// thousands leaving together would otherwise cost their square).
    members: HashMap<u64, Member>,
    /// Cancelled when the last member leaves: the upstream stream is dropped.
    stop: CancellationToken,
}

/// Frames waiting for one client, at most (the byte budget usually binds first).
const QUEUE_FRAMES: usize = 1024;

pub(crate) struct Hub {
    client: StreamServiceClient<Traced>,
    queue_bytes: usize,
    next_id: AtomicU64,
    feeds: Mutex<HashMap<String, Feed>>,
    shutdown: CancellationToken,
    metrics: crate::metrics::Metrics,
}

impl Hub {
    pub(crate) fn new(
        client: StreamServiceClient<Traced>,
        queue_bytes: usize,
        metrics: crate::metrics::Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            queue_bytes,
            next_id: AtomicU64::new(1),
            feeds: Mutex::default(),
            shutdown,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Feed>> {
        // Members and feeds are plain data: a panic elsewhere leaves them whole.
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn client(&self) -> StreamServiceClient<Traced> {
        self.client.clone()
    }

    /// Joins the tenant's live feed, opening the upstream subscription first
    /// if this is the tenant's first client here: once this returns, every
    /// event published afterwards reaches the listener. With an `agent` (a
    /// WebSocket), ephemeral events of other agents reach it too.
    pub(crate) async fn join(
        self: &Arc<Self>,
        tenant: &str,
        locations: HashSet<String>,
        agent: Option<String>,
    ) -> Result<Listener, tonic::Status> {
        if let Some(l) = self.add_if_open(tenant, &locations, &agent) {
            return Ok(l);
        }
        let stream = feed::subscribe(&self.client, tenant, None).await?;
        let mut feeds = self.lock();
        if !feeds.contains_key(tenant) {
            let stop = self.shutdown.child_token();
            feeds.insert(
                tenant.to_owned(),
                Feed {
                    members: HashMap::new(),
                    stop: stop.clone(),
                },
            );
            tokio::spawn(feed::run(self.clone(), tenant.to_owned(), stream, stop));
        }
        // else: another client opened it meanwhile; ours is dropped.
        Ok(self.add(&mut feeds, tenant, locations, agent))
    }

    fn add_if_open(
        self: &Arc<Self>,
        tenant: &str,
        locations: &HashSet<String>,
        agent: &Option<String>,
    ) -> Option<Listener> {
        let mut feeds = self.lock();
        feeds
            .contains_key(tenant)
            .then(|| self.add(&mut feeds, tenant, locations.clone(), agent.clone()))
    }

    fn add(
        self: &Arc<Self>,
        feeds: &mut HashMap<String, Feed>,
        tenant: &str,
        locations: HashSet<String>,
        agent: Option<String>,
    ) -> Listener {
        let (tx, events) = mpsc::channel(QUEUE_FRAMES);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (queued, ended, cancelled) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(OnceLock::new()),
            CancellationToken::new(),
        );
        if let Some(feed) = feeds.get_mut(tenant) {
            feed.members.insert(
                id,
                Member {
                    locations,
                    agent,
                    tx,
                    queued: queued.clone(),
                    ended: ended.clone(),
                    cancelled: cancelled.clone(),
                },
            );
        }
        Listener {
            events,
            queued,
            ended,
            cancelled,
            _membership: Membership {
                hub: self.clone(),
                tenant: tenant.to_owned(),
                id,
            },
        }
    }

    fn remove(&self, tenant: &str, id: u64) {
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get_mut(tenant) {
            feed.members.remove(&id);
            if feed.members.is_empty() {
                feed.stop.cancel();
                feeds.remove(tenant);
            }
        }
    }

    /// Hands one upstream event to the tenant's members, rendered once.
    fn dispatch(&self, tenant: &str, event: &Event) {
        let Some(live) = LiveEvent::render(event) else {
            return;
        };
        let mut feeds = self.lock();
        if let Some(feed) = feeds.get_mut(tenant) {
            let slow = &self.metrics.slow_consumers;
            feed.members
                .retain(|_, m| m.offer(&live, self.queue_bytes, slow));
        }
    }

    /// Ends every member of the tenant (the feed could not be resumed).
    fn end_tenant(&self, tenant: &str, why: End) {
        if let Some(feed) = self.lock().remove(tenant) {
            for m in feed.members.into_values() {
                m.end(why);
            }
        }
    }
}
