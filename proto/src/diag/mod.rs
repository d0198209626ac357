//! The figures behind the edge's diagnostics (`/api/v1/webhooks/stats` and
//! `/recent`), kept in Redis so that they hold across every edge and ingest
//! process sharing a key prefix.
//!
//! A process records into [`Diag`], an in-process tally (a mutex around a
//! small map: no Redis round trip on a webhook's path), which a task of its
//! own flushes once a second with one script call: `HINCRBY` on the
//! current minute's hash (`{prefix}{diag}:m:<unix minute>`, kept
//! [`RETAIN_HOURS`] + 1 hours) and `XADD … MAXLEN ~` of the attempts seen
//! since the last flush to `{prefix}{diag}:recent`. A failed flush keeps the
//! tally for the next one. Latencies are counted in the coarse buckets of
//! [`BOUNDS_MS`], so that buckets written by several processes merge by
//! addition and quantiles are read from the sum.
//!
//! Fields of a minute's hash: `<platform>|<name>` or
//! `<platform>|<name>|<detail>` for counts (`received`, `rejected|<code>`,
//! `dead_letters|<class>`, …), `<platform>|lat|<stage>|<bucket index>` for
//! latencies. Names are `&'static str`: the set of fields is bounded.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use fred::{
    clients::Client,
    interfaces::ClientLike,
    prelude::{Builder, Config as RedisConfig, ReconnectPolicy},
    types::{Value, scripts::Script},
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

static FLUSH: LazyLock<Script> = LazyLock::new(|| Script::from_lua(include_str!("flush.lua")));

/// Upper bounds (milliseconds) of the latency buckets; one more bucket holds
/// what is beyond the last.
pub const BOUNDS_MS: [u64; 17] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
    3_600_000,
];

/// The longest window the stats read, in hours; buckets live one hour more.
pub const RETAIN_HOURS: i64 = 24;

/// Attempts kept in the recent stream (approximately: `MAXLEN ~`), and at
/// most in one process between two flushes.
pub const RECENT_MAX: usize = 1_000;

/// How often a process writes its tally.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// A minute's bucket.
pub fn bucket_key(prefix: &str, minute: i64) -> String {
    format!("{prefix}{{diag}}:m:{minute}")
}

/// The recent attempts.
pub fn recent_key(prefix: &str) -> String {
    format!("{prefix}{{diag}}:recent")
}

/// The index in [`BOUNDS_MS`] of the bucket counting `d` (`BOUNDS_MS.len()`
/// past the last bound).
pub fn bucket_of(d: Duration) -> usize {
    // Rounded up: a bucket counts what is at most its bound.
    let ms = u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
    BOUNDS_MS
        .iter()
        .position(|b| ms <= *b)
        .unwrap_or(BOUNDS_MS.len())
}

/// One counted thing.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Field {
    Count {
        platform: &'static str,
        name: &'static str,
        detail: &'static str,
    },
    Latency {
        platform: &'static str,
        stage: &'static str,
        bucket: usize,
    },
}

impl Field {
    fn encode(self) -> String {
        match self {
            Self::Count {
                platform,
                name,
                detail: "",
            } => format!("{platform}|{name}"),
            Self::Count {
                platform,
                name,
                detail,
            } => format!("{platform}|{name}|{detail}"),
            Self::Latency {
                platform,
                stage,
                bucket,
            } => format!("{platform}|lat|{stage}|{bucket}"),
        }
    }
}

#[derive(Default)]
struct Tally {
    counts: HashMap<Field, u64>,
    /// JSON lines, oldest first.
    recent: VecDeque<String>,
}

impl Tally {
    fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.recent.is_empty()
    }

    /// Puts an unflushed tally back in front of what came since.
    fn merge_back(&mut self, older: Tally) {
        for (f, n) in older.counts {
            *self.counts.entry(f).or_default() += n;
        }
        let newer = std::mem::replace(&mut self.recent, older.recent);
        self.recent.extend(newer);
        while self.recent.len() > RECENT_MAX {
            self.recent.pop_front();
        }
    }
}

struct Inner {
    tally: Mutex<Tally>,
    close: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A process's recorder; cloning shares it. [`Diag::off`] records nothing
/// (a process started without metrics).
#[derive(Clone, Default)]
pub struct Diag(Option<Arc<Inner>>);

impl std::fmt::Debug for Diag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Diag(on)"
        } else {
            "Diag(off)"
        })
    }
}

impl Diag {
    /// Records nothing.
    pub fn off() -> Self {
        Self(None)
    }

