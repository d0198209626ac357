//! Tenant isolation enforced by Postgres itself, checked from outside: connect
//! as the service's role and try to cross tenants.

use faro_proto::conversations::v1::{
    Channel, ConnectChannelRequest, CreateMetaAppRequest, ListConversationsRequest,
    MarkReadRequest, RoiLink, UpdateConversationRequest,
};
use sqlx::{Connection, PgConnection, PgPool, Row};

use crate::cluster::{Cluster, Tenant, whatsapp_text};

/// Every table of the schema, read from the catalog so that a new table cannot
/// be forgotten, with the column naming its tenant. Each must have row-level
/// security enabled and forced.
async fn tenant_tables(owner: &PgPool) -> Vec<(String, &'static str)> {
    let rows: Vec<(String, bool, bool, Vec<String>)> = sqlx::query_as(
        "SELECT c.relname::text, c.relrowsecurity, c.relforcerowsecurity,
                ARRAY(SELECT a.attname::text FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
           AND c.relname <> '_sqlx_migrations'
         ORDER BY 1",
    )
    .fetch_all(owner)
    .await
    .expect("catalog");
    rows.into_iter()
        .map(|(table, enabled, forced, columns)| {
            assert!(
                enabled && forced,
                "{table}: row-level security must be enabled and forced"
            );
            let column = if columns.iter().any(|c| c == "tenant_id") {
                "tenant_id"
            } else {
                match table.as_str() {
                    "tenants" => "id",
                    "meta_apps" => "owner_tenant_id",
                    _ => panic!("{table} has no tenant_id: every tenant table keys on it"),
                }
            };
            (table, column)
        })
        .collect()
}

/// A WhatsApp status for a message FARO has not stored: it waits in
/// `pending_message_events`.
fn early_status(tenant: &Tenant, message_id: &str) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": tenant.phone_number_id},
            "statuses": [{"id": message_id, "status": "delivered", "timestamp": "1700000001",
                          "recipient_id": "1"}]
        }}]}]
    })
    .to_string()
}

async fn as_tenant<'c>(
    conn: &'c mut PgConnection,
    tenant: Option<&str>,
) -> sqlx::Transaction<'c, sqlx::Postgres> {
    let mut tx = conn.begin().await.expect("begin");
    if let Some(t) = tenant {
        sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
            .bind(t)
            .execute(&mut *tx)
            .await
            .expect("set tenant");
    }
    tx
}

