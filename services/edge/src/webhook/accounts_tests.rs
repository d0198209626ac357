//! Tests of the account scan: examples, the limits, and properties against
//! the full parse it replaced (kept here as the reference).

use std::collections::BTreeSet;

use super::*;

mod cases {
    use super::*;
    use http::StatusCode;

    fn ids(p: Platform, body: &str) -> Vec<String> {
        account_ids(p, body.as_bytes(), &ClientLimits::default())
            .expect("json")
            .into_iter()
            .collect()
    }

    #[test]
    fn finds_every_account_of_every_platform() {
        let wa = r#"{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"}}},{"value":{}}]},
                    {"changes":[{"value":{"metadata":{"phone_number_id":2}}}]},{}]}"#;
        assert_eq!(ids(Platform::WhatsApp, wa), ["1", "2"]);
        // Account-level fields name only the WhatsApp Business Account.
        let waba = r#"{"entry":[{"id":"102290129340398","time":1739321024,"changes":[
                    {"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}"#;
        assert_eq!(ids(Platform::WhatsApp, waba), ["102290129340398"]);
        let yc = r#"{"id":"evt_3","type":"whatsapp.template.reviewed","whatsappTemplate":{"wabaId":"7"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["7"]);
        let yc = r#"{"id":"evt_4","whatsappPhoneNumber":{"wabaId":"7","phoneNumber":"+1557"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["+1557", "7"]);
        let page = r#"{"object":"page","entry":[{"id":"10"},{"id":11},{"id":""},{"id":1.5}]}"#;
        assert_eq!(ids(Platform::Messenger, page), ["10", "11"]);
        assert_eq!(ids(Platform::Instagram, page), ["10", "11"]);
        let yc = r#"{"id":"evt_1","whatsappInboundMessage":{"to":"+1555"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["+1555"]);
        let yc = r#"{"id":"evt_2","whatsappMessage":{"from":"+1556"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["+1556"]);
    }

    #[test]
    fn member_names_are_compared_unescaped_and_other_shapes_are_skipped() {
        let wa = r#"{"entr\u0079":[0,"x",[{"changes":1}],{"changes":[null,{"value":[]},
                    {"value":{"metadata":{"phone_number_id":"\u0031\u0032"}}}]}]}"#;
        assert_eq!(ids(Platform::WhatsApp, wa), ["12"]);
        // A duplicated member: every occurrence is looked up (a superset of what
        // the parser, which keeps the last, files events under).
        let dup = r#"{"entry":[{"id":"1"}],"entry":[{"id":"2"}]}"#;
        assert_eq!(ids(Platform::Messenger, dup), ["1", "2"]);
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for bad in [
            &b"<xml/>"[..],
            b"[1,2]",
            b"\"x\"",
            b"",
            b"{",
            b"{} {}",
            b"{\"entry\":[0,]}",
            b"{\"object\":\"\xff\"}",
        ] {
            let e = account_ids(Platform::WhatsApp, bad, &ClientLimits::default())
                .expect_err("refused");
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "invalid_json"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn too_many_accounts_are_refused() {
        let limits = ClientLimits {
            webhook_max_accounts: 50,
            ..ClientLimits::default()
        };
        let changes: Vec<String> = (0..=50)
            .map(|n| format!(r#"{{"value":{{"metadata":{{"phone_number_id":"{n}"}}}}}}"#))
            .collect();
        let body = format!(r#"{{"entry":[{{"changes":[{}]}}]}}"#, changes.join(","));
        let e = account_ids(Platform::WhatsApp, body.as_bytes(), &limits).expect_err("refused");
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "too_many_accounts")
        );
        assert!(e.message.contains("50"), "{}", e.message);
        let body = format!(
            r#"{{"entry":[{{"changes":[{}]}}]}}"#,
            changes[1..].join(",")
        );
        assert_eq!(
            account_ids(Platform::WhatsApp, body.as_bytes(), &limits)
                .expect("at the limit")
                .len(),
            50
        );
    }

    #[test]
    fn too_many_entries_are_refused_even_naming_one_account() {
        let limits = ClientLimits {
            webhook_max_entries: 20,
            ..ClientLimits::default()
        };
        let body = |n: usize| format!(r#"{{"entry":[{}]}}"#, vec![r#"{"id":"1"}"#; n].join(","));
        for p in [Platform::WhatsApp, Platform::Messenger, Platform::Instagram] {
            let e = account_ids(p, body(21).as_bytes(), &limits).expect_err("refused");
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "too_many_entries")
            );
            assert_eq!(
                account_ids(p, body(20).as_bytes(), &limits)
                    .expect("at the limit")
                    .len(),
                1
            );
        }
    }

    #[test]
    fn a_maximal_body_of_junk_names_no_account() {
        // The body of the report: 3 MiB of `0`s where entries should be.
        let mut body = b"{\"entry\":[0".to_vec();
        while body.len() < faro_proto::MAX_WEBHOOK_BYTES - 4 {
            body.extend_from_slice(b",0");
        }
        body.extend_from_slice(b"]}");
        let unbounded = ClientLimits {
            webhook_max_entries: usize::MAX,
            ..ClientLimits::default()
        };
        for p in [Platform::WhatsApp, Platform::Messenger, Platform::YCloud] {
            assert!(account_ids(p, &body, &unbounded).expect("json").is_empty());
        }
        // With the default bound, its 1.5 million "entries" are refused early.
        let e = account_ids(Platform::WhatsApp, &body, &ClientLimits::default())
            .expect_err("too many entries");
        assert_eq!(e.code, "too_many_entries");
    }
}

