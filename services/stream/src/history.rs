//! Reading a tenant's event history (written by ingest when it publishes:
//! see `services/ingest/src/publish.rs` and ARCHITECTURE.md, step 7).

use faro_proto::{
    redis_keys::{events_history, events_meta},
    stream::v1::Event,
};
use fred::{
    clients::Client,
    types::{Value, scripts::Script},
};
use prost::Message;

/// The most events one read returns.
pub(crate) const PAGE: usize = 1000;

/// One atomic look at a tenant's position and history.
///
/// KEYS: meta hash, history stream. ARGV: "1" with a position ("0" for the
/// position only), its epoch, its offset, the most events to return, an epoch
/// for a tenant without one. A tenant without a meta hash gets one here, as
/// the publish script would create it: its history is gone, so any older
/// position is of another epoch. Returns the epoch, the latest offset,
/// 1 if the position is recovered (0 if not), then the encoded events after it.
const READ_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end
local latest = tonumber(redis.call('HGET', KEYS[1], 'offset'))
if ARGV[1] ~= '1' then return {epoch, latest, 1} end
local since = tonumber(ARGV[3])
if ARGV[2] ~= epoch or since == nil or since > latest then return {epoch, latest, 0} end
if since == latest then return {epoch, latest, 1} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first == 0 or tonumber(string.match(first[1][1], '^(%d+)')) > since + 1 then
  return {epoch, latest, 0}
end
local out = {epoch, latest, 1}
local entries = redis.call('XRANGE', KEYS[2], string.format('%d-0', since + 1), '+', 'COUNT', ARGV[4])
for _, entry in ipairs(entries) do
  out[#out + 1] = entry[2][4]
end
return out
"#;

/// A position in a tenant's event sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Pos {
    pub epoch: String,
    pub offset: u64,
}

/// What one read found.
#[derive(Debug)]
pub(crate) struct Page {
    /// The tenant's latest position when read.
    pub latest: Pos,
    /// False: the position is older than history, or of another epoch.
    pub recovered: bool,
    /// Up to [`PAGE`] events after the position, in offset order, unfiltered.
    pub events: Vec<Event>,
    /// Events were left out by the page size: read again after the last one.
    pub full: bool,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("unexpected history reply")]
    Reply,
}

/// Reads history on a command connection of its own (the subscriber's
/// connection only listens).
pub(crate) struct Reader {
    pub client: Client,
    pub prefix: String,
    script: Script,
}

impl Reader {
    pub(crate) fn new(client: Client, prefix: String) -> Self {
        Self {
            client,
            prefix,
            script: Script::from_lua(READ_LUA),
        }
    }

    /// The tenant's latest position.
    pub(crate) async fn latest(&self, tenant: &str) -> Result<Pos, ReadError> {
        Ok(self.read(tenant, None).await?.latest)
    }

    /// Up to [`PAGE`] events strictly after `since` (`None`: the position only).
    pub(crate) async fn read(&self, tenant: &str, since: Option<&Pos>) -> Result<Page, ReadError> {
        let keys = vec![
            events_meta(&self.prefix, tenant),
            events_history(&self.prefix, tenant),
        ];
        let (has, epoch, offset) = match since {
            Some(p) => ("1", p.epoch.clone(), p.offset.to_string()),
            None => ("0", String::new(), String::new()),
        };
        let args: Vec<String> = vec![
            has.into(),
            epoch,
            offset,
            PAGE.to_string(),
            uuid::Uuid::new_v4().simple().to_string(),
        ];
        let reply: Value = self
            .script
            .evalsha_with_reload(&self.client, keys, args)
            .await?;
        parse(tenant, reply)
    }
}

fn parse(tenant: &str, reply: Value) -> Result<Page, ReadError> {
    let mut items = reply.into_array().into_iter();
    let epoch = items
        .next()
        .and_then(|v| v.as_string())
        .ok_or(ReadError::Reply)?;
    let offset = items
        .next()
        .and_then(|v| v.as_u64())
        .ok_or(ReadError::Reply)?;
    let recovered = items
        .next()
        .and_then(|v| v.as_i64())
        .ok_or(ReadError::Reply)?
        == 1;
    let mut raw = 0usize;
    let mut events = Vec::new();
    for item in items {
        raw += 1;
        let Some(bytes) = item.as_bytes() else {
            continue;
        };
        match Event::decode(bytes) {
            Ok(e) if e.tenant_id == tenant => events.push(e),
            Ok(_) => tracing::warn!(%tenant, "history event of another tenant ignored"),
            Err(e) => tracing::warn!(%tenant, error = %e, "undecodable history event ignored"),
        }
    }
    Ok(Page {
        latest: Pos { epoch, offset },
        recovered,
        events,
        full: raw >= PAGE,
    })
}

/// What [`all_after`] gathered.
pub(crate) struct CaughtUp {
    pub events: Vec<Event>,
    /// Every event up to here is in `events`.
    pub end: Pos,
    /// False: `bound` stopped the reading before the latest position.
    pub complete: bool,
}

/// Every event after `since` (several reads if need be), up to the latest
/// position at the last read; `None` if history no longer holds `since`.
/// `bound` caps the events gathered (the history's own size bound).
pub(crate) async fn all_after(
    reader: &Reader,
    tenant: &str,
    since: &Pos,
    bound: usize,
) -> Result<Option<CaughtUp>, ReadError> {
    let mut at = since.clone();
    let mut events = Vec::new();
    loop {
        let page = reader.read(tenant, Some(&at)).await?;
        if !page.recovered {
            return Ok(None);
        }
        if let Some(last) = page.events.last() {
            at.offset = last.offset;
        }
        events.extend(page.events);
        if !page.full {
            return Ok(Some(CaughtUp {
                events,
                end: page.latest,
                complete: true,
            }));
        }
        if events.len() >= bound {
            return Ok(Some(CaughtUp {
                events,
                end: at,
                complete: false,
            }));
        }
    }
}
