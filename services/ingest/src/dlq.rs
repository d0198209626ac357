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

use std::collections::HashMap;

use bytes::Bytes;
use faro_proto::{
    dead_letters::{ERROR_CLASSES, filter_is_empty},
    from_timestamp,
    ingest::v1::{
        DeadLetter, DeadLetterFilter, DeadLetterSelection, GetDeadLetterResponse, Job,
        ListDeadLettersRequest, ListDeadLettersResponse, Provider, PurgeDeadLettersResponse,
        RetryDeadLettersResponse, dead_letter_selection::Target,
    },
    to_timestamp,
};
use fred::{
    clients::Client,
    interfaces::{LuaInterface, StreamsInterface},
    types::Value,
};
use prost::Message;

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

/// A stream entry id, `millis-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    fn text(self) -> String {
        format!("{}-{}", self.0, self.1)
    }
}

fn parse_id(name: &str, s: &str) -> Result<StreamId, Error> {
    StreamId::parse(s).ok_or_else(|| {
        Error::InvalidArgument(format!("{name} {s:?} is not a stream id (millis-sequence)"))
    })
}

/// A validated filter, matched against decoded entries.
struct Matcher {
    provider: Option<Provider>,
    tenant: Option<String>,
    class: Option<String>,
    /// Inclusive bounds in the dead stream: its ids are the times of death.
    first: StreamId,
    last: StreamId,
}

fn millis(t: &prost_types::Timestamp, name: &str) -> Result<u64, Error> {
    from_timestamp(Some(t))
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| Error::InvalidArgument(format!("{name} is out of range")))
}

fn matcher(filter: Option<&DeadLetterFilter>) -> Result<Matcher, Error> {
    let mut m = Matcher {
        provider: None,
        tenant: None,
        class: None,
        first: StreamId(0, 0),
        last: StreamId(u64::MAX, u64::MAX),
    };
    let Some(f) = filter else {
        return Ok(m);
    };
    if f.provider != 0 {
        let p = Provider::try_from(f.provider)
            .map_err(|_| Error::InvalidArgument(format!("unknown provider {}", f.provider)))?;
        m.provider = Some(p);
    }
    if !f.tenant_id.is_empty() {
        if !faro_proto::dead_letters::is_uuid(&f.tenant_id) {
            return Err(Error::InvalidArgument("tenant_id must be a UUID".into()));
        }
        m.tenant = Some(f.tenant_id.to_ascii_lowercase());
    }
    if !f.error_class.is_empty() {
        if !ERROR_CLASSES.contains(&f.error_class.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "error_class must be one of {}",
                ERROR_CLASSES.join(", ")
            )));
        }
        m.class = Some(f.error_class.clone());
    }
    if let Some(since) = &f.since {
        m.first = StreamId(millis(since, "since")?, 0);
    }
    if let Some(until) = &f.until {
        let until = millis(until, "until")?;
        // `until` is exclusive.
        m.last = StreamId(until.saturating_sub(1), u64::MAX);
        if until == 0 || m.last < m.first {
            return Err(Error::InvalidArgument("until must be after since".into()));
        }
    }
    Ok(m)
}

impl Matcher {
    fn matches(&self, d: &DeadLetter) -> bool {
        self.provider.is_none_or(|p| d.provider() == p)
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| d.tenant_ids.iter().any(|x| x.eq_ignore_ascii_case(t)))
            && self.class.as_ref().is_none_or(|c| &d.error_class == c)
    }
}

type Fields = HashMap<String, Bytes>;

/// The class of a dead letter: the one recorded, else read from its fields.
fn classify(fields: &Fields, error: &str, job: Option<&Job>) -> &'static str {
    if let Some(c) = fields.get("class")
        && let Some(known) = ERROR_CLASSES.iter().find(|k| k.as_bytes() == &c[..])
    {
        return known;
    }
    if fields.contains_key("rejected") {
        return "rejected_parts";
    }
    if job.is_none_or(|j| j.submission.is_none()) {
        return "undecodable";
    }
    // `parse::ParseError`'s messages.
    if ["malformed payload", "unexpected envelope", "provider "]
        .iter()
        .any(|p| error.starts_with(p))
    {
        return "unparseable";
    }
    if error.contains("attempts") {
        return "exhausted";
    }
    // The only other dead-lettering on main: conversations refused the job
    // as invalid (InvalidArgument / AlreadyExists).
    "refused"
}

/// Why it failed and what to do, in plain words.
fn explain(class: &str) -> &'static str {
    match class {
        "undecodable" => {
            "The queued job could not be read back (corrupted, or written by an incompatible \
             version), so it cannot be retried. Purge it."
        }
        "unparseable" => {
            "The webhook body is not a payload FARO understands for its platform (malformed JSON \
             or an unexpected envelope). Retrying fails again until the parser handles it; the \
             body is kept for that."
        }
        "refused" => {
            "The conversations service refused to store this job as invalid (for example an \
             unknown tenant, location or account). Fix what the error names, then retry."
        }
        "rejected_parts" => {
            "Every other part of this webhook was stored; the parts listed under `rejected` could \
             not be. After a fix, retrying stores them; parts already stored are not duplicated."
        }
        "exhausted" => {
            "Storing kept failing with a temporary error (the database or a service unavailable) \
             until its attempts ran out. Retry once the cause is fixed."
        }
        _ => "The job failed for a reason FARO does not classify; see the error.",
    }
}

