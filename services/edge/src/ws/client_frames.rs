//! What agents may send on the WebSocket, and the frames answering it.
//!
//! Client frames are JSON text frames with a `type`:
//! - `{"type":"ping","id":…}` → `{"type":"pong","id":…,"time":"…"}`, an
//!   application-level heartbeat beside WebSocket ping/pong (which a browser's
//!   script cannot see or send);
//! - `{"type":"typing","conversation_id":"<uuid>","state":"start"|"stop"}`:
//!   relayed to the tenant's other agents who may see that conversation
//!   (`super::typing`);
//! - `{"type":"send","conversation_id":"<uuid>","idempotency_key":"…","text":…}`
//!   (or `template`, `media`, `reply_to_message_id`: the body of `POST
//!   /api/v1/conversations/{id}/messages`): an agent's reply, answered with
//!   `{"type":"sent","message":…,"window":…,"replayed":…}` or an `error`
//!   frame whose `code` is the HTTP route's (`window_closed`, …).
//!
//! `id` is optional on every frame (a string of at most 128 bytes, or an
//! integer) and echoed in the frame that answers it. A frame that cannot be
//! understood is answered with `{"type":"error","code":…,"message":…}` naming
//! the problem; the socket stays open. Unknown fields are ignored, so clients
//! may send fields a later edge understands.

use bytes::Bytes;
use chrono::SecondsFormat;
use fastwebsockets::OpCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::typing::Typing;
use crate::replies::{SendBody, Sender, answer_json};

/// The longest `id` string echoed back.
const MAX_ID_LEN: usize = 128;

/// Whether an agent starts or stops typing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypingState {
    Start,
    Stop,
}

/// A client frame understood.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClientFrame {
    Ping {
        id: Option<Value>,
    },
    Typing {
        id: Option<Value>,
        conversation_id: Uuid,
        state: TypingState,
    },
    Send {
        id: Option<Value>,
        conversation_id: String,
        /// The frame without `type`, `id` and `conversation_id`: a reply's body.
        body: Map<String, Value>,
    },
}

/// Why a client frame was refused; answered with an `error` frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FrameError {
    pub code: &'static str,
    pub message: String,
    /// The refused frame's `id`, when it had a usable one.
    pub id: Option<Value>,
}

impl FrameError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
        }
    }

    fn with_id(mut self, id: Option<Value>) -> Self {
        self.id = id;
        self
    }

    /// The `error` frame telling the client what was wrong.
    pub(crate) fn frame(&self) -> Bytes {
        let mut f = json!({"type": "error", "code": self.code, "message": self.message});
        if let (Some(id), Value::Object(f)) = (&self.id, &mut f) {
            f.insert("id".into(), id.clone());
        }
        Bytes::from(f.to_string())
    }
}

fn id_of(frame: &Map<String, Value>) -> Result<Option<Value>, FrameError> {
    match frame.get("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_ID_LEN => Ok(Some(Value::String(s.clone()))),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(Value::Number(n.clone()))),
        Some(_) => Err(FrameError::new(
            "invalid_id",
            format!("`id` must be a string of at most {MAX_ID_LEN} bytes, or an integer"),
        )),
    }
}

