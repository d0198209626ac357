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
    conversations::v1::{
        ChannelEvent, ConversationEvent, ConversationEventKind, channel_event::Kind,
    },
    ingest::v1::Route,
    to_timestamp,
};
use serde_json::Value;

use super::{Parsed, synthetic_id};

/// The item's key that names each kind. `policy-enforcement` is the older
/// spelling Meta still documents beside `policy_enforcement`.
const KINDS: &[(&str, ConversationEventKind)] = &[
    (
        "pass_thread_control",
        ConversationEventKind::PassThreadControl,
    ),
    (
        "take_thread_control",
        ConversationEventKind::TakeThreadControl,
    ),
    (
        "request_thread_control",
        ConversationEventKind::RequestThreadControl,
    ),
    ("app_roles", ConversationEventKind::AppRoles),
    ("account_linking", ConversationEventKind::AccountLinking),
    ("optin", ConversationEventKind::Optin),
    ("game_play", ConversationEventKind::GamePlay),
    (
        "policy_enforcement",
        ConversationEventKind::PolicyEnforcement,
    ),
    (
        "policy-enforcement",
        ConversationEventKind::PolicyEnforcement,
    ),
];

/// The kind of a Messenger / Instagram item that is a control event.
pub(crate) fn kind(item: &Value) -> Option<ConversationEventKind> {
    KINDS
        .iter()
        .find(|(key, _)| item.get(*key).is_some())
        .map(|(_, kind)| *kind)
}

pub(super) fn id_at(v: &Value, pointer: &str) -> String {
    match crate::parse::at(v, pointer) {
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
    if customer.len() > 256 {
        // Conversations would refuse it, and with it the whole job.
        out.reject("the event's customer id is longer than 256 bytes", item);
        return;
    }
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

#[cfg(test)]
mod tests {
    use faro_proto::conversations::v1::Channel;
    use serde_json::json;

    use super::*;
    use crate::parse::{Context, messaging};

    fn parse(entry: Value) -> Parsed {
        let routes = [Route {
            external_account_id: "P1".into(),
            channel: Channel::FacebookMessenger.into(),
            ..Default::default()
        }];
        let ctx = Context {
            routes: &routes,
            meta_app_id: "A1",
            received_at: chrono::Utc::now(),
        };
        let body = json!({"object": "page", "entry": [entry]});
        messaging::parse(&body, messaging::Platform::Messenger, &ctx).expect("parsed")
    }

    fn events(p: &Parsed) -> Vec<(ConversationEventKind, &str)> {
        p.events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::ConversationEvent(c)) => Some((c.kind(), c.customer_id.as_str())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn control_events_find_their_customer_or_are_page_level() {
        let p = parse(json!({"id": "P1", "messaging": [
            {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 1,
             "pass_thread_control": {"new_owner_app_id": "A1"}},
            {"sender": {"id": "P1"}, "recipient": {"id": "U2"}, "timestamp": 2,
             "take_thread_control": {"previous_owner_app_id": "A1"}},
            {"recipient": {"id": "P1"}, "timestamp": 3, "app_roles": {"A1": ["primary_receiver"]}},
            {"recipient": {"id": "P1"}, "timestamp": 4, "policy-enforcement": {"action": "block"}},
            {"sender": {"user_ref": "R1"}, "recipient": {"id": "P1"}, "timestamp": 5,
             "optin": {"ref": "x", "user_ref": "R1"}},
            {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 6, "hologram": {}},
            {"recipient": {"id": "P1"}, "timestamp": 7, "hologram": {}},
        ]}));
        assert_eq!(
            events(&p),
            [
                (ConversationEventKind::PassThreadControl, "U1"),
                (ConversationEventKind::TakeThreadControl, "U2"),
                (ConversationEventKind::AppRoles, ""),
                (ConversationEventKind::PolicyEnforcement, ""),
                (ConversationEventKind::Optin, ""),
                (ConversationEventKind::Unknown, "U1"),
            ]
        );
        assert_eq!(p.rejected.len(), 1, "an unknown item with no sender: {p:?}");
        let again = parse(json!({"id": "P1", "messaging": [
            {"recipient": {"id": "P1"}, "timestamp": 3, "app_roles": {"A1": ["primary_receiver"]}}]}));
        let key = |p: &Parsed| match &p.events.last().and_then(|e| e.kind.clone()) {
            Some(Kind::ConversationEvent(c)) => c.event_key.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            key(&again),
            match &p.events[2].kind {
                Some(Kind::ConversationEvent(c)) => c.event_key.clone(),
                other => panic!("{other:?}"),
            },
            "the same item has the same key"
        );
    }

    #[test]
    fn standby_items_are_messages_marked_standby() {
        let p = parse(json!({"id": "P1", "standby": [
            {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 1,
             "message": {"mid": "m1", "text": "hi"}},
            {"sender": {"id": "U1"}, "recipient": {"id": "P1"}, "timestamp": 2,
             "read": {"watermark": 2}},
        ]}));
        let messages: Vec<(&str, bool)> = p
            .events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Message(m)) => Some((m.channel_message_id.as_str(), m.standby)),
                _ => None,
            })
            .collect();
        assert_eq!(messages, [("m1", true)]);
        assert_eq!(p.events.len(), 2, "the read is applied as any other");
        assert!(p.rejected.is_empty());
    }
}
