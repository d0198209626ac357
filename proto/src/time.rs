//! Conversions between `prost_types::Timestamp` and chrono, in one place.

use chrono::{DateTime, Utc};
use prost_types::Timestamp;

pub fn to_timestamp(t: DateTime<Utc>) -> Timestamp {
    Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// `None` for a missing or out-of-range timestamp.
pub fn from_timestamp(t: Option<&Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?)
}
