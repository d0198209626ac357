//! Which accounts a webhook body names, per platform: just enough parsing to
//! route it and find the secret that verifies it. Untrusted until verified.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Platform;
use crate::error::ApiError;

const MAX_ACCOUNTS_PER_POST: usize = 1000;

fn id(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() && s.len() <= 100 => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn entries(root: &Value) -> impl Iterator<Item = &Value> {
    root.get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

pub(crate) fn account_ids(platform: Platform, body: &[u8]) -> Result<BTreeSet<String>, ApiError> {
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}")))?;
    if !root.is_object() {
        return Err(ApiError::bad_request(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    let ids: BTreeSet<String> = match platform {
        Platform::WhatsApp => entries(&root)
            .flat_map(|e| {
                e.get("changes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|c| id(c.pointer("/value/metadata/phone_number_id")))
            .collect(),
        Platform::Messenger | Platform::Instagram => {
            entries(&root).filter_map(|e| id(e.get("id"))).collect()
        }
        Platform::YCloud => [
            root.pointer("/whatsappInboundMessage/to"),
            root.pointer("/whatsappMessage/from"),
        ]
        .into_iter()
        .filter_map(id)
        .collect(),
    };
    if ids.len() > MAX_ACCOUNTS_PER_POST {
        return Err(ApiError::bad_request(
            "too_many_accounts",
            "the body names too many accounts",
        ));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn ids(p: Platform, body: &str) -> Vec<String> {
        account_ids(p, body.as_bytes())
            .expect("json")
            .into_iter()
            .collect()
    }

    #[test]
    fn finds_every_account_of_every_platform() {
        let wa = r#"{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"1"}}},{"value":{}}]},
                    {"changes":[{"value":{"metadata":{"phone_number_id":"2"}}}]},{}]}"#;
        assert_eq!(ids(Platform::WhatsApp, wa), ["1", "2"]);
        let page = r#"{"object":"page","entry":[{"id":"10"},{"id":11},{"id":""}]}"#;
        assert_eq!(ids(Platform::Messenger, page), ["10", "11"]);
        assert_eq!(ids(Platform::Instagram, page), ["10", "11"]);
        let yc = r#"{"id":"evt_1","whatsappInboundMessage":{"to":"+1555"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["+1555"]);
        let yc = r#"{"id":"evt_2","whatsappMessage":{"from":"+1556"}}"#;
        assert_eq!(ids(Platform::YCloud, yc), ["+1556"]);
    }

    #[test]
    fn refuses_what_is_not_a_json_object() {
        for bad in ["<xml/>", "[1,2]", "\"x\"", ""] {
            let e = account_ids(Platform::WhatsApp, bad.as_bytes()).expect_err("refused");
            assert_eq!(
                (e.status, e.code),
                (StatusCode::BAD_REQUEST, "invalid_json")
            );
        }
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use super::*;

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
            ];
            for bytes in &candidates {
                for p in [Platform::WhatsApp, Platform::Messenger, Platform::Instagram, Platform::YCloud] {
                    if let Err(e) = account_ids(p, bytes) {
                        prop_assert!(e.status.is_client_error());
                    }
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
