//! Tenant isolation enforced by Postgres itself, checked from outside: connect
//! as the service's role and try to cross tenants.

use sqlx::{Connection, PgConnection, Row};

use crate::cluster::{Cluster, whatsapp_text};

const TABLES: [(&str, &str); 5] = [
    ("tenants", "id"),
    ("locations", "tenant_id"),
    ("channel_accounts", "tenant_id"),
    ("conversations", "tenant_id"),
    ("messages", "tenant_id"),
];

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
        let (status, _) = c
            .post_signed(
                &whatsapp_text(t, id, "1", "hi", 1_700_000_000),
                &t.app_secret,
            )
            .await;
        assert_eq!(status, 200);
    }
    c.drained().await;

    // The owner sees both tenants' rows, so the checks below can fail.
    for (table, col) in TABLES {
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
    for (table, col) in TABLES {
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
    for (table, _) in TABLES {
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
