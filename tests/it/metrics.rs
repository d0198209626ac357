//! Every service's `GET /metrics`, scraped over real HTTP after a scripted
//! run of webhooks (valid, badly signed, unsigned, one that cannot be stored),
//! parsed as Prometheus text by a strict parser of the test's own, and
//! compared with what was sent.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use serde_json::json;

use crate::{
    cluster::{Cluster, Tenant, redis_url, whatsapp_text},
    process::{Faro, free_addr, wait_listening},
};

/// A scrape: every sample by its name and labels (`name{a="1",b="2"}`,
/// labels sorted), and the type declared for each metric family.
#[derive(Debug)]
pub(crate) struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// The sample `name` with exactly these labels; absent reads as 0.
    pub(crate) fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    fn has_type(&self, family: &str, kind: &str) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(kind),
            "# TYPE {family} {kind} is declared"
        );
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort();
    if labels.is_empty() {
        name.to_owned()
    } else {
        format!("{name}{{{}}}", labels.join(","))
    }
}

/// Parses Prometheus text format 0.0.4 strictly: every line is a HELP, a
/// TYPE or a sample; every sample belongs to a family whose TYPE came
/// before it; a histogram's buckets are cumulative and end with `+Inf`
/// equal to its `_count`.
fn parse(text: &str) -> Scrape {
    let mut samples = HashMap::new();
    let mut types: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            assert!(
                rest.split_once(' ').is_some(),
                "HELP has a name and text: {line}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "no other comments: {line}");
        let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("a number: {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let labels: Vec<(String, String)> = body
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once('=').expect("label k=v");
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .expect("quoted label value");
                        (k.to_owned(), v.to_owned())
                    })
                    .collect();
                (name, labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name: {name}"
        );
        let _family = [
            name,
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("a TYPE precedes {name}"));
        let refs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert!(
            samples.insert(key(name, &refs), value).is_none(),
            "one sample per series: {line}"
        );
    }
    let scrape = Scrape { samples, types };
    for (family, kind) in &scrape.types {
        if kind == "histogram" {
            check_histogram(&scrape, family);
        }
    }
    scrape
}

/// Buckets of each series of `family` are cumulative and `+Inf` equals `_count`.
fn check_histogram(scrape: &Scrape, family: &str) {
    let prefix = format!("{family}_bucket");
    let mut series: HashMap<String, Vec<(f64, f64)>> = HashMap::new();
    for (k, v) in &scrape.samples {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        let body = rest.trim_start_matches('{').trim_end_matches('}');
        let mut others = Vec::new();
        let mut le = None;
        for pair in body.split(',') {
            match pair.strip_prefix("le=") {
                Some(b) => le = Some(b.trim_matches('"').to_owned()),
                None => others.push(pair.to_owned()),
            }
        }
        let le = le.expect("a bucket has le");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().expect("le is a number")
        };
        series
            .entry(others.join(","))
            .or_default()
            .push((bound, *v));
    }
    for (labels, mut buckets) in series {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert!(
            buckets.windows(2).all(|w| w[0].1 <= w[1].1),
            "{family}{{{labels}}} cumulative"
        );
        let inf = buckets.last().expect("buckets");
        assert!(inf.0.is_infinite(), "{family} ends with +Inf");
        let count_key = if labels.is_empty() {
            format!("{family}_count")
        } else {
            format!("{family}_count{{{labels}}}")
        };
        assert_eq!(
            Some(&inf.1),
            scrape.samples.get(&count_key),
            "{family}{{{labels}}}: +Inf = _count"
        );
    }
}

pub(crate) async fn scrape(http: &reqwest::Client, addr: SocketAddr) -> Scrape {
    let resp = http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("metrics answer");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&resp.text().await.expect("body"))
}

/// Scrapes until `done` holds (figures recorded just after a client was
/// answered), at most 20 s: a bound on a hang, not a timing claim.
async fn scrape_until(
    http: &reqwest::Client,
    addr: SocketAddr,
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    for _ in 0..200 {
        let s = scrape(http, addr).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    scrape(http, addr).await
}

/// A signed webhook whose only message names no sender: it is answered 200
/// and its part is dead-lettered (class `partial`), nothing stored.
pub(crate) fn senderless(tenant: &Tenant) -> String {
    json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {"metadata": {"phone_number_id": tenant.phone_number_id},
         "contacts": [{"wa_id": "16505551234"}, {"wa_id": "16505551235"}],
         "messages": [{"id": "wamid.NOBODY", "timestamp": "1749416384", "type": "text",
                       "text": {"body": "who?"}}]}}]}]})
    .to_string()
}

