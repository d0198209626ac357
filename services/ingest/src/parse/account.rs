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
    let (number, by_number) =
        ctx.account(crate::parse::at(change, "/value/metadata/phone_number_id"));
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
        .map(|p| ctx.account(crate::parse::at(root, p)))
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use faro_proto::conversations::v1::Channel;

    use super::*;

    fn route(account: &str) -> Route {
        Route {
            external_account_id: account.into(),
            tenant_id: "t".into(),
            location_id: "l".into(),
            channel_account_id: format!("ca-{account}"),
            channel: Channel::Whatsapp.into(),
        }
    }

    fn parse_change(routes: &[Route], received_secs: i64, change: &Value) -> Parsed {
        let ctx = Context {
            routes,
            meta_app_id: "A",
            received_at: Utc.timestamp_opt(received_secs, 0).single().expect("time"),
        };
        let entry = json!({"id": "W1", "time": 1_739_321_024, "changes": [change]});
        let mut out = Parsed::default();
        whatsapp_change(&entry, change, "security", &ctx, &mut out);
        out
    }

    fn account_event(p: &Parsed) -> &AccountEvent {
        match p.events.first().and_then(|e| e.kind.as_ref()) {
            Some(Kind::AccountEvent(a)) => a,
            other => panic!("an account event, got {other:?}"),
        }
    }

    #[test]
    fn a_change_is_filed_under_its_waba_once_whenever_it_arrives() {
        let change = json!({"field": "security", "value": {"event": "PIN_CHANGED"}});
        let routes = [route("W1")];
        let first = parse_change(&routes, 1_800_000_000, &change);
        let retry = parse_change(&routes, 1_800_000_600, &change);
        let (a, b) = (account_event(&first), account_event(&retry));
        assert_eq!(
            (a.channel_account_id.as_str(), a.field.as_str()),
            ("ca-W1", "security")
        );
        assert_eq!(a.external_account_id, "W1");
        assert_eq!(a.value_json, r#"{"event":"PIN_CHANGED"}"#);
        assert_eq!(
            a.timestamp.as_ref().map(|t| t.seconds),
            Some(1_739_321_024),
            "Meta's time"
        );
        assert_eq!(a.event_key, b.event_key, "a retry has the same key");
        let other = json!({"field": "security", "value": {"event": "PIN_RESET_REQUEST"}});
        let other = parse_change(&routes, 1_800_000_000, &other);
        assert_ne!(account_event(&other).event_key, a.event_key);
    }

    #[test]
    fn without_a_verified_waba_the_number_routes_it_or_it_is_rejected() {
        let change = json!({"field": "user_preferences",
                            "value": {"metadata": {"phone_number_id": "P1"}}});
        let by_number = parse_change(&[route("P1")], 0, &change);
        assert_eq!(account_event(&by_number).external_account_id, "P1");
        let nobody = parse_change(&[route("P2")], 0, &change);
        assert!(nobody.events.is_empty());
        assert_eq!(nobody.rejected.len(), 1);
        assert!(
            nobody.rejected[0]
                .reason
                .contains("connect its WhatsApp Business Account")
        );
    }

    #[test]
    fn ycloud_account_types_are_routed_by_the_waba_they_name() {
        let routes = [route("W1")];
        let ctx = Context {
            routes: &routes,
            meta_app_id: "",
            received_at: Utc::now(),
        };
        let created = Utc.timestamp_opt(1_749_417_000, 0).single().expect("time");
        let reviewed = json!({"id": "evt_1", "type": "whatsapp.template.reviewed",
                              "whatsappTemplate": {"wabaId": "W1", "status": "APPROVED"}});
        let mut out = Parsed::default();
        assert!(ycloud_event(
            &reviewed,
            "whatsapp.template.reviewed",
            "evt_1",
            created,
            &ctx,
            &mut out
        ));
        assert_eq!(account_event(&out).field, "whatsapp.template.reviewed");
        let elsewhere = json!({"whatsappTemplate": {"wabaId": "W9"}});
        let mut out = Parsed::default();
        assert!(ycloud_event(
            &elsewhere,
            "whatsapp.template.reviewed",
            "evt_2",
            created,
            &ctx,
            &mut out
        ));
        assert_eq!((out.events.len(), out.rejected.len()), (0, 1));
        let mut out = Parsed::default();
        assert!(!ycloud_event(
            &json!({"contact": {}}),
            "contact.created",
            "evt_3",
            created,
            &ctx,
            &mut out
        ));
        assert!(out.events.is_empty() && out.rejected.is_empty());
        assert!(announced("whatsapp.template.reviewed") && !announced("security"));
    }

    fn arb_json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,8}".prop_map(Value::String),
            Just(json!("W1")),
            Just(json!("P1")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![Just("metadata"), Just("phone_number_id"), Just("event")],
                        inner
                    ),
                    0..3
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest::proptest! {
        /// Whatever an account change holds, it ends as exactly one account
        /// event or one rejection with a reason: never dropped, never a message.
        #[test]
        fn every_account_change_is_stored_or_rejected(
            id in proptest::prop_oneof![
                proptest::strategy::Just(json!("W1")),
                proptest::strategy::Just(json!("W9")),
                arb_json()
            ],
            time in arb_json(),
            value in arb_json(),
        ) {
            let routes = [route("W1"), route("P1")];
            let ctx = Context { routes: &routes, meta_app_id: "A", received_at: Utc::now() };
            let entry = json!({"id": id, "time": time});
            let change = json!({"field": "account_update", "value": value});
            let mut out = Parsed::default();
            whatsapp_change(&entry, &change, "account_update", &ctx, &mut out);
            proptest::prop_assert_eq!(out.events.len() + out.rejected.len(), 1);
            for e in &out.events {
                let is_account_event = matches!(e.kind, Some(Kind::AccountEvent(_)));
                proptest::prop_assert!(is_account_event);
            }
            for r in &out.rejected {
                proptest::prop_assert!(!r.reason.is_empty());
            }
        }
    }
}
