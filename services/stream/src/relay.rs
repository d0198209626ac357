//! `Relay`: ephemeral events (typing indicators) handed to every stream
//! process through the tenant's Redis channel.
//!
//! They are `PUBLISH`ed as they are, without a position: the hub delivers a
//! position-less event as it comes, so it never enters history, never shifts
//! the tenant's offsets and is never replayed to a client resuming later.
//! Going through Redis rather than straight to this process's hub is what lets
//! an agent on one edge (and stream process) see another's typing on another.

use faro_proto::{
    redis_keys,
    stream::v1::{Event, RelayRequest, TypingState, event::Kind, relay_request},
    to_timestamp,
};
use fred::{clients::Client, interfaces::PubsubInterface};
use prost::Message;
use tonic::Status;

/// An agent id (JWT `sub`) longer than this is refused: it travels in every
/// relayed frame.
const MAX_AGENT_LEN: usize = 256;

fn uuid_field(name: &str, value: &str) -> Result<(), Status> {
    uuid::Uuid::parse_str(value)
        .map(|_| ())
        .map_err(|_| Status::invalid_argument(format!("{name} must be a UUID")))
}

/// The event a request stands for, or what is wrong with it.
pub(crate) fn event(req: RelayRequest) -> Result<Event, Status> {
    uuid_field("tenant_id", &req.tenant_id)?;
    uuid_field("location_id", &req.location_id)?;
    let kind = match req.kind {
        Some(relay_request::Kind::Typing(t)) => {
            uuid_field("typing.conversation_id", &t.conversation_id)?;
            if t.agent.is_empty() || t.agent.len() > MAX_AGENT_LEN {
                return Err(Status::invalid_argument(format!(
                    "typing.agent must be 1..={MAX_AGENT_LEN} bytes"
                )));
            }
            if !matches!(
                TypingState::try_from(t.state),
                Ok(TypingState::Start | TypingState::Stop)
            ) {
                return Err(Status::invalid_argument(
                    "typing.state must be START or STOP",
                ));
            }
            Kind::Typing(t)
        }
        None => return Err(Status::invalid_argument("kind is required")),
    };
    Ok(Event {
        id: uuid::Uuid::new_v4().to_string(),
        tenant_id: req.tenant_id,
        location_id: req.location_id,
        published_at: Some(to_timestamp(chrono::Utc::now())),
        // No position: ephemeral.
        offset: 0,
        epoch: String::new(),
        // Typing is not traced.
        traceparent: String::new(),
        kind: Some(kind),
    })
}

/// Publishes the event on its tenant's channel, for every stream process.
pub(crate) async fn publish(redis: &Client, prefix: &str, event: &Event) -> Result<(), Status> {
    let channel = redis_keys::events_channel(prefix, &event.tenant_id);
    redis
        .publish::<(), _, _>(channel, event.encode_to_vec())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "relaying an ephemeral event failed");
            Status::unavailable("redis unavailable: not relayed")
        })
}

#[cfg(test)]
mod tests {
    use faro_proto::stream::v1::TypingIndicator;

    use super::*;

    const T: &str = "6f1c2a7e-8a55-4b0e-9d0e-2f3c4b5a6d7e";
    const L: &str = "0b7f6c9e-1d2e-4f3a-8b4c-5d6e7f8a9b0c";

    fn typing(conversation: &str, agent: &str, state: TypingState) -> RelayRequest {
        RelayRequest {
            tenant_id: T.into(),
            location_id: L.into(),
            kind: Some(relay_request::Kind::Typing(TypingIndicator {
                conversation_id: conversation.into(),
                agent: agent.into(),
                state: state.into(),
            })),
        }
    }

    #[test]
    fn a_relayed_event_has_no_position() {
        let e = event(typing(L, "agent-1", TypingState::Start)).expect("valid");
        assert_eq!((e.epoch.as_str(), e.offset), ("", 0));
        assert_eq!((e.tenant_id.as_str(), e.location_id.as_str()), (T, L));
        assert!(matches!(e.kind, Some(Kind::Typing(_))));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let long = "a".repeat(MAX_AGENT_LEN + 1);
        for bad in [
            typing("nope", "agent-1", TypingState::Stop),
            typing(L, "", TypingState::Stop),
            typing(L, &long, TypingState::Stop),
            typing(L, "agent-1", TypingState::Unspecified),
            RelayRequest {
                tenant_id: "x".into(),
                ..typing(L, "a", TypingState::Start)
            },
            RelayRequest {
                kind: None,
                ..typing(L, "a", TypingState::Start)
            },
        ] {
            let err = event(bad).expect_err("refused");
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
    }
}
