//! What the reply tests share: a cluster whose ingest sends to a fake
//! platform, and a thread on each platform opened by a real signed webhook.

use std::time::Duration;

use faro_proto::conversations::v1::{self as pb, Channel};
use fred::interfaces::LuaInterface;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::{
    cluster::{Cluster, Options},
    fake_platform::FakePlatform,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    WhatsApp,
    Messenger,
    Instagram,
    YCloud,
}

pub struct Setup {
    pub cluster: Cluster,
    pub fake: FakePlatform,
}

/// A conversation opened by the customer's message `age` ago.
pub struct Thread {
    pub tenant: String,
    pub account: String,
    /// Meta's id of the app the account is connected with.
    pub app: String,
    pub secret: String,
    pub conversation: String,
    pub customer: String,
    pub credential: String,
    pub token: String,
}

pub async fn start() -> Setup {
    start_with(3).await
}

/// With `attempts` sends per reply before a transient failure fails it.
pub async fn start_with(attempts: u32) -> Setup {
    let fake = FakePlatform::start().await;
    let send = faro_ingest::SendConfig {
        graph_base_url: fake.url(),
        graph_api_version: "v23.0".into(),
        ycloud_base_url: format!("{}/v2", fake.url()),
        timeout_ms: 2_000,
        attempts,
        retry_base_ms: 20,
        retry_max_ms: 100,
        concurrency: 64,
    };
    let cluster = Cluster::start_with(Options {
        send: Some(send),
        ..Options::default()
    })
    .await;
    Setup { cluster, fake }
}

fn inbound(
    p: Platform,
    account: &str,
    customer: &str,
    mid: &str,
    at: chrono::DateTime<chrono::Utc>,
) -> Value {
    let ms = at.timestamp_millis();
    match p {
        Platform::WhatsApp => {
            json!({"object": "whatsapp_business_account", "entry": [{"id": "WABA-1",
            "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": account},
            "contacts": [{"profile": {"name": "Kerry"}, "wa_id": customer}],
            "messages": [{"from": customer, "id": mid, "timestamp": at.timestamp().to_string(),
                          "type": "text", "text": {"body": "hello"}}]}}]}]})
        }
        Platform::Messenger | Platform::Instagram => json!({
            "object": if p == Platform::Messenger { "page" } else { "instagram" },
            "entry": [{"id": account, "time": ms, "messaging": [{"sender": {"id": customer},
                "recipient": {"id": account}, "timestamp": ms, "message": {"mid": mid, "text": "hello"}}]}]}),
        Platform::YCloud => {
            json!({"id": format!("evt-{mid}"), "type": "whatsapp.inbound_message.received",
            "apiVersion": "v2", "createTime": at.to_rfc3339(),
            "whatsappInboundMessage": {"id": format!("yc-{mid}"), "wamid": mid, "wabaId": "WABA-Y",
                "from": customer, "customerProfile": {"name": "Kerry"}, "to": account,
                "sendTime": at.to_rfc3339(), "type": "text", "text": {"body": "hello"}}})
        }
    }
}

