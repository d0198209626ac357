//! `docs/openapi.json` against a running edge: every documented operation is
//! served and answers one of its documented statuses with its documented
//! body; every other method of a documented path is 405 with `Allow`; every
//! admin-tagged operation refuses anything but `FARO_ADMIN_TOKEN`, and each
//! admin call leaves an audit line without the token.

use std::{collections::BTreeMap, net::SocketAddr, process::Stdio, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::{
    cluster::{Cluster, EdgeLimits, JWT_SECRET, Options, edge_config},
    process::{free_addr, wait_listening},
};

const ADMIN_TOKEN: &str = "faro-openapi-admin-token-0123456789abcdef";
const DOC: &str = include_str!("../../docs/openapi.json");

fn doc() -> Value {
    serde_json::from_str(DOC).expect("docs/openapi.json is JSON")
}

/// Every documented `(path template, METHOD, operation)`.
fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (m, op) in item.as_object().expect("path item") {
            if let Ok(method) = Method::from_bytes(m.to_uppercase().as_bytes()) {
                ops.push((path.clone(), method, op.clone()));
            }
        }
    }
    ops
}

fn is_admin(op: &Value) -> bool {
    op["tags"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "admin"))
}

/// A concrete path for a template: each `{name}` becomes `name-1`.
fn example(template: &str) -> String {
    template
        .split('/')
        .map(
            |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => format!("{name}-1"),
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Follows a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local $ref");
            resolve(doc, doc.pointer(pointer).expect("the $ref exists"))
        }
        None => v,
    }
}

/// The schema's required properties are present (schemathesis validates fully).
fn assert_has_required(doc: &Value, schema: &Value, body: &Value, what: &str) {
    let schema = resolve(doc, schema);
    for part in schema["allOf"].as_array().into_iter().flatten() {
        assert_has_required(doc, part, body, what);
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        let key = key.as_str().expect("a property name");
        assert!(body.get(key).is_some(), "{what}: `{key}` missing in {body}");
    }
}

/// An edge with the admin routes in front of `c`'s services.
async fn admin_edge(c: &Cluster, stop: &CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = edge_config(c.conversations, c.ingest, c.stream, EdgeLimits::default());
    config.admin_token = Some(ADMIN_TOKEN.into());
    tokio::spawn(faro_edge::run(config, listener, stop.clone()));
    wait_listening(addr).await;
    addr
}

fn assert_error_body(status: StatusCode, body: &[u8], what: &str) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{what}: {status} has a JSON body ({e})"));
    let code = v["error"]["code"].as_str().unwrap_or_default();
    assert!(!code.is_empty(), "{what}: {status} names its code: {v}");
    assert!(v["error"]["message"].is_string(), "{what}: {v}");
    code.to_owned()
}

