//! One dead letter read back: its id, what class of failure it records and
//! what to tell an operator about it; and the filters matched against it.

use std::collections::HashMap;

use bytes::Bytes;
use faro_proto::{
    dead_letters::ERROR_CLASSES,
    from_timestamp,
    ingest::v1::{DeadLetter, DeadLetterFilter, Job, Provider},
    to_timestamp,
};
use prost::Message;

use crate::{Error, queue::JOB_FIELD};

/// A stream entry id, `millis-sequence`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct StreamId(pub(super) u64, pub(super) u64);

impl StreamId {
    pub(super) fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    pub(super) fn text(self) -> String {
        format!("{}-{}", self.0, self.1)
    }
}

pub(super) fn parse_id(name: &str, s: &str) -> Result<StreamId, Error> {
    StreamId::parse(s).ok_or_else(|| {
        Error::InvalidArgument(format!("{name} {s:?} is not a stream id (millis-sequence)"))
    })
}

/// A validated filter, matched against decoded entries.
pub(super) struct Matcher {
    provider: Option<Provider>,
    tenant: Option<String>,
    class: Option<String>,
    /// Inclusive bounds in the dead stream: its ids are the times of death.
    pub(super) first: StreamId,
    pub(super) last: StreamId,
}

fn millis(t: &prost_types::Timestamp, name: &str) -> Result<u64, Error> {
    from_timestamp(Some(t))
        .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .ok_or_else(|| Error::InvalidArgument(format!("{name} is out of range")))
}

pub(super) fn matcher(filter: Option<&DeadLetterFilter>) -> Result<Matcher, Error> {
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
    pub(super) fn matches(&self, d: &DeadLetter) -> bool {
        self.provider.is_none_or(|p| d.provider() == p)
            && self
                .tenant
                .as_ref()
                .is_none_or(|t| d.tenant_ids.iter().any(|x| x.eq_ignore_ascii_case(t)))
            && self.class.as_ref().is_none_or(|c| &d.error_class == c)
    }
}

pub(super) type Fields = HashMap<String, Bytes>;

/// The class of a dead letter. A writer may record it in `class`: one of
/// `ERROR_CLASSES`, or the workers' coarser `permanent` / `partial` /
/// `exhausted`; what a word leaves open is read from the entry itself.
fn classify(fields: &Fields, error: &str, job: Option<&Job>) -> &'static str {
    let recorded = fields
        .get("class")
        .map(|c| String::from_utf8_lossy(c).into_owned());
    match recorded.as_deref() {
        // The workers' coarser words (issue 8's retry policy).
        Some("partial") => return "rejected_parts",
        Some("permanent") | None => {}
        Some(c) => {
            if let Some(known) = ERROR_CLASSES.iter().find(|k| **k == c) {
                return known;
            }
        }
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
    if recorded.is_none() && error.contains("attempts") {
        return "exhausted";
    }
    // What remains is a job conversations refused as invalid
    // (InvalidArgument / AlreadyExists).
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
pub(super) fn describe(id: &str, fields: &Fields) -> (DeadLetter, Option<Job>) {
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

/// The next id after `id`.
pub(super) fn after(id: &str) -> Option<StreamId> {
    let s = StreamId::parse(id)?;
    Some(match s.1.checked_add(1) {
        Some(seq) => StreamId(s.0, seq),
        None => StreamId(s.0.checked_add(1)?, 0),
    })
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
            ..Job::default()
        }
        .encode_to_vec();
        type Case<'a> = (&'a [(&'a str, &'a [u8])], &'a str);
        let cases: [Case<'_>; 8] = [
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
            (
                &[
                    ("error", b"3 attempts"),
                    ("job", &job),
                    ("class", b"permanent"),
                ],
                "refused",
            ),
            (
                &[
                    ("error", b"x"),
                    ("job", &job),
                    ("class", b"partial"),
                    ("rejected", b"[]"),
                ],
                "rejected_parts",
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