impl Setup {
    /// A tenant whose `p` account has a credential (and HUMAN_AGENT when
    /// `human_agent`), and a thread whose customer last wrote `age` ago.
    pub async fn thread(&self, p: Platform, human_agent: bool, age: chrono::Duration) -> Thread {
        let c = &self.cluster;
        let suffix = Uuid::new_v4().simple().to_string();
        let (tenant, location) = c.bare_tenant(&format!("t-{}", &suffix[..8])).await;
        let secret = format!("secret-{suffix}");
        let meta_app = format!("app-{suffix}");
        let app = c.app(&meta_app, &secret, "verify").await;
        let (channel, account, customer) = match p {
            Platform::WhatsApp => (
                Channel::Whatsapp,
                format!("pn-{}", &suffix[..10]),
                "15551230000".to_owned(),
            ),
            Platform::Messenger => (
                Channel::FacebookMessenger,
                format!("page-{}", &suffix[..10]),
                "psid-1".to_owned(),
            ),
            Platform::Instagram => (
                Channel::InstagramDm,
                format!("ig-{}", &suffix[..10]),
                "igsid-1".to_owned(),
            ),
            Platform::YCloud => (
                Channel::Whatsapp,
                format!(
                    "+1555{:07}",
                    u64::from_str_radix(&suffix[..7], 16).expect("hex") % 10_000_000
                ),
                "+16505551234".to_owned(),
            ),
        };
        let connected = c
            .admin()
            .await
            .connect_channel(pb::ConnectChannelRequest {
                tenant_id: tenant.clone(),
                location_id: location.clone(),
                channel: channel.into(),
                external_account_id: account.clone(),
                app_id: app,
                display_name: String::new(),
                waba_id: String::new(),
            })
            .await
            .expect("connect")
            .into_inner();
        let credential = format!("token-{suffix}");
        let info = faro_proto::client::replies(
            c.grpc(c.conversations, faro_proto::mtls::Identity::Operator)
                .await,
        )
        .set_channel_credential(pb::SetChannelCredentialRequest {
            tenant_id: tenant.clone(),
            channel_account_id: connected.id,
            credential: credential.clone(),
            human_agent,
        })
        .await
        .expect("credential set")
        .into_inner();
        assert!(info.has_credential);
        let body = inbound(
            p,
            &account,
            &customer,
            &format!("in-{suffix}"),
            chrono::Utc::now() - age,
        )
        .to_string();
        let status = match p {
            Platform::YCloud => {
                let sig = faro_edge::sign_ycloud(
                    secret.as_bytes(),
                    chrono::Utc::now().timestamp(),
                    body.as_bytes(),
                );
                c.post_raw("ycloud", body.as_bytes(), ("ycloud-signature", &sig))
                    .await
                    .0
            }
            Platform::WhatsApp => c.post_meta("whatsapp", body.as_bytes(), &secret).await,
            Platform::Messenger => c.post_meta("facebook", body.as_bytes(), &secret).await,
            Platform::Instagram => c.post_meta("instagram", body.as_bytes(), &secret).await,
        };
        assert_eq!(status, 200, "inbound webhook accepted");
        c.drained().await;
        let conversation: String =
            sqlx::query_scalar("SELECT id::text FROM conversations WHERE tenant_id = $1::uuid")
                .bind(&tenant)
                .fetch_one(&c.db.owner)
                .await
                .expect("the inbound message opened a thread");
        Thread {
            token: c.token(&tenant, 3600),
            tenant,
            account,
            app: meta_app,
            secret,
            conversation,
            customer,
            credential,
        }
    }

    /// POSTs a reply as the thread's agent: (status, body).
    pub async fn reply(&self, t: &Thread, key: &str, body: Value) -> (u16, Value) {
        self.reply_to(&t.token, &t.conversation, key, body).await
    }

    pub async fn reply_to(
        &self,
        token: &str,
        conversation: &str,
        key: &str,
        body: Value,
    ) -> (u16, Value) {
        let r = self
            .cluster
            .http
            .post(
                self.cluster
                    .url(&format!("/api/v1/conversations/{conversation}/messages")),
            )
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&body)
            .send()
            .await
            .expect("edge answers");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// A message's status, status error and platform id, once its status is
    /// `want` (at most 10 s).
    pub async fn wait_status(&self, id: &str, want: &str) -> (String, Option<Value>, String) {
        let mut last = None;
        for _ in 0..200 {
            let row: (Option<String>, Option<Value>, String) = sqlx::query_as(
                "SELECT status, status_error, channel_message_id FROM messages WHERE id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&self.cluster.db.owner)
            .await
            .expect("message row");
            if row.0.as_deref() == Some(want) {
                return (want.to_owned(), row.1, row.2);
            }
            last = Some(row);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("message {id} never reached {want}: {last:?}");
    }

    /// Waits until no reply is queued or in a worker's hands.
    pub async fn replies_drained(&self) {
        let key = faro_ingest::Keys::new(&self.cluster.prefix).replies;
        for _ in 0..200 {
            let left: i64 = self
                .cluster
                .redis
                .eval(
                    "return redis.call('XLEN', KEYS[1])",
                    vec![key.clone()],
                    Vec::<String>::new(),
                )
                .await
                .expect("xlen");
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("replies did not drain within 10 s");
    }

    /// Rows in the thread.
    pub async fn count_messages(&self, t: &Thread) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM messages WHERE conversation_id = $1::uuid")
            .bind(&t.conversation)
            .fetch_one(&self.cluster.db.owner)
            .await
            .expect("count")
    }
}
