//! Clients and bodies the tests use: an agent's WebSocket, fixtures, and a
//! WhatsApp webhook as Meta documents it.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::cluster::Tenant;

pub struct Ws(pub WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>);

impl Ws {
    /// The next JSON event; fails the test after 20 s (a hang, not a timing claim).
    pub async fn next_event(&mut self) -> serde_json::Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.0.next())
                .await
                .expect("an event within 20 s")
                .expect("socket open")
                .expect("frame");
            match frame {
                Message::Text(t) => return serde_json::from_str(&t).expect("event is JSON"),
                Message::Ping(p) => self.0.send(Message::Pong(p)).await.expect("pong"),
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

/// A fixture's bytes, exactly as a platform would post them.
pub fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("fixture {full}: {e}"))
}

/// A WhatsApp Cloud API text message webhook as Meta documents it.
pub fn whatsapp_text(tenant: &Tenant, message_id: &str, from: &str, text: &str, ts: i64) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": tenant.phone_number_id},
            "contacts": [{"profile": {"name": "Kerry Fisher"}, "wa_id": from}],
            "messages": [{"from": from, "id": message_id, "timestamp": ts.to_string(),
                          "type": "text", "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}
