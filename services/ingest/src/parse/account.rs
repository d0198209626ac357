//! Account events: what WhatsApp's account-level webhook fields (and YCloud's
//! account event types) say about a business account: a template's review,
//! category or quality, a number's quality or display name, an account alert
//! or restriction, a security change. They name a WhatsApp Business Account
//! (WABA), not a customer: stored as account events, never as messages.

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{AccountEvent, channel_event::Kind},
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::{Value, json};

use super::{Context, Parsed, synthetic_id, unix_seconds};

/// Account changes agents are told about live (template status and quality,
/// a number's quality); the others are only stored and listed.
const ANNOUNCED: &[&str] = &[
    "message_template_status_update",
    "message_template_quality_update",
    "template_quality_update",
    "phone_number_quality_update",
    "whatsapp.template.reviewed",
    "whatsapp.template.quality_updated",
    "whatsapp.phone_number.quality_updated",
];

/// Whether agents hear of an account event of this field or YCloud type.
pub fn announced(field: &str) -> bool {
    ANNOUNCED.contains(&field)
}

fn event(
    route: &Route,
    account: &str,
    field: &str,
    value: &Value,
    at: DateTime<Utc>,
    key: String,
) -> Kind {
    Kind::AccountEvent(AccountEvent {
        id: String::new(),
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel_account_id: route.channel_account_id.clone(),
        channel: route.channel,
        external_account_id: account.to_owned(),
        field: field.to_owned(),
        value_json: value.to_string(),
        timestamp: Some(to_timestamp(at)),
        event_key: key,
        received_at: None,
    })
}

/// One change of a WhatsApp entry whose field is not a conversation field,
/// routed by the entry's WABA (`entry[].id`), or by the number its value
/// names (`metadata.phone_number_id`) if only that was verified.
pub(crate) fn whatsapp_change(
    entry: &Value,
    change: &Value,
    field: &str,
    ctx: &Context<'_>,
    out: &mut Parsed,
) {
    let (waba, by_waba) = ctx.account(entry.get("id"));
    let (number, by_number) = ctx.account(change.pointer("/value/metadata/phone_number_id"));
    let routed = by_waba
        .map(|r| (waba.as_deref(), r))
        .or_else(|| by_number.map(|r| (number.as_deref(), r)));
    let Some((Some(account), route)) = routed else {
        let named = waba.or(number).unwrap_or_default();
        out.reject(
            format!(
                "account-level change {field:?} (not a conversation event) names no account \
                 verified for this payload ({named:?}): connect its WhatsApp Business Account"
            ),
            change,
        );
        return;
    };
    let value = change.get("value").unwrap_or(&Value::Null);
    let at = unix_seconds(entry.get("time"))
        .or_else(|| unix_seconds(value.get("timestamp")))
        .unwrap_or(ctx.received_at);
    // Identical on every delivery of this change: Meta's retries resend the
    // same bytes, so the same entry id, field, time and value.
    let key = synthetic_id(&json!([
        "whatsapp",
        entry.get("id"),
        field,
        entry.get("time"),
        change
    ]));
    out.push(event(route, account, field, value, at, key));
}

/// The accounts a YCloud account event names (the same paths the edge routes by).
const YCLOUD_ACCOUNTS: &[&str] = &[
    "/whatsappTemplate/wabaId",
    "/whatsappPhoneNumber/wabaId",
    "/whatsappPhoneNumber/phoneNumber",
];

/// A YCloud event that is not a message or a status. Returns false if it
/// names no account at all (then it is no account event either).
pub(crate) fn ycloud_event(
    root: &Value,
    event_type: &str,
    event_id: &str,
    created: DateTime<Utc>,
    ctx: &Context<'_>,
    out: &mut Parsed,
) -> bool {
    let named: Vec<(Option<String>, Option<&Route>)> = YCLOUD_ACCOUNTS
        .iter()
        .map(|p| ctx.account(root.pointer(p)))
        .filter(|(id, _)| id.is_some())
        .collect();
    let Some(first) = named.first() else {
        return false;
    };
    match named
        .iter()
        .find_map(|(id, r)| Some((id.as_deref()?, (*r)?)))
    {
        Some((account, route)) => {
            let key = synthetic_id(&json!(["ycloud", event_id]));
            out.push(event(route, account, event_type, root, created, key));
        }
        None => out.reject_unverified(first.0.as_deref(), std::slice::from_ref(root)),
    }
    true
}
