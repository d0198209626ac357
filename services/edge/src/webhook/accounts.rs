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
#[path = "accounts_tests.rs"]
mod tests;
