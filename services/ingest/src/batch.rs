//! What a batch of jobs becomes on its way to conversations: events stamped
//! with their arrival, store calls of bounded size, and the dead-letter
//! description of the parts that cannot be stored.

use faro_proto::conversations::v1::{Arrival, ChannelEvent};

use crate::parse;

/// The most events sent to conversations in one call, by count and by size.
const STORE_CHUNK: usize = 1000;
const STORE_CHUNK_BYTES: usize = faro_proto::MAX_GRPC_MESSAGE_BYTES / 2;

/// Stamps each event with its place in the queue: its job's stream id
/// (`millis-sequence`) and its index in the job. The same on every
/// redelivery, so conversations can break timestamp ties by arrival.
pub(crate) fn stamp_arrivals(job_id: &str, events: &mut [ChannelEvent]) {
    let Some((millis, sequence)) = job_id.split_once('-') else {
        return;
    };
    let (Ok(millis), Ok(sequence)) = (millis.parse(), sequence.parse()) else {
        return;
    };
    for (index, e) in events.iter_mut().enumerate() {
        e.arrival = Some(Arrival {
            millis,
            sequence,
            index: u32::try_from(index).unwrap_or(u32::MAX),
        });
    }
}

/// Splits a batch into store calls of at most `STORE_CHUNK` events and about
/// `STORE_CHUNK_BYTES`: a batch of large webhooks must not exceed what
/// conversations decodes, or the jobs would be retried forever.
pub(crate) fn chunks(events: &[ChannelEvent]) -> Vec<&[ChannelEvent]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in events.iter().enumerate() {
        let len = prost::Message::encoded_len(e);
        if i > start && (i - start == STORE_CHUNK || bytes + len > STORE_CHUNK_BYTES) {
            out.push(&events[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += len;
    }
    if start < events.len() {
        out.push(&events[start..]);
    }
    out
}

/// The parts listed in a dead letter; the job is kept whole beside them, so a
/// payload of thousands of bad parts is described by its first ones.
const REJECTED_LISTED: usize = 100;

pub(crate) fn rejected_summary(rejected: &[parse::Rejected]) -> String {
    let first = rejected.first().map_or("", |r| r.reason.as_str());
    match rejected.len() {
        1 => format!("a part of the payload was not stored: {first}"),
        n => format!("{n} parts of the payload were not stored; the first: {first}"),
    }
}

pub(crate) fn rejected_json(rejected: &[parse::Rejected]) -> String {
    let parts: Vec<serde_json::Value> = rejected
        .iter()
        .take(REJECTED_LISTED)
        .map(|r| {
            let part = serde_json::from_str(&r.raw).unwrap_or(serde_json::Value::Null);
            serde_json::json!({"reason": r.reason, "part": part})
        })
        .collect();
    serde_json::Value::Array(parts).to_string()
}

#[cfg(test)]
mod tests {
    use faro_proto::conversations::v1::{InboundMessage, channel_event::Kind};

    use super::*;

    fn event(text_bytes: usize) -> ChannelEvent {
        ChannelEvent {
            kind: Some(Kind::Message(InboundMessage {
                text: "x".repeat(text_bytes),
                ..Default::default()
            })),
            arrival: None,
        }
    }

    #[test]
    fn chunks_by_count_and_by_size_and_keeps_every_event() {
        let small: Vec<_> = (0..2500).map(|_| event(10)).collect();
        let sizes: Vec<usize> = chunks(&small).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);

        let big: Vec<_> = (0..5).map(|_| event(3 * 1024 * 1024)).collect();
        let parts = chunks(&big);
        assert_eq!(parts.iter().map(|c| c.len()).sum::<usize>(), 5);
        for part in parts {
            let bytes: usize = part.iter().map(prost::Message::encoded_len).sum();
            assert!(bytes <= STORE_CHUNK_BYTES, "{bytes}");
        }
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn arrivals_follow_the_stream_id_then_the_place_in_the_job() {
        let mut events = vec![event(1), event(1)];
        stamp_arrivals("1764486290123-7", &mut events);
        let arrivals: Vec<_> = events
            .iter()
            .map(|e| e.arrival.as_ref().map(|a| (a.millis, a.sequence, a.index)))
            .collect();
        assert_eq!(
            arrivals,
            [
                Some((1_764_486_290_123, 7, 0)),
                Some((1_764_486_290_123, 7, 1))
            ]
        );
        let mut odd = vec![event(1)];
        stamp_arrivals("not-an-id", &mut odd);
        assert!(
            odd[0].arrival.is_none(),
            "no arrival rather than a wrong one"
        );
    }
}
