//! What spans tenants is the operator's role alone (migration 0017): the
//! service role, even with a tenant set, cannot list tenants or apps, disable
//! a tenant or an app, or re-seal secrets; and the operator's role can call
//! those functions but read no table.

use sqlx::{Connection, PgConnection};

use crate::cluster::Cluster;

/// Runs `sql` on `conn` and returns Postgres' error code (None: it worked).
async fn code(conn: &mut PgConnection, sql: &str) -> Option<String> {
    match sqlx::query(sql).execute(&mut *conn).await {
        Ok(_) => None,
        Err(e) => e
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned()),
    }
}

const DENIED: Option<&str> = Some("42501");

#[tokio::test]
async fn the_service_role_cannot_list_across_tenants_disable_tenants_or_reseal() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("beta").await;
    let mut app = PgConnection::connect_with(&c.db.app_options())
        .await
        .expect("connect as faro_app");
    sqlx::query("SELECT set_config('faro.tenant_id', $1, false)")
        .bind(&b.id)
        .execute(&mut app)
        .await
        .expect("tenant set");
    let nil = "'00000000-0000-0000-0000-000000000000'::uuid";
    for sql in [
        format!("SELECT * FROM faro_admin_list_tenants({nil}, 10)"),
        format!("SELECT * FROM faro_admin_list_apps({nil}, 10)"),
        format!(
            "SELECT * FROM faro_admin_set_tenant_disabled('{}', true)",
            a.id
        ),
        format!("SELECT * FROM faro_admin_set_app_disabled({nil}, true)"),
        format!("SELECT * FROM faro_reseal_apps_lock('k2', {nil}, 10)"),
        format!("SELECT faro_reseal_apps_write({nil}, 'k1', 'k2', ''::bytea, ''::bytea)"),
        format!("SELECT * FROM faro_reseal_credentials_lock('k2', {nil}, 10)"),
        format!("SELECT faro_reseal_credentials_write({nil}, 'k1', 'k2', ''::bytea)"),
        // Its own tenant's row too: the disabled state is the operator's.
        format!(
            "UPDATE tenants SET disabled_at = NULL WHERE id = '{}'",
            b.id
        ),
    ] {
        assert_eq!(code(&mut app, &sql).await.as_deref(), DENIED, "{sql}");
    }
    // Beta's session touches none of alpha's locations, agents or tenant row.
    for sql in [
        format!(
            "UPDATE locations SET disabled_at = now() WHERE tenant_id = '{}'",
            a.id
        ),
        format!(
            "UPDATE agents SET disabled_at = now() WHERE tenant_id = '{}'",
            a.id
        ),
        format!("DELETE FROM locations WHERE tenant_id = '{}'", a.id),
        format!(
            "UPDATE tenants SET webhook_burst = 5, webhook_per_minute = 5 WHERE id = '{}'",
            a.id
        ),
    ] {
        let done = sqlx::query(&sql).execute(&mut app).await;
        match done {
            Ok(r) => assert_eq!(r.rows_affected(), 0, "{sql}"),
            Err(e) => assert_eq!(
                e.as_database_error().and_then(|d| d.code()).as_deref(),
                Some("42501"),
                "{sql}: {e}"
            ),
        }
    }
    let seen: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM locations) + (SELECT count(*) FROM tenants)",
    )
    .fetch_one(&mut app)
    .await
    .expect("count");
    assert_eq!(seen, 2, "beta's own tenant and location only");

    // The operator's role: the functions, and no table.
    let mut op = PgConnection::connect_with(
        &c.db
            .app_options()
            .username(faro_conversations::OPERATOR_ROLE),
    )
    .await
    .expect("connect as faro_operator");
    let n: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM faro_admin_list_tenants({nil}, 10)"
    ))
    .fetch_one(&mut op)
    .await
    .expect("operator lists tenants");
    assert_eq!(n, 2);
    for sql in [
        "SELECT * FROM tenants",
        "SELECT id FROM meta_apps",
        "SELECT * FROM messages",
    ] {
        assert_eq!(code(&mut op, sql).await.as_deref(), DENIED, "{sql}");
    }
    c.stop().await;
}
