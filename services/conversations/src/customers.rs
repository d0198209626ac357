//! Which thread a WhatsApp customer's message belongs in, when the customer
//! is known by a phone number, a business-scoped user id (BSUID), or both.
//!
//! Username adopters may reach a business with their BSUID alone; the same
//! customer can later write with both ids, and customers from before BSUIDs
//! have threads keyed by their phone. The rule, per (location, channel):
//!
//! 1. a message with a BSUID goes to the thread that has that BSUID;
//! 2. else a message with a phone goes to the thread with that phone (the one
//!    keyed by it first), unless that thread has a *different* BSUID: two
//!    BSUIDs are two customers (a recycled number), never merged;
//! 3. else a new thread, keyed by the phone (if no other customer's thread is
//!    keyed by it) or by the BSUID.
//!
//! A thread found this way learns the id it lacked (a later message with both
//! ids links them); a thread's ids are never replaced. Messages of one batch
//! see the threads the earlier ones created. The ids involved are locked
//! (transaction-scoped advisory locks, in one global order) before the lookup,
//! so two workers seeing the same new customer under different ids at once
//! cannot create two threads for them.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::Error;

/// The ids one message carries.
pub(crate) struct Ids<'a> {
    pub location: Uuid,
    pub channel: &'static str,
    pub phone: Option<&'a str>,
    pub user: Option<&'a str>,
}

/// A thread as far as identity goes.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct Known {
    pub location_id: Uuid,
    pub channel: String,
    pub customer_id: String,
    pub customer_phone: Option<String>,
    pub customer_user_id: Option<String>,
}

/// The threads some ids belong to: `$1` the tenant, then parallel arrays of
/// `$2` locations, `$3` channels and `$4` ids (phone or BSUID).
///
/// One arm per id column, each an equality on the whole key of its own
/// index: written as one `OR`, the planner walked every thread of the
/// location per id (an index on (tenant, location, activity) matched the
/// prefix), 3,000 rows per message at 3,000 threads, growing with the
/// inbox (docs/BENCHMARKS.md, issue 15). Public (hidden) for the plan test
/// in `tests/it/customers.rs`.
#[doc(hidden)]
pub const LOOKUP_SQL: &str =
    "SELECT DISTINCT ON (c.id) c.location_id, c.channel, c.customer_id, c.customer_phone,
            c.customer_user_id
     FROM UNNEST($2::uuid[], $3::text[], $4::text[]) AS i(loc, chan, v)
     CROSS JOIN LATERAL (
         SELECT id, location_id, channel, customer_id, customer_phone, customer_user_id
         FROM conversations
         WHERE tenant_id = $1 AND location_id = i.loc AND channel = i.chan
           AND customer_id = i.v
         UNION ALL
         SELECT id, location_id, channel, customer_id, customer_phone, customer_user_id
         FROM conversations
         WHERE tenant_id = $1 AND location_id = i.loc AND channel = i.chan
           AND customer_phone = i.v
         UNION ALL
         SELECT id, location_id, channel, customer_id, customer_phone, customer_user_id
         FROM conversations
         WHERE tenant_id = $1 AND location_id = i.loc AND channel = i.chan
           AND customer_user_id = i.v
     ) c
     ORDER BY c.id";

/// For each message, the customer id of the thread it belongs in (`None`:
/// the message carries neither id, and keeps the customer id it came with).
pub(crate) async fn resolve(
    tx: &mut Transaction<'static, Postgres>,
    tenant: Uuid,
    ids: &[Ids<'_>],
) -> Result<Vec<Option<String>>, Error> {
    let (mut locs, mut chans, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for i in ids {
        for v in [i.phone, i.user].into_iter().flatten() {
            locs.push(i.location);
            chans.push(i.channel);
            values.push(v);
        }
    }
    if values.is_empty() {
        return Ok(vec![None; ids.len()]);
    }
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock(k.key))
         FROM (SELECT DISTINCT hashtextextended('customer/' || $1::text || '/' || l::text || '/'
                                                || c || '/' || v, 0) AS key
               FROM unnest($2::uuid[], $3::text[], $4::text[]) AS u(l, c, v)
               ORDER BY 1) k",
    )
    .bind(tenant)
    .bind(&locs)
    .bind(&chans)
    .bind(&values)
    .execute(&mut **tx)
    .await?;
    let mut known: Vec<Known> = sqlx::query_as(LOOKUP_SQL)
        .bind(tenant)
        .bind(&locs)
        .bind(&chans)
        .bind(&values)
        .fetch_all(&mut **tx)
        .await?;
    // In id order (UUID v7: creation order), so the oldest matching thread wins.
    Ok(ids
        .iter()
        .map(|i| (i.phone.is_some() || i.user.is_some()).then(|| assign(&mut known, i)))
        .collect())
}

