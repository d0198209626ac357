//! Fan-out of decoded events to subscribers, indexed by tenant.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use faro_proto::{metrics::Counter, redis_keys, stream::v1::Event};
use fred::types::Value;

use crate::history::Pos;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

pub(crate) type Item = Result<Event, Status>;

struct Subscriber {
    id: u64,
    locations: HashSet<String>,
    tx: mpsc::Sender<Item>,
}

/// One tenant's subscribers, and how far its events were dispatched.
#[derive(Default)]
struct Tenant {
    subs: Vec<Subscriber>,
    /// The epoch of the events dispatched (or of `baseline`).
    epoch: Option<String>,
    /// The highest offset dispatched: later copies are duplicates, and a
    /// jump past the next one is a gap to fill from history.
    last: Option<u64>,
    /// The tenant's latest offset when looked up after a subscriber joined:
    /// where a resync starts if nothing was dispatched since.
    baseline: Option<u64>,
}

/// What became of an event handed to [`Hub::dispatch`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Handed to the matching subscribers (if any).
    Delivered,
    /// Already dispatched (a resync read it from history first).
    Duplicate,
    /// Events after this position were missed: fill from history, then dispatch again.
    Gap(Pos),
    /// The tenant's history was lost: its subscribers cannot be caught up.
    EpochChanged,
}

#[derive(Default)]
struct Tenants {
    by_tenant: HashMap<String, Tenant>,
    /// Set by [`Hub::close_all`] at shutdown: later subscribers are refused.
    closed: bool,
}

pub(crate) struct Hub {
    buffer: usize,
    next_id: AtomicU64,
    tenants: Mutex<Tenants>,
    /// Subscribers cut off for being too slow (a metric).
    pub slow_dropped: Counter,
    /// Events delivered to a tenant's subscribers (a metric).
    pub dispatched: Counter,
}

impl Hub {
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            buffer,
            next_id: AtomicU64::new(1),
            tenants: Mutex::default(),
            slow_dropped: Counter::default(),
            dispatched: Counter::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tenants> {
        // A panic while holding the lock cannot leave the map inconsistent.
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a subscriber; returns its id (for [`Hub::remove`]) and its
    /// receiver, or `None` once the hub is closed (shutdown).
    pub(crate) fn subscribe(
        &self,
        tenant: String,
        locations: HashSet<String>,
    ) -> Option<(u64, mpsc::Receiver<Item>)> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut all = self.lock();
        if all.closed {
            return None;
        }
        all.by_tenant
            .entry(tenant)
            .or_default()
            .subs
            .push(Subscriber { id, locations, tx });
        Some((id, rx))
    }

    pub(crate) fn remove(&self, tenant: &str, id: u64) {
        let tenants = &mut self.lock().by_tenant;
        if let Some(t) = tenants.get_mut(tenant) {
            t.subs.retain(|s| s.id != id);
            if t.subs.is_empty() {
                tenants.remove(tenant);
            }
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.lock().by_tenant.values().map(|t| t.subs.len()).sum()
    }

    /// Records where a tenant stood when a subscriber joined, unless its
    /// position is known already.
    pub(crate) fn set_baseline(&self, tenant: &str, pos: &Pos) {
        if let Some(t) = self.lock().by_tenant.get_mut(tenant)
            && t.epoch.is_none()
        {
            t.epoch = Some(pos.epoch.clone());
            t.baseline = Some(pos.offset);
        }
    }

    /// Every tenant with subscribers, and the position its events were
    /// dispatched up to (`None`: unknown, so it cannot be resumed).
    pub(crate) fn positions(&self) -> Vec<(String, Option<Pos>)> {
        self.lock()
            .by_tenant
            .iter()
            .map(|(tenant, t)| {
                let pos = t.epoch.clone().zip(t.last.or(t.baseline));
                let pos = pos.map(|(epoch, offset)| Pos { epoch, offset });
                (tenant.clone(), pos)
            })
            .collect()
    }

    /// Decodes one pub/sub message of a tenant's channel.
    pub(crate) fn decode(prefix: &str, channel: &str, value: &Value) -> Option<Event> {
        let tenant = redis_keys::tenant_of_channel(prefix, channel)?;
        let Some(bytes) = value.as_bytes() else {
            tracing::warn!(%channel, "non-binary event ignored");
            return None;
        };
        match Event::decode(bytes) {
            Ok(event) if event.tenant_id == tenant => Some(event),
            Ok(_) => {
                tracing::warn!(%channel, "event tenant does not match its channel; dropped");
                None
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "undecodable event ignored");
                None
            }
        }
    }

    /// Hands an event to its tenant's subscribers, in offset order: a copy
    /// already dispatched is skipped, and a jump or a new epoch is reported
    /// instead of delivered. Events without a position (an older publisher)
    /// are delivered as they come.
    pub(crate) fn dispatch(&self, event: &Event) -> Outcome {
        let tenants = &mut self.lock().by_tenant;
        let Some(t) = tenants.get_mut(&event.tenant_id) else {
            return Outcome::Delivered;
        };
        if !event.epoch.is_empty() && event.offset > 0 {
            if t.epoch.as_ref().is_some_and(|e| *e != event.epoch) {
                return Outcome::EpochChanged;
            }
            if let Some(last) = t.last {
                if event.offset <= last {
                    return Outcome::Duplicate;
                }
                if event.offset > last + 1 {
                    return Outcome::Gap(Pos {
                        epoch: event.epoch.clone(),
                        offset: last,
                    });
                }
            }
            t.epoch = Some(event.epoch.clone());
            t.last = Some(event.offset);
        }
        self.dispatched.inc();
        let subs = &mut t.subs;
        subs.retain(|s| {
            if !s.locations.is_empty() && !s.locations.contains(&event.location_id) {
                return true;
            }
            match s.tx.try_send(Ok(event.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(subscriber = s.id, "slow subscriber cut off");
                    self.slow_dropped.inc();
                    // The buffer is full, so the error goes out after what is queued.
                    let tx = s.tx.clone();
                    tokio::spawn(async move {
                        let _ = tx
                            .send(Err(Status::data_loss(
                                "subscriber too slow; events were dropped: reload and resubscribe",
                            )))
                            .await;
                    });
                    false
                }
            }
        });
        if subs.is_empty() {
            tenants.remove(&event.tenant_id);
        }
        Outcome::Delivered
    }

