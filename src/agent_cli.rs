//! Agent-side tools: `faro token` issues an agent JWT, `faro watch` prints an
//! agent's live frames. Kept apart from the operator's admin RPCs.

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::admin::print;
use futures::StreamExt;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, http::HeaderValue};
use uuid::Uuid;

#[derive(Args)]
pub struct TokenArgs {
    #[arg(long)]
    pub tenant: Uuid,
    /// The agent's id.
    #[arg(long, default_value = "agent")]
    pub sub: String,
    /// Limit the token to these locations (repeat); default all.
    #[arg(long = "location")]
    pub locations: Vec<Uuid>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 8 * 3600)]
    pub ttl: u64,
    #[arg(long = "jwt-secret", env = "FARO_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The `iss` the edge requires (its FARO_JWT_ISSUER), if any.
    #[arg(long = "issuer", env = "FARO_JWT_ISSUER")]
    pub issuer: Option<String>,
    /// The `aud` the edge requires (its FARO_JWT_AUDIENCE), if any.
    #[arg(long = "audience", env = "FARO_JWT_AUDIENCE")]
    pub audience: Option<String>,
}

pub fn issue(args: &TokenArgs) -> anyhow::Result<(String, u64)> {
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
    let exp = now + args.ttl;
    let claims = faro_edge::auth::Claims {
        sub: args.sub.clone(),
        tenant_id: args.tenant,
        location_ids: (!args.locations.is_empty()).then(|| args.locations.clone()),
        exp,
    };
    let token = faro_edge::auth::JwtKeys::with_scope(
        args.jwt_secret.as_bytes(),
        args.issuer.as_deref(),
        args.audience.as_deref(),
    )?
    .issue(&claims)?;
    Ok((token, exp))
}

pub fn token(args: TokenArgs) -> anyhow::Result<()> {
    let (token, exp) = issue(&args)?;
    print(
        json!({"token": token, "tenant_id": args.tenant, "sub": args.sub, "exp": exp,
                 "iss": args.issuer, "aud": args.audience}),
    );
    Ok(())
}

#[derive(Args)]
pub struct WatchArgs {
    /// WebSocket URL of the edge's live stream.
    #[arg(long, default_value = "ws://127.0.0.1:8080/api/v1/messages/stream")]
    pub url: String,
    /// An agent JWT (see `faro token`).
    #[arg(long, env = "FARO_TOKEN", hide_env_values = true)]
    pub token: String,
}

pub async fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let mut request = args.url.as_str().into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {}", args.token))?,
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .context("cannot open the WebSocket")?;
    eprintln!("watching {} (ctrl-c to stop)", args.url);
    while let Some(frame) = ws.next().await {
        match frame? {
            Message::Text(t) => println!("{t}"),
            Message::Close(c) => {
                eprintln!("closed: {c:?}");
                break;
            }
            _ => {}
        }
    }
    Ok(())
}
