//! Listing, searching and getting threads, with the asking agent's unread
//! count and read marker.

use chrono::{DateTime, Utc};
use faro_proto::{channel_name, conversations::v1 as pb, from_timestamp};
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::{
    Caller,
    cursor::{Cursor, Kind},
    page_size, parse_uuids, transitions,
};
use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::{CONVERSATION_COLUMNS, ConversationRow},
};

/// A thread as the inbox shows it.
#[derive(sqlx::FromRow)]
pub(crate) struct InboxRow {
    #[sqlx(flatten)]
    pub conversation: ConversationRow,
    pub unread_count: i64,
    pub last_read_message_id: Option<Uuid>,
    pub roi_links: sqlx::types::Json<Vec<RoiLinkJson>>,
    pub activity: DateTime<Utc>,
}

#[derive(serde::Deserialize)]
pub(crate) struct RoiLinkJson {
    kind: String,
    external_id: String,
    source: String,
    url: String,
}

impl From<InboxRow> for pb::Conversation {
    fn from(r: InboxRow) -> Self {
        let mut c = pb::Conversation::from(r.conversation);
        c.unread_count = u32::try_from(r.unread_count).unwrap_or(u32::MAX);
        c.last_read_message_id = r
            .last_read_message_id
            .map(|id| id.to_string())
            .unwrap_or_default();
        c.roi_links = r
            .roi_links
            .0
            .into_iter()
            .map(|l| pb::RoiLink {
                kind: l.kind,
                external_id: l.external_id,
                source: l.source,
                url: l.url,
            })
            .collect();
        c
    }
}

