//! Fan-out of decoded events to subscribers, indexed by tenant.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use faro_proto::{redis_keys, stream::v1::Event};
use fred::types::Value;
use prost::Message;
use tokio::sync::mpsc;
use tonic::Status;

pub(crate) type Item = Result<Event, Status>;

struct Subscriber {
    id: u64,
    locations: HashSet<String>,
    tx: mpsc::Sender<Item>,
}

#[derive(Default)]
struct Tenants {
    by_tenant: HashMap<String, Vec<Subscriber>>,
    /// Set by [`Hub::close_all`] at shutdown: later subscribers are refused.
    closed: bool,
}

pub(crate) struct Hub {
    buffer: usize,
    next_id: AtomicU64,
    tenants: Mutex<Tenants>,
}

impl Hub {
    pub(crate) fn new(buffer: usize) -> Self {
        Self {
            buffer,
            next_id: AtomicU64::new(1),
            tenants: Mutex::default(),
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
            .push(Subscriber { id, locations, tx });
        Some((id, rx))
    }

    pub(crate) fn remove(&self, tenant: &str, id: u64) {
        let tenants = &mut self.lock().by_tenant;
        if let Some(subs) = tenants.get_mut(tenant) {
            subs.retain(|s| s.id != id);
            if subs.is_empty() {
                tenants.remove(tenant);
            }
        }
    }

    pub(crate) fn subscribers(&self) -> usize {
        self.lock().by_tenant.values().map(Vec::len).sum()
    }

    /// Decodes one pub/sub message and hands it to that tenant's subscribers.
    pub(crate) fn dispatch_raw(&self, prefix: &str, channel: &str, value: &Value) {
        let Some(tenant) = redis_keys::tenant_of_channel(prefix, channel) else {
            return;
        };
        let Some(bytes) = value.as_bytes() else {
            tracing::warn!(%channel, "non-binary event ignored");
            return;
        };
        match Event::decode(bytes) {
            Ok(event) if event.tenant_id == tenant => self.dispatch(event),
            Ok(_) => tracing::warn!(%channel, "event tenant does not match its channel; dropped"),
            Err(e) => tracing::warn!(%channel, error = %e, "undecodable event ignored"),
        }
    }

    pub(crate) fn dispatch(&self, event: Event) {
        let tenants = &mut self.lock().by_tenant;
        let Some(subs) = tenants.get_mut(&event.tenant_id) else {
            return;
        };
        subs.retain(|s| {
            if !s.locations.is_empty() && !s.locations.contains(&event.location_id) {
                return true;
            }
            match s.tx.try_send(Ok(event.clone())) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Closed(_)) => false,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(subscriber = s.id, "slow subscriber cut off");
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
    }

    /// Ends every stream with DATA_LOSS: events may have been missed.
    pub(crate) fn fail_all(&self, why: &'static str) {
        let drained: Vec<Subscriber> = self.lock().by_tenant.drain().flat_map(|(_, v)| v).collect();
        if !drained.is_empty() {
            tracing::warn!(subscribers = drained.len(), why, "ending live streams");
        }
        for s in drained {
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
        hub.dispatch(event("a", "l1"));
        hub.dispatch(event("a", "l2"));
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
        hub.dispatch(event("a", "l"));
        hub.dispatch(event("a", "l"));
        assert_eq!(hub.subscribers(), 0);
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
        hub.dispatch(event("a", "l"));
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
}
