//! WhatsApp account-level webhooks (templates, quality, alerts, security, …)
//! and YCloud's account event types, from fixtures written from Meta's and
//! YCloud's docs, posted through the real edge with real signatures: routed by
//! the WhatsApp Business Account, answered 200, stored once as account events,
//! never as messages, listed per tenant and announced to its agents.

use faro_proto::conversations::v1::{self as pb, Channel};
use fred::interfaces::StreamsInterface;
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection};

use crate::{
    cluster::{Cluster, fixture},
    whatsapp::{self, PHONE, SECRET},
};

pub(crate) const WABA: &str = "102290129340398";
const YCLOUD_SECRET: &str = "faro-test-ycloud-webhook-secret";

/// Every account-level field Meta documents a fixture for, as named by Meta.
const FIELDS: [&str; 9] = [
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
    "phone_number_quality_update",
    "phone_number_name_update",
    "account_update",
    "account_alerts",
    "business_capability_update",
    "security",
];

/// Connects a WhatsApp number, or (with `number` empty) a WABA alone.
async fn connect(
    c: &Cluster,
    (tenant, location): &(String, String),
    number: &str,
    waba: &str,
    app: &str,
) -> Result<pb::ChannelAccount, tonic::Status> {
    c.admin()
        .await
        .connect_channel(pb::ConnectChannelRequest {
            tenant_id: tenant.clone(),
            location_id: location.clone(),
            channel: Channel::Whatsapp.into(),
            external_account_id: number.into(),
            app_id: app.into(),
            display_name: String::new(),
            waba_id: waba.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Tenant alpha owning the fixtures' number, connected with its WABA: (cluster,
/// tenant, WABA channel account id).
async fn setup() -> (Cluster, (String, String), String) {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(whatsapp::META_APP, SECRET, "verify-alpha").await;
    let number = connect(&c, &alpha, PHONE, WABA, &app)
        .await
        .expect("number and its WABA");
    assert_eq!(
        (number.kind.as_str(), number.waba_id.as_str()),
        ("messaging", WABA)
    );
    let waba: String = sqlx::query_scalar(
        "SELECT id::text FROM channel_accounts WHERE external_account_id = $1 AND kind = 'waba'",
    )
    .bind(WABA)
    .fetch_one(&c.db.owner)
    .await
    .expect("connecting the number connected its WABA");
    (c, alpha, waba)
}

pub(crate) async fn post_meta(c: &Cluster, body: &[u8]) -> (u16, Value) {
    let sig = faro_edge::sign_meta_payload(SECRET.as_bytes(), body);
    c.post_raw("whatsapp", body, ("x-hub-signature-256", &sig))
        .await
}

async fn post_ycloud(c: &Cluster, body: &[u8]) -> u16 {
    let sig = faro_edge::sign_ycloud(
        YCLOUD_SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        body,
    );
    c.post_raw("ycloud", body, ("ycloud-signature", &sig))
        .await
        .0
}

/// Every stored account event (as the owner sees them), oldest first.
async fn rows(c: &Cluster) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT to_jsonb(a) || jsonb_build_object('occurred', extract(epoch FROM occurred_at)::bigint)
         FROM account_events a ORDER BY occurred_at, id",
    )
    .fetch_all(&c.db.owner)
    .await
    .expect("account events")
}

async fn dead_letters(c: &Cluster) -> i64 {
    c.redis
        .xlen(faro_ingest::Keys::new(&c.prefix).dead)
        .await
        .expect("xlen")
}

async fn no_messages(c: &Cluster) {
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 0);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 0);
}

#[tokio::test]
async fn every_whatsapp_account_field_is_answered_200_and_stored_once_as_an_account_event() {
    let (c, alpha, waba) = setup().await;
    for round in 0..2 {
        for field in FIELDS {
            let body = fixture(&format!("whatsapp_account/{field}.json"));
            let (status, answer) = post_meta(&c, &body).await;
            assert_eq!(status, 200, "{field} (round {round}): {answer}");
        }
        c.drained().await;
    }
    let stored = rows(&c).await;
    assert_eq!(
        stored.len(),
        FIELDS.len(),
        "once each, re-posted: {stored:#?}"
    );
    for field in FIELDS {
        let sent: Value =
            serde_json::from_slice(&fixture(&format!("whatsapp_account/{field}.json")))
                .expect("fixture");
        let row = stored
            .iter()
            .find(|r| r["field"] == field)
            .unwrap_or_else(|| panic!("{field} stored"));
        assert_eq!(row["tenant_id"].as_str(), Some(alpha.0.as_str()), "{field}");
        assert_eq!(
            row["location_id"].as_str(),
            Some(alpha.1.as_str()),
            "{field}"
        );
        assert_eq!(
            row["channel_account_id"].as_str(),
            Some(waba.as_str()),
            "{field}"
        );
        assert_eq!(row["channel"], "whatsapp");
        assert_eq!(row["external_account_id"], WABA);
        assert_eq!(
            row["value"], sent["entry"][0]["changes"][0]["value"],
            "{field}"
        );
        assert_eq!(
            row["occurred"], sent["entry"][0]["time"],
            "{field}: Meta's time"
        );
    }
    // An account event is never a customer message, and nothing was refused.
    no_messages(&c).await;
    assert_eq!(dead_letters(&c).await, 0);
    c.stop().await;
}

