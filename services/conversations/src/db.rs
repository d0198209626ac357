//! Connections, migrations and the per-transaction tenant.

use std::{str::FromStr, time::Duration};

use sqlx::{
    PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::{Config, Error};

/// The role the service queries as. Created by the first migration.
pub const APP_ROLE: &str = "faro_app";

/// The role that expires pending events across tenants. Created by migration 0006.
pub const SWEEPER_ROLE: &str = "faro_sweeper";

/// The role of operator RPCs that span tenants. Created by migration 0017.
pub const OPERATOR_ROLE: &str = "faro_operator";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Runs the embedded migrations as the database owner.
pub async fn migrate(owner_url: &str) -> Result<(), Error> {
    let options = PgConnectOptions::from_str(owner_url)
        .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid Postgres URL: {e}")))?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    MIGRATOR.run(&pool).await?;
    pool.close().await;
    Ok(())
}

/// The options the service connects with: the explicit app URL, or the owner
/// URL with the user replaced by [`APP_ROLE`] (and no password).
pub fn app_connect_options(config: &Config) -> Result<PgConnectOptions, Error> {
    match &config.app_database_url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| {
            Error::Config(format!(
                "FARO_APP_DATABASE_URL is not a valid Postgres URL: {e}"
            ))
        }),
        None => PgConnectOptions::from_str(&config.database_url)
            .map(|o| o.username(APP_ROLE).password(""))
            .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid Postgres URL: {e}"))),
    }
}

/// The options the sweeper connects with: the explicit sweeper URL, or the
/// owner URL with the user replaced by [`SWEEPER_ROLE`] (and no password).
pub fn sweeper_connect_options(config: &Config) -> Result<PgConnectOptions, Error> {
    match &config.sweeper_database_url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| {
            Error::Config(format!(
                "FARO_SWEEPER_DATABASE_URL is not a valid Postgres URL: {e}"
            ))
        }),
        None => PgConnectOptions::from_str(&config.database_url)
            .map(|o| o.username(SWEEPER_ROLE).password(""))
            .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid Postgres URL: {e}"))),
    }
}

/// One lazily opened connection for the sweeper: the service starts (and
/// serves) even while this role cannot log in; each sweep reports its error.
pub(crate) fn sweeper_pool(config: &Config) -> Result<PgPool, Error> {
    let options = sweeper_connect_options(config)?.application_name("faro-sweeper");
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// The options operator RPCs that span tenants connect with: the explicit
/// operator URL, or the owner URL with the user replaced by [`OPERATOR_ROLE`].
pub fn operator_connect_options(config: &Config) -> Result<PgConnectOptions, Error> {
    match &config.operator_database_url {
        Some(url) => PgConnectOptions::from_str(url).map_err(|e| {
            Error::Config(format!(
                "FARO_OPERATOR_DATABASE_URL is not a valid Postgres URL: {e}"
            ))
        }),
        None => PgConnectOptions::from_str(&config.database_url)
            .map(|o| o.username(OPERATOR_ROLE).password(""))
            .map_err(|e| Error::Config(format!("DATABASE_URL is not a valid Postgres URL: {e}"))),
    }
}

/// At most two lazily opened connections for operator RPCs: rare calls, and
/// the service serves agents and webhooks even while this role cannot log in
/// (each operator call then reports the error).
pub(crate) fn operator_pool(config: &Config) -> Result<PgPool, Error> {
    let options = operator_connect_options(config)?.application_name("faro-operator");
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Connects as the app role and refuses to start if that role could see past
/// row-level security: a superuser, a BYPASSRLS role, or the tables' owner.
pub(crate) async fn connect_app(config: &Config) -> Result<PgPool, Error> {
    let options = app_connect_options(config)?.application_name("faro-conversations");
    let pool = PgPoolOptions::new()
        .max_connections(config.db_max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    let (role, superuser, bypass, owns): (String, bool, bool, bool) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, r.rolbypassrls,
                EXISTS (SELECT 1 FROM pg_class c
                        WHERE c.relname = 'messages' AND c.relowner = r.oid)
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&pool)
    .await?;
    if superuser || bypass || owns {
        return Err(Error::UnsafeRole(format!(
            "role {role:?} is a superuser, bypasses RLS or owns the tables; \
             connect as {APP_ROLE} (see FARO_APP_DATABASE_URL)"
        )));
    }
    Ok(pool)
}

/// Begins a transaction scoped to one tenant: every row it reads or writes is
/// filtered by the `tenant_isolation` policies through `faro.tenant_id`.
/// `BEGIN` and `SET LOCAL` go as one simple query, one round trip (they were
/// two; every transaction of the service begins here or in [`TenantsTx`]).
/// The id is a parsed UUID, so writing it into the statement is safe.
pub(crate) async fn tenant_tx(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Transaction<'static, Postgres>, Error> {
    Ok(pool
        .begin_with(format!(
            "BEGIN; SET LOCAL faro.tenant_id = '{}'",
            tenant.hyphenated()
        ))
        .await?)
}

/// One transaction for a batch that spans tenants (the reply paths): it
/// begins seeing its first tenant and is switched before each statement
/// for another, so RLS scopes every statement to the tenant it is for.
pub(crate) struct TenantsTx {
    tx: Transaction<'static, Postgres>,
    tenant: Uuid,
}

impl TenantsTx {
    /// Its statements run on generic plans (`plan_cache_mode`): they are
    /// the same few shapes on every call, and the planner would otherwise
    /// plan most of them again each time, because a generic plan's guess at
    /// an array's length (10) costs more than the one or two a tenant's
    /// share of a batch holds. Planning was ~40 % of Postgres' time a reply.
    pub(crate) async fn begin(pool: &PgPool, first: Uuid) -> Result<Self, Error> {
        let tx = pool
            .begin_with(format!(
                "BEGIN; SET LOCAL faro.tenant_id = '{}'; SET LOCAL plan_cache_mode = force_generic_plan",
                first.hyphenated()
            ))
            .await?;
        Ok(Self { tx, tenant: first })
    }

    /// The transaction, seeing `tenant`'s rows.
    pub(crate) async fn of(
        &mut self,
        tenant: Uuid,
    ) -> Result<&mut Transaction<'static, Postgres>, Error> {
        if tenant != self.tenant {
            sqlx::query("SELECT set_config('faro.tenant_id', $1, true)")
                .bind(tenant.to_string())
                .execute(&mut *self.tx)
                .await?;
            self.tenant = tenant;
        }
        Ok(&mut self.tx)
    }

    pub(crate) async fn commit(self) -> Result<(), Error> {
        Ok(self.tx.commit().await?)
    }
}

pub(crate) fn parse_uuid(field: &str, value: &str) -> Result<Uuid, Error> {
    Uuid::parse_str(value).map_err(|_| Error::invalid(format!("{field} must be a UUID")))
}

/// Deletes pending events older than `ttl` (at least an hour), across tenants.
/// `pool` must connect as [`SWEEPER_ROLE`]: no other role may call this.
pub async fn expire_pending(pool: &PgPool, ttl: Duration) -> Result<i64, Error> {
    let seconds = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    Ok(
        sqlx::query_scalar("SELECT faro_expire_pending_events(make_interval(secs => $1))")
            .bind(seconds as f64)
            .fetch_one(pool)
            .await?,
    )
}
