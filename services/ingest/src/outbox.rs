//! The relay of conversations' outbox (agents' live edits, migration 0018).
//!
//! The edge hands an edit's event to `Announce` right after the commit (the
//! fast path), which publishes it and then deletes its outbox row. Whatever
//! that path lost — the edge died, ingest or Redis was down, the call timed
//! out — stays in the outbox: this relay, one per ingest process, claims rows
//! older than [`MIN_AGE`] that no other relay holds (a lease), publishes them
//! with the workers' script and deletes them. At least once: a relay that
//! dies between publishing and deleting leaves the row to be published again
//! when its lease ends; every copy carries the same event id.

use std::{sync::Arc, time::Duration};

use faro_proto::{
    conversations::v1::{AckOutboxRequest, ClaimOutboxRequest, OutboxKey},
    stream::v1::Event,
};
use fred::clients::Client;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::{ConversationsClient, Keys, publish::HistoryBounds};

/// Rows younger than this are the fast path's.
pub(crate) const MIN_AGE: Duration = Duration::from_secs(2);
/// How long a claimed row is this relay's.
const LEASE: Duration = Duration::from_secs(30);
/// Pause between claims that found nothing: a lost announcement reaches
/// agents within MIN_AGE + POLL (about 2.5 s).
pub(crate) const POLL: Duration = Duration::from_millis(500);
/// Rows per claim.
const BATCH: u32 = 100;

pub(crate) struct Relay {
    pub conversations: ConversationsClient,
    pub redis: Client,
    pub keys: Arc<Keys>,
    pub history: HistoryBounds,
    /// Pause between claims that found nothing.
    pub every: Duration,
}

impl Relay {
    pub(crate) async fn run(self, stop: CancellationToken) {
        loop {
            let pause = match self.pass().await {
                Ok(n) if n >= BATCH as usize => Duration::ZERO,
                Ok(_) => self.every,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay pass failed");
                    self.every.max(Duration::from_secs(1))
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One claim, publish and delete; the number of rows claimed.
    async fn pass(&self) -> Result<usize, String> {
        let claimed = self
            .conversations
            .clone()
            .claim_outbox(ClaimOutboxRequest {
                limit: BATCH,
                lease_ms: u64::try_from(LEASE.as_millis()).unwrap_or(30_000),
                min_age_ms: u64::try_from(MIN_AGE.as_millis()).unwrap_or(2_000),
            })
            .await
            .map_err(|s| format!("claim: {:?} {}", s.code(), s.message()))?
            .into_inner()
            .events;
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut events = Vec::with_capacity(claimed.len());
        let mut keys = Vec::with_capacity(claimed.len());
        for row in claimed {
            match Event::decode(row.event.as_slice()) {
                Ok(e) => events.push(e),
                // Written by conversations from the same contract: never
                // expected; dropped rather than retried forever.
                Err(e) => {
                    tracing::error!(id = %row.id, error = %e, "undecodable outbox row dropped")
                }
            }
            keys.push(OutboxKey {
                tenant_id: row.tenant_id,
                id: row.id,
            });
        }
        let n = keys.len();
        if !events.is_empty() {
            crate::publish::publish_all(&self.redis, &self.keys, self.history, events)
                .await
                .map_err(|e| format!("publish: {e}"))?;
        }
        ack(&self.conversations, keys).await?;
        tracing::debug!(events = n, "outbox rows relayed");
        Ok(n)
    }
}

/// Deletes published rows from the outbox.
pub(crate) async fn ack(
    conversations: &ConversationsClient,
    keys: Vec<OutboxKey>,
) -> Result<(), String> {
    conversations
        .clone()
        .ack_outbox(AckOutboxRequest { keys })
        .await
        .map(|_| ())
        .map_err(|s| format!("ack: {:?} {}", s.code(), s.message()))
}