/// A dead letter as the API shows it, and its job when it was kept.
fn describe(id: &str, fields: &Fields) -> (DeadLetter, Option<Job>) {
    let text = |k: &str| {
        fields
            .get(k)
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let job = fields
        .get(JOB_FIELD)
        .filter(|b| !b.is_empty())
        .and_then(|b| Job::decode(b.clone()).ok());
    let error = text("error");
    let class = classify(fields, &error, job.as_ref());
    let sub = job.as_ref().and_then(|j| j.submission.as_ref());
    let mut tenant_ids: Vec<String> = sub
        .map(|s| s.routes.iter().map(|r| r.tenant_id.clone()).collect())
        .unwrap_or_default();
    tenant_ids.sort();
    tenant_ids.dedup();
    let attempts = text("attempts")
        .parse()
        .unwrap_or_else(|_| job.as_ref().map_or(0, |j| j.attempt));
    let dead_at = StreamId::parse(id)
        .and_then(|s| i64::try_from(s.0).ok())
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map(to_timestamp);
    let d = DeadLetter {
        id: id.to_owned(),
        job_id: text("source_id"),
        dead_at,
        error,
        error_class: class.to_owned(),
        explanation: explain(class).to_owned(),
        provider: sub.map_or(0, |s| s.provider),
        tenant_ids,
        attempts,
        rejected_json: text("rejected"),
        received_at: sub.and_then(|s| s.received_at),
        request_id: sub.map(|s| s.request_id.clone()).unwrap_or_default(),
        payload_bytes: sub.map_or(0, |s| s.payload.len() as u64),
        retryable: sub.is_some(),
    };
    (d, job)
}

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

/// The next id after `id`.
fn after(id: &str) -> Option<StreamId> {
    let s = StreamId::parse(id)?;
    Some(match s.1.checked_add(1) {
        Some(seq) => StreamId(s.0, seq),
        None => StreamId(s.0.checked_add(1)?, 0),
    })
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

#[cfg(test)]
mod tests {
    use faro_proto::ingest::v1::SubmitRequest;

    use super::*;

    fn fields(pairs: &[(&str, &[u8])]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Bytes::copy_from_slice(v)))
            .collect()
    }

    #[test]
    fn each_kind_of_failure_is_classified_and_explained() {
        let job = Job {
            submission: Some(SubmitRequest::default()),
            attempt: 0,
        }
        .encode_to_vec();
        type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a str);
        let cases: [Case<'_>; 6] = [
            (
                &[("error", b"undecodable job: x"), ("job", b"")],
                "undecodable",
            ),
            (
                &[("error", b"malformed payload: eof"), ("job", &job)],
                "unparseable",
            ),
            (
                &[("error", b"tenant_id must be a uuid"), ("job", &job)],
                "refused",
            ),
            (
                &[("error", b"a part"), ("job", &job), ("rejected", b"[]")],
                "rejected_parts",
            ),
            (
                &[("error", b"failed after 5 attempts"), ("job", &job)],
                "exhausted",
            ),
            (
                &[("error", b"x"), ("job", &job), ("class", b"other")],
                "other",
            ),
        ];
        for (f, class) in cases {
            let (d, _) = describe("1764486290123-0", &fields(f));
            assert_eq!(d.error_class, class, "{f:?}");
            assert!(!d.explanation.is_empty());
            assert_eq!(d.retryable, class != "undecodable");
        }
    }

    #[test]
    fn filters_are_validated_and_time_bounds_become_stream_ids() {
        let bad = [
            DeadLetterFilter {
                tenant_id: "acme".into(),
                ..Default::default()
            },
            DeadLetterFilter {
                error_class: "boom".into(),
                ..Default::default()
            },
            DeadLetterFilter {
                provider: 99,
                ..Default::default()
            },
            DeadLetterFilter {
                since: Some(prost_types::Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
                until: Some(prost_types::Timestamp {
                    seconds: 5,
                    nanos: 0,
                }),
                ..Default::default()
            },
        ];
        for f in bad {
            assert!(
                matches!(matcher(Some(&f)), Err(Error::InvalidArgument(_))),
                "{f:?}"
            );
        }
        let m = matcher(Some(&DeadLetterFilter {
            since: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            until: Some(prost_types::Timestamp {
                seconds: 2,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .expect("valid");
        assert_eq!(
            (m.first, m.last),
            (StreamId(1000, 0), StreamId(1999, u64::MAX))
        );
        assert_eq!(after("5-18446744073709551615"), Some(StreamId(6, 0)));
        assert!(StreamId::parse("5").is_none() && StreamId::parse("a-1").is_none());
    }
}
