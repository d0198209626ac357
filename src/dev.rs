//! `faro dev`: one command from a fresh machine to a running, seeded FARO.

use std::{str::FromStr, time::Duration};

use anyhow::Context;
use base64::Engine;
use clap::Args;
use faro_proto::conversations::v1::{self as pb, Channel};
use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};
use tokio_util::sync::CancellationToken;

use crate::{admin, serve};

const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/faro_dev";
/// Development-only secrets: printed, predictable, never for production.
const DEV_JWT_SECRET: &str = "faro-dev-jwt-secret-change-me-0123456789";
const DEV_KEY_BYTE: u8 = 0x42;
pub const DEMO_PHONE_NUMBER_ID: &str = "100000000000001";
const DEMO_META_APP_ID: &str = "1000000000000001";
const DEMO_APP_SECRET: &str = "demo-app-secret";
const DEMO_VERIFY_TOKEN: &str = "demo-verify-token";

#[derive(Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub serve: serve::ServeArgs,
}

/// Creates the database if it does not exist yet.
async fn ensure_database(url: &str) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(url).context("DATABASE_URL")?;
    let name = options
        .get_database()
        .context("DATABASE_URL must name a database")?
        .to_owned();
    let mut admin = options.clone().database("postgres").connect().await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await?;
        tracing::info!(database = %name, "database created");
    }
    admin.close().await?;
    Ok(())
}

struct Demo {
    tenant_id: String,
    location_id: String,
}

async fn ensure_demo(url: &str) -> anyhow::Result<Demo> {
    let mut conversations = None;
    for _ in 0..100 {
        match admin::channel(url, &crate::mtls::TlsArgs::plaintext()).await {
            Ok(c) => {
                conversations = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let channel = conversations.context("conversations did not start")?;
    let mut conversations = faro_proto::client::conversations(channel.clone());
    let routes = conversations
        .resolve_channel_accounts(pb::ResolveChannelAccountsRequest {
            channel: Channel::Whatsapp.into(),
            external_account_ids: vec![DEMO_PHONE_NUMBER_ID.into()],
        })
        .await?
        .into_inner()
        .routes;
    if let Some(r) = routes.into_iter().next() {
        return Ok(Demo {
            tenant_id: r.tenant_id,
            location_id: r.location_id,
        });
    }
    let mut admin = faro_proto::client::admin(channel);
    let tenant = admin
        .create_tenant(pb::CreateTenantRequest {
            name: "Demo Agency".into(),
        })
        .await?
        .into_inner();
    let location = admin
        .create_location(pb::CreateLocationRequest {
            tenant_id: tenant.id.clone(),
            name: "Cancún".into(),
        })
        .await?
        .into_inner();
    let app = admin
        .create_meta_app(pb::CreateMetaAppRequest {
            meta_app_id: DEMO_META_APP_ID.into(),
            name: "FARO demo app".into(),
            app_secret: DEMO_APP_SECRET.into(),
            verify_token: DEMO_VERIFY_TOKEN.into(),
            owner_tenant_id: String::new(),
        })
        .await
        .context("creating the demo app (if it exists from a half-finished run, drop the faro_dev database)")?
        .into_inner();
    admin
        .connect_channel(pb::ConnectChannelRequest {
            tenant_id: tenant.id.clone(),
            location_id: location.id.clone(),
            channel: Channel::Whatsapp.into(),
            external_account_id: DEMO_PHONE_NUMBER_ID.into(),
            app_id: app.id,
            display_name: "Demo WhatsApp".into(),
            waba_id: String::new(),
        })
        .await?;
    Ok(Demo {
        tenant_id: tenant.id,
        location_id: location.id,
    })
}

/// A WhatsApp Cloud API text webhook as Meta sends it, to the demo number.
pub fn sample_webhook(message_id: &str, unix_seconds: i64, text: &str) -> String {
    whatsapp_text(DEMO_PHONE_NUMBER_ID, message_id, unix_seconds, text)
}

/// A WhatsApp Cloud API text webhook as Meta sends it, to `phone_number_id`.
pub fn whatsapp_text(
    phone_number_id: &str,
    message_id: &str,
    unix_seconds: i64,
    text: &str,
) -> String {
    serde_json::json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550000001", "phone_number_id": phone_number_id},
            "contacts": [{"profile": {"name": "Ana Cliente"}, "wa_id": "5215550001111"}],
            "messages": [{"from": "5215550001111", "id": message_id,
                          "timestamp": unix_seconds.to_string(), "type": "text",
                          "text": {"body": text}}]
        }}]}]
    })
    .to_string()
}

