//! The reply workers' side, a worker's whole read at once: what each reply
//! needs to be sent, claimed for one job at a time ([`claim_batch`]). The
//! platform's answers are recorded by [`super::record`].
//!
//! A batch spans tenants; it runs in ONE transaction and ONE call of
//! `faro_claim_replies` (migration 0023), which switches `faro.tenant_id`
//! before each tenant's statement, so every statement still sees only its
//! tenant's rows under RLS. (It was split into up to four transactions side
//! by side, from when each tenant cost round trips of its own; once the
//! function took the tenants in one call, the split only multiplied the
//! transactions: docs/BENCHMARKS.md, 2026-12-01, fifth session.)

use std::collections::BTreeMap;

use faro_proto::conversations::v1 as pb;
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::credentials;
use crate::{
    Error, SecretBox,
    db::{TenantsTx, parse_uuid},
    rows::{MessageRow, message_fields},
};

/// A claim older than this is taken over: its worker died mid-send.
const CLAIM_TTL_SECS: i64 = 300;
/// Claims one call may carry (a worker reads at most 64).
pub(crate) const MAX_BATCH: usize = 512;

/// A claimed reply as the claim returns it: the message, what to send and
/// its account's sealed credential.
#[derive(sqlx::FromRow)]
struct Claimed {
    #[sqlx(flatten)]
    message: MessageRow,
    claim: String,
    reply: Value,
    account_id: Uuid,
    external_account_id: String,
    send_key_id: Option<String>,
    send_credential_enc: Option<Vec<u8>>,
}

fn content(v: &Value) -> pb::ReplyContent {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    pb::ReplyContent {
        text: s("/text"),
        template: v.get("template").map(|_| pb::ReplyTemplate {
            name: s("/template/name"),
            language: s("/template/language"),
            parameters: v
                .pointer("/template/parameters")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect(),
        }),
        media: v.get("media").map(|_| pb::ReplyMedia {
            kind: s("/media/kind"),
            url: s("/media/url"),
            caption: s("/media/caption"),
            filename: s("/media/filename"),
        }),
        reply_to_message_id: String::new(),
    }
}

/// Claims a batch's pending replies, every tenant of it in ONE
/// call (`faro_claim_replies`, migration 0023: it switches `faro.tenant_id`
/// before each tenant's UPDATE, so RLS scopes each to its tenant). With two
/// claims for one reply in the batch, one wins (its claim returned).
async fn claim_tenants(
    tx: &mut Transaction<'static, Postgres>,
    tenants: &[Uuid],
    ids: &[Uuid],
    claims: &[&str],
) -> Result<Vec<Claimed>, Error> {
    let sql = concat!(
        "SELECT r.r_location_id AS location_id, ",
        message_fields!(),
        ", r.r_claim AS claim, r.r_reply AS reply, r.r_account_id AS account_id,
           r.r_external_account_id AS external_account_id, r.r_send_key_id AS send_key_id,
           r.r_send_credential_enc AS send_credential_enc
         FROM faro_claim_replies($1, $2, $3, $4) r CROSS JOIN LATERAL (SELECT (r.r_message).*) m"
    );
    Ok(sqlx::query_as(sql)
        .bind(tenants)
        .bind(ids)
        .bind(claims)
        .bind(CLAIM_TTL_SECS as f64)
        .fetch_all(&mut **tx)
        .await?)
}

fn delivery(secrets: &SecretBox, c: Claimed) -> Result<pb::ReplyDelivery, Error> {
    let credential = match (&c.send_key_id, &c.send_credential_enc) {
        (Some(k), Some(enc)) => {
            String::from_utf8(secrets.open(k, enc, &credentials::aad(c.account_id))?)
                .map_err(|_| Error::Crypto("send credential is not UTF-8".into()))?
        }
        _ => String::new(),
    };
    let m = c.message;
    // YCloud numbers are connected by their +E.164 number; Meta's ids never start with +.
    let provider = if m.channel == "whatsapp" && c.external_account_id.starts_with('+') {
        "ycloud"
    } else {
        "graph"
    };
    Ok(pb::ReplyDelivery {
        claimed: true,
        provider: provider.into(),
        external_account_id: c.external_account_id,
        recipient_id: m.recipient_id.clone().unwrap_or_default(),
        credential,
        tag: c
            .reply
            .get("tag")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        content: Some(content(c.reply.get("content").unwrap_or(&Value::Null))),
        reply_to_channel_message_id: m.reply_to_channel_message_id.clone().unwrap_or_default(),
        message: Some(m.into()),
    })
}

