//! The job stream in Redis: enqueue, read as a consumer group, reclaim, ack,
//! dead-letter. Entries are XDEL'd once acknowledged, so the stream holds only
//! work that is not done.

use std::collections::HashMap;

use bytes::Bytes;
use faro_proto::ingest::v1::Job;
use fred::{
    clients::Client,
    interfaces::{ClientLike, StreamsInterface, TransactionInterface},
    prelude::{Blocking, Builder, Config as RedisConfig, ReconnectPolicy},
    types::Value,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::Error;

pub(crate) const GROUP: &str = "workers";
/// Longer than the 1 s XREADGROUP block, shorter than the edge's 10 s patience.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
pub(crate) const JOB_FIELD: &str = "job";

/// The Redis keys of one deployment (or one test), under its prefix.
///
/// The queue's keys share the hash tag `{ingest}`: a Lua script or MULTI that
/// moves a job between them (ack and dead-letter, ack and schedule a retry,
/// promote a due retry) touches keys of one slot, as Redis Cluster requires.
#[derive(Clone, Debug)]
pub struct Keys {
    pub prefix: String,
    /// The stream of jobs not yet done.
    pub jobs: String,
    /// Jobs no worker can process, kept whole with their error for re-drive.
    pub dead: String,
    /// Jobs waiting for a retry: a sorted set scored by when they are due.
    pub retry: String,
    /// Agents' replies waiting to be sent (their own stream and group).
    pub replies: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            jobs: format!("{prefix}{{ingest}}:jobs"),
            dead: format!("{prefix}{{ingest}}:dead"),
            retry: format!("{prefix}{{ingest}}:retry"),
            replies: format!("{prefix}{{ingest}}:replies"),
        }
    }
}

/// A client for `url`, not connected yet; a malformed URL is an error here.
pub(crate) fn client(url: &str) -> Result<Client, Error> {
    client_with(url, Blocking::Block)
}

/// A worker's own client. A command sent while its `XREADGROUP` is blocked
/// first interrupts the read (`CLIENT UNBLOCK` on a side connection), so that a
/// stopping worker does not wait out the block: see [`unblock`].
pub(crate) fn worker_client(url: &str) -> Result<Client, Error> {
    client_with(url, Blocking::Interrupt)
}

fn client_with(url: &str, blocking: Blocking) -> Result<Client, Error> {
    let mut config =
        RedisConfig::from_url(url).map_err(|e| Error::Config(format!("REDIS_URL: {e}")))?;
    config.blocking = blocking;
    Ok(Builder::from_config(config)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        // A command never waits forever on a connection that died quietly; the
        // edge turns the error into a 503 and the worker into a retry.
        .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
        .build()?)
}