pub async fn run(mut args: DevArgs) -> anyhow::Result<()> {
    let s = &mut args.serve;
    // The demo is one process on loopback: plaintext, said out loud.
    if s.tls.ca.is_some() || s.tls.cert.is_some() || s.tls.key.is_some() {
        anyhow::bail!("faro dev runs plaintext on loopback; for mTLS run `faro all` with --tls-*");
    }
    s.tls.plaintext = true;
    let database_url = s
        .database_url
        .get_or_insert_with(|| DEFAULT_DATABASE_URL.into())
        .clone();
    if s.encryption_keys.is_empty() {
        let key = base64::engine::general_purpose::STANDARD.encode([DEV_KEY_BYTE; 32]);
        s.encryption_keys = vec![format!("dev:{key}")];
    }
    let jwt_secret = s
        .jwt_secret
        .get_or_insert_with(|| DEV_JWT_SECRET.into())
        .clone();
    s.migrate = true;
    // Every service's /metrics on loopback, unless placed elsewhere.
    for (addr, port) in [
        (&mut s.edge_metrics_listen, 9180),
        (&mut s.ingest_metrics_listen, 9181),
        (&mut s.conversations_metrics_listen, 9182),
        (&mut s.stream_metrics_listen, 9183),
    ] {
        addr.get_or_insert(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    ensure_database(&database_url).await?;

    let stop = CancellationToken::new();
    let mut services = {
        let args = args.serve.clone();
        let stop = stop.clone();
        use serve::Service::*;
        tokio::spawn(async move {
            serve::run_until(
                &[Conversations, Stream, Ingest, Edge],
                args,
                stop.cancelled_owned(),
            )
            .await
        })
    };
    let demo = tokio::select! {
        demo = ensure_demo(&args.serve.conversations_url) => demo?,
        done = &mut services => {
            return done.context("services task")?.and(Err(anyhow::anyhow!("services stopped")));
        }
    };
    let (token, _) = crate::agent_cli::issue(&crate::agent_cli::TokenArgs {
        tenant: demo.tenant_id.parse()?,
        sub: "demo-agent".into(),
        locations: vec![],
        ttl: 24 * 3600,
        jwt_secret: jwt_secret.clone(),
        issuer: args.serve.jwt_issuer.clone(),
        audience: args.serve.jwt_audience.clone(),
    })?;
    let now = chrono::Utc::now().timestamp();
    let body = sample_webhook(
        &format!("wamid.DEMO{now}"),
        now,
        "Hola! ¿Tienen disponibilidad este fin de semana? 🏖️",
    );
    let signature = faro_edge::sign_meta_payload(DEMO_APP_SECRET.as_bytes(), body.as_bytes());
    let edge = format!("http://{}", args.serve.edge_listen);
    let ws = format!("ws://{}/api/v1/messages/stream", args.serve.edge_listen);
    println!(
        "\nFARO is running (edge {edge}). Demo tenant {tenant}, location {location}.\n\n\
         1) Watch live events (in another terminal):\n\
         cargo run --release -- watch --url {ws} --token {token}\n\n\
         2) Post a signed WhatsApp webhook (posting it twice still stores it once):\n\
         curl -sS -X POST {edge}/api/v1/webhooks/whatsapp -H 'Content-Type: application/json' \
         -H 'X-Hub-Signature-256: {signature}' --data-binary '{body}'\n\n\
         3) Meta's verification handshake:\n\
         curl -sS '{edge}/api/v1/webhooks/whatsapp?hub.mode=subscribe&hub.verify_token={DEMO_VERIFY_TOKEN}&hub.challenge=42'\n\n\
         4) Metrics (Prometheus text): curl -sS http://{metrics}/metrics (edge; ingest, \
         conversations and stream on the next ports)\n\n\
         Agent JWT (24 h): {token}\n\
         Dev secrets are fixed and public: app secret {DEMO_APP_SECRET}, JWT secret {jwt_secret}.\n",
        tenant = demo.tenant_id,
        location = demo.location_id,
        metrics = args
            .serve
            .edge_metrics_listen
            .map_or_else(|| "-".to_owned(), |a| a.to_string()),
    );
    tokio::select! {
        () = serve::signal() => {
            stop.cancel();
            services.await.context("services task")?
        }
        done = &mut services => done.context("services task")?,
    }
}
