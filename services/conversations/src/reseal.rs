//! Online re-sealing of secrets under the current encryption key.
//!
//! Rows are moved a batch at a time: each batch is one short transaction that
//! locks its rows (`FOR UPDATE`, through SECURITY DEFINER
//! functions of migration 0015), opens each value with the key its row names,
//! seals it with the current key and writes value and key id together. Readers
//! open by the row's key id, so webhooks verify before, during and after; a
//! call interrupted midway leaves every row under a key that opens it, and the
//! next call carries on (rows already under the current key are not touched).

use faro_proto::conversations::v1 as pb;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{Error, SecretBox, admin, replies};

const DEFAULT_BATCH: u32 = 100;
const MAX_BATCH: u32 = 1000;

#[derive(Default)]
struct Counts {
    resealed: u64,
    failed: u64,
}

impl Counts {
    fn table(self, table: &str) -> pb::ResealedTable {
        pb::ResealedTable {
            table: table.into(),
            resealed: self.resealed,
            failed: self.failed,
        }
    }
}

pub(crate) async fn reseal(
    pool: &PgPool,
    secrets: &SecretBox,
    req: pb::ResealSecretsRequest,
) -> Result<pb::ResealSecretsResponse, Error> {
    let batch = match req.batch_size {
        0 => DEFAULT_BATCH,
        n @ 1..=MAX_BATCH => n,
        _ => {
            return Err(Error::invalid(format!(
                "batch_size must be 0..={MAX_BATCH}"
            )));
        }
    };
    let batch = i32::try_from(batch).unwrap_or(100);
    let apps = reseal_apps(pool, secrets, batch).await?;
    let credentials = reseal_credentials(pool, secrets, batch).await?;
    let key_id = secrets.sealing_key_id().to_owned();
    tracing::info!(
        key_id,
        apps = apps.resealed,
        apps_failed = apps.failed,
        credentials = credentials.resealed,
        credentials_failed = credentials.failed,
        "secrets resealed"
    );
    Ok(pb::ResealSecretsResponse {
        key_id,
        tables: vec![
            apps.table("meta_apps"),
            credentials.table("channel_accounts"),
        ],
    })
}

/// Opens with the row's key and seals with the current one; `None` (logged)
/// when the row's key is gone or the value does not open.
fn reseal_one(
    secrets: &SecretBox,
    what: &str,
    id: Uuid,
    key_id: &str,
    sealed: &[u8],
    aad: &[u8],
) -> Option<Vec<u8>> {
    let opened = secrets
        .open(key_id, sealed, aad)
        .inspect_err(|e| tracing::warn!(%id, what, key_id, error = %e, "secret not resealed"))
        .ok()?;
    secrets
        .seal(&opened, aad)
        .inspect_err(|e| tracing::warn!(%id, what, error = %e, "secret not resealed"))
        .ok()
        .map(|(_, enc)| enc)
}

async fn reseal_apps(pool: &PgPool, secrets: &SecretBox, batch: i32) -> Result<Counts, Error> {
    let current = secrets.sealing_key_id();
    let mut counts = Counts::default();
    let mut after = Uuid::nil();
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(Uuid, String, Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT * FROM faro_reseal_apps_lock($1, $2, $3)")
                .bind(current)
                .bind(after)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        for (id, key_id, secret, token) in rows {
            let resealed = reseal_one(
                secrets,
                "app_secret",
                id,
                &key_id,
                &secret,
                &admin::aad(id, "app_secret"),
            )
            .zip(reseal_one(
                secrets,
                "verify_token",
                id,
                &key_id,
                &token,
                &admin::aad(id, "verify_token"),
            ));
            let Some((secret, token)) = resealed else {
                counts.failed += 1;
                continue;
            };
            let written: bool =
                sqlx::query_scalar("SELECT faro_reseal_apps_write($1, $2, $3, $4, $5)")
                    .bind(id)
                    .bind(&key_id)
                    .bind(current)
                    .bind(secret)
                    .bind(token)
                    .fetch_one(&mut *tx)
                    .await?;
            counts.resealed += u64::from(written);
        }
        tx.commit().await?;
        after = last;
    }
    Ok(counts)
}

async fn reseal_credentials(
    pool: &PgPool,
    secrets: &SecretBox,
    batch: i32,
) -> Result<Counts, Error> {
    let current = secrets.sealing_key_id();
    let mut counts = Counts::default();
    let mut after = Uuid::nil();
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT * FROM faro_reseal_credentials_lock($1, $2, $3)")
                .bind(current)
                .bind(after)
                .bind(batch)
                .fetch_all(&mut *tx)
                .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        for (id, key_id, enc) in rows {
            let aad = replies::credentials::aad(id);
            let Some(enc) = reseal_one(secrets, "send_credential", id, &key_id, &enc, &aad) else {
                counts.failed += 1;
                continue;
            };
            let written: bool =
                sqlx::query_scalar("SELECT faro_reseal_credentials_write($1, $2, $3, $4)")
                    .bind(id)
                    .bind(&key_id)
                    .bind(current)
                    .bind(enc)
                    .fetch_one(&mut *tx)
                    .await?;
            counts.resealed += u64::from(written);
        }
        tx.commit().await?;
        after = last;
    }
    Ok(counts)
}
