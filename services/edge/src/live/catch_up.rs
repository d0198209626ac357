//! A client's position, as it presents it, and the events it missed since.

use std::{collections::HashSet, sync::Arc};

use faro_proto::stream::v1::{HistoryRequest, Position};

use super::{Hub, LiveEvent};
use crate::error::ApiError;

/// Parses `<epoch>:<offset>` (the `id` of every event frame).
pub(crate) fn parse_position(s: &str) -> Result<Position, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            "invalid_position",
            "a position is <epoch>:<offset>, as in an event's `position` field",
        )
    };
    let (epoch, offset) = s.rsplit_once(':').ok_or_else(invalid)?;
    if epoch.is_empty() || epoch.len() > 64 {
        return Err(invalid());
    }
    Ok(Position {
        epoch: epoch.to_owned(),
        offset: offset.parse().map_err(|_| invalid())?,
    })
}

pub(crate) fn format_position(p: &Position) -> String {
    format!("{}:{}", p.epoch, p.offset)
}

/// Events replayed to a resuming client, and where live events take over.
pub(crate) enum CatchUp {
    Recovered {
        events: Vec<Arc<LiveEvent>>,
        /// The last position covered; live events at or before it are duplicates.
        upto: Position,
    },
    /// History no longer holds the position: the client reloads.
    NotRecovered,
}

/// A resuming client gets at most this many events replayed; further behind,
/// reloading from the API is cheaper than replaying.
const MAX_REPLAY: usize = 10_000;
const PAGE: u32 = 1_000;

/// The tenant's events after `since` (matching `locations`), from history.
pub(crate) async fn catch_up(
    hub: &Hub,
    tenant: &str,
    locations: &HashSet<String>,
    since: Position,
) -> Result<CatchUp, tonic::Status> {
    let mut events = Vec::new();
    let mut upto = since;
    loop {
        let page = hub
            .client()
            .history(HistoryRequest {
                tenant_id: tenant.to_owned(),
                location_ids: locations.iter().cloned().collect(),
                since: Some(upto.clone()),
                limit: PAGE,
            })
            .await?
            .into_inner();
        if !page.recovered {
            return Ok(CatchUp::NotRecovered);
        }
        let last = page.events.last().map(|e| Position {
            epoch: e.epoch.clone(),
            offset: e.offset,
        });
        events.extend(page.events.iter().filter_map(LiveEvent::render));
        if events.len() > MAX_REPLAY {
            return Ok(CatchUp::NotRecovered);
        }
        match (page.more, last) {
            (true, Some(last)) => upto = last,
            (_, last) => {
                // Nothing after the position for these locations: skip to the
                // tenant's latest, which later live events follow.
                upto = page.latest.or(last).unwrap_or(upto);
                return Ok(CatchUp::Recovered { events, upto });
            }
        }
    }
}

/// Whether a live event was already covered by the catch-up.
pub(crate) fn covered(upto: Option<&Position>, e: &LiveEvent) -> bool {
    upto.is_some_and(|p| p.epoch == e.epoch && e.offset <= p.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_bad_ones_are_refused() {
        let p = parse_position("01J9Z:42").expect("valid");
        assert_eq!((p.epoch.as_str(), p.offset), ("01J9Z", 42));
        assert_eq!(format_position(&p), "01J9Z:42");
        for bad in [
            "",
            "42",
            ":42",
            "e:",
            "e:-1",
            "e:x",
            &format!("{}:1", "e".repeat(65)),
        ] {
            assert!(parse_position(bad).is_err(), "{bad:?}");
        }
    }
}
