//! Property tests: no input makes any parser panic, whatever its shape.
//! Arbitrary JSON trees are grafted into each platform's envelope, so the
//! parsers' deep paths are reached, not only their first check.

use faro_proto::{
    conversations::v1::Channel,
    ingest::v1::{Provider, Route},
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::{Context, parse};

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

fn run(provider: Provider, payload: &[u8]) {
    let routes = [route()];
    let ctx = Context {
        routes: &routes,
        meta_app_id: "A1",
        received_at: chrono::Utc::now(),
    };
    let _ = parse(provider, payload, &ctx);
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
}
