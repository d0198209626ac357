//! The dead-letter queue from an operator's two other doors: the real
//! `faro dlq` binary, and the edge's admin routes over real HTTP with
//! `FARO_ADMIN_TOKEN` (absent without one; agents' JWTs refused).

use std::process::{Command, Output};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, EdgeLimits, Options, edge_config},
    dlq::{fix, two_dead_letters},
};

const ADMIN_TOKEN: &str = "faro-test-admin-token-0123456789abcdef";

fn faro_dlq(ingest: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_faro"))
        .arg("dlq")
        .env("FARO_PLAINTEXT", "true")
        .args(args)
        .args(["--ingest-url", &format!("http://{ingest}")])
        .env("RUST_LOG", "warn")
        .output()
        .expect("faro runs")
}

fn json_of(args: &[String], out: &Output) -> Value {
    assert!(
        out.status.success(),
        "faro dlq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("faro dlq {args:?} prints JSON: {e}"))
}

#[tokio::test]
async fn faro_dlq_lists_shows_retries_and_purges_printing_json_or_a_table() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let (a, _) = two_dead_letters(&c).await;
    let ingest = c.ingest.to_string();
    let run = move |args: Vec<String>| {
        let ingest = ingest.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = faro_dlq(&ingest, &args);
                (
                    args.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
                    out,
                )
            })
            .await
            .expect("faro dlq")
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    let (argv, out) = run(args(&["list"])).await;
    let listed = json_of(&argv, &out);
    let dead = listed["dead_letters"].as_array().expect("array");
    assert_eq!(dead.len(), 2, "{listed}");
    assert_eq!(dead[0]["platform"], "whatsapp");
    assert_eq!(dead[0]["error_class"], "refused");
    assert_eq!(dead[0]["tenant_ids"], json!([a.id]));
    assert!(
        dead[0]["explanation"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    assert_eq!(dead[1]["platform"], "messenger");
    let refused = dead[0]["id"].as_str().expect("id").to_owned();

    let (_, out) = run(args(&["list", "--platform", "messenger", "--table"])).await;
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {table}");
    assert!(
        lines[0].starts_with("ID") && lines[1].contains("unparseable"),
        "{table}"
    );

    let (argv, out) = run(args(&[
        "list",
        "--tenant",
        &a.id,
        "--error-class",
        "refused",
    ]))
    .await;
    let listed = json_of(&argv, &out);
    assert_eq!(listed["dead_letters"][0]["id"], refused.as_str());

    let (argv, out) = run(args(&["show", &refused])).await;
    let shown = json_of(&argv, &out);
    assert_eq!(
        shown["payload"]["entry"][0]["changes"][0]["value"]["messages"][0]["id"],
        "wamid.DLQ1"
    );
    let (_, out) = run(args(&["show", &refused, "--table"])).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("explanation"));

    // Bad input: a non-zero exit naming the problem.
    for (bad, named) in [
        (args(&["list", "--platform", "telegram"]), "platform"),
        (args(&["list", "--since", "yesterday"]), "since"),
        (args(&["list", "--limit", "5000"]), "limit"),
        (args(&["show", "nope"]), "id"),
        (args(&["retry"]), "--id, --all"),
        (
            args(&["purge", "--all", "--platform", "whatsapp"]),
            "--id, --all",
        ),
    ] {
        let (argv, out) = run(bad).await;
        assert!(!out.status.success(), "{argv:?} refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(named), "{argv:?}: {stderr}");
    }

    fix(&c).await;
    let (argv, out) = run(args(&["retry", "--id", &refused])).await;
    let retried = json_of(&argv, &out);
    assert_eq!(retried["retried"][0]["id"], refused.as_str(), "{retried}");
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);

    let (argv, out) = run(args(&["stats"])).await;
    let stats = json_of(&argv, &out);
    assert_eq!(
        (
            stats["stream_length"].as_u64(),
            stats["dead_letters"].as_u64()
        ),
        (Some(0), Some(1))
    );

    let (argv, out) = run(args(&["purge", "--error-class", "unparseable"])).await;
    let purged = json_of(&argv, &out);
    assert_eq!(purged["purged"], 1);
    let (argv, out) = run(args(&["list"])).await;
    let listed = json_of(&argv, &out);
    assert_eq!(listed["dead_letters"], json!([]));
    c.stop().await;
}

