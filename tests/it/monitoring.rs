//! The alert rules, the dashboard and the prometheus-adapter rule (the ingest
//! HPA's queue depth) in k8s/monitoring name only metrics that
//! FARO's services really export: a renamed metric must not leave an alert
//! that can never fire or a panel that stays empty.

use std::collections::{BTreeSet, HashSet};

const FILES: [&str; 3] = [
    "k8s/monitoring/faro-alerts.rules.yml",
    "k8s/monitoring/faro-dashboard.json",
    // The ingest HPA's queue-depth series, through prometheus-adapter.
    "k8s/monitoring/prometheus-adapter-rules.yaml",
];

/// Every prefix FARO's metric names start with.
const PREFIXES: [&str; 7] = [
    "webhook_",
    "edge_",
    "ingest_",
    "message_",
    "real_time_",
    "conversations_",
    "stream_",
];

/// The metric names a file mentions (in expressions and in prose alike).
fn mentioned(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| PREFIXES.iter().any(|p| t.starts_with(p)))
        .map(str::to_owned)
        .collect()
}

/// Fails the test when a rule or panel names a sample name absent from
/// `exported` (every sample name of a scrape of all four services).
pub fn every_referenced_metric_exists(exported: &HashSet<String>) {
    let mut total = 0;
    for file in FILES {
        let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let names = mentioned(&text);
        assert!(!names.is_empty(), "{file} names no metric");
        let missing: Vec<&String> = names.iter().filter(|n| !exported.contains(*n)).collect();
        assert!(
            missing.is_empty(),
            "{file} names metrics no service exports: {missing:?}"
        );
        total += names.len();
    }
    eprintln!("monitoring: {total} metric names in the rules and dashboard, all exported");
}

#[test]
fn names_are_found_in_expressions_and_prose() {
    let found = mentioned(
        "sum(rate(webhook_received_total{status=~\"5..\"}[5m])) / x and `ingest_queue_pending` by (le, platform)",
    );
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["ingest_queue_pending", "webhook_received_total"]
    );
}
