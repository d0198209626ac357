//! Disabling tenants, locations, Meta apps and users, driven by the real
//! `faro admin` binary and checked from outside: signed webhooks over HTTP,
//! agents' REST calls and WebSockets with real JWTs.

use std::process::{Command, Output};

use faro_proto::conversations::v1::{self as pb, Channel};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Error as WsError, client::IntoClientRequest, http::HeaderValue,
};

use crate::{
    cluster::{Cluster, Options, Tenant, whatsapp_text},
    configs::EdgeLimits,
    inbox_support::{agent, call, get, post, shop, token},
};

/// The edge trusts a looked-up route or agent access this long.
const CACHE_MS: u64 = 300;

async fn cluster() -> Cluster {
    Cluster::start_with(Options {
        edge_limits: EdgeLimits {
            route_cache_ms: CACHE_MS,
            ..EdgeLimits::default()
        },
        ..Options::default()
    })
    .await
}

/// Runs `faro admin <args> --conversations-url <c>` as a process.
pub async fn admin(c: &Cluster, args: &[&str]) -> Output {
    let mut all: Vec<String> = ["admin"]
        .iter()
        .chain(args)
        .map(|s| (*s).to_owned())
        .collect();
    all.extend([
        "--conversations-url".into(),
        format!("http://{}", c.conversations),
    ]);
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_faro"))
            .args(&all)
            .env("RUST_LOG", "warn")
            .env("FARO_PLAINTEXT", "true")
            .output()
            .expect("faro runs")
    })
    .await
    .expect("joined")
}

/// `faro admin <args>`, which must succeed and print JSON.
pub async fn admin_json(c: &Cluster, args: &[&str]) -> Value {
    let out = admin(c, args).await;
    assert!(
        out.status.success(),
        "faro admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{args:?} prints JSON: {e}"))
}

/// Past the edge's cache of routes and access.
async fn past_cache() {
    tokio::time::sleep(std::time::Duration::from_millis(CACHE_MS + 200)).await;
}

/// Opens the live WebSocket with `token`: Ok(()) once upgraded, or the
/// refusal's status and JSON error code.
async fn ws(c: &Cluster, token: &str) -> Result<(), (u16, String)> {
    let mut req = format!("ws://{}/api/v1/messages/stream", c.edge)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
    );
    match tokio_tungstenite::connect_async(req).await {
        Ok(_) => Ok(()),
        Err(WsError::Http(resp)) => {
            let body: Value = serde_json::from_slice(&resp.body().clone().unwrap_or_default())
                .unwrap_or_default();
            Err((
                resp.status().as_u16(),
                body["error"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ))
        }
        Err(e) => panic!("unexpected websocket error {e}"),
    }
}

async fn webhook(c: &Cluster, t: &Tenant, id: &str) -> (u16, String) {
    let body = whatsapp_text(t, id, "15551234567", "hi", 1_700_000_000);
    let (status, json) = c.post_signed(&body, &t.app_secret).await;
    (
        status,
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

#[tokio::test]
async fn a_disabled_tenant_is_refused_on_webhooks_rest_and_websocket() {
    let c = cluster().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("beta").await;
    agent(&c, &a.id, "ana", &[]).await;
    let ana = token(&a.id, "ana", None);
    let bea = token(&b.id, "bea", None);
    assert_eq!(
        get(&c, "/api/v1/conversations", &ana).await.status,
        StatusCode::OK
    );
    assert_eq!(ws(&c, &ana).await, Ok(()));
    assert_eq!(webhook(&c, &a, "wamid.t-before").await.0, 200);

    let off = admin_json(&c, &["disable-tenant", "--tenant", &a.id]).await;
    assert_eq!(off, json!({"id": a.id, "name": "alpha", "disabled": true}));
    past_cache().await;

    let refused = get(&c, "/api/v1/conversations", &ana).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "tenant_disabled");
    assert_eq!(ws(&c, &ana).await, Err((401, "tenant_disabled".into())));
    assert_eq!(
        webhook(&c, &a, "wamid.t-after").await,
        (401, "unknown_account".into())
    );
    // Beta goes on.
    assert_eq!(
        get(&c, "/api/v1/conversations", &bea).await.status,
        StatusCode::OK
    );
    assert_eq!(ws(&c, &bea).await, Ok(()));
    assert_eq!(webhook(&c, &b, "wamid.t-beta").await.0, 200);
    c.drained().await;
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT channel_message_id FROM messages ORDER BY 1")
            .fetch_all(&c.db.owner)
            .await
            .expect("messages");
    assert_eq!(
        stored,
        ["wamid.t-before", "wamid.t-beta"],
        "nothing of the disabled tenant's"
    );

    let listed = admin_json(&c, &["list-tenants"]).await;
    let disabled: Vec<(&str, bool)> = listed["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or_default(),
                t["disabled"] == true,
            )
        })
        .collect();
    assert_eq!(disabled.len(), 2);
    assert!(disabled.contains(&("alpha", true)) && disabled.contains(&("beta", false)));

    admin_json(&c, &["disable-tenant", "--tenant", &a.id, "--enable"]).await;
    past_cache().await;
    assert_eq!(
        get(&c, "/api/v1/conversations", &ana).await.status,
        StatusCode::OK
    );
    assert_eq!(webhook(&c, &a, "wamid.t-again").await.0, 200);
    c.stop().await;
}

