//! The dead-letter queue an operator drives: list, show, retry, purge.
//!
//! Dead letters are entries of the `dead` stream (written by the workers, see
//! `queue::dead_letter` and `queue::ack`): `source_id`, `error`, `job` (the
//! job whole, empty when it could not be decoded) and, for a job stored except
//! for some parts, `rejected`. A writer may also set `class` and `attempts`;
//! without them the class is read from the error text.
//!
//! A retry moves one entry back to the live stream with its attempts reset,
//! in one Lua script: XADD happens only if this call's XDEL removed the entry,
//! so a crash, or two operators retrying at once, never loses or queues an
//! entry twice. Retrying a job whose other parts were stored already is
//! harmless: storage is idempotent (unique keys, `ON CONFLICT`), and the
//! stored parts come back as no-ops.

mod entry;

use bytes::Bytes;
use faro_proto::{
    dead_letters::filter_is_empty,
    ingest::v1::{
        DeadLetterSelection, GetDeadLetterResponse, Job, ListDeadLettersRequest,
        ListDeadLettersResponse, PurgeDeadLettersResponse, RetryDeadLettersResponse,
        dead_letter_selection::Target,
    },
};
use fred::{
    clients::Client,
    interfaces::{LuaInterface, StreamsInterface},
    types::Value,
};
use prost::Message;

use self::entry::{Fields, Matcher, StreamId, after, describe, matcher, parse_id};
use crate::{
    Error,
    queue::{JOB_FIELD, Keys},
};

/// Entries read per XRANGE.
const PAGE: u64 = 500;
/// Entries one list call examines at most; past it, it returns a cursor.
const LIST_SCAN: usize = 10_000;
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// XADD only if this call removed the dead letter: never lost, never twice.
const RETRY_SCRIPT: &str = r"
if redis.call('XDEL', KEYS[1], ARGV[1]) == 1 then
  return redis.call('XADD', KEYS[2], '*', ARGV[2], ARGV[3])
end
return false
";

/// Entries of the dead stream from `first` to `last`, inclusive, at most `PAGE`.
async fn page(
    client: &Client,
    keys: &Keys,
    first: StreamId,
    last: StreamId,
) -> Result<Vec<(String, Fields)>, Error> {
    Ok(client
        .xrange(&keys.dead, first.text(), last.text(), Some(PAGE))
        .await?)
}

pub(crate) async fn list(
    client: &Client,
    keys: &Keys,
    req: &ListDeadLettersRequest,
) -> Result<ListDeadLettersResponse, Error> {
    let m = matcher(req.filter.as_ref())?;
    let limit = match req.limit {
        0 => DEFAULT_LIMIT,
        n if n > MAX_LIMIT => {
            return Err(Error::InvalidArgument(format!(
                "limit must be 1..={MAX_LIMIT}"
            )));
        }
        n => n,
    } as usize;
    let mut first = m.first;
    if !req.cursor.is_empty() {
        let cursor = parse_id("cursor", &req.cursor)?;
        first = first.max(after(&cursor.text()).unwrap_or(StreamId(u64::MAX, u64::MAX)));
    }
    let mut out = ListDeadLettersResponse::default();
    let mut examined = 0;
    while first <= m.last {
        let entries = page(client, keys, first, m.last).await?;
        let full = entries.len() as u64 == PAGE;
        for (id, fields) in &entries {
            examined += 1;
            let (d, _) = describe(id, fields);
            if m.matches(&d) {
                out.dead_letters.push(d);
            }
            if out.dead_letters.len() == limit || examined == LIST_SCAN {
                out.next_cursor.clone_from(id);
                return Ok(out);
            }
        }
        match entries.last().and_then(|(id, _)| after(id)) {
            Some(next) if full => first = next,
            _ => break,
        }
    }
    Ok(out)
}

async fn one(client: &Client, keys: &Keys, id: &str) -> Result<Fields, Error> {
    let sid = parse_id("id", id)?;
    let mut entries = page(client, keys, sid, sid).await?;
    entries
        .pop()
        .map(|(_, f)| f)
        .ok_or_else(|| Error::NotFound(format!("no dead letter {id}")))
}

pub(crate) async fn get(
    client: &Client,
    keys: &Keys,
    id: &str,
) -> Result<GetDeadLetterResponse, Error> {
    let fields = one(client, keys, id).await?;
    let (d, job) = describe(id, &fields);
    Ok(GetDeadLetterResponse {
        dead_letter: Some(d),
        payload: job
            .and_then(|j| j.submission)
            .map(|s| s.payload)
            .unwrap_or_default(),
    })
}