#[tokio::test]
async fn a_messages_change_beside_an_account_change_stores_both_once() {
    let (c, _alpha, _waba) = setup().await;
    let text: Value = serde_json::from_slice(&fixture("whatsapp/text.json")).expect("fixture");
    let template: Value = serde_json::from_slice(&fixture(
        "whatsapp_account/message_template_status_update.json",
    ))
    .expect("fixture");
    let mut mixed = template.clone();
    mixed["entry"][0]["changes"]
        .as_array_mut()
        .expect("changes")
        .insert(0, text["entry"][0]["changes"][0].clone());
    let body = serde_json::to_vec(&mixed).expect("json");
    for _ in 0..2 {
        let (status, answer) = post_meta(&c, &body).await;
        assert_eq!(status, 200, "{answer}");
        c.drained().await;
    }
    let message_id = text["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        .as_str()
        .expect("id");
    assert_eq!(c.message(message_id).await["direction"], "inbound");
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 1);
    assert_eq!(c.count("SELECT count(*) FROM conversations").await, 1);
    let stored = rows(&c).await;
    assert_eq!(stored.len(), 1, "{stored:#?}");
    assert_eq!(stored[0]["field"], "message_template_status_update");
    assert_eq!(dead_letters(&c).await, 0);
    c.stop().await;
}

