//! Rotating the encryption key online: conversations restarted with a new
//! sealing key first (old one still listed) keeps verifying webhooks, `ResealSecrets`
//! moves every sealed row to the new key, and then the old key can go.

use std::net::SocketAddr;

use base64::Engine;
use faro_proto::conversations::v1 as pb;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, Options, Tenant, whatsapp_text};

fn key(id: &str, byte: u8) -> String {
    format!(
        "{id}:{}",
        base64::engine::general_purpose::STANDARD.encode([byte; 32])
    )
}

/// conversations, in process, on the cluster's conversations address.
struct Conversations {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Conversations {
    async fn start(c: &Cluster, addr: SocketAddr, keys: Vec<String>) -> Self {
        let config = faro_conversations::Config {
            database_url: c.db.owner_url.clone(),
            app_database_url: None,
            encryption_keys: keys,
            db_max_connections: 4,
            pending_ttl: std::time::Duration::from_secs(3600),
            sweeper_database_url: None,
            operator_database_url: None,
            tls: None,
        };
        let listener = TcpListener::bind(addr)
            .await
            .expect("conversations' address");
        let stop = CancellationToken::new();
        let t = stop.clone();
        let task = tokio::spawn(async move {
            faro_conversations::run(config, listener, t)
                .await
                .expect("conversations runs");
        });
        Self { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.expect("conversations stops");
    }
}

/// A webhook for `t` the edge has not routed before (its route cache misses),
/// so conversations opens the app secret again; the status.
async fn webhook(c: &Cluster, t: &Tenant, id: &str) -> u16 {
    let body = whatsapp_text(t, id, "15551234567", "hello", 1_700_000_000);
    c.post_signed(&body, &t.app_secret).await.0
}

/// Meta's handshake (never cached): conversations opens the verify token.
async fn handshake(c: &Cluster, token: &str) -> u16 {
    let url = c.url(&format!(
        "/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=7"
    ));
    c.http
        .get(url)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

async fn key_ids(c: &Cluster) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT key_id FROM meta_apps UNION ALL
         SELECT send_key_id FROM channel_accounts WHERE send_key_id IS NOT NULL",
    )
    .fetch_all(&c.db.owner)
    .await
    .expect("key ids")
}

#[tokio::test]
async fn secrets_move_to_a_new_key_while_webhooks_keep_verifying() {
    let c = Cluster::start_with(Options {
        conversations: false,
        ..Options::default()
    })
    .await;
    let (a, b) = (key("ka", 1), key("kb", 2));
    let conv = Conversations::start(&c, c.conversations, vec![a.clone()]).await;
    let alpha = c.tenant("alpha").await;
    let beta = c.tenant("beta").await;
    let gamma = c.tenant("gamma").await;
    let account: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM channel_accounts WHERE external_account_id = $1")
            .bind(&alpha.phone_number_id)
            .fetch_one(&c.db.owner)
            .await
            .expect("alpha's account");
    faro_proto::client::replies(
        c.grpc(c.conversations, faro_proto::mtls::Identity::Operator)
            .await,
    )
    .set_channel_credential(pb::SetChannelCredentialRequest {
        tenant_id: alpha.id.clone(),
        channel_account_id: account.to_string(),
        credential: "send-token-alpha".into(),
        human_agent: false,
    })
    .await
    .expect("credential set");
    assert!(key_ids(&c).await.iter().all(|k| k == "ka"));
    conv.stop().await;

    // B seals from now on; A still opens what it sealed.
    let conv = Conversations::start(&c, c.conversations, vec![b.clone(), a.clone()]).await;
    assert_eq!(webhook(&c, &alpha, "wamid.rot-1").await, 200);
    assert_eq!(handshake(&c, "verify-alpha").await, 200);

    let mut admin = c.admin().await;
    let reseal = |batch_size| pb::ResealSecretsRequest { batch_size };
    let r = admin
        .reseal_secrets(reseal(1))
        .await
        .expect("reseal")
        .into_inner();
    assert_eq!(r.key_id, "kb");
    let counts: Vec<_> = r
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.resealed, t.failed))
        .collect();
    assert_eq!(
        counts,
        [("meta_apps", 3, 0), ("channel_accounts", 1, 0)],
        "every app and the one credential, in batches of one"
    );
    let ids = key_ids(&c).await;
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|k| k == "kb"), "{ids:?}");
    // Idempotent: nothing left to move.
    let again = admin
        .reseal_secrets(reseal(0))
        .await
        .expect("again")
        .into_inner();
    assert!(
        again
            .tables
            .iter()
            .all(|t| t.resealed == 0 && t.failed == 0)
    );
    assert_eq!(webhook(&c, &beta, "wamid.rot-2").await, 200);
    let bad = admin
        .reseal_secrets(reseal(100_000))
        .await
        .expect_err("too big");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    conv.stop().await;

    // A is gone: everything opens under B alone.
    let conv = Conversations::start(&c, c.conversations, vec![b.clone()]).await;
    assert_eq!(webhook(&c, &gamma, "wamid.rot-3").await, 200);
    assert_eq!(handshake(&c, "verify-alpha").await, 200);
    assert_eq!(handshake(&c, "verify-gamma").await, 200);
    let (kid, sealed): (String, Vec<u8>) = sqlx::query_as(
        "SELECT send_key_id, send_credential_enc FROM channel_accounts WHERE id = $1",
    )
    .bind(account)
    .fetch_one(&c.db.owner)
    .await
    .expect("credential");
    let only_b = faro_conversations::SecretBox::from_specs(&[b]).expect("key b");
    let aad = format!("channel_accounts/{account}/send_credential");
    assert_eq!(
        only_b
            .open(&kid, &sealed, aad.as_bytes())
            .expect("opens under b"),
        b"send-token-alpha"
    );
    c.drained().await;
    assert_eq!(c.count("SELECT count(*) FROM messages").await, 3);
    conv.stop().await;
    c.stop().await;
}