#[tokio::test]
async fn every_service_counts_what_a_scripted_run_sent() {
    let c = Cluster::start().await;
    let tenant = c.tenant("metrics").await;
    let mut ws = c.websocket(&c.token(&tenant.id, 600)).await;

    const VALID: usize = 3;
    // Sent two seconds "late", as the platform stamps it: the lag is visible.
    let sent_at = chrono::Utc::now().timestamp() - 2;
    for n in 0..VALID {
        let body = whatsapp_text(
            &tenant,
            &format!("wamid.M{n}"),
            "16505551234",
            "hi",
            sent_at,
        );
        assert_eq!(c.post_signed(&body, &tenant.app_secret).await.0, 200);
    }
    let body = whatsapp_text(&tenant, "wamid.FORGED", "16505551234", "hi", sent_at);
    for _ in 0..2 {
        let (status, error) = c.post_signed(&body, "not-the-app-secret").await;
        assert_eq!(
            (status, &error["error"]["code"]),
            (401, &json!("invalid_signature"))
        );
    }
    let (status, error) = c.post_webhook(body.as_bytes(), None).await;
    assert_eq!(
        (status, &error["error"]["code"]),
        (401, &json!("missing_signature"))
    );
    assert_eq!(
        c.post_signed(&senderless(&tenant), &tenant.app_secret)
            .await
            .0,
        200
    );
    c.drained().await;
    for _ in 0..VALID {
        assert_eq!(ws.next_event().await["type"], "message.created");
    }
    let n = VALID as f64;

    // The edge: its public port has no /metrics, its operator port does.
    let public = c
        .http
        .get(c.url("/metrics"))
        .send()
        .await
        .expect("edge answers");
    assert_eq!(public.status().as_u16(), 404);
    let edge = scrape_until(&c.http, c.metrics.edge, |s| {
        s.get("real_time_delivery_latency_seconds_count", &[]) >= n
    })
    .await;
    let wa = ("platform", "whatsapp");
    edge.has_type("webhook_received_total", "counter");
    edge.has_type("webhook_processing_duration_seconds", "histogram");
    edge.has_type("real_time_delivery_latency_seconds", "histogram");
    assert_eq!(
        edge.get("webhook_received_total", &[wa, ("status", "200")]),
        n + 1.0
    );
    assert_eq!(
        edge.get("webhook_received_total", &[wa, ("status", "401")]),
        3.0
    );
    assert_eq!(
        edge.get("webhook_processing_duration_seconds_count", &[wa]),
        n + 1.0,
        "one observation per 200"
    );
    assert_eq!(
        edge.get(
            "webhook_signature_failures_total",
            &[wa, ("reason", "invalid_signature")]
        ),
        2.0
    );
    assert_eq!(
        edge.get(
            "webhook_signature_failures_total",
            &[wa, ("reason", "missing_signature")]
        ),
        1.0
    );
    assert_eq!(
        edge.get(
            "edge_http_errors_total",
            &[("status", "401"), ("code", "invalid_signature")]
        ),
        2.0
    );
    assert_eq!(
        edge.get(
            "edge_http_errors_total",
            &[("status", "404"), ("code", "not_found")]
        ),
        1.0,
        "the probe of /metrics on the public port"
    );
    assert_eq!(edge.get("real_time_delivery_latency_seconds_count", &[]), n);
    assert_eq!(edge.get("edge_websockets_connected", &[]), 1.0);
    assert_eq!(edge.get("edge_slow_consumers_dropped_total", &[]), 0.0);

    // ingest: what it queued, stored and dead-lettered, and the queue now.
    let ingest = scrape(&c.http, c.metrics.ingest).await;
    ingest.has_type("message_storage_duration_seconds", "histogram");
    ingest.has_type("ingest_queue_dead_letters", "gauge");
    assert_eq!(ingest.get("ingest_jobs_submitted_total", &[]), n + 1.0);
    assert_eq!(
        ingest.get("ingest_store_batch_events_sum", &[]),
        n,
        "every event sent once"
    );
    let calls = ingest.get("message_storage_duration_seconds_count", &[]);
    assert!(calls >= 1.0);
    assert_eq!(ingest.get("ingest_store_batch_events_count", &[]), calls);
    assert_eq!(
        ingest.get("message_lag_platform_to_received_seconds_count", &[]),
        n
    );
    assert!(
        ingest.get("message_lag_platform_to_received_seconds_sum", &[]) >= n,
        "each message was stamped at least a second before it was posted"
    );
    assert_eq!(
        ingest.get("message_lag_received_to_stored_seconds_count", &[]),
        n
    );
    assert_eq!(
        ingest.get("ingest_jobs_dead_lettered_total", &[("class", "partial")]),
        1.0
    );
    assert_eq!(ingest.get("ingest_retries_scheduled_total", &[]), 0.0);
    assert_eq!(ingest.get("ingest_queue_dead_letters", &[]), 1.0);
    assert_eq!(ingest.get("ingest_queue_length", &[]), 0.0);
    assert_eq!(ingest.get("ingest_queue_pending", &[]), 0.0);
    assert_eq!(ingest.get("ingest_queue_scheduled_retries", &[]), 0.0);
    assert_eq!(
        ingest.get("ingest_queue_oldest_pending_age_seconds", &[]),
        0.0
    );
    assert_eq!(
        ingest.get("ingest_queue_consumers", &[]),
        2.0,
        "two workers"
    );

    // conversations: the same calls, seen from the other side.
    let conversations = scrape(&c.http, c.metrics.conversations).await;
    assert_eq!(
        conversations.get("conversations_messages_stored_total", &[]),
        n
    );
    assert_eq!(
        conversations.get("conversations_store_duration_seconds_count", &[]),
        calls
    );
    assert_eq!(
        conversations.get("conversations_store_failures_total", &[]),
        0.0
    );
    assert!(conversations.get("conversations_db_connections", &[]) >= 1.0);

    // stream: one subscriber (the edge's feed for the tenant), three events.
    let stream = scrape(&c.http, c.metrics.stream).await;
    assert_eq!(stream.get("stream_subscribers", &[]), 1.0);
    assert_eq!(stream.get("stream_events_dispatched_total", &[]), n);
    assert_eq!(
        stream.get("stream_slow_subscribers_dropped_total", &[]),
        0.0
    );

    // No tenant or message id is ever a label.
    for s in [&edge, &ingest, &conversations, &stream] {
        for k in s.samples.keys() {
            assert!(!k.contains(&tenant.id) && !k.contains("wamid"), "{k}");
        }
    }
    // The alert rules and the dashboard name only what is exported here.
    let exported: std::collections::HashSet<String> = [&edge, &ingest, &conversations, &stream]
        .iter()
        .flat_map(|s| s.samples.keys())
        .map(|k| k.split('{').next().unwrap_or(k).to_owned())
        .collect();
    crate::monitoring::every_referenced_metric_exists(&exported);
    drop(ws);
    let gone = scrape_until(&c.http, c.metrics.edge, |s| {
        s.get("edge_websockets_connected", &[]) == 0.0
    })
    .await;
    assert_eq!(gone.get("edge_websockets_connected", &[]), 0.0);
    c.stop().await;
}

/// The binary's flag puts a service's `/metrics` on its own port.
#[tokio::test]
async fn the_faro_binary_serves_metrics_where_its_flag_says() {
    let (grpc, metrics) = (free_addr().to_string(), free_addr());
    let prefix = format!("faro-it:{}:", uuid::Uuid::new_v4().simple());
    let _stream = Faro::spawn(
        "metrics",
        "stream",
        &[
            "--stream-listen",
            &grpc,
            "--stream-metrics-listen",
            &metrics.to_string(),
            "--redis-url",
            &redis_url(),
            "--redis-prefix",
            &prefix,
        ],
    );
    wait_listening(metrics).await;
    let http = reqwest::Client::new();
    let s = scrape(&http, metrics).await;
    s.has_type("stream_subscribers", "gauge");
    assert_eq!(s.get("stream_subscribers", &[]), 0.0);
    let other = http
        .get(format!("http://{metrics}/other"))
        .send()
        .await
        .expect("answers");
    assert_eq!(other.status().as_u16(), 404, "only /metrics is served");
}
