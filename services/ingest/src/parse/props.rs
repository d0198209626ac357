//! Property tests: no input makes any parser panic, whatever its shape.
//! Arbitrary JSON trees are grafted into each platform's envelope, so the
//! parsers' deep paths are reached, not only their first check.

use faro_proto::{
    conversations::v1::Channel,
    ingest::v1::{Provider, Route},
};
use proptest::prelude::*;
use serde_json::{Value, json};

use faro_proto::conversations::v1::{ChannelEvent, channel_event::Kind};

use super::{Context, Parsed, parse};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("text"),
            Just("image"),
            Just("reaction"),
            Just("edit"),
            Just("revoke"),
            Just("audio"),
            Just("interactive"),
            Just("location"),
            Just("contacts"),
            Just("read"),
            Just("failed"),
            Just("delivered"),
            Just("P1"),
            Just("1700000000"),
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("id"),
                        Just("type"),
                        Just("text"),
                        Just("body"),
                        Just("from"),
                        Just("timestamp"),
                        Just("mid"),
                        Just("message"),
                        Just("reaction"),
                        Just("emoji"),
                        Just("message_id"),
                        Just("context"),
                        Just("status"),
                        Just("statuses"),
                        Just("messages"),
                        Just("sender"),
                        Just("recipient"),
                        Just("delivery"),
                        Just("watermark"),
                        Just("mids"),
                        Just("is_echo"),
                        Just("attachments"),
                        Just("payload"),
                        Just("url"),
                        Just("reply_to"),
                        Just("whatsappInboundMessage"),
                        Just("whatsappMessage"),
                        Just("to"),
                        Just("wamid"),
                        Just("edit"),
                        Just("revoke"),
                        Just("original_message_id"),
                        Just("from_user_id"),
                        Just("to_user_id"),
                        Just("user_id"),
                        Just("wa_id"),
                        Just("group_id"),
                        Just("threads"),
                        Just("optin"),
                        Just("user_ref"),
                        Just("policy_enforcement"),
                        Just("policy-enforcement"),
                        Just("app_roles"),
                        Just("pass_thread_control"),
                        Just("standby"),
                        Just("message_echoes"),
                    ]
                    .prop_map(str::to_owned),
                    inner,
                ),
                0..5,
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn route() -> Route {
    Route {
        external_account_id: "P1".into(),
        tenant_id: "t".into(),
        location_id: "l".into(),
        channel_account_id: "c".into(),
        channel: Channel::Whatsapp.into(),
    }
}

fn run(provider: Provider, payload: &[u8]) -> Option<Parsed> {
    let routes = [route()];
    let ctx = Context {
        routes: &routes,
        meta_app_id: "A1",
        received_at: chrono::Utc::now(),
    };
    parse(provider, payload, &ctx).ok()
}

/// What conversations refuses outright (and with it a whole job): the
/// parsers reject such a part themselves, alone.
fn storable(e: &ChannelEvent) -> bool {
    match &e.kind {
        Some(Kind::Message(m)) => !m.customer_id.is_empty(),
        Some(Kind::Reaction(r)) => !r.reactor_id.is_empty(),
        Some(Kind::Watermark(w)) => !w.customer_id.is_empty(),
        Some(Kind::ConversationEvent(c)) => {
            !c.event_key.is_empty() && c.kind != 0 && c.customer_id.len() <= 256
        }
        Some(_) => true,
        None => false,
    }
}

const PROVIDERS: [Provider; 4] = [
    Provider::WhatsappCloud,
    Provider::Messenger,
    Provider::Instagram,
    Provider::Ycloud,
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for p in PROVIDERS {
            run(p, &bytes);
        }
    }

    #[test]
    fn arbitrary_json_in_every_envelope_never_panics(items in prop::collection::vec(arb_json(), 0..4), any_value in arb_json()) {
        let bodies = [
            json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
                {"field": "messages", "value": {"metadata": {"phone_number_id": "P1"}, "messages": items, "statuses": items, "contacts": items}},
                {"field": "smb_message_echoes", "value": {"metadata": {"phone_number_id": "P1"}, "message_echoes": items}},
                {"field": "messages", "value": any_value},
                {"field": "history", "value": {"metadata": {"phone_number_id": "P1"}, "history": items}},
                {"field": "history", "value": {"metadata": {"phone_number_id": "P1"}, "history": [{"threads": items}]}},
            ]}]}),
            json!({"object": "page", "entry": [{"id": "P1", "messaging": items}, any_value]}),
            json!({"object": "instagram", "entry": [{"id": "P1", "messaging": items}]}),
            json!({"id": "evt_1", "type": "whatsapp.inbound_message.received",
                   "whatsappInboundMessage": items.first().cloned().unwrap_or(Value::Null)}),
            json!({"id": "evt_2", "type": "whatsapp.message.updated", "whatsappMessage": any_value}),
        ];
        for body in &bodies {
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            for p in PROVIDERS {
                run(p, &bytes);
            }
        }
    }

    /// Every item of a verified payload is stored or rejected with a reason
    /// (or, for our own echoes, deliberately ignored): none only logged.
    #[test]
    fn every_item_is_stored_or_rejected_never_dropped(items in prop::collection::vec(arb_json(), 0..4)) {
        let wa = json!({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
            {"field": "messages", "value": {"metadata": {"phone_number_id": "P1"}, "messages": items, "statuses": items}},
            {"field": "smb_message_echoes", "value": {"metadata": {"phone_number_id": "P1"}, "message_echoes": items}},
            {"field": "history", "value": {"metadata": {"phone_number_id": "P1"},
                                           "history": [{"threads": [{"messages": items}]}]}},
            {"field": "standby", "value": {"metadata": {"phone_number_id": "P1"}, "messages": items, "message_echoes": items}},
        ]}]});
        let page = json!({"object": "page", "entry": [{"id": "P1", "messaging": items, "standby": items}]});
        for (provider, body, parts) in [
            (Provider::WhatsappCloud, wa, 6 * items.len()),
            (Provider::Messenger, page, 2 * items.len()),
        ] {
            let parsed = run(provider, &serde_json::to_vec(&body).unwrap_or_default());
            let parsed = parsed.expect("a valid envelope parses");
            let accounted = parsed.events.len() + parsed.rejected.len() + parsed.ignored;
            prop_assert!(accounted >= parts, "{accounted} of {parts} parts accounted for: {body}");
            for e in &parsed.events {
                prop_assert!(storable(e), "{e:?} from {body}");
            }
            for r in &parsed.rejected {
                prop_assert!(!r.reason.is_empty());
            }
        }
    }
}

/// The edge refuses bodies nesting deeper than its bound (at most 128); a
/// verified one that got here anyway is malformed, never a stack overflow.
#[test]
fn a_hundred_thousand_nested_arrays_are_malformed() {
    let n = 100_000;
    let body = format!(r#"{{"entry":{}{}}}"#, "[".repeat(n), "]".repeat(n));
    let routes = [route()];
    let ctx = Context {
        routes: &routes,
        meta_app_id: "A1",
        received_at: chrono::Utc::now(),
    };
    for provider in [
        Provider::WhatsappCloud,
        Provider::Messenger,
        Provider::Ycloud,
    ] {
        let e = parse(provider, body.as_bytes(), &ctx).expect_err("refused");
        assert!(
            matches!(&e, super::ParseError::Malformed(m) if m.contains("recursion limit")),
            "{e}"
        );
    }
}