/// One tenant's replies and the claims on them, in step.
type TenantClaims<'a> = (Vec<Uuid>, Vec<&'a str>);

/// Claims a batch's replies, of all its tenants, in one transaction.
async fn claim_all(
    pool: &PgPool,
    batch: Vec<(Uuid, TenantClaims<'_>)>,
) -> Result<Vec<Claimed>, Error> {
    let Some((first, _)) = batch.first() else {
        return Ok(Vec::new());
    };
    let (mut tenants, mut ids, mut claims) = (Vec::new(), Vec::new(), Vec::new());
    for (tenant, (tenant_ids, tenant_claims)) in &batch {
        tenants.extend(std::iter::repeat_n(*tenant, tenant_ids.len()));
        ids.extend_from_slice(tenant_ids);
        claims.extend_from_slice(tenant_claims);
    }
    let mut tx = TenantsTx::begin(pool, *first).await?;
    let claimed = claim_tenants(tx.of(*first).await?, &tenants, &ids, &claims).await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Claims every pending reply named for its job, in one transaction (a
/// retried call claims again what it claimed: the same claim is let
/// through); one answer per claim, in order. A claim naming no reply of its tenant (or
/// one whose account is gone) is answered unclaimed, as one another job holds.
pub(crate) async fn claim_batch(
    pool: &PgPool,
    secrets: &SecretBox,
    claims: Vec<pb::GetReplyDeliveryRequest>,
) -> Result<Vec<pb::ReplyDelivery>, Error> {
    if claims.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "at most {MAX_BATCH} claims in one call"
        )));
    }
    let mut by_tenant: BTreeMap<Uuid, TenantClaims> = BTreeMap::new();
    let mut keys = Vec::with_capacity(claims.len());
    for c in &claims {
        let tenant = parse_uuid("tenant_id", &c.tenant_id)?;
        let id = parse_uuid("message_id", &c.message_id)?;
        if c.claim.is_empty() || c.claim.len() > 200 {
            return Err(Error::invalid("claim must be 1..=200 bytes"));
        }
        let entry = by_tenant.entry(tenant).or_default();
        entry.0.push(id);
        entry.1.push(&c.claim);
        keys.push((id, c.claim.as_str()));
    }
    let claimed = claim_all(pool, by_tenant.into_iter().collect()).await?;
    let mut out: Vec<pb::ReplyDelivery> =
        keys.iter().map(|_| pb::ReplyDelivery::default()).collect();
    for c in claimed {
        let at = keys
            .iter()
            .position(|(id, claim)| *id == c.message.id && *claim == c.claim);
        if let Some(at) = at
            && let Some(slot) = out.get_mut(at)
        {
            *slot = delivery(secrets, c)?;
        }
    }
    Ok(out)
}

/// One claim (`GetReplyDelivery`): NOT_FOUND when it names no reply; the
/// message as it is when another job holds it.
pub(crate) async fn get_delivery(
    pool: &PgPool,
    secrets: &SecretBox,
    req: pb::GetReplyDeliveryRequest,
) -> Result<pb::ReplyDelivery, Error> {
    let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
    let id = parse_uuid("message_id", &req.message_id)?;
    let got = claim_batch(pool, secrets, vec![req]).await?;
    match got.into_iter().next() {
        Some(d) if d.claimed => Ok(d),
        _ => {
            let mut tx = crate::db::tenant_tx(pool, tenant).await?;
            let m = super::message(&mut tx, tenant, id).await?;
            tx.commit().await?;
            Ok(pb::ReplyDelivery {
                message: Some(m.into()),
                claimed: false,
                ..Default::default()
            })
        }
    }
}