#[tokio::test]
async fn every_documented_operation_is_served_as_documented_and_other_methods_get_405() {
    let c = Cluster::start().await;
    let stop = CancellationToken::new();
    let edge = admin_edge(&c, &stop).await;
    let doc = doc();
    let http = reqwest::Client::new();
    let mut allowed: BTreeMap<String, Vec<Method>> = BTreeMap::new();
    let mut admin_paths = std::collections::BTreeSet::new();
    for (path, method, op) in operations(&doc) {
        if is_admin(&op) {
            admin_paths.insert(path.clone());
        }
        allowed
            .entry(path.clone())
            .or_default()
            .push(method.clone());
        let what = format!("{method} {path}");
        let mut req = http.request(method.clone(), format!("http://{edge}{}", example(&path)));
        if is_admin(&op) {
            req = req.bearer_auth(ADMIN_TOKEN);
        }
        if method == Method::POST {
            let body = if is_admin(&op) {
                json!({"id": "0-1"})
            } else {
                json!({})
            };
            req = req.json(&body);
        }
        let r = req.send().await.expect("the edge answers");
        let status = r.status();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = r.bytes().await.expect("body");
        let documented = &op["responses"][status.as_str()];
        assert!(documented.is_object(), "{what}: {status} is documented");
        assert!(
            !matches!(status.as_u16(), 404 | 405) || is_admin(&op),
            "{what} is served"
        );
        // Refusals are the shared error responses; the health check's 503 is
        // its report, checked against its schema below.
        if status.as_u16() >= 400 && documented.get("$ref").is_some() {
            assert_eq!(content_type, "application/json", "{what}");
            assert_error_body(status, &body, &what);
        } else if let Some(schema) =
            resolve(&doc, documented)["content"]["application/json"].get("schema")
        {
            assert_eq!(content_type, "application/json", "{what}");
            let v: Value = serde_json::from_slice(&body).expect("JSON");
            assert_has_required(&doc, schema, &v, &what);
        }
        if path == "/api/v1/openapi.json" {
            assert_eq!(body, DOC.as_bytes(), "the committed description is served");
        }
    }
    // Every other method of a documented path: 405 naming the allowed ones.
    for (path, methods) in &allowed {
        let admin = admin_paths.contains(path);
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ] {
            if methods.contains(&method) {
                continue;
            }
            let mut req = http.request(method.clone(), format!("http://{edge}{}", example(path)));
            if admin {
                req = req.bearer_auth(ADMIN_TOKEN);
            }
            let r = req.send().await.expect("the edge answers");
            let what = format!("{method} {path}");
            assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{what}");
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            let mut named: Vec<String> = r.headers()["allow"]
                .to_str()
                .expect("ascii")
                .split(", ")
                .map(str::to_owned)
                .collect();
            named.sort();
            let mut allow: Vec<String> = allow.into_iter().map(str::to_owned).collect();
            allow.sort();
            assert_eq!(named, allow, "{what}: Allow");
            let status = r.status();
            assert_error_body(status, &r.bytes().await.expect("body"), &what);
        }
    }
    let r = http
        .get(format!("http://{edge}/api/v1/nothing-here"))
        .send()
        .await
        .expect("answers");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let status = r.status();
    assert_eq!(
        assert_error_body(status, &r.bytes().await.expect("body"), "404"),
        "not_found"
    );
    stop.cancel();
    c.stop().await;
}