#[tokio::test]
async fn a_waba_connected_alone_routes_its_webhooks_and_is_listed_by_the_admin_api() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app(whatsapp::META_APP, SECRET, "verify-alpha").await;
    // A WABA nobody connected is refused as before (Meta's signature cannot
    // be checked without the app).
    let body = String::from_utf8(fixture("whatsapp_account/security.json"))
        .expect("utf-8")
        .replace(WABA, "102290129340999");
    let (status, answer) = post_meta(&c, body.as_bytes()).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (401, Some("unknown_account"))
    );

    let account = connect(&c, &alpha, "", WABA, &app)
        .await
        .expect("WABA alone");
    assert_eq!(
        (account.kind.as_str(), account.external_account_id.as_str()),
        ("waba", WABA)
    );
    for name in ["security", "message_template_quality_update"] {
        let body = fixture(&format!("whatsapp_account/{name}.json"));
        assert_eq!(post_meta(&c, &body).await.0, 200, "{name}");
    }
    c.drained().await;

    let listed = c
        .admin()
        .await
        .list_account_events(pb::ListAccountEventsRequest {
            tenant_id: alpha.0.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    let fields: Vec<&str> = listed.iter().map(|e| e.field.as_str()).collect();
    // Newest first by Meta's time (the quality update is from 2023).
    assert_eq!(fields, ["security", "message_template_quality_update"]);
    assert!(listed.iter().all(|e| e.channel_account_id == account.id));
    let value: Value = serde_json::from_str(&listed[0].value_json).expect("json");
    assert_eq!(value["event"], "PIN_RESET_REQUEST");
    let only = c
        .admin()
        .await
        .list_account_events(pb::ListAccountEventsRequest {
            tenant_id: alpha.0.clone(),
            field: "security".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .events;
    assert_eq!(only.len(), 1);
    no_messages(&c).await;
    c.stop().await;
}

#[tokio::test]
async fn a_waba_belongs_to_one_tenant() {
    let (c, _alpha, _waba) = setup().await;
    let bravo = c.bare_tenant("bravo").await;
    let app = c
        .app("1000000000000002", "another-secret", "verify-bravo")
        .await;
    let refused = connect(&c, &bravo, "106540352242999", WABA, &app)
        .await
        .expect_err("another tenant's WABA");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    let refused = connect(&c, &bravo, "", WABA, &app)
        .await
        .expect_err("another tenant's WABA, alone");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert_eq!(
        c.count("SELECT count(*) FROM channel_accounts WHERE tenant_id = (SELECT id FROM tenants WHERE name = 'bravo')")
            .await,
        0,
        "nothing half-connected"
    );
    c.stop().await;
}

#[tokio::test]
async fn agents_receive_template_status_and_quality_changes_live() {
    let (c, alpha, waba) = setup().await;
    let mut ws = c.websocket(&c.token(&alpha.0, 3600)).await;
    // A security notice is stored but not announced; the template change
    // after it is the first frame the agent gets.
    for name in [
        "security",
        "message_template_status_update",
        "message_template_quality_update",
        "phone_number_quality_update",
    ] {
        let body = fixture(&format!("whatsapp_account/{name}.json"));
        assert_eq!(post_meta(&c, &body).await.0, 200, "{name}");
        c.drained().await;
    }
    for expected in [
        "message_template_status_update",
        "message_template_quality_update",
        "phone_number_quality_update",
    ] {
        let frame = ws.next_event().await;
        assert_eq!(frame["type"], "account.event", "{frame}");
        assert_eq!(frame["tenant_id"].as_str(), Some(alpha.0.as_str()));
        assert_eq!(frame["location_id"].as_str(), Some(alpha.1.as_str()));
        let event = &frame["account_event"];
        assert_eq!(event["field"], expected, "{frame}");
        assert_eq!(event["channel_account_id"].as_str(), Some(waba.as_str()));
        assert_eq!(event["external_account_id"], WABA);
        assert!(event["value"].is_object(), "{frame}");
    }
    c.stop().await;
}

#[tokio::test]
async fn ycloud_account_events_are_routed_by_the_waba_and_stored() {
    let c = Cluster::start().await;
    let alpha = c.bare_tenant("alpha").await;
    let app = c.app("ycloud-endpoint-1", YCLOUD_SECRET, "unused").await;
    connect(&c, &alpha, "+15550783881", WABA, &app)
        .await
        .expect("YCloud number and its WABA");
    let mut ws = c.websocket(&c.token(&alpha.0, 3600)).await;
    for _ in 0..2 {
        for name in ["template_reviewed", "phone_number_quality_updated"] {
            let body = fixture(&format!("ycloud/{name}.json"));
            assert_eq!(post_ycloud(&c, &body).await, 200, "{name}");
        }
        c.drained().await;
    }
    let stored = rows(&c).await;
    let fields: Vec<&str> = stored.iter().filter_map(|r| r["field"].as_str()).collect();
    assert_eq!(
        fields,
        [
            "whatsapp.template.reviewed",
            "whatsapp.phone_number.quality_updated"
        ],
        "once each: {stored:#?}"
    );
    assert_eq!(stored[0]["value"]["whatsappTemplate"]["status"], "APPROVED");
    assert_eq!(stored[0]["occurred"], json!(1_749_417_000));
    // Two workers may handle the two webhooks in either order.
    let mut heard = Vec::new();
    for _ in 0..2 {
        let frame = ws.next_event().await;
        assert_eq!(frame["type"], "account.event", "{frame}");
        heard.push(
            frame["account_event"]["field"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        );
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            "whatsapp.phone_number.quality_updated",
            "whatsapp.template.reviewed"
        ]
    );
    no_messages(&c).await;
    assert_eq!(dead_letters(&c).await, 0);
    c.stop().await;
}

#[tokio::test]
async fn the_service_role_sees_only_its_tenants_account_events() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    // Each tenant connects its own WABA (with its own app) and hears of a template.
    let template = fixture("whatsapp_account/message_template_status_update.json");
    for (t, waba) in [(&a, "WABA-A"), (&b, "WABA-B")] {
        let app: String = sqlx::query_scalar(
            "SELECT app_id::text FROM channel_accounts WHERE external_account_id = $1",
        )
        .bind(&t.phone_number_id)
        .fetch_one(&c.db.owner)
        .await
        .expect("the tenant's app");
        connect(&c, &(t.id.clone(), t.location_id.clone()), "", waba, &app)
            .await
            .expect("WABA");
        let body = String::from_utf8(template.clone())
            .expect("utf-8")
            .replace(WABA, waba);
        let (status, answer) = c.post_signed(&body, &t.app_secret).await;
        assert_eq!(status, 200, "{answer}");
    }
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(DISTINCT tenant_id) FROM account_events")
            .await,
        2,
        "the owner sees both"
    );
    let mut conn = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    for (tenant, other) in [(&b.id, &a.id), (&a.id, &b.id)] {
        let mut tx = conn.begin().await.expect("begin");
        sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
            .bind(tenant)
            .execute(&mut *tx)
            .await
            .expect("set tenant");
        let (mine, theirs): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE tenant_id::text = $1),
                    count(*) FILTER (WHERE tenant_id::text = $2) FROM account_events",
        )
        .bind(tenant)
        .bind(other)
        .fetch_one(&mut *tx)
        .await
        .expect("count");
        assert_eq!((mine, theirs), (1, 0));
        let channel_account: String =
            sqlx::query_scalar("SELECT id::text FROM channel_accounts LIMIT 1")
                .fetch_one(&mut *tx)
                .await
                .expect("own account");
        let write = sqlx::query(
            "INSERT INTO account_events (tenant_id, id, location_id, channel_account_id, channel,
                 external_account_id, field, value, occurred_at, event_key)
             SELECT $1::uuid, gen_random_uuid(), location_id, id, 'whatsapp', 'x', 'f', '{}', now(), 'k'
             FROM channel_accounts WHERE id::text = $2",
        )
        .bind(other)
        .bind(&channel_account)
        .execute(&mut *tx)
        .await;
        assert!(write.is_err(), "no row for another tenant");
        tx.rollback().await.expect("rollback");
    }
    let unset: i64 = sqlx::query_scalar("SELECT count(*) FROM account_events")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(unset, 0, "no tenant set, nothing visible");
    c.stop().await;
}