/// The entries a selection names, a page at a time; an id that is not there
/// is NOT_FOUND. A filter or `all` covers what is dead when it starts:
/// entries dead-lettered meanwhile (a retried job failing again) are left
/// for the next call, so a retry of everything ends.
struct Selected {
    m: Matcher,
    /// Where the next page starts; `None` once done.
    next: Option<StreamId>,
    /// A selection by id: its one entry.
    single: Option<(String, Fields)>,
}

async fn select(
    client: &Client,
    keys: &Keys,
    selection: Option<&DeadLetterSelection>,
) -> Result<Selected, Error> {
    let filter = match selection.and_then(|s| s.target.as_ref()) {
        Some(Target::Id(id)) => {
            let fields = one(client, keys, id).await?;
            return Ok(Selected {
                m: matcher(None)?,
                next: None,
                single: Some((id.clone(), fields)),
            });
        }
        Some(Target::Filter(f)) if filter_is_empty(f) => {
            return Err(Error::InvalidArgument(
                "an empty filter selects every dead letter: select `all` to mean that".into(),
            ));
        }
        Some(Target::Filter(f)) => Some(f),
        Some(Target::All(true)) => None,
        Some(Target::All(false)) | None => {
            return Err(Error::InvalidArgument(
                "select one dead letter by id, a filter, or all".into(),
            ));
        }
    };
    let mut m = matcher(filter)?;
    let newest: Vec<(String, Fields)> = client.xrevrange(&keys.dead, "+", "-", Some(1)).await?;
    let next = match newest.first().and_then(|(id, _)| StreamId::parse(id)) {
        Some(newest) => {
            m.last = m.last.min(newest);
            Some(m.first)
        }
        None => None,
    };
    Ok(Selected {
        m,
        next,
        single: None,
    })
}

impl Selected {
    /// The next matching entries; empty once done.
    async fn page(&mut self, client: &Client, keys: &Keys) -> Result<Vec<(String, Fields)>, Error> {
        if let Some(one) = self.single.take() {
            return Ok(vec![one]);
        }
        while let Some(first) = self.next.filter(|f| *f <= self.m.last) {
            let entries = page(client, keys, first, self.m.last).await?;
            self.next = match entries.last().and_then(|(id, _)| after(id)) {
                Some(next) if entries.len() as u64 == PAGE => Some(next),
                _ => None,
            };
            let matched: Vec<_> = entries
                .into_iter()
                .filter(|(id, fields)| self.m.matches(&describe(id, fields).0))
                .collect();
            if !matched.is_empty() {
                return Ok(matched);
            }
        }
        Ok(Vec::new())
    }
}

/// A job as it goes back to the live stream: a fresh start.
fn reset_attempts(job: &mut Job) {
    job.attempt = 0;
}

pub(crate) async fn retry(
    client: &Client,
    keys: &Keys,
    selection: Option<&DeadLetterSelection>,
) -> Result<RetryDeadLettersResponse, Error> {
    let mut out = RetryDeadLettersResponse::default();
    let mut selected = select(client, keys, selection).await?;
    loop {
        let entries = selected.page(client, keys).await?;
        if entries.is_empty() {
            return Ok(out);
        }
        for (id, fields) in entries {
            match retry_one(client, keys, &id, &fields).await? {
                Ok(job_id) => {
                    tracing::info!(dead_letter = %id, %job_id, "dead letter retried");
                    out.retried.insert(id, job_id);
                }
                Err(why) => {
                    out.skipped.insert(id, why.to_owned());
                }
            }
        }
    }
}

/// The new job id, or why the entry was not retried.
async fn retry_one(
    client: &Client,
    keys: &Keys,
    id: &str,
    fields: &Fields,
) -> Result<Result<String, &'static str>, Error> {
    let (_, job) = describe(id, fields);
    let Some(mut job) = job.filter(|j| j.submission.is_some()) else {
        return Ok(Err(
            "the job was not kept (it could not be decoded): purge it",
        ));
    };
    reset_attempts(&mut job);
    let moved: Value = client
        .eval(
            RETRY_SCRIPT,
            vec![keys.dead.clone(), keys.jobs.clone()],
            vec![
                Value::from(id),
                Value::from(JOB_FIELD),
                Value::Bytes(Bytes::from(job.encode_to_vec())),
            ],
        )
        .await?;
    Ok(moved
        .as_string()
        .ok_or("already retried or purged by another call"))
}

pub(crate) async fn purge(
    client: &Client,
    keys: &Keys,
    selection: Option<&DeadLetterSelection>,
) -> Result<PurgeDeadLettersResponse, Error> {
    let mut purged = 0u64;
    let mut selected = select(client, keys, selection).await?;
    loop {
        let ids: Vec<String> = selected
            .page(client, keys)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if ids.is_empty() {
            break;
        }
        purged += client.xdel::<u64, _, _>(&keys.dead, ids).await?;
    }
    tracing::info!(purged, "dead letters purged");
    Ok(PurgeDeadLettersResponse { purged })
}