/// Derived from the description, so an admin route added there cannot be
/// forgotten here; the route table's own test keeps the description complete.
#[tokio::test]
async fn every_admin_operation_refuses_any_credential_but_the_admin_token() {
    let c = Cluster::start_with(Options {
        ingest_workers: 1,
        ..Options::default()
    })
    .await;
    let (a, _) = crate::dlq::two_dead_letters(&c).await;
    let stop = CancellationToken::new();
    let edge = admin_edge(&c, &stop).await;
    let doc = doc();
    let http = reqwest::Client::new();
    let jwt = c.token(&a.id, 3600);
    let admin_ops: Vec<_> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| is_admin(op))
        .collect();
    assert!(
        admin_ops.len() >= 5,
        "the description tags the admin routes"
    );
    for (path, method, _) in &admin_ops {
        let url = format!("http://{edge}{}", example(path));
        let credentials: Vec<(&str, Option<String>, &str)> = vec![
            ("no credential", None, ""),
            ("an agent JWT", Some(format!("Bearer {jwt}")), ""),
            (
                "a wrong token",
                Some("Bearer not-the-admin-token-0123456789abcdef".into()),
                "",
            ),
            (
                "the token plus a byte",
                Some(format!("Bearer {ADMIN_TOKEN}x")),
                "",
            ),
            (
                "the token in Basic",
                Some(format!("Basic {ADMIN_TOKEN}")),
                "",
            ),
            ("the token in the query", None, ADMIN_TOKEN),
            ("an agent JWT in the query", None, jwt.as_str()),
        ];
        for (what, authorization, query_token) in credentials {
            let mut req = http.request(method.clone(), &url);
            if let Some(h) = authorization {
                req = req.header("authorization", h);
            }
            if !query_token.is_empty() {
                req = req.query(&[("access_token", query_token)]);
            }
            if method == Method::POST {
                req = req.json(&json!({"all": true}));
            }
            let r = req.send().await.expect("the edge answers");
            let status = r.status();
            let code = assert_error_body(status, &r.bytes().await.expect("body"), what);
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {what}"
            );
            assert!(
                ["missing_token", "invalid_token"].contains(&code.as_str()),
                "{method} {path} with {what}: {code}"
            );
        }
        // The admin token itself is accepted (the refusals were not for another reason).
        let mut req = http.request(method.clone(), &url).bearer_auth(ADMIN_TOKEN);
        if method == Method::POST {
            req = req.json(&json!({"id": "0-1"}));
        }
        let status = req.send().await.expect("answers").status();
        assert!(
            !matches!(status.as_u16(), 401 | 403 | 405),
            "{method} {path} with the admin token: {status}"
        );
    }
    // Nothing was retried or purged by the refused calls.
    let listed: Value = http
        .get(format!("http://{edge}/api/v1/admin/dead-letters"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        listed["dead_letters"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    stop.cancel();
    c.stop().await;
}

/// A real `faro edge` process: one `admin call` line per call, with the
/// verdict and outcome, never the token presented.
#[tokio::test]
async fn every_admin_call_is_audit_logged_without_the_token() {
    let addr = free_addr();
    let dead = free_addr();
    let log = format!(
        "{}/audit-edge-{}.log",
        env!("CARGO_TARGET_TMPDIR"),
        uuid::Uuid::new_v4().simple()
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_faro"))
        .arg("edge")
        .env("FARO_PLAINTEXT", "true")
        .env("FARO_EDGE_LISTEN", addr.to_string())
        .env("FARO_JWT_SECRET", JWT_SECRET)
        .env("FARO_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("FARO_INGEST_URL", format!("http://{dead}"))
        .env("FARO_CONVERSATIONS_URL", format!("http://{dead}"))
        .env("FARO_STREAM_URL", format!("http://{dead}"))
        .env("FARO_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("faro edge starts");
    wait_listening(addr).await;
    let http = reqwest::Client::new();
    let url = |p: &str| format!("http://{addr}/api/v1/admin/{p}");
    let jwt = faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: "agent-1".into(),
            tenant_id: uuid::Uuid::now_v7(),
            location_ids: None,
            exp: u64::try_from(chrono::Utc::now().timestamp() + 3600).unwrap_or_default(),
        })
        .expect("token");
    let wrong = "Bearer wrong-admin-token-0123456789abcdef";
    let calls = [
        (http.get(url("queue")), 401),
        (http.get(url("queue")).header("authorization", wrong), 401),
        (http.get(url("dead-letters")).bearer_auth(&jwt), 401),
        (http.get(url("queue")).bearer_auth(ADMIN_TOKEN), 503),
        (
            http.post(url("dead-letters/purge"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&json!({"all": true})),
            503,
        ),
        (
            http.get(url("dead-letters/7-0")).bearer_auth(ADMIN_TOKEN),
            503,
        ),
    ];
    for (req, status) in calls {
        assert_eq!(req.send().await.expect("answers").status().as_u16(), status);
    }
    let mut lines = Vec::new();
    for _ in 0..200 {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        lines = text
            .lines()
            .filter(|l| l.contains("admin call"))
            .map(|l| serde_json::from_str::<Value>(l).expect("a JSON log line"))
            .collect();
        if lines.len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for secret in [ADMIN_TOKEN, "wrong-admin-token", jwt.as_str()] {
        assert!(!text.contains(secret), "a token in the log ({log})");
    }
    assert_eq!(lines.len(), 6, "one line per call ({log})");
    let field = |l: &Value, k: &str| {
        let f = l.get("fields").unwrap_or(l);
        f[k].as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| f[k].to_string())
    };
    let seen: Vec<(String, String, String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                field(l, "credential"),
                field(l, "route"),
                field(l, "status"),
                field(l, "selection"),
                field(l, "client"),
            )
        })
        .collect();
    let expect = |c: &str, r: &str, s: &str, sel: &str| {
        (
            c.to_owned(),
            r.to_owned(),
            s.to_owned(),
            sel.to_owned(),
            "127.0.0.1".to_owned(),
        )
    };
    assert_eq!(
        seen,
        [
            expect("missing_token", "/api/v1/admin/queue", "401", ""),
            expect("invalid_token", "/api/v1/admin/queue", "401", ""),
            expect("invalid_token", "/api/v1/admin/dead-letters", "401", ""),
            expect("admin_token", "/api/v1/admin/queue", "503", ""),
            expect(
                "admin_token",
                "/api/v1/admin/dead-letters/purge",
                "503",
                "all"
            ),
            expect("admin_token", "/api/v1/admin/dead-letters/{id}", "503", ""),
        ]
    );
    assert_eq!(field(&lines[5], "id"), "7-0");
}
