//! Clients and bodies the tests use: an agent's WebSocket, fixtures, a
//! WhatsApp webhook as Meta documents it, and the cluster's HTTP and
//! WebSocket helpers.

use std::{net::SocketAddr, time::Duration};

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::cluster::{Cluster, JWT_SECRET, Tenant};

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

/// How a test speaks to the edge: webhooks, agents' tokens and sockets.
impl Cluster {
    /// Posts raw bytes to `/api/v1/webhooks/<platform>` with one extra header.
    pub async fn post_raw(
        &self,
        platform: &str,
        body: &[u8],
        header: (&str, &str),
    ) -> (u16, serde_json::Value) {
        let resp = self
            .http
            .post(self.url(&format!("/api/v1/webhooks/{platform}")))
            .header("content-type", "application/json")
            .header(header.0, header.1)
            .body(body.to_vec())
            .send()
            .await
            .expect("edge answers");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Posts a body to a Meta platform's webhook, signed with `secret`.
    pub async fn post_meta(&self, platform: &str, body: &[u8], secret: &str) -> u16 {
        let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body);
        self.post_raw(platform, body, ("x-hub-signature-256", &sig))
            .await
            .0
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.edge)
    }

    /// Posts a body to the WhatsApp webhook with the given signature header.
    pub async fn post_webhook(
        &self,
        body: &[u8],
        signature: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(self.url("/api/v1/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(s) = signature {
            req = req.header("x-hub-signature-256", s);
        }
        let resp = req.send().await.expect("edge answers");
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    /// Posts a body signed with `secret`, as Meta does.
    pub async fn post_signed(&self, body: &str, secret: &str) -> (u16, serde_json::Value) {
        let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
        self.post_webhook(body.as_bytes(), Some(&sig)).await
    }

    /// Posts a WhatsApp webhook signed with `secret` to the edge at `edge`
    /// (one of several replicas); returns the status.
    pub async fn post_signed_at(&self, edge: SocketAddr, body: &str, secret: &str) -> u16 {
        let sig = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
        self.http
            .post(format!("http://{edge}/api/v1/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(body.to_owned())
            .send()
            .await
            .expect("edge answers")
            .status()
            .as_u16()
    }

    pub fn token(&self, tenant: &str, exp_offset: i64) -> String {
        let exp = chrono::Utc::now().timestamp() + exp_offset;
        faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
            .expect("keys")
            .issue(&faro_edge::auth::Claims {
                sub: "agent-1".into(),
                tenant_id: tenant.parse().expect("uuid"),
                location_ids: None,
                exp: u64::try_from(exp).unwrap_or_default(),
            })
            .expect("token")
    }

    pub async fn websocket(&self, token: &str) -> Ws {
        self.websocket_at(self.edge, token).await
    }

    /// An agent's WebSocket to the edge at `edge` (one of several replicas).
    pub async fn websocket_at(&self, edge: SocketAddr, token: &str) -> Ws {
        let mut req = format!("ws://{edge}/api/v1/messages/stream")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        let (ws, resp) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket opens");
        assert_eq!(resp.status().as_u16(), 101);
        Ws(ws)
    }
}