#[tokio::test]
async fn a_disabled_user_gets_401_on_rest_and_websocket_and_colleagues_do_not() {
    let c = cluster().await;
    let a = c.tenant("alpha").await;
    agent(&c, &a.id, "ana", &[]).await;
    agent(&c, &a.id, "bob", &[]).await;
    let (ana, bob) = (token(&a.id, "ana", None), token(&a.id, "bob", None));
    let off = admin_json(&c, &["disable-user", "--tenant", &a.id, "--user", "ana"]).await;
    assert_eq!(off["disabled"], true, "{off}");
    past_cache().await;
    let refused = get(&c, "/api/v1/conversations", &ana).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "agent_disabled");
    assert_eq!(ws(&c, &ana).await, Err((401, "agent_disabled".into())));
    assert_eq!(
        get(&c, "/api/v1/conversations", &bob).await.status,
        StatusCode::OK
    );
    assert_eq!(ws(&c, &bob).await, Ok(()));
    // Nor may ana be assigned while disabled (assignment checks it already).
    let users = admin_json(&c, &["list-users", "--tenant", &a.id]).await;
    let states: Vec<(String, bool)> = users["users"]
        .as_array()
        .expect("users")
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap_or_default().to_owned(),
                u["disabled"] == true,
            )
        })
        .collect();
    assert_eq!(
        states,
        [("ana".to_owned(), true), ("bob".to_owned(), false)]
    );
    admin_json(
        &c,
        &[
            "disable-user",
            "--tenant",
            &a.id,
            "--user",
            "ana",
            "--enable",
        ],
    )
    .await;
    past_cache().await;
    assert_eq!(
        get(&c, "/api/v1/conversations", &ana).await.status,
        StatusCode::OK
    );
    assert_eq!(ws(&c, &ana).await, Ok(()));
    c.stop().await;
}

