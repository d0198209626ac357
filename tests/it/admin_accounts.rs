//! Operators list a tenant's channel accounts (never a secret) and disable
//! one: its webhooks are then refused as from an unknown account.

use faro_proto::{
    conversations::v1::{self as pb, Channel, ResolveChannelAccountsRequest},
    mtls::Identity,
};

use crate::cluster::{Cluster, whatsapp_text};

#[tokio::test]
async fn a_disabled_account_no_longer_routes_and_lists_show_no_secret() {
    let c = Cluster::start().await;
    let a = c.tenant("alpha").await;
    let b = c.tenant("beta").await;
    let mut admin = c.admin().await;
    let list = |tenant: &str| pb::ListChannelAccountsRequest {
        tenant_id: tenant.into(),
    };
    let listed = admin
        .list_channel_accounts(list(&a.id))
        .await
        .expect("list")
        .into_inner();
    let [account] = listed.accounts.as_slice() else {
        panic!("alpha has one account: {listed:?}");
    };
    assert_eq!(account.external_account_id, a.phone_number_id);
    assert_eq!(account.channel(), Channel::Whatsapp);
    assert!(!account.disabled);
    assert!(!format!("{listed:?}").contains(&a.app_secret), "no secret");

    let disable = |tenant: &str, disabled| pb::SetChannelAccountDisabledRequest {
        tenant_id: tenant.into(),
        channel_account_id: account.id.clone(),
        disabled,
    };
    // Another tenant cannot touch it.
    let err = admin
        .set_channel_account_disabled(disable(&b.id, true))
        .await
        .expect_err("not beta's");
    assert_eq!(err.code(), tonic::Code::NotFound);
    let off = admin
        .set_channel_account_disabled(disable(&a.id, true))
        .await
        .expect("disable")
        .into_inner();
    assert!(off.disabled);
    assert!(
        admin
            .list_channel_accounts(list(&a.id))
            .await
            .expect("list")
            .into_inner()
            .accounts[0]
            .disabled
    );

    // Never routed before, so the edge's route cache has nothing to serve.
    let body = whatsapp_text(&a, "wamid.disabled-1", "15551234567", "hi", 1_700_000_000);
    let (status, json) = c.post_signed(&body, &a.app_secret).await;
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("unknown_account")),
        "{json}"
    );
    let beta = whatsapp_text(&b, "wamid.enabled-1", "15551234567", "hi", 1_700_000_000);
    assert_eq!(c.post_signed(&beta, &b.app_secret).await.0, 200);
    c.drained().await;
    assert_eq!(
        c.count("SELECT count(*) FROM messages").await,
        1,
        "only beta's"
    );

    // Enabled again, conversations routes it again (edges within their cache's life).
    let on = admin
        .set_channel_account_disabled(disable(&a.id, false))
        .await
        .expect("enable")
        .into_inner();
    assert!(!on.disabled);
    let routes = faro_proto::client::conversations(c.grpc(c.conversations, Identity::Edge).await)
        .resolve_channel_accounts(ResolveChannelAccountsRequest {
            channel: Channel::Whatsapp.into(),
            external_account_ids: vec![a.phone_number_id.clone()],
        })
        .await
        .expect("resolve")
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 1);
    c.stop().await;
}
