//! Opaque keyset cursors: a position `(time, id)` in one ordering, encoded so
//! that clients cannot build or edit one and one kind cannot be passed for the
//! other. A cursor is a position, not a snapshot: rows inserted before it
//! are never shown twice, rows inserted after it are not skipped.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Error;

/// Which ordering a cursor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Conversations by (activity, id), newest first.
    Conversations = 1,
    /// A thread's messages by (timestamp, id).
    Messages = 2,
}

const VERSION: u8 = 1;
const LEN: usize = 1 + 1 + 8 + 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub(crate) fn encode(&self, kind: Kind) -> String {
        let mut bytes = Vec::with_capacity(LEN);
        bytes.push(VERSION);
        bytes.push(kind as u8);
        bytes.extend_from_slice(&self.at.timestamp_micros().to_be_bytes());
        bytes.extend_from_slice(self.id.as_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in `raw`, refused as an invalid `field` unless it is one
    /// this service made for `kind`.
    pub(crate) fn decode(field: &str, raw: &str, kind: Kind) -> Result<Self, Error> {
        let bad = || Error::invalid(format!("{field} is not a valid cursor"));
        if raw.len() > 64 {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(raw).map_err(|_| bad())?;
        if bytes.len() != LEN || bytes[0] != VERSION || bytes[1] != kind as u8 {
            return Err(bad());
        }
        let micros = i64::from_be_bytes(bytes[2..10].try_into().map_err(|_| bad())?);
        let at = DateTime::from_timestamp_micros(micros).ok_or_else(bad)?;
        let id = Uuid::from_slice(&bytes[10..]).map_err(|_| bad())?;
        Ok(Self { at, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_anything_else() {
        let c = Cursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: Uuid::now_v7(),
        };
        let raw = c.encode(Kind::Conversations);
        assert_eq!(
            Cursor::decode("cursor", &raw, Kind::Conversations).expect("valid"),
            c
        );
        assert!(Cursor::decode("cursor", &raw, Kind::Messages).is_err());
        for bad in ["", "x", "!!!!", &raw[1..], &format!("{raw}AA")] {
            let e = Cursor::decode("cursor", bad, Kind::Conversations).expect_err(bad);
            assert!(e.to_string().contains("cursor"), "{e}");
        }
    }
}