/// The definition the scan must agree with: a full parse into a `Value`, read
/// the way ingest's parsers read it. Only for tests: it is what ran before the
/// scan, and costs ~20× the body in memory.
pub(crate) fn account_ids_by_full_parse(
    platform: Platform,
    root: &serde_json::Value,
) -> BTreeSet<String> {
    use faro_proto::account_id;
    use serde_json::Value;
    let entries = || {
        root.get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
    };
    match platform {
        Platform::WhatsApp => entries()
            .flat_map(|e| {
                e.get("changes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|c| account_id(c.pointer("/value/metadata/phone_number_id")))
            .chain(entries().filter_map(|e| account_id(e.get("id"))))
            .collect(),
        Platform::Messenger | Platform::Instagram => {
            entries().filter_map(|e| account_id(e.get("id"))).collect()
        }
        Platform::YCloud => [
            root.pointer("/whatsappInboundMessage/to"),
            root.pointer("/whatsappMessage/from"),
            root.pointer("/whatsappTemplate/wabaId"),
            root.pointer("/whatsappPhoneNumber/wabaId"),
            root.pointer("/whatsappPhoneNumber/phoneNumber"),
        ]
        .into_iter()
        .filter_map(account_id)
        .collect(),
    }
}

mod props {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    const PLATFORMS: [Platform; 4] = [
        Platform::WhatsApp,
        Platform::Messenger,
        Platform::Instagram,
        Platform::YCloud,
    ];

    /// JSON trees whose member names are mostly the ones on the id paths, so
    /// that ids are found at every depth and in every wrong shape.
    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            ".{0,8}".prop_map(Value::String),
            "[0-9+]{1,16}".prop_map(Value::String),
        ];
        leaf.prop_recursive(7, 64, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            8 => prop::sample::select(&[
                                "entry",
                                "changes",
                                "value",
                                "metadata",
                                "phone_number_id",
                                "id",
                                "whatsappInboundMessage",
                                "whatsappMessage",
                                "to",
                                "from",
                                "whatsappTemplate",
                                "whatsappPhoneNumber",
                                "wabaId",
                                "phoneNumber",
                            ][..])
                            .prop_map(str::to_owned),
                            1 => "[a-z]{1,6}",
                        ],
                        inner,
                    ),
                    0..4,
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        /// Whatever arrives, routing answers a set or a 4xx; it never panics.
        #[test]
        fn any_body_routes_or_is_refused(body in prop::collection::vec(any::<u8>(), 0..512),
                                         wrapped in "[ -~]{0,64}") {
            let candidates = [
                body.clone(),
                format!(r#"{{"entry":[{{"id":{wrapped:?},"changes":[{{"value":{{"metadata":{{"phone_number_id":{wrapped:?}}}}}}}]}}]}}"#).into_bytes(),
                format!(r#"{{"whatsappInboundMessage":{{"to":{wrapped:?}}},"whatsappMessage":{{"from":[{wrapped:?}]}}}}"#).into_bytes(),
                format!(r#"{{"entry":[{wrapped}]}}"#).into_bytes(),
            ];
            for bytes in &candidates {
                for p in PLATFORMS {
                    if let Err(e) = account_ids(p, bytes, &ClientLimits::default()) {
                        prop_assert!(e.status.is_client_error());
                    }
                }
            }
        }

        /// On every valid body the scan finds exactly the ids a full parse
        /// finds, so the edge routes what ingest will file, no more, no less.
        #[test]
        fn the_scan_agrees_with_a_full_parse(root in prop::collection::btree_map(
            prop_oneof![Just("entry".to_owned()), Just("whatsappInboundMessage".to_owned()),
                        Just("whatsappMessage".to_owned()), Just("whatsappTemplate".to_owned()),
                        Just("whatsappPhoneNumber".to_owned()), "[a-z]{1,6}"],
            arb_json(), 0..4)) {
            let root = Value::Object(root.into_iter().collect());
            let text = root.to_string();
            for p in PLATFORMS {
                let expected = account_ids_by_full_parse(p, &root);
                match account_ids(p, text.as_bytes(), &ClientLimits::default()) {
                    Ok(found) => prop_assert_eq!(found, expected, "{}", text),
                    Err(e) => prop_assert!(matches!(e.code, "too_many_accounts" | "too_many_entries")),
                }
            }
        }

        #[test]
        fn any_signature_header_parses_or_is_refused(value in prop::collection::vec(any::<u8>(), 0..160)) {
            let _ = crate::signature::parse_header(&value);
            let _ = crate::signature::parse_ycloud_header(&value);
        }
    }
}
