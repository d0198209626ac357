//! Operator tools: the admin RPCs (agent tokens and the watcher are in
//! `agent_cli.rs`). All print JSON.

use clap::{Args, Subcommand};
use faro_proto::conversations::v1::{
    self as pb, Channel, admin_service_client::AdminServiceClient,
};
use serde_json::json;
use uuid::Uuid;

#[derive(Args)]
pub struct Target {
    /// gRPC URL of the conversations service.
    #[arg(
        long = "conversations-url",
        env = "FARO_CONVERSATIONS_URL",
        default_value = "http://127.0.0.1:7102"
    )]
    pub conversations_url: String,
    /// The operator's certificate (`spiffe://faro/operator`), or --plaintext.
    #[command(flatten)]
    pub tls: crate::mtls::TlsArgs,
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Create a tenant (an agency).
    CreateTenant {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Create a location of a tenant.
    CreateLocation {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Register a Meta app: its id, secret and webhook verify token.
    CreateApp {
        #[arg(long = "meta-app-id")]
        meta_app_id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(
            long = "app-secret",
            env = "FARO_NEW_APP_SECRET",
            hide_env_values = true
        )]
        app_secret: String,
        #[arg(
            long = "verify-token",
            env = "FARO_NEW_VERIFY_TOKEN",
            hide_env_values = true
        )]
        verify_token: String,
        /// Set when the tenant brings its own app.
        #[arg(long = "owner-tenant")]
        owner_tenant: Option<Uuid>,
        #[command(flatten)]
        target: Target,
    },
    /// Connect an account to a tenant's location: a WhatsApp phone_number_id
    /// (or, for YCloud, the business number as +E.164), a Facebook Page id or
    /// an Instagram account id. For WhatsApp, `--waba` records the number's
    /// WhatsApp Business Account and connects it too, so that its
    /// account-level webhooks (templates, quality, alerts) are routed; with
    /// `--waba` and no `--account`, connects the WABA alone.
    Connect {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        location: Uuid,
        #[arg(long, value_enum)]
        channel: ChannelArg,
        /// FARO's id of the Meta app or YCloud endpoint (from create-app).
        #[arg(long)]
        app: Uuid,
        #[arg(long, required_unless_present = "waba", default_value = "")]
        account: String,
        /// The WhatsApp Business Account id (`entry[].id` in Meta's webhooks).
        #[arg(long)]
        waba: Option<String>,
        #[arg(long = "display-name", default_value = "")]
        display_name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Give a tenant its own rate of verified webhooks per platform (the edge's
    /// `FARO_WEBHOOK_RATE_PER_MIN` / `FARO_WEBHOOK_BURST` otherwise); edges see
    /// it within their route cache's lifetime.
    SetRateLimit {
        #[arg(long)]
        tenant: Uuid,
        /// Webhooks a minute on average.
        #[arg(long = "per-minute", required_unless_present = "default")]
        per_minute: Option<u32>,
        /// Webhooks at once from rest; default: a tenth of a minute's, at least 1.
        #[arg(long)]
        burst: Option<u32>,
        /// Go back to the edge's default rate.
        #[arg(long, conflicts_with_all = ["per_minute", "burst"])]
        default: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Set or rotate a channel account's send credential (WhatsApp token, Page
    /// access token, Instagram token, YCloud API key), sealed at rest and never
    /// shown again, and whether it may use the HUMAN_AGENT tag (Messenger and
    /// Instagram replies up to 7 days after the customer's last message).
    /// The credential comes from FARO_CHANNEL_CREDENTIAL or, with
    /// --credential-stdin, from standard input; with neither it is kept.
    SetCredential {
        #[arg(long)]
        tenant: Uuid,
        /// FARO's id of the channel account (from connect).
        #[arg(long = "channel-account")]
        channel_account: Uuid,
        #[arg(long, env = "FARO_CHANNEL_CREDENTIAL", hide_env_values = true)]
        credential: Option<String>,
        /// Read the credential from standard input (one line).
        #[arg(long = "credential-stdin", conflicts_with = "credential")]
        credential_stdin: bool,
        #[arg(long = "human-agent", default_value_t = false)]
        human_agent: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List a tenant's account events (template reviews, quality changes,
    /// account alerts, …), newest first.
    AccountEvents {
        #[arg(long)]
        tenant: Uuid,
        /// Only those of this channel account (FARO's id, from connect).
        #[arg(long = "channel-account")]
        channel_account: Option<Uuid>,
        /// Only this field (`message_template_status_update`, …) or YCloud type.
        #[arg(long)]
        field: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        target: Target,
    },
    /// List a tenant's channel accounts (never their credentials).
    ListAccounts(crate::admin_accounts::ListArgs),
    /// Disable a channel account (`--enable` undoes it): its webhooks are
    /// refused as from an unknown account, on edges within their route cache.
    DisableAccount(crate::admin_accounts::DisableArgs),
    #[command(flatten)]
    List(crate::admin_directory::ListCommand),
    #[command(flatten)]
    Disable(crate::admin_directory::DisableCommand),
    /// Re-seal every secret not under the current encryption key (the first of
    /// conversations' FARO_ENCRYPTION_KEYS), online, a batch per transaction;
    /// safe to repeat. Prints the rows moved and left per table; drop an old
    /// key from the configuration only once nothing is left under it.
    Reseal {
        /// Rows per transaction.
        #[arg(long = "batch-size", default_value_t = 100)]
        batch_size: u32,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ChannelArg {
    Whatsapp,
    Messenger,
    Instagram,
}

impl ChannelArg {
    fn channel(self) -> Channel {
        match self {
            Self::Whatsapp => Channel::Whatsapp,
            Self::Messenger => Channel::FacebookMessenger,
            Self::Instagram => Channel::InstagramDm,
        }
    }
}

/// A connected channel to conversations whose every call has a deadline: an
/// operator's command fails rather than hangs on a stuck service.
pub(crate) async fn channel(
    url: &str,
    tls: &crate::mtls::TlsArgs,
) -> anyhow::Result<tonic::transport::Channel> {
    crate::mtls::connect(
        "conversations",
        url,
        tls,
        std::time::Duration::from_secs(30),
    )
    .await
}

pub(crate) async fn client(
    target: &Target,
) -> anyhow::Result<AdminServiceClient<faro_proto::client::Traced>> {
    Ok(faro_proto::client::admin(
        channel(&target.conversations_url, &target.tls).await?,
    ))
}

pub(crate) fn print(v: serde_json::Value) {
    println!("{v:#}");
}

/// Runs an admin command; a refusal by the service is reported as its code
/// and message alone (`not found: tenant …`), never with its metadata.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    run_command(cmd)
        .await
        .map_err(|e| match e.downcast::<tonic::Status>() {
            Ok(s) => anyhow::anyhow!("{}: {}", code_name(s.code()), s.message()),
            Err(e) => e,
        })
}

fn code_name(code: tonic::Code) -> String {
    format!("{code:?}")
        .chars()
        .flat_map(|c| {
            let lower = c.to_ascii_lowercase();
            if c.is_ascii_uppercase() {
                vec![' ', lower]
            } else {
                vec![c]
            }
        })
        .collect::<String>()
        .trim_start()
        .to_owned()
}

async fn run_command(cmd: AdminCommand) -> anyhow::Result<()> {
    match cmd {
        AdminCommand::List(cmd) => crate::admin_directory::list(cmd).await?,
        AdminCommand::Disable(cmd) => crate::admin_directory::disable(cmd).await?,
        AdminCommand::CreateTenant { name, target } => {
            let t = client(&target)
                .await?
                .create_tenant(pb::CreateTenantRequest { name })
                .await?
                .into_inner();
            print(json!({"id": t.id, "name": t.name}));
        }
        AdminCommand::SetCredential {
            tenant,
            channel_account,
            credential,
            credential_stdin,
            human_agent,
            target,
        } => {
            let credential = if credential_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim().to_owned()
            } else {
                credential.unwrap_or_default()
            };
            let info =
                faro_proto::client::replies(channel(&target.conversations_url, &target.tls).await?)
                    .set_channel_credential(pb::SetChannelCredentialRequest {
                        tenant_id: tenant.to_string(),
                        channel_account_id: channel_account.to_string(),
                        credential,
                        human_agent,
                    })
                    .await?
                    .into_inner();
            print(json!({
                "channel_account_id": info.channel_account_id,
                "has_credential": info.has_credential,
                "human_agent": info.human_agent,
                "credential_set_at": info.credential_set_at
                    .and_then(|t| faro_proto::from_timestamp(Some(&t)))
                    .map(rfc3339),
            }));
        }
        AdminCommand::SetRateLimit {
            tenant,
            per_minute,
            burst,
            default: _,
            target,
        } => {
            let per_minute = per_minute.unwrap_or(0);
            let burst = burst.unwrap_or((per_minute / 10).max(u32::from(per_minute > 0)));
            let r = client(&target)
                .await?
                .set_tenant_rate_limit(pb::TenantRateLimit {
                    tenant_id: tenant.to_string(),
                    webhook_per_minute: per_minute,
                    webhook_burst: burst,
                })
                .await?
                .into_inner();
            print(
                json!({"tenant_id": r.tenant_id, "webhook_per_minute": r.webhook_per_minute,
                         "webhook_burst": r.webhook_burst}),
            );
        }
        AdminCommand::CreateLocation {
            tenant,
            name,
            target,
        } => {
            let l = client(&target)
                .await?
                .create_location(pb::CreateLocationRequest {
                    tenant_id: tenant.to_string(),
                    name,
                })
                .await?
                .into_inner();
            print(json!({"id": l.id, "tenant_id": l.tenant_id, "name": l.name}));
        }
        AdminCommand::CreateApp {
            meta_app_id,
            name,
            app_secret,
            verify_token,
            owner_tenant,
            target,
        } => {
            let a = client(&target)
                .await?
                .create_meta_app(pb::CreateMetaAppRequest {
                    meta_app_id,
                    name,
                    app_secret,
                    verify_token,
                    owner_tenant_id: owner_tenant.map(|t| t.to_string()).unwrap_or_default(),
                })
                .await?
                .into_inner();
            print(
                json!({"id": a.id, "meta_app_id": a.meta_app_id, "name": a.name,
                         "owner_tenant_id": a.owner_tenant_id}),
            );
        }
        AdminCommand::Connect {
            tenant,
            location,
            channel,
            app,
            account,
            waba,
            display_name,
            target,
        } => {
            let channel = channel.channel();
            let c = client(&target)
                .await?
                .connect_channel(pb::ConnectChannelRequest {
                    tenant_id: tenant.to_string(),
                    location_id: location.to_string(),
                    channel: channel.into(),
                    external_account_id: account,
                    app_id: app.to_string(),
                    display_name,
                    waba_id: waba.unwrap_or_default(),
                })
                .await?
                .into_inner();
            print(
                json!({"id": c.id, "tenant_id": c.tenant_id, "location_id": c.location_id,
                         "channel": faro_proto::channel_name(channel),
                         "external_account_id": c.external_account_id, "app_id": c.app_id,
                         "kind": c.kind, "waba_id": (!c.waba_id.is_empty()).then_some(&c.waba_id)}),
            );
        }
        AdminCommand::AccountEvents {
            tenant,
            channel_account,
            field,
            limit,
            target,
        } => {
            let events = client(&target)
                .await?
                .list_account_events(pb::ListAccountEventsRequest {
                    tenant_id: tenant.to_string(),
                    channel_account_id: channel_account.map(|a| a.to_string()).unwrap_or_default(),
                    field: field.unwrap_or_default(),
                    limit,
                })
                .await?
                .into_inner()
                .events;
            print(serde_json::Value::Array(
                events.iter().map(account_event_json).collect(),
            ));
        }
        AdminCommand::ListAccounts(args) => crate::admin_accounts::list(args).await?,
        AdminCommand::DisableAccount(args) => crate::admin_accounts::disable(args).await?,
        AdminCommand::Reseal { batch_size, target } => {
            let r = client(&target)
                .await?
                .reseal_secrets(pb::ResealSecretsRequest { batch_size })
                .await?
                .into_inner();
            let tables: serde_json::Map<_, _> = r
                .tables
                .iter()
                .map(|t| {
                    (
                        t.table.clone(),
                        json!({"resealed": t.resealed, "failed": t.failed}),
                    )
                })
                .collect();
            print(json!({"key_id": r.key_id, "tables": tables}));
        }
    }
    Ok(())
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn account_event_json(e: &pb::AccountEvent) -> serde_json::Value {
    json!({
        "id": e.id,
        "tenant_id": e.tenant_id,
        "location_id": e.location_id,
        "channel_account_id": e.channel_account_id,
        "channel": Channel::try_from(e.channel).ok().and_then(faro_proto::channel_name),
        "external_account_id": e.external_account_id,
        "field": e.field,
        "value": serde_json::from_str::<serde_json::Value>(&e.value_json).unwrap_or_default(),
        "timestamp": faro_proto::from_timestamp(e.timestamp.as_ref()).map(rfc3339),
        "received_at": faro_proto::from_timestamp(e.received_at.as_ref()).map(rfc3339),
    })
}
