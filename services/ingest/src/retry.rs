//! Retry policy and the set of scheduled retries.
//!
//! A job whose store failed transiently leaves the stream for a sorted set
//! scored by when it is due, in one Lua script (XACK, XDEL, ZADD): a worker
//! dying at any point leaves it either pending in the stream or scheduled,
//! never neither or both. A second script moves due jobs back to the stream
//! (ZRANGEBYSCORE, XADD, ZREM), also atomically. Both read the clock of Redis,
//! so workers on hosts whose clocks disagree schedule on one timeline. Delayed
//! jobs never sit in the stream, so they never block the jobs behind them.
//! The same set holds webhooks the edge deferred because their tenant was
//! over its rate (`defer`): promoted like retries when due, as fresh jobs.

use std::{sync::LazyLock, time::Duration};

use bytes::Bytes;
use faro_proto::{ingest::v1::Job, to_timestamp};
use fred::{clients::Client, interfaces::StreamsInterface, types::Value, types::scripts::Script};
use prost::Message;
use tonic::Code;

use crate::queue::{GROUP, Keys};

/// How failed jobs are retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Attempts in all, the first included; the last failure dead-letters.
    pub attempts: u32,
    /// The cap of the first retry's delay; each further retry doubles it.
    pub base: Duration,
    /// No retry waits longer than this.
    pub max: Duration,
}

impl Policy {
    /// Exponential backoff with full jitter: uniform in `0..=min(max, base·2^(n-1))`
    /// after the `n`th failure, so that jobs failed together by one outage do
    /// not all come back at the same instant.
    pub(crate) fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let cap = self.base.saturating_mul(1 << exp).min(self.max);
        let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=cap_ms))
    }
}

/// Whether a store error can go away by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The request is wrong (invalid, violates a constraint): never retried.
    Permanent,
    /// Conversations or Postgres is unreachable or too slow: it concerns every
    /// job of a call alike, so the whole call is retried later.
    Outage,
    /// Any other failure (e.g. `Internal`): it may be one job's fault, so a
    /// batch that fails so is split to find it; retried up to its attempts.
    Fault,
}

pub(crate) fn classify(code: Code) -> Class {
    match code {
        Code::InvalidArgument
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::NotFound => Class::Permanent,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::ResourceExhausted => {
            Class::Outage
        }
        _ => Class::Fault,
    }
}

/// A store failure in plain words, for the job's history and the dead letter.
pub(crate) fn describe(s: &tonic::Status, class: Class, deadline: Duration) -> String {
    match (class, s.code()) {
        (Class::Permanent, _) => s.message().to_owned(),
        // tonic reports its own deadline as Cancelled, "Timeout expired".
        (_, Code::DeadlineExceeded) | (_, Code::Cancelled) if timed_out(s) => format!(
            "conversations did not answer within the store deadline ({} ms)",
            deadline.as_millis()
        ),
        (_, Code::Unavailable) => format!("conversations unavailable: {}", s.message()),
        (_, code) => format!("conversations failed ({code:?}): {}", s.message()),
    }
}

fn timed_out(s: &tonic::Status) -> bool {
    s.code() == Code::DeadlineExceeded || s.message().contains("Timeout expired")
}

/// Writes one more failure into the job's history: its attempt count, its
/// first error (kept once set) and its last error, with their times.
pub(crate) fn record_failure(job: &mut Job, stream_id: &str, attempts: u32, error: &str) {
    let now = Some(to_timestamp(chrono::Utc::now()));
    job.attempt = attempts;
    if job.first_error.is_empty() {
        job.first_error = error.to_owned();
        job.first_error_at = now;
    }
    job.last_error = error.to_owned();
    job.last_error_at = now;
    if job.origin_id.is_empty() {
        job.origin_id = stream_id.to_owned();
    }
}

/// Loaded once per process; `evalsha_with_reload` loads it again after a
/// Redis restart (NOSCRIPT).
static SCHEDULE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(SCHEDULE));
static PROMOTE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(PROMOTE));
static DEFER_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::from_lua(DEFER));

const SCHEDULE: &str = r"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
return 1
";

const PROMOTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, m in ipairs(due) do
  local sep = string.find(m, '|', 1, true)
  redis.call('XADD', KEYS[1], '*', ARGV[2], string.sub(m, sep + 1))
  redis.call('ZREM', KEYS[2], m)
end
return #due
";

const DEFER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), ARGV[2])
return 1
";

/// Schedules a new job `delay` ahead (a webhook over its tenant's rate, paced
/// by the edge): it waits in the retry set, as durable as the stream, and the
/// workers' promotion moves it to the stream when due, as a fresh job. Returns
/// the id it is known by until then. Fails at once while Redis is unreachable.
pub(crate) async fn defer(
    client: &Client,
    keys: &Keys,
    job: &Job,
    delay: Duration,
) -> Result<String, fred::error::Error> {
    let id = format!("deferred-{}", uuid::Uuid::now_v7().simple());
    let mut member = Vec::with_capacity(id.len() + 1 + job.encoded_len());
    member.extend_from_slice(id.as_bytes());
    member.push(b'|');
    job.encode(&mut member).map_err(|e| {
        fred::error::Error::new(fred::error::ErrorKind::Unknown, format!("encode job: {e}"))
    })?;
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    // Fails at once while Redis is unreachable, as `queue::enqueue` does.
    let fast = fred::interfaces::ClientLike::with_options(
        client,
        &fred::types::config::Options {
            fail_fast: true,
            ..Default::default()
        },
    );
    let _: i64 = DEFER_SCRIPT
        .evalsha_with_reload(
            &fast,
            vec![keys.retry.clone()],
            vec![
                Value::from(delay_ms.to_string()),
                Value::Bytes(Bytes::from(member)),
            ],
        )
        .await?;
    Ok(id)
}