/// The inbox's SELECT of threads aliased `c`, for `caller`, within their
/// locations; callers append conditions and the order.
pub(crate) fn select(caller: &Caller) -> QueryBuilder<'static, Postgres> {
    let mut q = QueryBuilder::new("SELECT ");
    q.push(CONVERSATION_COLUMNS);
    q.push(
        ", faro_activity(c.last_message_at) AS activity, r.last_read_message_id,
         CASE WHEN r.agent_id IS NULL AND ",
    );
    q.push_bind(caller.agent.clone());
    q.push(
        " = '' THEN 0 ELSE (SELECT count(*) FROM messages m
             WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id AND m.direction = 'inbound'
               AND (r.last_read_at IS NULL
                    OR (m.\"timestamp\", m.id) > (r.last_read_at, r.last_read_message_id))) END
           AS unread_count,
         COALESCE((SELECT jsonb_agg(jsonb_build_object('kind', l.kind, 'external_id', l.external_id,
                                                       'source', l.source, 'url', l.url)
                                    ORDER BY l.created_at, l.kind, l.external_id)
                   FROM conversation_roi_links l
                   WHERE l.tenant_id = c.tenant_id AND l.conversation_id = c.id), '[]') AS roi_links
         FROM conversations c
         LEFT JOIN conversation_reads r
           ON r.tenant_id = c.tenant_id AND r.conversation_id = c.id AND r.agent_id = ",
    );
    q.push_bind(caller.agent.clone());
    q.push(" WHERE c.tenant_id = ");
    q.push_bind(caller.tenant);
    caller.push_location_limit(&mut q);
    q
}

/// One thread in `tx`, or NOT_FOUND (another tenant's or location's too).
pub(crate) async fn get_in(
    tx: &mut Transaction<'static, Postgres>,
    caller: &Caller,
    id: Uuid,
) -> Result<pb::Conversation, Error> {
    let mut q = select(caller);
    q.push(" AND c.id = ");
    q.push_bind(id);
    let row: Option<InboxRow> = q.build_query_as().fetch_optional(&mut **tx).await?;
    row.map(Into::into)
        .ok_or_else(|| Error::NotFound("no such conversation".into()))
}

pub(crate) async fn get(
    pool: &PgPool,
    req: pb::GetConversationRequest,
) -> Result<pb::Conversation, Error> {
    let caller = Caller::parse(&req.tenant_id, &req.agent_id, &req.location_ids)?;
    let id = parse_uuid("conversation_id", &req.conversation_id)?;
    let mut tx = tenant_tx(pool, caller.tenant).await?;
    let found = get_in(&mut tx, &caller, id).await;
    tx.commit().await?;
    found
}

/// `%value%` for LIKE, with LIKE's own characters taken literally.
fn contains_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('%');
    for ch in value.to_lowercase().chars() {
        if matches!(ch, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

/// Appends the request's filters; each names its field when it is invalid.
fn push_filters(
    q: &mut QueryBuilder<'static, Postgres>,
    caller: &Caller,
    req: &pb::ListConversationsRequest,
) -> Result<(), Error> {
    let locations = parse_uuids("filter_location_ids", &req.filter_location_ids)?;
    if !locations.is_empty() {
        q.push(" AND c.location_id = ANY(");
        q.push_bind(locations);
        q.push(")");
    }
    if !req.statuses.is_empty() {
        for s in &req.statuses {
            transitions::status("statuses", s)?;
        }
        q.push(" AND c.status = ANY(");
        q.push_bind(req.statuses.clone());
        q.push(")");
    }
    if !req.channels.is_empty() {
        let names = req
            .channels
            .iter()
            .map(|c| {
                pb::Channel::try_from(*c)
                    .ok()
                    .and_then(channel_name)
                    .map(str::to_owned)
                    .ok_or_else(|| Error::invalid("channels: unknown channel"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        q.push(" AND c.channel = ANY(");
        q.push_bind(names);
        q.push(")");
    }
    match (req.assignee.as_str(), req.unassigned) {
        ("", false) => {}
        ("", true) => {
            q.push(" AND c.assigned_to_user_id IS NULL");
        }
        (_, true) => return Err(Error::invalid("assignee and unassigned exclude each other")),
        (a, false) => {
            if a.len() > 200 || a.contains('\0') {
                return Err(Error::invalid("assignee must be at most 200 bytes"));
            }
            q.push(" AND c.assigned_to_user_id = ");
            q.push_bind(a.to_owned());
        }
    }
    if !req.tag.is_empty() {
        transitions::tag(&req.tag).map_err(|_| Error::invalid("tag must be 1..=50 characters"))?;
        q.push(" AND c.tags @> ARRAY[");
        q.push_bind(req.tag.clone());
        q.push("]::text[]");
    }
    if !req.lead_status.is_empty() {
        transitions::one_of("lead_status", &req.lead_status, transitions::LEAD_STATUSES)?;
        q.push(" AND c.lead_status = ");
        q.push_bind(req.lead_status.clone());
    }
    if req.unread_only {
        if caller.agent.is_empty() {
            return Err(Error::invalid("unread_only needs agent_id"));
        }
        q.push(
            " AND EXISTS (SELECT 1 FROM messages m
                 WHERE m.tenant_id = c.tenant_id AND m.conversation_id = c.id
                   AND m.direction = 'inbound'
                   AND (r.last_read_at IS NULL
                        OR (m.\"timestamp\", m.id) > (r.last_read_at, r.last_read_message_id)))",
        );
    }
    if let Some(t) = &req.updated_since {
        let since = from_timestamp(Some(t))
            .ok_or_else(|| Error::invalid("updated_since is out of range"))?;
        q.push(" AND c.updated_at >= ");
        q.push_bind(since);
    }
    if !req.query.is_empty() {
        let n = req.query.chars().count();
        if !(3..=200).contains(&n) || req.query.contains('\0') {
            return Err(Error::invalid("query must be 3..=200 characters"));
        }
        let pattern = contains_pattern(&req.query);
        // The matching threads of the transaction's tenant, found by the
        // trigram indexes (migration 0014: under RLS, LIKE could use none).
        q.push(" AND c.id IN (SELECT conversation_id FROM faro_search_conversations(");
        q.push_bind(pattern);
        q.push("))");
    }
    if !req.cursor.is_empty() {
        let at = Cursor::decode("cursor", &req.cursor, Kind::Conversations)?;
        q.push(" AND (faro_activity(c.last_message_at), c.id) < (");
        q.push_bind(at.at);
        q.push(", ");
        q.push_bind(at.id);
        q.push(")");
    }
    Ok(())
}

pub(crate) async fn list(
    pool: &PgPool,
    req: pb::ListConversationsRequest,
) -> Result<pb::ListConversationsResponse, Error> {
    let caller = Caller::parse(&req.tenant_id, &req.agent_id, &req.location_ids)?;
    let limit = page_size(req.limit, 50, 200);
    let mut q = select(&caller);
    push_filters(&mut q, &caller, &req)?;
    q.push(" ORDER BY faro_activity(c.last_message_at) DESC, c.id DESC LIMIT ");
    q.push_bind(limit + 1);
    let mut tx = tenant_tx(pool, caller.tenant).await?;
    let mut rows: Vec<InboxRow> = q.build_query_as().fetch_all(&mut *tx).await?;
    tx.commit().await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next_cursor = match rows.last() {
        Some(last) if more => Cursor {
            at: last.activity,
            id: last.conversation.id,
        }
        .encode(Kind::Conversations),
        _ => String::new(),
    };
    Ok(pb::ListConversationsResponse {
        conversations: rows.into_iter().map(Into::into).collect(),
        next_cursor,
    })
}
