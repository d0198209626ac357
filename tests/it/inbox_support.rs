//! What the inbox tests share: a tenant with two locations (a WhatsApp number
//! each), agents' tokens with or without a location limit, messages posted
//! as Meta posts them, and the REST calls.

use faro_proto::conversations::v1::{
    Agent, Channel, CreateLocationRequest, conversations_service_client::ConversationsServiceClient,
};
use faro_proto::mtls::Identity;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cluster::{Cluster, JWT_SECRET, Tenant};

/// A tenant with locations `one` and `two`, each with its own number.
pub struct Shop {
    pub one: Tenant,
    pub two: Tenant,
}

impl Shop {
    pub fn id(&self) -> &str {
        &self.one.id
    }
}

pub async fn shop(c: &Cluster, name: &str) -> Shop {
    let one = c.tenant(name).await;
    let loc = c
        .admin()
        .await
        .create_location(CreateLocationRequest {
            tenant_id: one.id.clone(),
            name: format!("{name} branch"),
        })
        .await
        .expect("second location")
        .into_inner()
        .id;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!("secret2-{suffix}");
    let app = c
        .app(&format!("app2-{suffix}"), &secret, &format!("v2-{suffix}"))
        .await;
    let pn = format!("pn2-{name}-{}", &suffix[..8]);
    c.connect(&(one.id.clone(), loc.clone()), Channel::Whatsapp, &pn, &app)
        .await;
    let two = Tenant {
        id: one.id.clone(),
        location_id: loc,
        phone_number_id: pn,
        app_secret: secret,
    };
    Shop { one, two }
}

/// A customer's WhatsApp text, with the customer's name, as Meta posts it.
pub fn text(at: &Tenant, id: &str, from: &str, name: &str, body: &str, ts: i64) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001234", "phone_number_id": at.phone_number_id},
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [{"from": from, "id": id, "timestamp": ts.to_string(),
                          "type": "text", "text": {"body": body}}]
        }}]}]
    })
    .to_string()
}

pub async fn post(c: &Cluster, at: &Tenant, id: &str, from: &str, name: &str, body: &str, ts: i64) {
    let (status, _) = c
        .post_signed(&text(at, id, from, name, body, ts), &at.app_secret)
        .await;
    assert_eq!(status, 200, "webhook {id} accepted");
}

/// A JWT for agent `sub` of `tenant`, limited to `locations` when given.
pub fn token(tenant: &str, sub: &str, locations: Option<&[&str]>) -> String {
    let exp = chrono::Utc::now().timestamp() + 600;
    faro_edge::auth::JwtKeys::new(JWT_SECRET.as_bytes())
        .expect("keys")
        .issue(&faro_edge::auth::Claims {
            sub: sub.into(),
            tenant_id: tenant.parse().expect("uuid"),
            location_ids: locations.map(|l| l.iter().map(|x| x.parse().expect("uuid")).collect()),
            exp: u64::try_from(exp).unwrap_or_default(),
        })
        .expect("token")
}

pub async fn agent(c: &Cluster, tenant: &str, id: &str, locations: &[&str]) {
    c.admin()
        .await
        .upsert_agent(Agent {
            tenant_id: tenant.into(),
            id: id.into(),
            name: format!("Agent {id}"),
            role: "agent".into(),
            location_ids: locations.iter().map(|l| (*l).to_owned()).collect(),
            disabled: false,
        })
        .await
        .expect("agent");
}

/// The conversations service as the edge calls it.
pub async fn grpc(c: &Cluster) -> ConversationsServiceClient<tonic::transport::Channel> {
    ConversationsServiceClient::new(c.grpc(c.conversations, Identity::Edge).await)
}

pub struct Answer {
    pub status: StatusCode,
    pub etag: Option<String>,
    pub body: Value,
}

/// One REST call to the edge with `token`.
pub async fn call(
    c: &Cluster,
    method: Method,
    path: &str,
    token: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> Answer {
    let mut req = c.http.request(method, c.url(path)).bearer_auth(token);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("edge answers");
    let status = r.status();
    let etag = r
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.json().await.unwrap_or(Value::Null);
    Answer { status, etag, body }
}

pub async fn get(c: &Cluster, path: &str, token: &str) -> Answer {
    call(c, Method::GET, path, token, &[], None).await
}

/// Customer ids of a list answer, in order.
pub fn customers(body: &Value) -> Vec<String> {
    body["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| c["customer_id"].as_str().expect("customer_id").to_owned())
        .collect()
}

/// The refusal's message, which must name `field`.
pub fn names(a: &Answer, field: &str) {
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{field}: {}", a.body);
    let m = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(m.contains(field), "the refusal names {field}: {m}");
}
