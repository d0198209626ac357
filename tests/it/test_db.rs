//! What every test stands on: its own Postgres database, a Redis client, and
//! clean-up that runs even when a test fails.

use std::{str::FromStr, time::Duration};

use base64::Engine;
use fred::{
    clients::Client as Redis,
    interfaces::{ClientLike, KeysInterface},
    types::scan::Scanner,
};
use futures::TryStreamExt;
use sqlx::{ConnectOptions, Connection, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

pub const JWT_SECRET: &str = "integration-test-jwt-secret-0123456789abcdef";

pub fn server_url() -> String {
    std::env::var("FARO_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("FARO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn encryption_keys() -> Vec<String> {
    vec![format!(
        "t1:{}",
        base64::engine::general_purpose::STANDARD.encode([9u8; 32])
    )]
}

/// Runs `cleanup` to completion from synchronous code (a `Drop` while a failing
/// test unwinds), on a runtime of its own: the test's runtime is the thread
/// being unwound. Bounded, so a cleanup that cannot finish does not hang.
pub(crate) fn clean_up_aside(cleanup: impl Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
            });
        }
    })
    .join();
}

async fn drop_database(name: &str) {
    let server = PgConnectOptions::from_str(&server_url()).expect("url");
    if let Ok(mut admin) = server.connect().await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
        admin.close().await.ok();
    }
}

/// Deletes every key under a test's prefix.
pub(crate) async fn delete_keys(redis: &Redis, prefix: &str) {
    let mut scan = redis.scan(format!("{prefix}*"), Some(500), None);
    let mut keys = Vec::new();
    while let Ok(Some(mut page)) = scan.try_next().await {
        keys.extend(page.take_results().unwrap_or_default());
    }
    if !keys.is_empty() {
        let _: i64 = redis.del(keys).await.unwrap_or_default();
    }
}

/// Deletes a test's Redis keys (`prefix*`) when dropped, passed or failed:
/// for tests that run FARO as a process under a prefix of their own rather
/// than a [`crate::cluster::Cluster`]. Declare it before the process, so
/// that the process is stopped first.
pub(crate) struct KeysGuard(pub String);

impl Drop for KeysGuard {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        clean_up_aside(async move {
            let redis = redis(&redis_url()).await;
            delete_keys(&redis, &prefix).await;
            redis.quit().await.ok();
        });
    }
}

/// A fresh database with FARO's schema; dropped by [`TestDb::drop_db`], or
/// when dropped (a failing test).
pub struct TestDb {
    pub name: String,
    /// As the owner (a superuser here): for assertions that must see everything.
    pub owner_url: String,
    pub owner: PgPool,
    removed: bool,
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// A fresh database on the Postgres server at `server_url`.
    pub async fn create_on(server_url: &str) -> Self {
        let server = PgConnectOptions::from_str(server_url).expect("a Postgres URL");
        let name = format!("faro_it_{}", Uuid::new_v4().simple());
        let mut admin = server.connect().await.expect("postgres is reachable");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        admin.close().await.ok();
        let owner_opts = server.database(&name);
        let owner_url = owner_opts.to_url_lossy().to_string();
        faro_conversations::migrate(&owner_url)
            .await
            .expect("migrations apply");
        let owner = PgPool::connect_with(owner_opts).await.expect("owner pool");
        Self {
            name,
            owner_url,
            owner,
            removed: false,
        }
    }

    /// Connection options of the service's own role on this database.
    pub fn app_options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.owner_url)
            .expect("url")
            .username(faro_conversations::APP_ROLE)
            .password("")
    }

    pub async fn drop_db(mut self) {
        self.remove().await;
    }

    pub(crate) async fn remove(&mut self) {
        self.owner.close().await;
        drop_database(&self.name).await;
        self.removed = true;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if !self.removed {
            let name = self.name.clone();
            clean_up_aside(async move { drop_database(&name).await });
        }
    }
}

pub async fn redis(url: &str) -> Redis {
    let client = Redis::new(
        fred::prelude::Config::from_url(url).expect("url"),
        Some(fred::prelude::PerformanceConfig {
            default_command_timeout: Duration::from_secs(5),
            ..Default::default()
        }),
        None,
        // Reconnects, for the test that restarts its Redis.
        Some(fred::prelude::ReconnectPolicy::new_constant(0, 50)),
    );
    client.init().await.expect("redis is reachable");
    client
}