/// Connects `client`, retrying with backoff for as long as Redis is
/// unreachable, so that a process started before Redis still comes up. Once
/// connected, the client's reconnect policy takes over. `false` if `stop`
/// fired first.
pub(crate) async fn connect(client: &Client, stop: &CancellationToken) -> bool {
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            () = stop.cancelled() => return false,
            r = client.init() => r,
        };
        match attempt {
            Ok(_) => return true,
            Err(e) => tracing::warn!(
                error = %e,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "redis unreachable; retrying"
            ),
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Ends a blocked read on a [`worker_client`] connection whose future was
/// dropped: the `PING` makes the client interrupt the read before sending it.
/// An interrupted `XREADGROUP` delivers nothing. If entries were delivered just
/// before the interrupt, their reply is discarded and they stay pending under
/// this consumer until a worker reclaims them after `claim_idle`: late, never lost.
pub(crate) async fn unblock(client: &Client) {
    if let Err(e) = client.ping::<()>(None).await {
        tracing::debug!(error = %e, "redis ping after an interrupted read");
    }
}

pub(crate) async fn quit(client: &Client) {
    if let Err(e) = client.quit().await {
        tracing::debug!(error = %e, "redis quit");
    }
}

/// Creates the consumer group (and the stream) if missing. Also the recovery
/// for NOGROUP after a Redis restart without persistence.
pub(crate) async fn ensure_group(client: &Client, keys: &Keys) -> Result<(), Error> {
    match client
        .xgroup_create::<(), _, _, _>(&keys.jobs, GROUP, "0", true)
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if e.details().starts_with("BUSYGROUP") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub(crate) fn is_nogroup(e: &fred::error::Error) -> bool {
    e.details().starts_with("NOGROUP")
}

/// Queues a webhook's job. While Redis is unreachable this fails at once
/// (fred's `fail_fast`) instead of waiting out the command timeout: the edge
/// answers 503 in milliseconds, Meta retries later, and a flood of webhooks
/// during an outage does not pile up requests held open for seconds.
pub(crate) async fn enqueue(client: &Client, keys: &Keys, job: &Job) -> Result<String, Error> {
    let bytes = Bytes::from(job.encode_to_vec());
    let id: String = client
        .with_options(&fred::types::config::Options {
            fail_fast: true,
            ..Default::default()
        })
        .xadd(&keys.jobs, false, None, "*", vec![(JOB_FIELD, bytes)])
        .await?;
    Ok(id)
}

/// One stream entry: its id and its job, or why the job could not be decoded.
pub(crate) struct Entry {
    pub id: String,
    pub job: Result<Job, String>,
}

fn entry(id: String, mut fields: HashMap<String, Bytes>) -> Entry {
    let job = match fields.remove(JOB_FIELD) {
        Some(b) => Job::decode(b).map_err(|e| format!("undecodable job: {e}")),
        None => Err("entry has no job field".to_owned()),
    };
    Entry { id, job }
}

/// `[[id, [field, value, ...]], ...]` as returned inside XREADGROUP and XAUTOCLAIM.
fn parse_entries(entries: Value) -> Vec<Entry> {
    entries
        .into_array()
        .into_iter()
        .filter_map(|e| {
            let mut pair = e.into_array().into_iter();
            let id = pair.next()?.as_string()?;
            let mut fields = HashMap::new();
            let mut flat = pair.next()?.into_array().into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let (Some(k), Some(v)) = (k.as_string(), v.as_bytes()) {
                    fields.insert(k, Bytes::copy_from_slice(v));
                }
            }
            Some(entry(id, fields))
        })
        .collect()
}

/// New entries for this consumer, waiting up to `block_ms` for some.
pub(crate) async fn read_new(
    client: &Client,
    keys: &Keys,
    consumer: &str,
    count: usize,
    block_ms: u64,
) -> Result<Vec<Entry>, fred::error::Error> {
    let reply: Value = client
        .xreadgroup(
            GROUP,
            consumer,
            Some(count as u64),
            Some(block_ms),
            false,
            &keys.jobs,
            ">",
        )
        .await?;
    // Nil on timeout; otherwise [[stream, entries]] (one stream asked for).
    Ok(match reply {
        Value::Null => Vec::new(),
        Value::Map(map) => map.inner().into_values().flat_map(parse_entries).collect(),
        other => other
            .into_array()
            .into_iter()
            .flat_map(|stream| stream.into_array().into_iter().nth(1).map(parse_entries))
            .flatten()
            .collect(),
    })
}

/// Takes over entries another consumer left pending longer than `min_idle_ms`.
/// Redis measures idleness from the last delivery, so a slow but live worker
/// keeps its entries as long as it finishes within `min_idle_ms`.
pub(crate) async fn claim_stale(
    client: &Client,
    keys: &Keys,
    consumer: &str,
    min_idle_ms: u64,
    count: usize,
) -> Result<Vec<Entry>, fred::error::Error> {
    let reply: Value = client
        .xautoclaim(
            &keys.jobs,
            GROUP,
            consumer,
            min_idle_ms,
            "0-0",
            Some(count as u64),
            false,
        )
        .await?;
    // Redis 7: [next-cursor, entries, [deleted ids]].
    Ok(reply
        .into_array()
        .into_iter()
        .nth(1)
        .map(parse_entries)
        .unwrap_or_default())
}

/// Acknowledges and deletes done entries, atomically (MULTI/EXEC): a process
/// dying between a separate XACK and XDEL would leave an entry that is neither
/// pending nor new, which no worker ever reads again.
///
/// A job stored except for some parts that can never be stored is
/// dead-lettered in the same transaction (whole, with those parts and their
/// reasons): its parts are either still pending or stored and dead-lettered.
pub(crate) async fn ack(
    client: &Client,
    keys: &Keys,
    ids: &[String],
    partly_dead: &[PartlyDead<'_>],
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let trx = client.multi();
    for p in partly_dead {
        let _: Value = trx
            .xadd(
                &keys.dead,
                false,
                None,
                "*",
                vec![
                    ("source_id", Bytes::from(p.id.to_owned())),
                    ("error", Bytes::from(p.error.clone())),
                    (JOB_FIELD, Bytes::from(p.job.encode_to_vec())),
                    (REJECTED_FIELD, Bytes::from(p.rejected.clone())),
                    (CLASS_FIELD, Bytes::from_static(b"partial")),
                ],
            )
            .await?;
    }
    let _: Value = trx.xack(&keys.jobs, GROUP, ids.to_vec()).await?;
    let _: Value = trx.xdel(&keys.jobs, ids.to_vec()).await?;
    let _: Value = trx.exec(true).await?;
    Ok(())
}

/// The dead-letter field listing the parts of a job that were not stored:
/// a JSON array of `{"reason", "part"}`.
const REJECTED_FIELD: &str = "rejected";

/// The dead-letter field that classifies the failure: see [`dead_letter`].
const CLASS_FIELD: &str = "class";

/// A job whose payload was stored except for some parts.
pub(crate) struct PartlyDead<'a> {
    pub id: &'a str,
    pub job: &'a Job,
    pub error: String,
    /// JSON array of `{"reason", "part"}`.
    pub rejected: String,
}

/// Resets the idle time of entries this consumer still works on (XCLAIM
/// JUSTID, which does not count a delivery), so that a pass of several store
/// calls, each within its deadline, is not taken for abandoned.
pub(crate) async fn touch(
    client: &Client,
    keys: &Keys,
    consumer: &str,
    ids: &[String],
) -> Result<(), Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let _: Value = client
        .xclaim(
            &keys.jobs,
            GROUP,
            consumer,
            0,
            ids.to_vec(),
            None,
            None,
            None,
            false,
            true,
        )
        .await?;
    Ok(())
}

/// Keeps a job no worker can process, whole and with its error, and acks it,
/// in one transaction: it is either still pending or dead-lettered, never both
/// or neither. `class` says why in one word: `permanent` (retrying cannot
/// help), `exhausted` (failed every attempt) or `partial` (some parts only).
pub(crate) async fn dead_letter(
    client: &Client,
    keys: &Keys,
    id: &str,
    raw: Option<&Job>,
    error: &str,
    class: &str,
) -> Result<(), Error> {
    let job = raw
        .map(|j| Bytes::from(j.encode_to_vec()))
        .unwrap_or_default();
    let trx = client.multi();
    let _: Value = trx
        .xadd(
            &keys.dead,
            false,
            None,
            "*",
            vec![
                ("source_id", Bytes::from(id.to_owned())),
                ("error", Bytes::from(error.to_owned())),
                (JOB_FIELD, job),
                (CLASS_FIELD, Bytes::from(class.to_owned())),
            ],
        )
        .await?;
    let _: Value = trx.xack(&keys.jobs, GROUP, id).await?;
    let _: Value = trx.xdel(&keys.jobs, id).await?;
    let _: Value = trx.exec(true).await?;
    Ok(())
}
