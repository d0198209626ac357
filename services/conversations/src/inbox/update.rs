//! An agent's edits and read marker. The thread is locked for the edit, its
//! version checked, the status move checked against the table, and the
//! version added only when something changed.

use faro_proto::conversations::v1 as pb;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::{Caller, list::get_in, transitions};
use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
};

/// The editable state of a thread, read under `FOR UPDATE`.
#[derive(sqlx::FromRow)]
struct Current {
    location_id: Uuid,
    status: String,
    assigned_to_user_id: Option<String>,
    lead_status: Option<String>,
    source_type: String,
    tags: Vec<String>,
    version: i64,
}

async fn lock(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    id: Uuid,
) -> Result<Current, Error> {
    let mut q = sqlx::QueryBuilder::new(
        "SELECT c.location_id, c.status, c.assigned_to_user_id, c.lead_status, c.source_type, c.tags, c.version
         FROM conversations c WHERE c.tenant_id = ",
    );
    q.push_bind(caller.tenant);
    q.push(" AND c.id = ");
    q.push_bind(id);
    caller.push_location_limit(&mut q);
    q.push(" FOR UPDATE");
    q.build_query_as()
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::NotFound("no such conversation".into()))
}

/// An assignee must be an enabled agent of the tenant who may see the thread's location.
async fn check_assignee(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    agent: &str,
    location: Uuid,
) -> Result<(), Error> {
    let found: Option<(bool, Vec<Uuid>)> = sqlx::query_as(
        "SELECT disabled_at IS NOT NULL, location_ids FROM agents WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant)
    .bind(agent)
    .fetch_optional(&mut **tx)
    .await?;
    match found {
        None => Err(Error::invalid(
            "assigned_to_user_id is not an agent of this tenant",
        )),
        Some((true, _)) => Err(Error::invalid("assigned_to_user_id names a disabled agent")),
        Some((false, locs)) if !locs.is_empty() && !locs.contains(&location) => Err(
            Error::invalid("assigned_to_user_id cannot see this conversation's location"),
        ),
        Some(_) => Ok(()),
    }
}

fn roi_link(field: &str, l: &pb::RoiLink) -> Result<(), Error> {
    transitions::one_of(&format!("{field}.kind"), &l.kind, transitions::ROI_KINDS)?;
    if l.external_id.is_empty() || l.external_id.len() > 500 || l.external_id.contains('\0') {
        return Err(Error::invalid(format!(
            "{field}.external_id must be 1..=500 bytes"
        )));
    }
    if l.source.len() > 100 || l.url.len() > 2000 || l.source.contains('\0') || l.url.contains('\0')
    {
        return Err(Error::invalid(format!(
            "{field}: source at most 100 bytes, url at most 2000"
        )));
    }
    Ok(())
}

pub(crate) async fn update(
    pool: &PgPool,
    req: pb::UpdateConversationRequest,
) -> Result<pb::UpdateConversationResponse, Error> {
    let caller = Caller::parse(&req.tenant_id, &req.agent_id, &req.location_ids)?;
    let id = parse_uuid("conversation_id", &req.conversation_id)?;
    if req.expected_version < 0 {
        return Err(Error::invalid("expected_version must not be negative"));
    }
    // Everything checkable without the row, before any lock is taken.
    for t in req.add_tags.iter().chain(&req.remove_tags) {
        transitions::tag(t)?;
    }
    if req.add_tags.len() + req.remove_tags.len() > 50 {
        return Err(Error::invalid("at most 50 tags added or removed per call"));
    }
    if let Some(l) = req.lead_status.as_deref().filter(|l| !l.is_empty()) {
        transitions::one_of("lead_status", l, transitions::LEAD_STATUSES)?;
    }
    if let Some(s) = req.source_type.as_deref() {
        transitions::one_of("source_type", s, transitions::SOURCE_TYPES)?;
    }
    if let Some(s) = req.status.as_deref() {
        transitions::status("status", s)?;
    }
    if req.add_roi_links.len() + req.remove_roi_links.len() > 50 {
        return Err(Error::invalid(
            "at most 50 roi_links added or removed per call",
        ));
    }
    for l in &req.add_roi_links {
        roi_link("add_roi_links", l)?;
    }
    for l in &req.remove_roi_links {
        roi_link("remove_roi_links", l)?;
    }

    let mut tx = tenant_tx(pool, caller.tenant).await?;
    let now = lock(&mut tx, &caller, id).await?;
    if req.expected_version != 0 && req.expected_version != now.version {
        return Err(Error::Conflict(format!(
            "version is stale: expected {}, the conversation is at {}",
            req.expected_version, now.version
        )));
    }
    let mut changed: Vec<&'static str> = Vec::new();
    let status = match req.status.as_deref() {
        Some(to) => {
            transitions::check_move(&now.status, to)?;
            to.to_owned()
        }
        None => now.status.clone(),
    };
    if status != now.status {
        changed.push("status");
    }
    let assignee = match req.assigned_to_user_id.as_deref() {
        Some("") => None,
        Some(a) => {
            if now.assigned_to_user_id.as_deref() != Some(a) {
                check_assignee(&mut tx, caller.tenant, a, now.location_id).await?;
            }
            Some(a.to_owned())
        }
        None => now.assigned_to_user_id.clone(),
    };
    if assignee != now.assigned_to_user_id {
        changed.push("assigned_to_user_id");
    }
    let mut tags = now.tags.clone();
    for t in &req.add_tags {
        if !tags.contains(t) {
            tags.push(t.clone());
        }
    }
    tags.retain(|t| !req.remove_tags.contains(t));
    if tags.len() > 50 {
        return Err(Error::invalid("a conversation has at most 50 tags"));
    }
    if tags != now.tags {
        changed.push("tags");
    }
    let lead = match req.lead_status.as_deref() {
        Some("") => None,
        Some(l) => Some(l.to_owned()),
        None => now.lead_status.clone(),
    };
    if lead != now.lead_status {
        changed.push("lead_status");
    }
    let source = req
        .source_type
        .clone()
        .unwrap_or_else(|| now.source_type.clone());
    if source != now.source_type {
        changed.push("source_type");
    }
    let mut links_changed = 0;
    for l in &req.remove_roi_links {
        links_changed += sqlx::query(
            "DELETE FROM conversation_roi_links
             WHERE tenant_id = $1 AND conversation_id = $2 AND kind = $3 AND external_id = $4",
        )
        .bind(caller.tenant)
        .bind(id)
        .bind(&l.kind)
        .bind(&l.external_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    for l in &req.add_roi_links {
        links_changed += sqlx::query(
            "INSERT INTO conversation_roi_links (tenant_id, conversation_id, kind, external_id, source, url)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(caller.tenant)
        .bind(id)
        .bind(&l.kind)
        .bind(&l.external_id)
        .bind(&l.source)
        .bind(&l.url)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    if links_changed > 0 {
        changed.push("roi_links");
    }
    if !changed.is_empty() {
        sqlx::query(
            "UPDATE conversations SET status = $3, assigned_to_user_id = $4, tags = $5,
                 lead_status = $6, source_type = $7, version = version + 1, updated_at = now()
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(caller.tenant)
        .bind(id)
        .bind(&status)
        .bind(&assignee)
        .bind(&tags)
        .bind(&lead)
        .bind(&source)
        .execute(&mut *tx)
        .await?;
    }
    let conversation = get_in(&mut tx, &caller, id).await?;
    let changed: Vec<String> = changed.into_iter().map(str::to_owned).collect();
    let announcement = if changed.is_empty() {
        Vec::new()
    } else {
        let (tenant, agent) = (caller.tenant, caller.agent.as_str());
        crate::outbox::record(
            &mut tx,
            tenant,
            &conversation,
            agent,
            changed.clone(),
            String::new(),
        )
        .await?
    };
    tx.commit().await?;
    Ok(pb::UpdateConversationResponse {
        conversation: Some(conversation),
        changed: !changed.is_empty(),
        changed_fields: changed,
        announcement,
    })
}

pub(crate) async fn mark_read(
    pool: &PgPool,
    req: pb::MarkReadRequest,
) -> Result<pb::MarkReadResponse, Error> {
    let caller = Caller::parse(&req.tenant_id, &req.agent_id, &req.location_ids)?;
    if caller.agent.is_empty() {
        return Err(Error::invalid("agent_id must be set"));
    }
    let id = parse_uuid("conversation_id", &req.conversation_id)?;
    let message = (!req.message_id.is_empty())
        .then(|| parse_uuid("message_id", &req.message_id))
        .transpose()?;
    let mut tx = tenant_tx(pool, caller.tenant).await?;
    get_in(&mut tx, &caller, id).await?;
    let target: Option<(Uuid, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, \"timestamp\" FROM messages
         WHERE tenant_id = $1 AND conversation_id = $2 AND ($3::uuid IS NULL OR id = $3)
         ORDER BY \"timestamp\" DESC, id DESC LIMIT 1",
    )
    .bind(caller.tenant)
    .bind(id)
    .bind(message)
    .fetch_optional(&mut *tx)
    .await?;
    let changed = match (target, message) {
        (None, Some(_)) => {
            return Err(Error::invalid(
                "message_id is not a message of this conversation",
            ));
        }
        (None, None) => false,
        (Some((message, at)), _) => {
            // Forward only: two tabs marking different messages end at the later one.
            sqlx::query(
                "INSERT INTO conversation_reads AS r
                     (tenant_id, conversation_id, agent_id, last_read_message_id, last_read_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (tenant_id, conversation_id, agent_id) DO UPDATE SET
                     last_read_message_id = EXCLUDED.last_read_message_id,
                     last_read_at = EXCLUDED.last_read_at, updated_at = now()
                 WHERE (r.last_read_at, r.last_read_message_id)
                       < (EXCLUDED.last_read_at, EXCLUDED.last_read_message_id)",
            )
            .bind(caller.tenant)
            .bind(id)
            .bind(&caller.agent)
            .bind(message)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0
        }
    };
    let conversation = get_in(&mut tx, &caller, id).await?;
    let announcement = if changed {
        let marker = conversation.last_read_message_id.clone();
        let read = vec!["read".to_owned()];
        crate::outbox::record(
            &mut tx,
            caller.tenant,
            &conversation,
            &caller.agent,
            read,
            marker,
        )
        .await?
    } else {
        Vec::new()
    };
    tx.commit().await?;
    Ok(pb::MarkReadResponse {
        conversation: Some(conversation),
        changed,
        announcement,
    })
}
