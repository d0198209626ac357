//! Inputs `scripts/schemathesis` found the edge answering with a 5xx. Each
//! must be a 4xx with a JSON body naming the problem, and change nothing.

use faro_proto::conversations::v1::{
    Channel, ResolveChannelAccountsRequest,
    conversations_service_client::ConversationsServiceClient,
};
use serde_json::json;

use crate::{clients::whatsapp_text, cluster::Cluster};

/// Postgres cannot store a NUL in text, so an account id holding one cannot be
/// connected: it names no account, rather than failing the routing lookup
/// (it was a 500 from conversations' "invalid byte sequence").
#[tokio::test]
async fn an_account_id_with_a_nul_byte_names_no_account_rather_than_a_500() {
    let c = Cluster::start().await;
    let t = c.tenant("nul").await;
    let well_formed = format!("sha256={}", "0".repeat(64));
    let whatsapp =
        json!({"entry": [{"changes": [{"value": {"metadata": {"phone_number_id": "1\u{0}2"}}}]}]});
    let messaging = json!({"entry": [{"id": "\u{0}"}]});
    let ycloud = json!({"whatsappInboundMessage": {"to": "+1\u{0}"}});
    for (platform, body, header) in [
        ("whatsapp", &whatsapp, "x-hub-signature-256"),
        ("messenger", &messaging, "x-hub-signature-256"),
        ("instagram", &messaging, "x-hub-signature-256"),
        ("ycloud", &ycloud, "ycloud-signature"),
    ] {
        let signature = if platform == "ycloud" {
            faro_edge::sign_ycloud(b"secret", chrono::Utc::now().timestamp(), b"x")
        } else {
            well_formed.clone()
        };
        let (status, body) = c
            .post_raw(platform, body.to_string().as_bytes(), (header, &signature))
            .await;
        assert_eq!(status, 401, "{platform}: {body}");
        assert_eq!(
            body["error"]["code"], "unknown_account",
            "{platform}: {body}"
        );
    }
    // Beside a real account, such an id does not spoil the delivery.
    let mut body: serde_json::Value = serde_json::from_str(&whatsapp_text(
        &t,
        "wamid.NUL1",
        "34600000001",
        "hola",
        1_700_000_000,
    ))
    .expect("JSON");
    body["entry"][0]["changes"]
        .as_array_mut()
        .expect("changes")
        .push(json!({"field": "messages", "value": {"metadata": {"phone_number_id": "9\u{0}"}}}));
    let (status, answer) = c.post_signed(&body.to_string(), &t.app_secret).await;
    assert_eq!(status, 200, "{answer}");
    c.stop().await;
}

/// The same id asked of conversations directly (any caller of the lookup):
/// no route, not an internal error.
#[tokio::test]
async fn conversations_resolves_an_id_with_a_nul_byte_to_no_route() {
    let c = Cluster::start().await;
    let t = c.tenant("nul-grpc").await;
    let mut api = ConversationsServiceClient::connect(format!("http://{}", c.conversations))
        .await
        .expect("conversations");
    for ids in [
        vec!["1\u{0}".to_owned()],
        vec!["1\u{0}".to_owned(), t.phone_number_id.clone()],
    ] {
        let routes = api
            .resolve_channel_accounts(ResolveChannelAccountsRequest {
                channel: Channel::Whatsapp.into(),
                external_account_ids: ids.clone(),
            })
            .await
            .unwrap_or_else(|s| panic!("{ids:?}: {s}"))
            .into_inner()
            .routes;
        let found: Vec<_> = routes
            .iter()
            .map(|r| r.external_account_id.as_str())
            .collect();
        let expected: Vec<&str> = ids.iter().skip(1).map(String::as_str).collect();
        assert_eq!(found, expected, "{ids:?}");
    }
    c.stop().await;
}