/// Moves the pending entry `id` to the retry set, due in `delay`, with `job`
/// (its history updated) in place of the entry. `false` if the entry was no
/// longer pending (another worker reclaimed and finished it): nothing changed.
pub(crate) async fn schedule(
    client: &Client,
    keys: &Keys,
    id: &str,
    job: &Job,
    delay: Duration,
) -> Result<bool, fred::error::Error> {
    // The member starts with the source id, so that two jobs with the same
    // bytes remain two members.
    let mut member = Vec::with_capacity(id.len() + 1 + job.encoded_len());
    member.extend_from_slice(id.as_bytes());
    member.push(b'|');
    job.encode(&mut member).map_err(|e| {
        fred::error::Error::new(fred::error::ErrorKind::Unknown, format!("encode job: {e}"))
    })?;
    let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
    let moved: i64 = SCHEDULE_SCRIPT
        .evalsha_with_reload(
            client,
            vec![keys.jobs.clone(), keys.retry.clone()],
            vec![
                Value::from(GROUP),
                Value::from(id),
                Value::from(delay_ms.to_string()),
                Value::Bytes(Bytes::from(member)),
            ],
        )
        .await?;
    Ok(moved == 1)
}

/// Moves up to `limit` due retries back to the stream, as new entries.
pub(crate) async fn promote_due(
    client: &Client,
    keys: &Keys,
    limit: usize,
) -> Result<u64, fred::error::Error> {
    PROMOTE_SCRIPT
        .evalsha_with_reload(
            client,
            vec![keys.jobs.clone(), keys.retry.clone()],
            vec![limit.to_string(), crate::queue::JOB_FIELD.to_owned()],
        )
        .await
}

/// How many times Redis delivered the pending entry `id` (XPENDING): a job
/// reclaimed from workers that died with it counts each of those deliveries.
pub(crate) async fn deliveries(
    client: &Client,
    keys: &Keys,
    id: &str,
) -> Result<u32, fred::error::Error> {
    let reply: Value = client.xpending(&keys.jobs, GROUP, (id, id, 1u64)).await?;
    // [[id, consumer, idle-ms, deliveries]]
    let count = reply
        .into_array()
        .into_iter()
        .next()
        .and_then(|e| e.into_array().into_iter().nth(3))
        .and_then(|c| c.as_u64())
        .unwrap_or(1);
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}

/// The pause after a Redis error: exponential backoff with full jitter, capped at 5 s.
pub(crate) fn redis_backoff(attempt: u32) -> std::time::Duration {
    let cap = 100u64.saturating_mul(1 << attempt.min(6)).min(5_000);
    std::time::Duration::from_millis(rand::random_range(cap / 2..=cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_with_failures_and_stay_under_the_cap() {
        let p = Policy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1_000),
        };
        for _ in 0..200 {
            assert!(p.delay(1) <= Duration::from_millis(100));
            assert!(p.delay(3) <= Duration::from_millis(400));
            assert!(p.delay(40) <= Duration::from_millis(1_000));
        }
        assert!(
            (0..200).any(|_| p.delay(4) > Duration::from_millis(400)),
            "the fourth retry may wait longer than the third could"
        );
    }

    #[test]
    fn only_request_errors_are_permanent() {
        assert_eq!(classify(Code::InvalidArgument), Class::Permanent);
        assert_eq!(classify(Code::AlreadyExists), Class::Permanent);
        assert_eq!(classify(Code::Unavailable), Class::Outage);
        assert_eq!(classify(Code::DeadlineExceeded), Class::Outage);
        assert_eq!(classify(Code::Internal), Class::Fault);
        assert_eq!(classify(Code::Unknown), Class::Fault);
    }

    /// What Redis Cluster hashes: the part between the first `{` and the next `}`.
    fn hash_tag(key: &str) -> &str {
        key.split_once('{')
            .and_then(|(_, rest)| rest.split_once('}'))
            .map_or(key, |(tag, _)| tag)
    }

    #[test]
    fn the_keys_a_script_touches_share_one_hash_tag() {
        let keys = Keys::new("faro:");
        for key in [&keys.jobs, &keys.dead, &keys.retry] {
            assert!(key.starts_with("faro:"), "{key}");
            assert_eq!(hash_tag(key), "ingest", "{key}");
        }
    }

    #[test]
    fn the_first_error_is_kept_and_the_last_replaced() {
        let mut job = Job::default();
        record_failure(&mut job, "1-0", 1, "boom");
        record_failure(&mut job, "2-0", 2, "bang");
        assert_eq!(job.attempt, 2);
        assert_eq!(job.first_error, "boom");
        assert_eq!(job.last_error, "bang");
        assert_eq!(job.origin_id, "1-0", "the first stream id stays");
        assert!(job.first_error_at.is_some() && job.last_error_at.is_some());
    }
}
