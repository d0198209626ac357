//! Who a WhatsApp message is with: the customer of its thread, and who wrote it.
//!
//! A customer is known by its phone number (`wa_id`, `from`/`to`), by its
//! business-scoped user id (BSUID: `from_user_id`/`to_user_id`,
//! `contacts[].user_id`), or both. Username adopters may come with the BSUID
//! alone (`from` empty or absent), so the thread is keyed by the phone when
//! Meta shares it and by the BSUID otherwise; both ids travel with the message
//! and conversations links them into one thread
//! (`services/conversations/src/customers.rs`). A
//! message in a group (`group_id`) belongs to the group's thread and keeps its
//! member as the sender. A message nobody can be named for is rejected: never
//! a shared placeholder customer.
//!
//! The `history` field (chat history shared when a WhatsApp Business app
//! number joins the Cloud API) carries the same message objects grouped in
//! threads; they are stored with their original timestamps.

use faro_proto::{conversations::v1::Direction, ingest::v1::Route};
use serde_json::{Value, json};

use super::{
    Context, Parsed, str_at, unix_seconds,
    whatsapp::{Party, items, message_event},
};

/// The change a message came in: its WABA, number and the business's display number.
pub(crate) struct Meta<'a> {
    pub waba: &'a Value,
    pub phone_number_id: &'a str,
    pub business: &'a str,
}

/// Where a history message came from: its chunk's metadata and its thread.
pub(crate) struct HistoryPart<'a> {
    chunk: &'a Value,
    thread: &'a Value,
}

/// Does `contact` say nothing that contradicts the ids the message carries?
fn agrees(contact: &Value, phone: Option<&str>, user: Option<&str>) -> bool {
    let same = |ours: Option<&str>, theirs: Option<&str>| {
        ours.is_none() || theirs.is_none() || ours == theirs
    };
    same(phone, str_at(contact, "/wa_id")) && same(user, str_at(contact, "/user_id"))
}

/// The contact entry describing the customer (or member) with these ids: the
/// one naming either id, else a lone contact that contradicts neither. Never a
/// contact of someone else, whose name would land on this customer.
fn contact_for<'a>(
    contacts: &'a [Value],
    phone: Option<&str>,
    user: Option<&str>,
) -> Option<&'a Value> {
    contacts
        .iter()
        .find(|c| {
            (phone.is_some() && str_at(c, "/wa_id") == phone)
                || (user.is_some() && str_at(c, "/user_id") == user)
        })
        .or(match contacts {
            [only] if agrees(only, phone, user) => Some(only),
            _ => None,
        })
}

/// Turns one message of a `messages`, `smb_message_echoes` or `history`
/// change into its event, or rejects it when it names nobody.
#[allow(clippy::too_many_arguments)]
pub(crate) fn thread_message(
    m: &Value,
    contacts: &[Value],
    direction: Direction,
    route: &Route,
    meta: &Meta<'_>,
    history: Option<&HistoryPart<'_>>,
    ctx: &Context<'_>,
    out: &mut Parsed,
) {
    let (phone_at, user_at) = match direction {
        Direction::Outbound => ("/to", "/to_user_id"),
        _ => ("/from", "/from_user_id"),
    };
    let mut phone = str_at(m, phone_at);
    let mut user = str_at(m, user_at);
    if let Some(h) = history {
        // A history thread is named by the customer's phone number.
        phone = phone.or_else(|| str_at(h.thread, "/id"));
        user = user.or_else(|| str_at(h.thread, "/user_id"));
    }
    let contact = contact_for(contacts, phone, user);
    phone = phone.or_else(|| contact.and_then(|c| str_at(c, "/wa_id")));
    user = user.or_else(|| contact.and_then(|c| str_at(c, "/user_id")));
    let author = phone.or(user).unwrap_or_default();
    let name = contact
        .and_then(|c| str_at(c, "/profile/name"))
        .unwrap_or_default();
    let party = match str_at(m, "/group_id") {
        // The group is the customer; its member only signs the message.
        Some(group) => Party {
            customer: group,
            customer_name: "",
            customer_phone: "",
            customer_user_id: "",
            author,
            business: meta.business,
            direction,
        },
        None => {
            let Some(customer) = phone.or(user) else {
                let field = match direction {
                    Direction::Outbound => "`to` or `to_user_id`",
                    _ => "`from` or `from_user_id`",
                };
                out.reject(format!("message has no customer ({field})"), m);
                return;
            };
            Party {
                customer,
                customer_name: name,
                customer_phone: phone.unwrap_or_default(),
                customer_user_id: user.unwrap_or_default(),
                author: customer,
                business: meta.business,
                direction,
            }
        }
    };
    let timestamp = unix_seconds(m.get("timestamp")).unwrap_or(ctx.received_at);
    let mut metadata = json!({
        "provider": "whatsapp_cloud",
        "waba_id": meta.waba,
        "phone_number_id": meta.phone_number_id,
        "contact": contact,
        "event": m,
    });
    if let Some(h) = history {
        metadata["history"] = json!({"chunk": h.chunk, "thread_id": h.thread.get("id")});
    }
    message_event(m, route, &party, timestamp, metadata, out);
}

/// The `history` field: past messages of a WhatsApp Business app number, in
/// chunks of threads. Each message is stored in its customer's thread with its
/// original (device) timestamp; a declined or failed sync (`errors`) is
/// rejected with its reason, never dropped.
pub(crate) fn history(waba: &Value, value: &Value, ctx: &Context<'_>, out: &mut Parsed) {
    let chunks = items(value, "history");
    if value.get("history").is_some_and(|h| !h.is_array()) || chunks.is_empty() {
        out.reject("`history` has no chunks", value);
        return;
    }
    let (phone_number_id, route) =
        ctx.account(crate::parse::at(value, "/metadata/phone_number_id"));
    let Some(route) = route else {
        out.reject_unverified(phone_number_id.as_deref(), chunks);
        return;
    };
    let phone_number_id = phone_number_id.as_deref().unwrap_or_default();
    let business = str_at(value, "/metadata/display_phone_number").unwrap_or(phone_number_id);
    let meta = Meta {
        waba,
        phone_number_id,
        business,
    };
    for chunk in chunks {
        for e in items(chunk, "errors") {
            out.reject("history sync error (sharing declined or failed)", e);
        }
        let chunk_meta = chunk.get("metadata").unwrap_or(&Value::Null);
        let threads = items(chunk, "threads");
        if threads.is_empty() && items(chunk, "errors").is_empty() {
            out.reject("history chunk carries no threads", chunk);
        }
        for thread in threads {
            let part = HistoryPart {
                chunk: chunk_meta,
                thread,
            };
            for m in items(thread, "messages") {
                // The business's own messages name their customer in `to`.
                let outbound =
                    str_at(m, "/to").is_some() || str_at(m, "/from").is_some_and(|f| f == business);
                let direction = if outbound {
                    Direction::Outbound
                } else {
                    Direction::Inbound
                };
                thread_message(m, &[], direction, route, &meta, Some(&part), ctx, out);
            }
        }
    }
}
