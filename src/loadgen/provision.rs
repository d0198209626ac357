//! `faro loadgen webhooks --provision-tenants N`: tenants of its own, through
//! the AdminService as `faro dev` does, so a run needs no hand-made setup:
//! one Meta app (signed with `--app-secret`), one YCloud endpoint if
//! `--ycloud-secret` is given, and per tenant one location with a WhatsApp
//! number, a Messenger page, an Instagram account (and a YCloud number), plus
//! an agent JWT for its subscriber. Ids are fresh per run, so runs never
//! collide; the tenants stay (they are ordinary data, removable by the
//! operator).

use anyhow::Context;
use clap::Args;
use faro_proto::conversations::v1::{self as pb, Channel};

#[derive(Args)]
pub struct ProvisionArgs {
    /// Create this many tenants (and their accounts and tokens) first.
    #[arg(long = "provision-tenants", default_value_t = 0)]
    pub tenants: usize,
    /// `--provision-tenants`: gRPC URL of the conversations service.
    #[arg(
        long = "conversations-url",
        env = "FARO_CONVERSATIONS_URL",
        default_value = "http://127.0.0.1:7102"
    )]
    conversations_url: String,
    #[command(flatten)]
    tls: crate::mtls::TlsArgs,
    /// `--provision-tenants`: the edge's JWT secret, to issue agent tokens.
    #[arg(long = "jwt-secret", env = "FARO_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// The `iss` the edge requires (its FARO_JWT_ISSUER), if any.
    #[arg(long = "jwt-issuer", env = "FARO_JWT_ISSUER")]
    issuer: Option<String>,
    /// The `aud` the edge requires (its FARO_JWT_AUDIENCE), if any.
    #[arg(long = "jwt-audience", env = "FARO_JWT_AUDIENCE")]
    audience: Option<String>,
    /// `--provision-tenants`: also write what was provisioned here (JSON:
    /// accounts per platform and the agents' tokens, mode 0600), so later
    /// runs can load the same tenants (`--whatsapp`, …, `--token`) with
    /// their threads already there and the planner's statistics warm.
    #[arg(long = "provisioned-out")]
    pub provisioned_out: Option<std::path::PathBuf>,
}

/// What was provisioned: accounts per platform and one token per tenant.
#[derive(Default)]
pub struct Provisioned {
    pub whatsapp: Vec<String>,
    pub messenger: Vec<String>,
    pub instagram: Vec<String>,
    pub ycloud: Vec<String>,
    pub tokens: Vec<String>,
}

pub async fn provision(
    args: &ProvisionArgs,
    meta_secret: &str,
    ycloud_secret: Option<&str>,
) -> anyhow::Result<Provisioned> {
    let jwt_secret = args
        .jwt_secret
        .as_deref()
        .context("--provision-tenants needs --jwt-secret")?;
    let channel = crate::admin::channel(&args.conversations_url, &args.tls).await?;
    let mut admin = faro_proto::client::admin(channel);
    // 12 random digits: account ids of this run, numeric as Meta's are.
    let run = uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000;
    let app = |id: String, secret: &str| pb::CreateMetaAppRequest {
        meta_app_id: id.clone(),
        name: id,
        app_secret: secret.into(),
        verify_token: format!("loadgen-{run}"),
        owner_tenant_id: String::new(),
    };
    let meta = admin
        .create_meta_app(app(format!("loadgen-{run}"), meta_secret))
        .await
        .context("creating the load's Meta app")?
        .into_inner()
        .id;
    let ycloud = match ycloud_secret {
        Some(s) => Some(
            admin
                .create_meta_app(app(format!("loadgen-ycloud-{run}"), s))
                .await
                .context("creating the load's YCloud endpoint")?
                .into_inner()
                .id,
        ),
        None => None,
    };
    let mut out = Provisioned::default();
    for k in 0..args.tenants {
        let tenant = admin
            .create_tenant(pb::CreateTenantRequest {
                name: format!("loadgen {run} #{k}"),
            })
            .await?
            .into_inner()
            .id;
        let location = admin
            .create_location(pb::CreateLocationRequest {
                tenant_id: tenant.clone(),
                name: "HQ".into(),
            })
            .await?
            .into_inner()
            .id;
        let mut accounts = vec![
            (Channel::Whatsapp, format!("1{run:012}{k:04}"), &meta),
            (
                Channel::FacebookMessenger,
                format!("2{run:012}{k:04}"),
                &meta,
            ),
            (Channel::InstagramDm, format!("3{run:012}{k:04}"), &meta),
        ];
        if let Some(y) = &ycloud {
            accounts.push((Channel::Whatsapp, format!("+4{run:012}{k:04}"), y));
        }
        for (channel, account, app) in &accounts {
            admin
                .connect_channel(pb::ConnectChannelRequest {
                    tenant_id: tenant.clone(),
                    location_id: location.clone(),
                    channel: (*channel).into(),
                    external_account_id: account.clone(),
                    app_id: (*app).clone(),
                    display_name: String::new(),
                    waba_id: String::new(),
                })
                .await
                .with_context(|| format!("connecting {account}"))?;
        }
        // In the order above: WhatsApp, Messenger, Instagram, then YCloud.
        let mut ids = accounts.into_iter().map(|a| a.1);
        out.whatsapp.extend(ids.next());
        out.messenger.extend(ids.next());
        out.instagram.extend(ids.next());
        out.ycloud.extend(ids);
        let (token, _) = crate::agent_cli::issue(&crate::agent_cli::TokenArgs {
            tenant: tenant.parse()?,
            sub: "loadgen".into(),
            locations: vec![],
            ttl: 24 * 3600,
            jwt_secret: jwt_secret.to_owned(),
            issuer: args.issuer.clone(),
            audience: args.audience.clone(),
        })?;
        out.tokens.push(token);
    }
    Ok(out)
}

/// Writes `p` as JSON to `path`, readable by its owner only (it holds tokens).
pub fn write(p: &Provisioned, path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("--provisioned-out {}", path.display()))?;
    let json = serde_json::json!({
        "whatsapp": p.whatsapp,
        "messenger": p.messenger,
        "instagram": p.instagram,
        "ycloud": p.ycloud,
        "tokens": p.tokens,
    });
    f.write_all(&serde_json::to_vec_pretty(&json)?)
        .with_context(|| format!("writing {}", path.display()))
}
