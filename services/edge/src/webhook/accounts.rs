//! Which accounts a webhook body names, per platform: just enough reading to
//! route it and find the secret that verifies it. Untrusted until verified.
//!
//! This runs before the signature is checked, so it must cost little whatever
//! the body: one pass over the bytes that deserializes only the id paths and
//! skips everything else without building it (no `serde_json::Value` of an
//! attacker's 3 MiB). What an id is comes from `faro_proto::AccountId`, the
//! definition ingest's parsers use too.

use std::{collections::BTreeSet, fmt};

use faro_proto::AccountId;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::Platform;
use crate::{ClientLimits, error::ApiError};

/// Where ids sit in a body, as a static description walked by [`Scan`].
enum Path {
    /// An account id (by the shared rule).
    Id,
    /// An object; the named members are walked, every other member skipped.
    Fields(&'static [(&'static str, Path)]),
    /// An array; every element is walked.
    Each(&'static Path),
    /// The `entry` array: like `Each`, and its elements are counted.
    Entries(&'static Path),
}

/// `entry[].changes[].value.metadata.phone_number_id`, and the WhatsApp
/// Business Account `entry[].id`: account-level fields (templates, quality,
/// alerts, …) name no number, only their WABA.
const WHATSAPP: Path = Path::Fields(&[(
    "entry",
    Path::Entries(&Path::Fields(&[
        ("id", Path::Id),
        (
            "changes",
            Path::Each(&Path::Fields(&[(
                "value",
                Path::Fields(&[("metadata", Path::Fields(&[("phone_number_id", Path::Id)]))]),
            )])),
        ),
    ])),
)]);

/// `entry[].id`
const MESSAGING: Path =
    Path::Fields(&[("entry", Path::Entries(&Path::Fields(&[("id", Path::Id)])))]);

/// `whatsappInboundMessage.to`, `whatsappMessage.from`; for account events
/// `whatsappTemplate.wabaId`, `whatsappPhoneNumber.wabaId` and `.phoneNumber`.
const YCLOUD: Path = Path::Fields(&[
    ("whatsappInboundMessage", Path::Fields(&[("to", Path::Id)])),
    ("whatsappMessage", Path::Fields(&[("from", Path::Id)])),
    ("whatsappTemplate", Path::Fields(&[("wabaId", Path::Id)])),
    (
        "whatsappPhoneNumber",
        Path::Fields(&[("wabaId", Path::Id), ("phoneNumber", Path::Id)]),
    ),
]);

/// What the scan found so far, and its bounds.
struct Found {
    ids: BTreeSet<String>,
    entries: usize,
    max_accounts: usize,
    max_entries: usize,
    /// Set when a bound stopped the scan (its error is then this, not the JSON's).
    refused: Option<ApiError>,
}

/// Walks one value along `path`, adding the ids it finds to `out`. A value of
/// another shape than the path expects is skipped, as a full parse's
/// `Value::get` would: only malformed JSON is an error.
struct Scan<'a> {
    path: &'static Path,
    out: &'a mut Found,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        match self.path {
            Path::Id => {
                if let Some(id) = AccountId::deserialize(d)?.0 {
                    let max = self.out.max_accounts;
                    self.out.ids.insert(id);
                    if self.out.ids.len() > max {
                        return Err(self.out.refuse(
                            "too_many_accounts",
                            format!("the body names more than {max} accounts"),
                        ));
                    }
                }
                Ok(())
            }
            _ => d.deserialize_any(self),
        }
    }
}

impl Found {
    /// Stops the scan with a 400 naming the bound.
    fn refuse<E: de::Error>(&mut self, code: &'static str, message: String) -> E {
        let e = E::custom(&message);
        self.refused = Some(ApiError::bad_request(code, message));
        e
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        match self.path {
            Path::Each(inner) => {
                while seq
                    .next_element_seed(Scan {
                        path: inner,
                        out: &mut *self.out,
                    })?
                    .is_some()
                {}
            }
            Path::Entries(inner) => {
                while seq
                    .next_element_seed(Scan {
                        path: inner,
                        out: &mut *self.out,
                    })?
                    .is_some()
                {
                    self.out.entries += 1;
                    let max = self.out.max_entries;
                    if self.out.entries > max {
                        return Err(self.out.refuse(
                            "too_many_entries",
                            format!("the body holds more than {max} entries"),
                        ));
                    }
                }
            }
            _ => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Path::Fields(fields) = self.path else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(());
        };
        while let Some(field) = map.next_key_seed(Field(fields))? {
            match field {
                Some(path) => map.next_value_seed(Scan {
                    path,
                    out: &mut *self.out,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A member name: which of the walked fields it is, if any (compared after
/// unescaping, as a full parse would, and without allocating).
struct Field(&'static [(&'static str, Path)]);

impl<'de> DeserializeSeed<'de> for Field {
    type Value = Option<&'static Path>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Field {
    type Value = Option<&'static Path>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|(name, _)| *name == v).map(|(_, p)| p))
    }
}

pub(crate) fn account_ids(
    platform: Platform,
    body: &[u8],
    limits: &ClientLimits,
) -> Result<BTreeSet<String>, ApiError> {
    let invalid = |why: String| ApiError::bad_request("invalid_json", why);
    // JSON is UTF-8 (RFC 8259); skipped strings are not checked by the scan,
    // so check the whole body once, as ingest's full parse will.
    std::str::from_utf8(body).map_err(|e| invalid(format!("the body is not JSON: {e}")))?;
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        return Err(invalid("the body must be a JSON object".into()));
    }
    let path = match platform {
        Platform::WhatsApp => &WHATSAPP,
        Platform::Messenger | Platform::Instagram => &MESSAGING,
        Platform::YCloud => &YCLOUD,
    };
    let mut found = Found {
        ids: BTreeSet::new(),
        entries: 0,
        max_accounts: limits.webhook_max_accounts,
        max_entries: limits.webhook_max_entries,
        refused: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let scanned = Scan {
        path,
        out: &mut found,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match (scanned, found.refused) {
        (Ok(()), _) => Ok(found.ids),
        (Err(_), Some(refused)) => Err(refused),
        (Err(e), None) => Err(invalid(format!("the body is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
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
#[cfg(test)]
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

#[cfg(test)]
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