fn sql_state(e: &sqlx::Error) -> String {
    e.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_service_role_sees_and_writes_only_the_tenant_it_set() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("bravo").await;
    for (t, id) in [(&a, "wamid.IA"), (&b, "wamid.IB")] {
        for body in [
            whatsapp_text(t, id, "1", "hi", 1_700_000_000),
            early_status(t, &format!("{id}.later")),
        ] {
            let (status, _) = c.post_signed(&body, &t.app_secret).await;
            assert_eq!(status, 200);
        }
        // An app the tenant brought itself.
        c.admin()
            .await
            .create_meta_app(CreateMetaAppRequest {
                meta_app_id: format!("own-{}", t.id),
                name: "own".into(),
                app_secret: "own-secret".into(),
                verify_token: format!("own-verify-{}", t.id),
                owner_tenant_id: t.id.clone(),
            })
            .await
            .expect("tenant's own app");
        // A Messenger page and a page-level conversation event on it.
        let page = format!("page-{}", t.id.replace('-', ""));
        let app = c
            .app(
                &format!("fb-{}", t.id),
                "fb-secret",
                &format!("fb-{}", t.id),
            )
            .await;
        let scope = (t.id.clone(), t.location_id.clone());
        c.connect(&scope, Channel::FacebookMessenger, &page, &app)
            .await;
        let notice = serde_json::json!({"object": "page", "entry": [{"id": page, "messaging": [
            {"recipient": {"id": page}, "timestamp": 1_700_000_000_000_u64,
             "policy_enforcement": {"action": "warning", "reason": "spam"}}]}]});
        let status = c
            .post_meta("facebook", notice.to_string().as_bytes(), "fb-secret")
            .await;
        assert_eq!(status, 200);
        // A WhatsApp Business Account of its own and an account event on it.
        let (waba, secret) = (format!("waba-{}", t.id), format!("waba-secret-{}", t.id));
        let app = c
            .app(&waba, &secret, &format!("waba-verify-{}", t.id))
            .await;
        c.admin()
            .await
            .connect_channel(ConnectChannelRequest {
                tenant_id: t.id.clone(),
                location_id: t.location_id.clone(),
                channel: Channel::Whatsapp.into(),
                app_id: app,
                waba_id: waba.clone(),
                ..Default::default()
            })
            .await
            .expect("WABA");
        let notice = serde_json::json!({"object": "whatsapp_business_account", "entry": [
            {"id": waba, "time": 1_700_000_000, "changes": [
                {"field": "security", "value": {"event": "PIN_CHANGED"}}]}]});
        let status = c
            .post_meta("whatsapp", notice.to_string().as_bytes(), &secret)
            .await;
        assert_eq!(status, 200);
    }
    c.drained().await;
    // The inbox's tables (issue 13): an agent, a read marker and an ROI link each.
    let mut api = crate::inbox_support::grpc(&c).await;
    for t in [&a, &b] {
        crate::inbox_support::agent(&c, &t.id, "agent-1", &[]).await;
        let thread = api
            .list_conversations(ListConversationsRequest {
                tenant_id: t.id.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .conversations
            .into_iter()
            .find(|c| c.customer_id == "1")
            .expect("the thread");
        let (tenant_id, conversation_id) = (t.id.clone(), thread.id.clone());
        api.mark_read(MarkReadRequest {
            tenant_id: tenant_id.clone(),
            conversation_id: conversation_id.clone(),
            agent_id: "agent-1".into(),
            ..Default::default()
        })
        .await
        .expect("read");
        api.update_conversation(UpdateConversationRequest {
            tenant_id,
            conversation_id,
            agent_id: "agent-1".into(),
            add_roi_links: vec![RoiLink {
                kind: "review".into(),
                external_id: "r-1".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("roi link");
    }
    // The replies' idempotency records (issue 14): one per tenant, written
    // as the owner (sending needs a platform; only the row matters here).
    for t in [&a, &b] {
        sqlx::query(
            "INSERT INTO reply_requests (tenant_id, idempotency_key, request_hash, message_id) \
             SELECT tenant_id, 'key-1', '\\x00', id FROM messages WHERE tenant_id = $1::uuid LIMIT 1",
        )
        .bind(&t.id)
        .execute(&c.db.owner)
        .await
        .expect("reply request");
    }
    let tables = tenant_tables(&c.db.owner).await;
    for t in [
        "pending_message_events",
        "meta_apps",
        "messages",
        "conversation_events",
        "account_events",
        "agents",
        "conversation_reads",
        "conversation_roi_links",
        "reply_requests",
    ] {
        assert!(tables.iter().any(|(n, _)| n == t), "{t} is checked");
    }

    // The owner sees both tenants' rows, so the checks below can fail.
    for (table, col) in &tables {
        let sql = format!("SELECT count(DISTINCT {col}) FROM {table}");
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&c.db.owner)
            .await
            .expect("count");
        assert_eq!(n, 2, "owner sees both tenants in {table}");
    }

    let mut conn = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    let role: (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut conn)
            .await
            .expect("role");
    assert_eq!(role, (false, false));

    // Tenant A set: every table shows A's rows and none of B's.
    let mut tx = as_tenant(&mut conn, Some(&a.id)).await;
    for (table, col) in &tables {
        let sql = format!(
            "SELECT count(*) FILTER (WHERE {col}::text = $1), count(*) FILTER (WHERE {col}::text <> $1) FROM {table}"
        );
        let row = sqlx::query(&sql)
            .bind(&a.id)
            .fetch_one(&mut *tx)
            .await
            .expect("select");
        let (mine, others): (i64, i64) = (row.get(0), row.get(1));
        assert!(mine >= 1, "tenant A sees its own rows in {table}");
        assert_eq!(
            others, 0,
            "tenant A sees none of another tenant's rows in {table}"
        );
    }
    // Updates of B's rows touch nothing.
    let updated = sqlx::query("UPDATE messages SET text = 'hijacked' WHERE tenant_id = $1::uuid")
        .bind(&b.id)
        .execute(&mut *tx)
        .await
        .expect("update runs");
    assert_eq!(updated.rows_affected(), 0);
    tx.commit().await.expect("commit");

    // Every table: UPDATE and DELETE of B's rows with A set touch nothing
    // (or are not granted at all), and the owner still sees B's rows.
    for (table, col) in &tables {
        for sql in [
            format!("UPDATE {table} SET {col} = {col} WHERE {col}::text = $1"),
            format!("DELETE FROM {table} WHERE {col}::text = $1"),
        ] {
            let mut tx = as_tenant(&mut conn, Some(&a.id)).await;
            match sqlx::query(&sql).bind(&b.id).execute(&mut *tx).await {
                Ok(done) => assert_eq!(done.rows_affected(), 0, "{sql}"),
                Err(e) => assert_eq!(sql_state(&e), "42501", "{sql}: {e}"),
            }
            tx.rollback().await.ok();
        }
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {col}::text = $1"
        ))
        .bind(&b.id)
        .fetch_one(&c.db.owner)
        .await
        .expect("count");
        assert!(n >= 1, "B's rows in {table} are still there");
    }

    // Writing a row for B while A is set is refused by the policy.
    let mut tx = as_tenant(&mut conn, Some(&a.id)).await;
    let err = sqlx::query(
        "INSERT INTO conversations (tenant_id, id, location_id, channel, customer_id)
         VALUES ($1::uuid, gen_random_uuid(), $2::uuid, 'whatsapp', 'intruder')",
    )
    .bind(&b.id)
    .bind(&b.location_id)
    .execute(&mut *tx)
    .await
    .expect_err("cross-tenant insert must fail");
    assert_eq!(
        sql_state(&err),
        "42501",
        "row-level security violation: {err}"
    );
    tx.rollback().await.ok();

    // No tenant set: nothing is visible at all.
    let mut tx = as_tenant(&mut conn, None).await;
    for (table, _) in &tables {
        let sql = format!("SELECT count(*) FROM {table}");
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(n, 0, "{table} must be invisible without a tenant");
    }
    tx.commit().await.expect("commit");

    // Sealed secrets are not readable by the service role, even ciphertext.
    let err = sqlx::query("SELECT app_secret_enc FROM meta_apps")
        .fetch_all(&mut conn)
        .await
        .expect_err("secrets are not selectable");
    assert_eq!(sql_state(&err), "42501");
    let secret: Vec<u8> = sqlx::query_scalar("SELECT app_secret_enc FROM meta_apps LIMIT 1")
        .fetch_one(&c.db.owner)
        .await
        .expect("owner reads ciphertext");
    assert!(
        !secret
            .windows(a.app_secret.len())
            .any(|w| w == a.app_secret.as_bytes()),
        "stored sealed"
    );

    let text: String = sqlx::query_scalar("SELECT text FROM messages WHERE tenant_id = $1::uuid")
        .bind(&b.id)
        .fetch_one(&c.db.owner)
        .await
        .expect("b's message");
    assert_eq!(text, "hi");
    conn.close().await.ok();
    c.stop().await;
}

#[tokio::test]
async fn conversations_refuses_to_run_as_a_role_that_bypasses_rls() {
    let db = crate::cluster::TestDb::create().await;
    let config = faro_conversations::Config {
        database_url: db.owner_url.clone(),
        // The owner (a superuser here) sees past every policy.
        app_database_url: Some(db.owner_url.clone()),
        encryption_keys: crate::cluster::encryption_keys(),
        db_max_connections: 1,
        pending_ttl: std::time::Duration::from_secs(3600),
        sweeper_database_url: None,
        operator_database_url: None,
        tls: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = faro_conversations::run(config, listener, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("must refuse");
    assert!(
        matches!(err, faro_conversations::Error::UnsafeRole(_)),
        "{err}"
    );
    db.drop_db().await;
}