/// Applies the rule to one message, recording what it teaches in `known`.
fn assign(known: &mut Vec<Known>, ids: &Ids<'_>) -> String {
    let here = |k: &Known| k.location_id == ids.location && k.channel == ids.channel;
    let by_user = ids.user.and_then(|u| {
        known.iter().position(|k| {
            here(k) && (k.customer_user_id.as_deref() == Some(u) || k.customer_id == u)
        })
    });
    let by_phone = || {
        let p = ids.phone?;
        let fits = |k: &Known| {
            here(k)
                && (k.customer_phone.as_deref() == Some(p) || k.customer_id == p)
                && (ids.user.is_none()
                    || k.customer_user_id.is_none()
                    || k.customer_user_id.as_deref() == ids.user)
        };
        known
            .iter()
            .position(|k| fits(k) && k.customer_id == p)
            .or_else(|| known.iter().position(fits))
    };
    if let Some(i) = by_user.or_else(by_phone) {
        let k = &mut known[i];
        if k.customer_phone.is_none() {
            k.customer_phone = ids.phone.map(str::to_owned);
        }
        if k.customer_user_id.is_none() {
            k.customer_user_id = ids.user.map(str::to_owned);
        }
        return k.customer_id.clone();
    }
    // A new customer. Keyed by the phone unless another customer's thread
    // already is (then the BSUID, which that case always has).
    let phone_taken = ids
        .phone
        .is_some_and(|p| known.iter().any(|k| here(k) && k.customer_id == p));
    let key = match (ids.phone, ids.user) {
        (Some(p), _) if !phone_taken => p,
        (_, Some(u)) => u,
        (Some(p), None) => p,
        // Never called for a message without ids (see `resolve`).
        (None, None) => "",
    };
    known.push(Known {
        location_id: ids.location,
        channel: ids.channel.to_owned(),
        customer_id: key.to_owned(),
        customer_phone: ids.phone.map(str::to_owned),
        customer_user_id: ids.user.map(str::to_owned),
    });
    key.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(phone: Option<&'a str>, user: Option<&'a str>) -> Ids<'a> {
        Ids {
            location: Uuid::nil(),
            channel: "whatsapp",
            phone,
            user,
        }
    }

    fn run(known: &mut Vec<Known>, msgs: &[(Option<&str>, Option<&str>)]) -> Vec<String> {
        msgs.iter()
            .map(|(p, u)| assign(known, &ids(*p, *u)))
            .collect()
    }

    #[test]
    fn a_bsuid_thread_learns_the_phone_of_a_later_message_with_both() {
        let mut k = Vec::new();
        let keys = run(
            &mut k,
            &[
                (None, Some("US.1")),
                (Some("1650"), Some("US.1")),
                (Some("1650"), None),
            ],
        );
        assert_eq!(keys, ["US.1", "US.1", "US.1"]);
        assert_eq!(k.len(), 1);
        assert_eq!(k[0].customer_phone.as_deref(), Some("1650"));
    }

    #[test]
    fn distinct_bsuids_are_distinct_customers_even_on_one_phone() {
        let mut k = Vec::new();
        let keys = run(
            &mut k,
            &[
                (None, Some("US.1")),
                (None, Some("US.2")),
                (Some("1650"), Some("US.3")),
                (Some("1650"), Some("US.4")),
            ],
        );
        assert_eq!(keys, ["US.1", "US.2", "1650", "US.4"]);
        assert_eq!(k.len(), 4);
    }

    #[test]
    fn a_phone_thread_from_before_bsuids_is_linked_not_split() {
        let mut k = vec![Known {
            location_id: Uuid::nil(),
            channel: "whatsapp".into(),
            customer_id: "1650".into(),
            customer_phone: Some("1650".into()),
            customer_user_id: None,
        }];
        let keys = run(
            &mut k,
            &[(Some("1650"), Some("US.1")), (None, Some("US.1"))],
        );
        assert_eq!(keys, ["1650", "1650"]);
        assert_eq!(k[0].customer_user_id.as_deref(), Some("US.1"));
    }

    #[test]
    fn threads_of_other_channels_or_locations_are_not_theirs() {
        let mut k = vec![Known {
            location_id: Uuid::nil(),
            channel: "instagram_dm".into(),
            customer_id: "US.1".into(),
            customer_phone: None,
            customer_user_id: Some("US.1".into()),
        }];
        run(&mut k, &[(None, Some("US.1"))]);
        assert_eq!(k.len(), 2);
    }
}
