//! `faro loadgen publish`: marked events, and the wall-clock time each was
//! sent, for `faro loadgen report` to time the sockets against.
//!
//! `--via relay` hands a typing indicator (agent `<marker>-<n>`) to the
//! stream service's `Relay`: it goes through Redis to every stream process and
//! edge without touching ingest or Postgres, so what is timed is the fan-out.
//! `--via webhook` posts a signed WhatsApp text webhook whose text is
//! `<marker>-<n>` to an edge: the whole pipeline (edge, queue, ingest,
//! Postgres, publish, fan-out).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Args, ValueEnum};
use faro_proto::stream::v1::{RelayRequest, TypingIndicator, TypingState, relay_request};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{check_marker, marked_text, unix_micros, write_json};

#[derive(Clone, Copy, ValueEnum)]
enum Via {
    Relay,
    Webhook,
}

#[derive(Args)]
pub struct PublishArgs {
    /// Straight to the stream service (`relay`: the fan-out alone) or as a
    /// signed webhook to an edge (`webhook`: the whole pipeline).
    #[arg(long, value_enum, default_value = "relay")]
    via: Via,
    /// Events carry `<marker>-<n>`.
    #[arg(long, default_value = "loadgen")]
    marker: String,
    /// The `n` of the first event.
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// How many events, numbered from `--first`.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Pause between two events.
    #[arg(long = "interval-ms", default_value_t = 1000)]
    interval_ms: u64,
    /// Where the results go (JSON); standard output without it.
    #[arg(long)]
    out: Option<PathBuf>,

    /// `relay`: gRPC URL of a stream service.
    #[arg(
        long = "stream-url",
        env = "FARO_STREAM_URL",
        default_value = "http://127.0.0.1:7103"
    )]
    stream_url: String,
    /// `relay`: the tenant whose agents get the events.
    #[arg(long)]
    tenant: Option<uuid::Uuid>,
    /// `relay`: the location the events happen at.
    #[arg(long)]
    location: Option<uuid::Uuid>,
    #[command(flatten)]
    tls: crate::mtls::TlsArgs,

    /// `webhook`: the edge's address (host:port, plain HTTP).
    #[arg(long, default_value = "127.0.0.1:8080")]
    edge: SocketAddr,
    /// `webhook`: the Meta app's secret the body is signed with.
    #[arg(
        long = "app-secret",
        env = "FARO_LOADGEN_APP_SECRET",
        hide_env_values = true
    )]
    app_secret: Option<String>,
    /// `webhook`: the WhatsApp phone number id the messages are sent to.
    #[arg(long = "phone-number-id")]
    phone_number_id: Option<String>,
}

pub async fn run(args: PublishArgs) -> anyhow::Result<()> {
    check_marker(&args.marker)?;
    let mut sent = Vec::with_capacity(args.count);
    let mut acks = Vec::with_capacity(args.count);
    let publisher = Publisher::new(&args).await?;
    for n in args.first..args.first + args.count {
        if n > args.first {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        }
        let text = marked_text(&args.marker, n);
        let at = unix_micros();
        publisher.publish(&args, &text).await?;
        acks.push(unix_micros().saturating_sub(at));
        sent.push(json!({"n": n, "published_unix_us": at}));
    }
    let via = match args.via {
        Via::Relay => "relay",
        Via::Webhook => "webhook",
    };
    write_json(
        args.out.as_deref(),
        &json!({"via": via, "marker": args.marker, "events": sent, "ack_us": acks}),
    )
}

enum Publisher {
    Relay {
        client: faro_proto::stream::v1::stream_service_client::StreamServiceClient<
            faro_proto::client::Traced,
        >,
        tenant: String,
        location: String,
    },
    Webhook {
        secret: String,
        phone_number_id: String,
    },
}

impl Publisher {
    async fn new(args: &PublishArgs) -> anyhow::Result<Self> {
        Ok(match args.via {
            Via::Relay => {
                let channel = crate::mtls::connect(
                    "stream",
                    &args.stream_url,
                    &args.tls,
                    Duration::from_secs(30),
                )
                .await?;
                Self::Relay {
                    client: faro_proto::client::stream(channel),
                    tenant: args
                        .tenant
                        .context("--via relay needs --tenant")?
                        .to_string(),
                    location: args
                        .location
                        .context("--via relay needs --location")?
                        .to_string(),
                }
            }
            Via::Webhook => Self::Webhook {
                secret: args
                    .app_secret
                    .clone()
                    .context("--via webhook needs --app-secret")?,
                phone_number_id: args
                    .phone_number_id
                    .clone()
                    .context("--via webhook needs --phone-number-id")?,
            },
        })
    }

    async fn publish(&self, args: &PublishArgs, text: &str) -> anyhow::Result<()> {
        match self {
            Self::Relay {
                client,
                tenant,
                location,
            } => {
                client
                    .clone()
                    .relay(RelayRequest {
                        tenant_id: tenant.clone(),
                        location_id: location.clone(),
                        kind: Some(relay_request::Kind::Typing(TypingIndicator {
                            conversation_id: uuid::Uuid::new_v4().to_string(),
                            agent: text.to_owned(),
                            state: TypingState::Start.into(),
                        })),
                    })
                    .await
                    .context("relay")?;
            }
            Self::Webhook {
                secret,
                phone_number_id,
            } => {
                let now = chrono::Utc::now();
                let id = format!("wamid.LOADGEN.{}.{text}", now.timestamp_micros());
                let body = crate::dev::whatsapp_text(phone_number_id, &id, now.timestamp(), text);
                let signature = faro_edge::sign_meta_payload(secret.as_bytes(), body.as_bytes());
                post(args.edge, "/api/v1/webhooks/whatsapp", &signature, &body).await?;
            }
        }
        Ok(())
    }
}

/// One HTTP/1.1 POST on its own connection; fails unless the answer is 200.
async fn post(edge: SocketAddr, path: &str, signature: &str, body: &str) -> anyhow::Result<()> {
    let mut conn = tokio::net::TcpStream::connect(edge)
        .await
        .with_context(|| format!("connecting to {edge}"))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {edge}\r\nContent-Type: application/json\r\n\
         X-Hub-Signature-256: {signature}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(body.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .context("the edge did not answer within 30 s")??;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.lines().next().unwrap_or_default();
    anyhow::ensure!(
        status.starts_with("HTTP/1.1 200"),
        "the edge answered {status:?}"
    );
    Ok(())
}