    /// Records, and flushes to the Redis at `url` under `prefix` once a
    /// second from a task of its own (with a connection of its own) until
    /// [`Diag::close`]. Redis unreachable: the tally waits for it.
    pub fn start(url: &str, prefix: &str) -> Result<Self, String> {
        let config = RedisConfig::from_url(url).map_err(|e| format!("REDIS_URL: {e}"))?;
        let client = Builder::from_config(config)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
            .build()
            .map_err(|e| format!("REDIS_URL: {e}"))?;
        let inner = Arc::new(Inner {
            tally: Mutex::new(Tally::default()),
            close: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let task = tokio::spawn(flusher(inner.clone(), client, prefix.to_owned()));
        *lock(&inner.task) = Some(task);
        Ok(Self(Some(inner)))
    }

    /// Adds `n` to `<platform>|<name>[|<detail>]` (`detail` empty for none).
    pub fn count(&self, platform: &'static str, name: &'static str, detail: &'static str, n: u64) {
        if let Some(inner) = &self.0 {
            let field = Field::Count {
                platform,
                name,
                detail,
            };
            *lock(&inner.tally).counts.entry(field).or_default() += n;
        }
    }

    /// Counts `took` in the latency buckets of `stage`.
    pub fn latency(&self, platform: &'static str, stage: &'static str, took: Duration) {
        if let Some(inner) = &self.0 {
            let field = Field::Latency {
                platform,
                stage,
                bucket: bucket_of(took),
            };
            *lock(&inner.tally).counts.entry(field).or_default() += 1;
        }
    }

    /// Whether anything is recorded: callers skip building what would be
    /// thrown away.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// One attempt for the recent list, as JSON (no body, no secret: the
    /// caller's duty). Past [`RECENT_MAX`] unflushed, the oldest is dropped.
    pub fn attempt(&self, json: String) {
        if let Some(inner) = &self.0 {
            let mut tally = lock(&inner.tally);
            if tally.recent.len() >= RECENT_MAX {
                tally.recent.pop_front();
            }
            tally.recent.push_back(json);
        }
    }

    /// Flushes what is left and stops the flusher (at shutdown, once the
    /// process has stopped recording).
    pub async fn close(&self) {
        if let Some(inner) = &self.0 {
            inner.close.cancel();
            let task = lock(&inner.task).take();
            if let Some(task) = task {
                let _ = task.await;
            }
        }
    }
}

/// A poisoned lock still holds counts worth keeping.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn flusher(inner: Arc<Inner>, client: Client, prefix: String) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let closing = tokio::select! {
            () = inner.close.cancelled() => true,
            _ = tick.tick() => false,
        };
        if !client.is_connected() {
            let init = tokio::time::timeout(Duration::from_secs(1), client.init()).await;
            if !matches!(init, Ok(Ok(_))) && !client.is_connected() {
                tracing::debug!("diagnostics: redis unreachable; figures kept for later");
                if closing {
                    return;
                }
                continue;
            }
        }
        let tally = std::mem::take(&mut *lock(&inner.tally));
        if !tally.is_empty()
            && let Err(e) = flush(&client, &prefix, &tally).await
        {
            tracing::debug!(error = %e, "diagnostics: flush failed; figures kept for later");
            lock(&inner.tally).merge_back(tally);
        }
        if closing {
            let _ = client.quit().await;
            return;
        }
    }
}

async fn flush(client: &Client, prefix: &str, tally: &Tally) -> Result<(), fred::error::Error> {
    let minute = chrono::Utc::now().timestamp().div_euclid(60);
    let keys = vec![bucket_key(prefix, minute), recent_key(prefix)];
    let mut args: Vec<Value> = Vec::with_capacity(3 + 2 * tally.counts.len() + tally.recent.len());
    args.push(((RETAIN_HOURS + 1) * 3600).to_string().into());
    args.push(RECENT_MAX.to_string().into());
    args.push(tally.counts.len().to_string().into());
    for (field, n) in &tally.counts {
        args.push(field.encode().into());
        args.push(n.to_string().into());
    }
    for a in &tally.recent {
        args.push(a.as_str().into());
    }
    let _: i64 = FLUSH.evalsha_with_reload(client, keys, args).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_their_bucket() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_millis(1)), 0);
        assert_eq!(bucket_of(Duration::from_micros(1_001)), 1);
        assert_eq!(bucket_of(Duration::from_millis(150)), 7);
        assert_eq!(bucket_of(Duration::from_secs(7200)), BOUNDS_MS.len());
    }

    #[test]
    fn an_unflushed_tally_is_merged_back_in_order() {
        let d = Diag(Some(Arc::new(Inner {
            tally: Mutex::new(Tally::default()),
            close: CancellationToken::new(),
            task: Mutex::new(None),
        })));
        d.count("whatsapp", "received", "", 2);
        d.attempt("a".into());
        let inner = d.0.as_ref().expect("on");
        let older = std::mem::take(&mut *lock(&inner.tally));
        d.count("whatsapp", "received", "", 1);
        d.attempt("b".into());
        lock(&inner.tally).merge_back(older);
        let t = lock(&inner.tally);
        let f = Field::Count {
            platform: "whatsapp",
            name: "received",
            detail: "",
        };
        assert_eq!(t.counts[&f], 3);
        assert_eq!(f.encode(), "whatsapp|received");
        assert_eq!(t.recent, ["a", "b"]);
        Diag::off().count("whatsapp", "received", "", 1);
    }
}
