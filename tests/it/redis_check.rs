//! Ingest checks at start whether Redis would lose acknowledged webhooks
//! (CONFIG GET: appendonly, maxmemory-policy) and warns; a managed Redis that
//! hides CONFIG is not checked, and ingest still runs.

use std::time::Duration;

use crate::{
    process::{Faro, free_addr},
    redis_restart::{OwnRedis, free_port},
};

pub(crate) const LOSSY_WARNING: &str = "redis may lose acknowledged webhooks";

/// The lines of `faro ingest`'s log once `line` appears (at most 20 s).
async fn log_with(faro: &Faro, line: &str) -> String {
    for _ in 0..400 {
        let log = std::fs::read_to_string(&faro.log).unwrap_or_default();
        if log.contains(line) {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{line:?} never logged (see {})", faro.log);
}

fn ingest_on(port: u16) -> Faro {
    Faro::spawn(
        "redis-check",
        "ingest",
        &[
            "--ingest-listen",
            &free_addr().to_string(),
            "--redis-url",
            &format!("redis://127.0.0.1:{port}"),
            "--conversations-url",
            "http://127.0.0.1:1",
        ],
    )
}

#[tokio::test]
async fn ingest_warns_at_start_when_redis_would_lose_acknowledged_webhooks() {
    let lossy_port = free_port();
    let lossy = OwnRedis::start_with(
        lossy_port,
        &[
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "allkeys-lru",
        ],
    )
    .await;
    let faro = ingest_on(lossy_port);
    let log = log_with(&faro, "taking jobs").await;
    assert!(log.contains(LOSSY_WARNING), "{log}");
    assert!(
        log.contains("appendonly is not yes") && log.contains("allkeys-lru"),
        "{log}"
    );

    // A managed Redis without CONFIG: not checked, and ingest still runs.
    let hidden_port = free_port();
    let hidden = OwnRedis::start_with(
        hidden_port,
        &[
            "--save",
            "",
            "--appendonly",
            "no",
            "--rename-command",
            "CONFIG",
            "",
        ],
    )
    .await;
    let faro_hidden = ingest_on(hidden_port);
    let log = log_with(&faro_hidden, "taking jobs").await;
    assert!(log.contains("cannot read the redis configuration"), "{log}");
    assert!(!log.contains(LOSSY_WARNING), "{log}");
    drop((faro, faro_hidden, lossy, hidden));
}
