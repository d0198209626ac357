//! Coalesces concurrent `Submit`s into pipelined `XADD`s.
//!
//! Every webhook used to make its own round of the Redis client: one command
//! through fred's router, one write, one reply matched back. Under load the
//! submits arrive together, so one task takes every job waiting (up to
//! [`MAX_BATCH`]) and sends their `XADD`s as one pipeline: one write and one
//! round trip for the lot. Durability is unchanged: each caller is answered
//! with its own entry id, or its own error, only after Redis replied to its
//! `XADD`; a caller whose answer never comes (the task stopped) gets an error,
//! never a success. The order of entries is the order the calls arrived in.

use std::sync::Arc;

use bytes::Bytes;
use fred::{
    clients::Client,
    interfaces::{ClientLike, StreamsInterface},
    types::Value,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    Error,
    queue::{JOB_FIELD, Keys},
};

/// The most `XADD`s one pipeline may be configured to carry. Bounded so that
/// one slow batch holds a bounded number of webhooks, and Redis answers it in
/// well under a millisecond.
pub(crate) const MAX_BATCH: usize = 256;

struct Pending {
    job: Bytes,
    reply: oneshot::Sender<Result<String, Error>>,
}

/// The handle the gRPC `Submit` enqueues through; cheap to clone.
#[derive(Clone)]
pub(crate) struct Submitter {
    tx: mpsc::Sender<Pending>,
}

impl Submitter {
    /// Starts the batching task on `client`, `max` `XADD`s a pipeline at
    /// most. It ends when every handle is gone. Submits waiting beyond four
    /// pipelines' worth wait to hand theirs over (backpressure, not memory).
    pub(crate) fn spawn(client: Client, keys: Arc<Keys>, max: usize) -> Self {
        let max = max.clamp(1, MAX_BATCH);
        let (tx, rx) = mpsc::channel(4 * max);
        tokio::spawn(run(client, keys, rx, max));
        Self { tx }
    }

    /// Appends an encoded job to the job stream; its entry id once Redis has it.
    pub(crate) async fn enqueue(&self, job: Bytes) -> Result<String, Error> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { job, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> Error {
    Error::Redis(fred::error::Error::new(
        fred::error::ErrorKind::Canceled,
        "the submitter stopped",
    ))
}

async fn run(client: Client, keys: Arc<Keys>, mut rx: mpsc::Receiver<Pending>, max: usize) {
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        let answers = send(&client, &keys, &batch).await;
        for (p, answer) in batch.drain(..).zip(answers) {
            // A caller that went away (its request was cancelled) has its job
            // queued all the same: as before, the edge then answers 503 or
            // nothing, and Meta's retry is deduplicated when stored.
            let _ = p.reply.send(answer);
        }
    }
}

/// One pipeline of `XADD`s; one answer per job, in order. While the
/// connection is down each fails at once (`fail_fast`), as a single `XADD` did.
async fn send(client: &Client, keys: &Keys, batch: &[Pending]) -> Vec<Result<String, Error>> {
    let pipeline = client.pipeline().with_options(&fred::types::config::Options {
        fail_fast: true,
        ..Default::default()
    });
    let mut answers: Vec<Option<Result<String, Error>>> = Vec::with_capacity(batch.len());
    for p in batch {
        let queued: Result<(), _> = pipeline
            .xadd(&keys.jobs, false, None, "*", vec![(JOB_FIELD, p.job.clone())])
            .await;
        answers.push(queued.err().map(|e| Err(Error::from(e))));
    }
    let mut replies = pipeline.try_all::<Value>().await.into_iter();
    answers
        .into_iter()
        .map(|queued| match queued {
            Some(failed) => failed,
            None => match replies.next() {
                Some(Ok(v)) => v.into_string().ok_or_else(|| {
                    Error::Redis(fred::error::Error::new(
                        fred::error::ErrorKind::Parse,
                        "XADD answered without an entry id",
                    ))
                }),
                Some(Err(e)) => Err(Error::from(e)),
                None => Err(stopped()),
            },
        })
        .collect()
}