#[tokio::test]
async fn a_disabled_location_routes_nothing_and_its_threads_are_not_found() {
    let c = cluster().await;
    let s = shop(&c, "casa").await;
    post(&c, &s.one, "wamid.l1", "111", "Uno", "hola", 1_700_000_000).await;
    post(&c, &s.two, "wamid.l2", "222", "Dos", "hola", 1_700_000_001).await;
    c.drained().await;
    let all = token(s.id(), "ana", None);
    let only_two = token(s.id(), "ana", Some(&[&s.two.location_id]));
    let listed = get(&c, "/api/v1/conversations", &all).await;
    let two_id = listed.body["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["location_id"] == s.two.location_id.as_str())
        .expect("two's thread")["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let off = admin_json(
        &c,
        &[
            "disable-location",
            "--tenant",
            s.id(),
            "--location",
            &s.two.location_id,
        ],
    )
    .await;
    assert_eq!(off["disabled"], true, "{off}");
    past_cache().await;

    let listed = get(&c, "/api/v1/conversations", &all).await;
    let shown: Vec<&str> = listed.body["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .map(|t| t["location_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        shown,
        [s.one.location_id.as_str()],
        "only the enabled location's"
    );
    assert!(customers_of(&get(&c, "/api/v1/conversations?q=Dos", &all).await.body).is_empty());
    assert!(customers_of(&get(&c, "/api/v1/conversations", &only_two).await.body).is_empty());
    let path = format!("/api/v1/conversations/{two_id}");
    for (method, p, body) in [
        (Method::GET, path.clone(), None),
        (Method::GET, format!("{path}/messages"), None),
        (Method::PATCH, path.clone(), Some(json!({"status": "open"}))),
        (Method::POST, format!("{path}/read"), Some(json!({}))),
    ] {
        let answer = call(&c, method.clone(), &p, &all, &[], body).await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{method} {p}: {}",
            answer.body
        );
    }
    assert_eq!(
        webhook(&c, &s.two, "wamid.l2-after").await,
        (401, "unknown_account".into())
    );
    assert_eq!(webhook(&c, &s.one, "wamid.l1-after").await.0, 200);
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 3);

    let locations = admin_json(&c, &["list-locations", "--tenant", s.id()]).await;
    assert_eq!(locations["locations"].as_array().map(Vec::len), Some(2));
    admin_json(
        &c,
        &[
            "disable-location",
            "--tenant",
            s.id(),
            "--location",
            &s.two.location_id,
            "--enable",
        ],
    )
    .await;
    past_cache().await;
    assert_eq!(get(&c, &path, &all).await.status, StatusCode::OK);
    c.stop().await;
}

fn customers_of(body: &Value) -> Vec<Value> {
    body["conversations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_disabled_app_routes_nothing_and_lists_carry_no_secret() {
    let c = cluster().await;
    let (tenant, location) = c.bare_tenant("delta").await;
    let app = c.app("app-delta", "delta-secret", "delta-verify").await;
    c.connect(
        &(tenant.clone(), location.clone()),
        Channel::Whatsapp,
        "pn-delta",
        &app,
    )
    .await;
    let t = Tenant {
        id: tenant,
        location_id: location,
        phone_number_id: "pn-delta".into(),
        app_secret: "delta-secret".into(),
    };
    let handshake = |c: &Cluster| {
        c.http
            .get(c.url(
                "/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token=delta-verify&hub.challenge=42",
            ))
            .send()
    };
    assert_eq!(handshake(&c).await.expect("edge").status(), 200);
    let off = admin_json(&c, &["disable-app", "--app", &app]).await;
    assert_eq!(off["disabled"], true, "{off}");
    past_cache().await;
    assert_eq!(
        webhook(&c, &t, "wamid.a-after").await,
        (401, "unknown_account".into())
    );
    assert_eq!(handshake(&c).await.expect("edge").status(), 403);
    let out = admin(&c, &["list-apps"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("app-delta"), "{text}");
    assert!(
        !text.contains("delta-secret") && !text.contains("delta-verify"),
        "{text}"
    );
    admin_json(&c, &["disable-app", "--app", &app, "--enable"]).await;
    past_cache().await;
    assert_eq!(webhook(&c, &t, "wamid.a-again").await.0, 200);
    c.stop().await;
}

/// A helper for the admin-role tests: an RPC the operator may not make with
/// a tenant's id that does not exist.
pub fn missing() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[tokio::test]
async fn disabling_over_grpc_refuses_unknown_ids_and_another_tenants_rows() {
    let c = cluster().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("beta").await;
    let mut admin = c.admin().await;
    let err = admin
        .set_location_disabled(pb::SetLocationDisabledRequest {
            tenant_id: b.id.clone(),
            location_id: a.location_id.clone(),
            disabled: true,
        })
        .await
        .expect_err("not beta's location");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = admin
        .set_tenant_disabled(pb::SetTenantDisabledRequest {
            tenant_id: missing(),
            disabled: true,
        })
        .await
        .expect_err("no such tenant");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert_eq!(
        c.count("SELECT count(*) FROM locations WHERE disabled_at IS NOT NULL")
            .await,
        0
    );
    c.stop().await;
}