/// An edge in front of `c`'s services with the admin routes enabled.
async fn admin_edge(c: &Cluster, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = edge_config(c.conversations, c.ingest, c.stream, EdgeLimits::default());
    config.admin_token = Some(ADMIN_TOKEN.into());
    tokio::spawn(faro_edge::run(config, listener, stop.clone()));
    crate::process::wait_listening(addr).await;
    format!("http://{addr}/api/v1/admin")
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let r = req.send().await.expect("the edge answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test]
async fn admin_routes_need_the_admin_token_and_drive_the_dead_letter_queue() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let (a, b) = two_dead_letters(&c).await;
    let http = reqwest::Client::new();

    // Without a configured token the routes do not exist.
    let (status, body) = send(
        http.get(c.url("/api/v1/admin/dead-letters"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let stop = CancellationToken::new();
    let base = admin_edge(&c, &stop).await;
    let list = format!("{base}/dead-letters");
    let (status, body) = send(http.get(&list)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );
    let agent = c.token(&a.id, 300);
    for wrong in [
        agent.as_str(),
        "faro-test-admin-token-0123456789abcdeX",
        crate::cluster::JWT_SECRET,
    ] {
        let (status, body) = send(http.get(&list).bearer_auth(wrong)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_token")),
            "{wrong}"
        );
    }
    let admin = |r: reqwest::RequestBuilder| send(r.bearer_auth(ADMIN_TOKEN));

    let (status, body) = admin(http.get(&list)).await;
    assert_eq!(status, 200, "{body}");
    let dead = body["dead_letters"].as_array().expect("array").clone();
    assert_eq!(dead.len(), 2);
    let refused = dead[0]["id"].as_str().expect("id").to_owned();
    let (_, body) = admin(http.get(format!("{list}?tenant={}&platform=messenger", b.id))).await;
    assert_eq!(
        body["dead_letters"].as_array().map(Vec::len),
        Some(1),
        "{body}"
    );
    let (_, body) = admin(http.get(format!("{list}?limit=1"))).await;
    let cursor = body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, body) = admin(http.get(format!("{list}?limit=1&cursor={cursor}"))).await;
    assert_eq!(body["dead_letters"][0]["platform"], "messenger");

    // Bad filters: 400 naming the problem.
    for (query, named) in [
        ("platform=telegram", "platform"),
        ("tenant=acme", "tenant"),
        ("error_class=boom", "error class"),
        ("since=yesterday", "since"),
        (
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
        ("limit=5000", "limit"),
        ("limit=x", "limit"),
        ("cursor=zz", "cursor"),
        ("colour=red", "colour"),
    ] {
        let (status, body) = admin(http.get(format!("{list}?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{query}: {message}");
    }

    let (status, body) = admin(http.get(format!("{list}/{refused}"))).await;
    assert_eq!(status, 200);
    assert_eq!(body["error_class"], "refused");
    assert_eq!(body["payload"]["object"], "whatsapp_business_account");
    let (status, _) = admin(http.get(format!("{list}/1-0"))).await;
    assert_eq!(status, 404);
    let (status, _) = admin(http.get(format!("{list}/nope"))).await;
    assert_eq!(status, 400);
    let (status, body) = admin(http.delete(format!("{list}/{refused}"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (status, _) = admin(http.get(format!("{list}/retry"))).await;
    assert_eq!(status, 405);

    for bad in [
        "{}",
        r#"{"all": false}"#,
        r#"{"id": "1-0", "all": true}"#,
        r#"{"filter": {}}"#,
        r#"{"filter": {"platform": "telegram"}}"#,
        r#"{"ids": []}"#,
        "not json",
    ] {
        let (status, body) = admin(http.post(format!("{list}/retry")).body(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (status, _) = admin(
        http.post(format!("{list}/purge"))
            .body("x".repeat(20 * 1024)),
    )
    .await;
    assert_eq!(status, 413);

    fix(&c).await;
    let (status, body) = admin(
        http.post(format!("{list}/retry"))
            .json(&json!({"filter": {"error_class": "refused", "tenant": a.id}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["retried"][0]["id"], refused.as_str());
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);

    let (status, body) = admin(http.get(format!("{base}/queue"))).await;
    assert_eq!(
        (status, body["dead_letters"].as_u64()),
        (200, Some(1)),
        "{body}"
    );

    let (status, body) = admin(
        http.post(format!("{list}/purge"))
            .json(&json!({"all": true})),
    )
    .await;
    assert_eq!((status, body["purged"].as_u64()), (200, Some(1)));
    let (_, body) = admin(http.get(&list)).await;
    assert_eq!(body["dead_letters"], json!([]));
    stop.cancel();
    c.stop().await;
}

#[test]
fn the_admin_token_must_be_long_and_not_the_jwt_secret() {
    let addr = "127.0.0.1:1".parse().expect("addr");
    let mut config = edge_config(addr, addr, addr, EdgeLimits::default());
    config.admin_token = Some("short".into());
    assert!(config.validate().is_err());
    config.admin_token = Some(crate::cluster::JWT_SECRET.into());
    assert!(config.validate().is_err());
    config.admin_token = Some(ADMIN_TOKEN.into());
    assert!(config.validate().is_ok());
    assert!(!format!("{config:?}").contains(ADMIN_TOKEN), "redacted");
}
