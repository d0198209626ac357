//! A thread's messages a page at a time, in the platform's order (timestamp,
//! then id): the newest page, older or newer than a cursor, or around one
//! message. A page is found by position, so messages arriving meanwhile
//! neither repeat nor hide messages of the pages already walked.

use faro_proto::conversations::v1 as pb;
use sqlx::{PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use super::{
    Caller,
    cursor::{Cursor, Kind},
    list::get_in,
    page_size,
};
use crate::{
    Error,
    db::{parse_uuid, tenant_tx},
    rows::{MESSAGE_COLUMNS, MessageRow},
};

/// Which side of a position to read, and whether the position itself is in.
#[derive(Clone, Copy)]
enum Side {
    Before,
    After { inclusive: bool },
}

async fn page(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    conversation: Uuid,
    from: Option<Cursor>,
    side: Side,
    limit: i64,
) -> Result<Vec<MessageRow>, Error> {
    let mut q = QueryBuilder::new("SELECT ");
    q.push(MESSAGE_COLUMNS);
    q.push(
        " FROM messages m JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
          WHERE m.tenant_id = ",
    );
    q.push_bind(tenant);
    q.push(" AND m.conversation_id = ");
    q.push_bind(conversation);
    if let Some(at) = from {
        let op = match side {
            Side::Before => "<",
            Side::After { inclusive: true } => ">=",
            Side::After { inclusive: false } => ">",
        };
        q.push(format!(" AND (m.\"timestamp\", m.id) {op} ("));
        q.push_bind(at.at);
        q.push(", ");
        q.push_bind(at.id);
        q.push(")");
    }
    q.push(match side {
        Side::Before => " ORDER BY m.\"timestamp\" DESC, m.id DESC LIMIT ",
        Side::After { .. } => " ORDER BY m.\"timestamp\", m.id LIMIT ",
    });
    q.push_bind(limit);
    let mut rows: Vec<MessageRow> = q.build_query_as().fetch_all(&mut **tx).await?;
    if matches!(side, Side::Before) {
        rows.reverse();
    }
    Ok(rows)
}

fn position(m: &MessageRow) -> Cursor {
    Cursor {
        at: m.timestamp,
        id: m.id,
    }
}

pub(crate) async fn list_messages(
    pool: &PgPool,
    req: pb::ListMessagesRequest,
) -> Result<pb::ListMessagesResponse, Error> {
    let caller = Caller::parse(&req.tenant_id, "", &req.location_ids)?;
    let conversation = parse_uuid("conversation_id", &req.conversation_id)?;
    let limit = page_size(req.limit, 50, 500);
    let given = [
        !req.before.is_empty(),
        !req.after.is_empty(),
        !req.around_message_id.is_empty(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(Error::invalid(
            "before, after and around_message_id exclude each other",
        ));
    }
    let before = (!req.before.is_empty())
        .then(|| Cursor::decode("before", &req.before, Kind::Messages))
        .transpose()?;
    let after = (!req.after.is_empty())
        .then(|| Cursor::decode("after", &req.after, Kind::Messages))
        .transpose()?;
    let around = (!req.around_message_id.is_empty())
        .then(|| parse_uuid("around_message_id", &req.around_message_id))
        .transpose()?;

    let mut tx = tenant_tx(pool, caller.tenant).await?;
    // The thread must be the caller's (tenant and location) before anything is read.
    get_in(&mut tx, &caller, conversation).await?;
    let t = caller.tenant;
    let (messages, older) = if let Some(at) = after {
        let mut rows = page(
            &mut tx,
            t,
            conversation,
            Some(at),
            Side::After { inclusive: false },
            limit + 1,
        )
        .await?;
        rows.truncate(usize::try_from(limit).unwrap_or(0));
        (rows, true)
    } else if let Some(id) = around {
        let found: Option<(chrono::DateTime<chrono::Utc>,)> = sqlx::query_as(
            "SELECT \"timestamp\" FROM messages WHERE tenant_id = $1 AND conversation_id = $2 AND id = $3",
        )
        .bind(t)
        .bind(conversation)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let (at,) = found.ok_or_else(|| {
            Error::invalid("around_message_id is not a message of this conversation")
        })?;
        let centre = Cursor { at, id };
        let half = limit / 2;
        let mut before = page(
            &mut tx,
            t,
            conversation,
            Some(centre),
            Side::Before,
            half + 1,
        )
        .await?;
        let older = before.len() as i64 > half;
        if older {
            before.remove(0);
        }
        let rest = limit - half;
        let from = page(
            &mut tx,
            t,
            conversation,
            Some(centre),
            Side::After { inclusive: true },
            rest,
        )
        .await?;
        before.extend(from);
        (before, older)
    } else {
        let mut rows = page(&mut tx, t, conversation, before, Side::Before, limit + 1).await?;
        let older = rows.len() as i64 > limit;
        if older {
            rows.remove(0);
        }
        (rows, older)
    };
    tx.commit().await?;
    // Newer messages may arrive at any time: the last position is always
    // given (a client polls with it); older ones only when they exist.
    let before_cursor = match messages.first() {
        Some(m) if older => position(m).encode(Kind::Messages),
        _ => String::new(),
    };
    let after_cursor = messages
        .last()
        .map(|m| position(m).encode(Kind::Messages))
        .or_else(|| before.or(after).map(|c| c.encode(Kind::Messages)))
        .unwrap_or_default();
    Ok(pb::ListMessagesResponse {
        messages: messages.into_iter().map(Into::into).collect(),
        before_cursor,
        after_cursor,
    })
}
