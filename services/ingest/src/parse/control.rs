//! Events that are not messages — handover of thread control, opt-ins,
//! account linking, game plays, policy enforcement, app roles, and events of a
//! type FARO does not know — become conversation events: typed, with the raw
//! JSON, shown as system lines, never as the customer speaking. One without a
//! customer (policy enforcement, app roles, a checkbox-plugin opt-in known only
//! by its `user_ref`) is page-level rather than a reason to fail its neighbours.
//!
//! Also here: marking what arrived on `standby` (another app owned the thread).

use chrono::{DateTime, Utc};
use faro_proto::{
    conversations::v1::{ChannelEvent, ConversationEvent, ConversationEventKind, channel_event::Kind},
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::Value;

use super::{Parsed, synthetic_id};

/// The item's key that names each kind. `policy-enforcement` is the older
/// spelling Meta still documents beside `policy_enforcement`.
const KINDS: &[(&str, ConversationEventKind)] = &[
    ("pass_thread_control", ConversationEventKind::PassThreadControl),
    ("take_thread_control", ConversationEventKind::TakeThreadControl),
    ("request_thread_control", ConversationEventKind::RequestThreadControl),
    ("app_roles", ConversationEventKind::AppRoles),
    ("account_linking", ConversationEventKind::AccountLinking),
    ("optin", ConversationEventKind::Optin),
    ("game_play", ConversationEventKind::GamePlay),
    ("policy_enforcement", ConversationEventKind::PolicyEnforcement),
    ("policy-enforcement", ConversationEventKind::PolicyEnforcement),
];

/// The kind of a Messenger / Instagram item that is a control event.
pub(crate) fn kind(item: &Value) -> Option<ConversationEventKind> {
    KINDS
        .iter()
        .find(|(key, _)| item.get(*key).is_some())
        .map(|(_, kind)| *kind)
}

fn id_at(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Pushes `item` as a conversation event of `kind` through `account`. Its
/// customer is whichever of sender and recipient is not the account; none
/// (no sender, or only a `user_ref`) makes it page-level.
pub(crate) fn push(
    out: &mut Parsed,
    route: &Route,
    account: &str,
    kind: ConversationEventKind,
    item: &Value,
    timestamp: DateTime<Utc>,
) {
    let customer = [id_at(item, "/sender/id"), id_at(item, "/recipient/id")]
        .into_iter()
        .find(|id| !id.is_empty() && id != account)
        .unwrap_or_default();
    out.push(Kind::ConversationEvent(ConversationEvent {
        tenant_id: route.tenant_id.clone(),
        location_id: route.location_id.clone(),
        channel_account_id: route.channel_account_id.clone(),
        channel: route.channel,
        customer_id: customer,
        kind: kind.into(),
        // The item itself names its page, customer and time: the same
        // delivery retried has the same key, two different ones never do.
        event_key: synthetic_id(item),
        timestamp: Some(to_timestamp(timestamp)),
        raw_json: item.to_string(),
        ..Default::default()
    }));
}

/// Marks the messages among `events` as delivered on standby.
pub(crate) fn mark_standby(events: &mut [ChannelEvent]) {
    for e in events {
        if let Some(Kind::Message(m)) = &mut e.kind {
            m.standby = true;
        }
    }
}