/// Reads one text frame's payload.
pub(crate) fn parse(payload: &[u8]) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        FrameError::new(
            "invalid_json",
            format!("a client frame is one JSON object: {e}"),
        )
    })?;
    let Value::Object(frame) = value else {
        return Err(FrameError::new(
            "invalid_frame",
            "a client frame is a JSON object with a `type`",
        ));
    };
    let id = id_of(&frame)?;
    let refused = |e: FrameError| e.with_id(id.clone());
    match frame.get("type") {
        Some(Value::String(t)) if t == "ping" => Ok(ClientFrame::Ping { id }),
        Some(Value::String(t)) if t == "typing" => {
            let conversation_id = frame
                .get("conversation_id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| {
                    refused(FrameError::new(
                        "invalid_conversation_id",
                        "`conversation_id` must be a conversation's UUID",
                    ))
                })?;
            let state = match frame.get("state").and_then(Value::as_str) {
                Some("start") => TypingState::Start,
                Some("stop") => TypingState::Stop,
                _ => {
                    return Err(refused(FrameError::new(
                        "invalid_state",
                        "`state` must be \"start\" or \"stop\"",
                    )));
                }
            };
            Ok(ClientFrame::Typing {
                id,
                conversation_id,
                state,
            })
        }
        Some(Value::String(t)) if t == "send" => {
            let mut body = frame.clone();
            body.remove("type");
            body.remove("id");
            let conversation_id = match body.remove("conversation_id") {
                Some(Value::String(c)) => c,
                _ => {
                    return Err(refused(FrameError::new(
                        "invalid_conversation_id",
                        "`conversation_id` must be a conversation's UUID",
                    )));
                }
            };
            Ok(ClientFrame::Send {
                id,
                conversation_id,
                body,
            })
        }
        Some(Value::String(t)) => {
            let shown: String = t.chars().take(64).collect();
            Err(refused(FrameError::new(
                "unknown_type",
                format!("unknown frame type {shown:?}: send \"ping\", \"typing\" or \"send\""),
            )))
        }
        _ => Err(refused(FrameError::new(
            "invalid_frame",
            "a client frame needs a string `type`",
        ))),
    }
}

/// The answer to a `ping`.
pub(crate) fn pong(id: Option<&Value>) -> Bytes {
    let time = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let mut f = json!({"type": "pong", "time": time});
    if let (Some(id), Value::Object(f)) = (id, &mut f) {
        f.insert("id".into(), id.clone());
    }
    Bytes::from(f.to_string())
}

/// One socket's client frames, handled in order by its reader.
pub(crate) struct ClientFrames {
    typing: Typing,
    sender: Option<Sender>,
}

/// Sends a `send` frame's reply; the `sent` frame, or the error.
async fn send(
    sender: &Sender,
    id: Option<Value>,
    conversation_id: &str,
    body: Map<String, Value>,
) -> Bytes {
    let refused =
        |code, message: String| FrameError::new(code, message).with_id(id.clone()).frame();
    let body: SendBody = match serde_json::from_value(Value::Object(body)) {
        Ok(b) => b,
        Err(e) => return refused("invalid_reply", format!("send frame: {e}")),
    };
    match sender.send(conversation_id, None, body).await {
        Ok(answer) => {
            let mut f = answer_json(&answer);
            f["type"] = json!("sent");
            if let Some(id) = id {
                f["id"] = id;
            }
            Bytes::from(f.to_string())
        }
        Err(e) => refused(e.code, e.message),
    }
}

impl ClientFrames {
    pub(crate) fn new(typing: Typing) -> Self {
        Self {
            typing,
            sender: None,
        }
    }

    /// Lets this socket's agent send replies.
    pub(crate) fn with_sender(mut self, sender: Sender) -> Self {
        self.sender = Some(sender);
        self
    }

