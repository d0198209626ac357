//! The reply stream: `{prefix}{ingest}:replies`, consumer group `senders`.
//! Apart from the webhook jobs, so a backlog of webhooks never delays a reply
//! and a slow platform never holds up webhooks.

use bytes::Bytes;
use faro_proto::ingest::v1::ReplyJob;
use fred::{
    clients::Client,
    interfaces::{ClientLike, StreamsInterface, TransactionInterface},
    types::Value,
};
use prost::Message;

use crate::queue::Keys;

pub(crate) const GROUP: &str = "senders";
const FIELD: &str = "reply";

pub(crate) async fn ensure_group(client: &Client, keys: &Keys) -> Result<(), fred::error::Error> {
    match client
        .xgroup_create::<(), _, _, _>(&keys.replies, GROUP, "0", true)
        .await
    {
        Err(e) if !e.details().starts_with("BUSYGROUP") => Err(e),
        _ => Ok(()),
    }
}

/// Queues one reply; fails at once while Redis is unreachable.
pub(crate) async fn enqueue(
    client: &Client,
    keys: &Keys,
    job: &ReplyJob,
) -> Result<String, fred::error::Error> {
    client
        .with_options(&fred::types::config::Options {
            fail_fast: true,
            ..Default::default()
        })
        .xadd(
            &keys.replies,
            false,
            None,
            "*",
            vec![(FIELD, Bytes::from(job.encode_to_vec()))],
        )
        .await
}

/// A stream entry's id and its job (None: undecodable, acked and dropped).
pub(crate) type Entry = (String, Option<ReplyJob>);

fn entries(v: Value) -> Vec<Entry> {
    v.into_array()
        .into_iter()
        .filter_map(|e| {
            let mut pair = e.into_array().into_iter();
            let id = pair.next()?.as_string()?;
            let mut flat = pair.next()?.into_array().into_iter();
            let mut job = None;
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if k.as_string().as_deref() == Some(FIELD) {
                    job = v.as_bytes().and_then(|b| ReplyJob::decode(b).ok());
                }
            }
            Some((id, job))
        })
        .collect()
}

/// New replies for this consumer, waiting up to `block_ms`.
pub(crate) async fn read_new(
    client: &Client,
    keys: &Keys,
    consumer: &str,
    count: u64,
    block_ms: u64,
) -> Result<Vec<Entry>, fred::error::Error> {
    let reply: Value = client
        .xreadgroup(
            GROUP,
            consumer,
            Some(count),
            Some(block_ms),
            false,
            &keys.replies,
            ">",
        )
        .await?;
    Ok(match reply {
        Value::Null => Vec::new(),
        Value::Map(map) => map.inner().into_values().flat_map(entries).collect(),
        other => other
            .into_array()
            .into_iter()
            .filter_map(|stream| stream.into_array().into_iter().nth(1))
            .flat_map(entries)
            .collect(),
    })
}

/// Replies another consumer left pending longer than `min_idle_ms` (it died).
pub(crate) async fn claim_stale(
    client: &Client,
    keys: &Keys,
    consumer: &str,
    min_idle_ms: u64,
) -> Result<Vec<Entry>, fred::error::Error> {
    let reply: Value = client
        .xautoclaim(
            &keys.replies,
            GROUP,
            consumer,
            min_idle_ms,
            "0-0",
            Some(64),
            false,
        )
        .await?;
    Ok(reply
        .into_array()
        .into_iter()
        .nth(1)
        .map(entries)
        .unwrap_or_default())
}

/// Done: acknowledged and deleted together, many in one transaction.
pub(crate) async fn ack_all(
    client: &Client,
    keys: &Keys,
    ids: &[String],
) -> Result<(), fred::error::Error> {
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let trx = client.multi();
    let _: Value = trx.xack(&keys.replies, GROUP, ids.clone()).await?;
    let _: Value = trx.xdel(&keys.replies, ids).await?;
    let _: Value = trx.exec(true).await?;
    Ok(())
}