    /// Ends a tenant's streams with DATA_LOSS: events were missed that
    /// history no longer holds. Its clients resume from their positions
    /// (and hear OUT_OF_RANGE if those are gone too).
    pub(crate) fn fail_tenant(&self, tenant: &str, why: &'static str) {
        let Some(t) = self.lock().by_tenant.remove(tenant) else {
            return;
        };
        tracing::warn!(%tenant, subscribers = t.subs.len(), why, "ending live streams");
        for s in t.subs {
            tokio::spawn(async move {
                let _ = s.tx.send(Err(Status::data_loss(why))).await;
            });
        }
    }

    /// Ends every stream cleanly and refuses new ones (shutdown).
    pub(crate) fn close_all(&self) {
        let mut all = self.lock();
        all.closed = true;
        all.by_tenant.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, location: &str) -> Event {
        Event {
            tenant_id: tenant.into(),
            location_id: location.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn routes_by_tenant_and_location() {
        let hub = Hub::new(8);
        let (_, mut all_a) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        let (_, mut a_l2) = hub
            .subscribe("a".into(), HashSet::from(["l2".to_owned()]))
            .expect("open");
        let (_, mut b) = hub.subscribe("b".into(), HashSet::new()).expect("open");
        hub.dispatch(&event("a", "l1"));
        hub.dispatch(&event("a", "l2"));
        assert_eq!(
            all_a
                .recv()
                .await
                .and_then(Result::ok)
                .map(|e| e.location_id),
            Some("l1".into())
        );
        assert_eq!(
            all_a
                .recv()
                .await
                .and_then(Result::ok)
                .map(|e| e.location_id),
            Some("l2".into())
        );
        assert_eq!(
            a_l2.recv()
                .await
                .and_then(Result::ok)
                .map(|e| e.location_id),
            Some("l2".into())
        );
        assert!(a_l2.try_recv().is_err());
        assert!(b.try_recv().is_err());
    }

    #[tokio::test]
    async fn slow_subscriber_is_cut_off_with_data_loss() {
        let hub = Hub::new(1);
        let (_, mut rx) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        hub.dispatch(&event("a", "l"));
        hub.dispatch(&event("a", "l"));
        assert_eq!(hub.subscribers(), 0);
        assert_eq!(hub.slow_dropped.get(), 1, "counted for the metrics");
        assert!(matches!(rx.recv().await, Some(Ok(_))));
        let err = rx.recv().await.and_then(Result::err).map(|s| s.code());
        assert_eq!(err, Some(tonic::Code::DataLoss));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn dropped_receivers_are_forgotten() {
        let hub = Hub::new(4);
        let (id, rx) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        drop(rx);
        hub.dispatch(&event("a", "l"));
        assert_eq!(hub.subscribers(), 0);
        let (id2, _rx) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        assert_ne!(id, id2);
        hub.remove("a", id2);
        assert_eq!(hub.subscribers(), 0);
    }

    #[tokio::test]
    async fn closing_ends_every_stream_and_refuses_new_ones() {
        let hub = Hub::new(4);
        let (_, mut rx) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        hub.close_all();
        assert!(rx.recv().await.is_none(), "the stream ends cleanly");
        assert!(hub.subscribe("a".into(), HashSet::new()).is_none());
        assert_eq!(hub.subscribers(), 0);
    }

    fn at(epoch: &str, offset: u64) -> Event {
        Event {
            tenant_id: "a".into(),
            epoch: epoch.into(),
            offset,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn positions_skip_copies_and_report_gaps_and_new_epochs() {
        let hub = Hub::new(8);
        let (_, mut rx) = hub.subscribe("a".into(), HashSet::new()).expect("open");
        assert_eq!(hub.positions(), [("a".to_owned(), None)]);
        hub.set_baseline(
            "a",
            &Pos {
                epoch: "e".into(),
                offset: 2,
            },
        );
        let baseline = Some(Pos {
            epoch: "e".into(),
            offset: 2,
        });
        assert_eq!(hub.positions(), [("a".to_owned(), baseline)]);
        assert_eq!(hub.dispatch(&at("e", 3)), Outcome::Delivered);
        assert_eq!(hub.dispatch(&at("e", 3)), Outcome::Duplicate);
        assert_eq!(
            hub.dispatch(&at("e", 6)),
            Outcome::Gap(Pos {
                epoch: "e".into(),
                offset: 3
            })
        );
        assert_eq!(hub.dispatch(&at("e", 4)), Outcome::Delivered);
        assert_eq!(hub.dispatch(&at("other", 5)), Outcome::EpochChanged);
        let offsets: Vec<u64> = [rx.recv().await, rx.recv().await]
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.offset)
            .collect();
        assert_eq!(offsets, [3, 4]);
        assert!(rx.try_recv().is_err(), "no copy, nothing past the gap");
        hub.fail_tenant("a", "lost");
        let err = rx.recv().await.and_then(Result::err).map(|s| s.code());
        assert_eq!(err, Some(tonic::Code::DataLoss));
    }
}
