//! What an account id in a webhook body is. The edge looks accounts up and
//! verifies the signature by them; ingest files each event under one. Two
//! readers of one format drift (a numeric id was routed by one and ignored by
//! the other), so both read ids through this one definition.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The longest account id FARO accepts, in bytes. Meta's ids are numeric
/// strings of about 15 digits, YCloud's E.164 numbers.
pub const MAX_ACCOUNT_ID_BYTES: usize = 100;

/// An account id as a webhook names it: a non-empty string of at most
/// [`MAX_ACCOUNT_ID_BYTES`] without a NUL (Postgres text cannot hold one, so
/// no connected account has one), as is, or a non-negative JSON integer, in decimal.
/// Anything else (null, a negative or fractional number, a boolean, an array,
/// an object) names no account: `AccountId(None)`.
///
/// Deserializing never fails on the value's type, only on malformed input, and
/// skips arrays and objects without building them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountId(pub Option<String>);

/// The account id at `v`, by the rule of [`AccountId`].
pub fn account_id(v: Option<&serde_json::Value>) -> Option<String> {
    AccountId::deserialize(v?).ok()?.0
}

fn of_str(s: &str) -> AccountId {
    let valid = !s.is_empty() && s.len() <= MAX_ACCOUNT_ID_BYTES && !s.contains('\0');
    AccountId(valid.then(|| s.to_owned()))
}

struct IdVisitor;

impl<'de> Visitor<'de> for IdVisitor {
    type Value = AccountId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AccountId, E> {
        Ok(of_str(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<AccountId, E> {
        Ok(AccountId(Some(v.to_string())))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<AccountId, E> {
        Ok(AccountId(u64::try_from(v).ok().map(|v| v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<AccountId, E> {
        Ok(AccountId(None))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<AccountId, E> {
        Ok(AccountId(None))
    }

    fn visit_unit<E: de::Error>(self) -> Result<AccountId, E> {
        Ok(AccountId(None))
    }

    fn visit_none<E: de::Error>(self) -> Result<AccountId, E> {
        Ok(AccountId(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AccountId, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(AccountId(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AccountId, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(AccountId(None))
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IdVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_and_non_negative_integers_are_ids_nothing_else_is() {
        let long = "9".repeat(MAX_ACCOUNT_ID_BYTES + 1);
        let cases = [
            (json!("106540352242922"), Some("106540352242922")),
            (json!("+15550783881"), Some("+15550783881")),
            (json!(106540352242922_u64), Some("106540352242922")),
            (json!(0), Some("0")),
            (json!(""), None),
            (json!(long), None),
            (json!("1\u{0}2"), None),
            (json!(-1), None),
            (json!(1.5), None),
            (json!(1e300), None),
            (json!(true), None),
            (json!(null), None),
            (json!(["1"]), None),
            (json!({"id": "1"}), None),
        ];
        for (v, expected) in cases {
            assert_eq!(account_id(Some(&v)).as_deref(), expected, "{v}");
            let text = v.to_string();
            let lazy: AccountId = serde_json::from_str(&text).expect("any JSON is read");
            assert_eq!(lazy.0.as_deref(), expected, "lazily: {text}");
        }
        assert_eq!(account_id(None), None);
    }
}