    /// Handles one data frame; returns the text frame to answer with, if any.
    pub(crate) async fn on_frame(
        &mut self,
        opcode: OpCode,
        fin: bool,
        payload: &[u8],
    ) -> Option<Bytes> {
        match opcode {
            // A fragmented message is refused once, at its first frame.
            OpCode::Continuation => None,
            OpCode::Text | OpCode::Binary if !fin => Some(
                FrameError::new(
                    "fragmented_frame",
                    "send each client frame as one unfragmented text frame",
                )
                .frame(),
            ),
            OpCode::Binary => {
                Some(FrameError::new("binary_frame", "client frames are JSON text frames").frame())
            }
            OpCode::Text => match parse(payload) {
                Err(e) => Some(e.frame()),
                Ok(ClientFrame::Ping { id }) => Some(pong(id.as_ref())),
                Ok(ClientFrame::Typing {
                    id,
                    conversation_id,
                    state,
                }) => match self.typing.relay(conversation_id, state).await {
                    Ok(_) => None,
                    Err(e) => Some(e.with_id(id).frame()),
                },
                Ok(ClientFrame::Send {
                    id,
                    conversation_id,
                    body,
                }) => match &self.sender {
                    Some(sender) => Some(send(sender, id, &conversation_id, body).await),
                    None => Some(
                        FrameError::new("unavailable", "replies are not available on this socket")
                            .with_id(id)
                            .frame(),
                    ),
                },
            },
            // Control frames are the reader's.
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: &str = "3f0e4b8a-2c1d-4e5f-9a6b-7c8d9e0f1a2b";

    fn code(payload: &str) -> &'static str {
        parse(payload.as_bytes()).expect_err("refused").code
    }

    #[test]
    fn pings_with_and_without_an_id() {
        assert_eq!(
            parse(br#"{"type":"ping"}"#),
            Ok(ClientFrame::Ping { id: None })
        );
        assert_eq!(
            parse(br#"{"type":"ping","id":"p-1","extra":true}"#),
            Ok(ClientFrame::Ping {
                id: Some(json!("p-1"))
            })
        );
        assert_eq!(
            parse(br#"{"type":"ping","id":7}"#),
            Ok(ClientFrame::Ping { id: Some(json!(7)) })
        );
    }

    #[test]
    fn typing_start_and_stop() {
        let frame = format!(r#"{{"type":"typing","conversation_id":"{CONV}","state":"start"}}"#);
        assert_eq!(
            parse(frame.as_bytes()),
            Ok(ClientFrame::Typing {
                id: None,
                conversation_id: CONV.parse().expect("uuid"),
                state: TypingState::Start,
            })
        );
        let frame =
            format!(r#"{{"type":"typing","conversation_id":"{CONV}","state":"stop","id":"t"}}"#);
        assert!(matches!(
            parse(frame.as_bytes()),
            Ok(ClientFrame::Typing {
                state: TypingState::Stop,
                ..
            })
        ));
    }

    #[test]
    fn each_bad_frame_is_named() {
        assert_eq!(code("{"), "invalid_json");
        assert_eq!(code(""), "invalid_json");
        assert_eq!(code("\"ping\""), "invalid_frame");
        assert_eq!(code("[1]"), "invalid_frame");
        assert_eq!(code("{}"), "invalid_frame");
        assert_eq!(code(r#"{"type":3}"#), "invalid_frame");
        assert_eq!(code(r#"{"type":"subscribe"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"ping","id":{"a":1}}"#), "invalid_id");
        assert_eq!(code(r#"{"type":"ping","id":1.5}"#), "invalid_id");
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(
            code(&format!(r#"{{"type":"ping","id":"{long}"}}"#)),
            "invalid_id"
        );
        assert_eq!(
            code(r#"{"type":"typing","conversation_id":"nope","state":"start"}"#),
            "invalid_conversation_id"
        );
        assert_eq!(
            code(r#"{"type":"typing","state":"start"}"#),
            "invalid_conversation_id"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"typing","conversation_id":"{CONV}"}}"#
            )),
            "invalid_state"
        );
        assert_eq!(
            code(&format!(
                r#"{{"type":"typing","conversation_id":"{CONV}","state":"paused"}}"#
            )),
            "invalid_state"
        );
        // Not UTF-8 is not JSON.
        assert_eq!(
            parse(&[0xff, 0xfe]).expect_err("refused").code,
            "invalid_json"
        );
    }

    #[test]
    fn errors_echo_a_usable_id_and_frames_are_json() {
        let e = parse(br#"{"type":"nope","id":"q"}"#).expect_err("refused");
        let f: Value = serde_json::from_slice(&e.frame()).expect("json");
        assert_eq!(f["type"], "error");
        assert_eq!(f["code"], "unknown_type");
        assert_eq!(f["id"], "q");
        let p: Value = serde_json::from_slice(&pong(Some(&json!(9)))).expect("json");
        assert_eq!(
            (p["type"].as_str(), p["id"].as_i64()),
            (Some("pong"), Some(9))
        );
        assert!(p["time"].is_string());
        let p: Value = serde_json::from_slice(&pong(None)).expect("json");
        assert!(p.get("id").is_none());
    }

    #[test]
    fn an_unknown_type_is_quoted_and_cut_short() {
        let long = "z".repeat(1000);
        let e = parse(format!(r#"{{"type":"{long}"}}"#).as_bytes()).expect_err("refused");
        assert!(e.message.len() < 200, "{}", e.message);
    }
}
