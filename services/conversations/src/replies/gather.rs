//! Gathering concurrent `CreateReply` calls into batches.
//!
//! Alone, every reply is a transaction of its own, and at a few hundred
//! replies a second Postgres spent more on beginning, switching tenant,
//! opening the same relations and committing than on the rows.
//! [`Creator`] gathers the calls that arrive while earlier ones are stored,
//! as ingest's reply workers gather their claims and records, and stores
//! each batch with [`super::create::store`]. A lone reply waits for nobody.
//!
//! What it buys is measured in docs/BENCHMARKS.md (and exported as
//! `conversations_reply_batch_calls`): at 300 replies/s the calls come
//! nearly one by one (1.1 a batch); at 1,000/s offered a backlog forms and
//! batches fill. Storing one batch at a time ([`IN_FLIGHT`]) is most of the
//! gain; a 2 ms linger (tried with two in flight) caught nothing and was
//! taken out. [`SHARDS`] gatherers, each for its own tenants, store theirs
//! side by side.
//!
//! A batch the database refuses as a whole (a lost connection, a deadlock
//! with a webhook's transaction) is stored again one reply at a time.

use std::sync::Arc;

use faro_proto::conversations::v1 as pb;
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::create::{Answer, Outcome, Parsed, create_alone, store};
use crate::{Error, metrics::Metrics};

/// Replies one transaction stores at most.
const BATCH_MAX: usize = 64;
/// Batches one gatherer stores at once: one. The replies that arrive while a batch
/// is stored form the next (a group commit). With more, they were stored
/// side by side, one transaction each, queueing on each other's thread
/// locks: in the replies benchmark at 1,000/s offered, 4 in flight sent
/// 542/s, 2 sent 577–610/s, 1 sent 725/s (docs/BENCHMARKS.md).
const IN_FLIGHT: usize = 1;
/// Gatherers, each for its own share of tenants (by tenant id), so their
/// batches never touch the same threads or keys and never wait on each
/// other's locks; each still stores one batch at a time. With one
/// gatherer at 1,000/s offered, 440–498/s were stored; with four, 598–653/s
/// (docs/BENCHMARKS.md, third session of 2026-12-01), when each tenant of a
/// batch cost round trips of its own. Since a batch's tenants are one call
/// (migration 0024), two stored as many and cost less: at 1,000/s, 2.4–2.7
/// replies a transaction instead of 1.5, Postgres CPU a reply 0.94 ms
/// instead of 1.01 (docs/BENCHMARKS.md, fifth session of 2026-12-01).
const SHARDS: usize = 2;

type Call = (pb::CreateReplyRequest, oneshot::Sender<Answer>);

/// Stores a gathered batch; what one transaction could not settle is stored
/// again alone.
async fn flush(pool: PgPool, metrics: Metrics, calls: Vec<Call>) {
    let mut parsed = Vec::with_capacity(calls.len());
    let mut waiting = Vec::with_capacity(calls.len());
    for (req, answer) in calls {
        match Parsed::new(&req) {
            Ok(p) => {
                parsed.push(p);
                waiting.push((req, answer));
            }
            Err(e) => {
                let _ = answer.send(Err(e));
            }
        }
    }
    if parsed.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let stored = store(&pool, &parsed).await;
    metrics.reply_batch(parsed.len(), started.elapsed());
    let outcomes = match stored {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, replies = parsed.len(), "a batch of replies is stored one by one");
            parsed.iter().map(|_| Outcome::KeyTaken).collect()
        }
    };
    let again = waiting
        .into_iter()
        .zip(outcomes)
        .filter_map(|((req, answer), outcome)| match outcome {
            Outcome::Done(a) => {
                let _ = answer.send(*a);
                None
            }
            Outcome::KeyTaken => Some((req, answer)),
        });
    let alone = again.map(|(req, answer)| {
        let pool = pool.clone();
        async move {
            let _ = answer.send(create_alone(&pool, req).await);
        }
    });
    futures::future::join_all(alone).await;
}

/// Gathers `CreateReply` calls into batches (see the module's docs).
#[derive(Clone)]
pub(crate) struct Creator {
    /// One gatherer per shard of tenants.
    shards: Arc<[mpsc::Sender<Call>]>,
}

impl Creator {
    /// Starts the gatherers; they end when every handle is dropped, after
    /// storing what they were given.
    pub(crate) fn start(pool: PgPool, metrics: Metrics) -> Self {
        let shards = (0..SHARDS)
            .map(|_| {
                let (calls, rx) = mpsc::channel(1024);
                tokio::spawn(gather(pool.clone(), metrics.clone(), rx));
                calls
            })
            .collect();
        Self { shards }
    }

    pub(crate) async fn create(&self, req: pb::CreateReplyRequest) -> Answer {
        // A malformed tenant id is refused by the batch's parse, on any shard.
        let shard = uuid::Uuid::parse_str(&req.tenant_id)
            .map(|t| (t.as_u128() % self.shards.len() as u128) as usize)
            .unwrap_or(0);
        let (tx, rx) = oneshot::channel();
        self.shards[shard]
            .send((req, tx))
            .await
            .map_err(|_| Error::Serve("the reply store has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Serve("the reply store dropped a reply".into()))?
    }
}

async fn gather(pool: PgPool, metrics: Metrics, mut rx: mpsc::Receiver<Call>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let tasks = tokio_util::task::TaskTracker::new();
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // Everything that arrived meanwhile joins this batch.
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX
            && let Ok(c) = rx.try_recv()
        {
            batch.push(c);
        }
        let (pool, metrics) = (pool.clone(), metrics.clone());
        tasks.spawn(async move {
            flush(pool, metrics, batch).await;
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
}
