//! `faro admin list-accounts` and `faro admin disable-account`: a tenant's
//! channel accounts as operators see them (never a credential).

use clap::Args;
use faro_proto::conversations::v1 as pb;
use serde_json::json;
use uuid::Uuid;

use crate::admin::Target;

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    tenant: Uuid,
    #[command(flatten)]
    target: Target,
}

#[derive(Args)]
pub struct DisableArgs {
    #[arg(long)]
    tenant: Uuid,
    /// FARO's id of the channel account (from connect or list-accounts).
    #[arg(long = "channel-account")]
    channel_account: Uuid,
    /// Enable it again instead.
    #[arg(long)]
    enable: bool,
    #[command(flatten)]
    target: Target,
}

fn account_json(a: &pb::ChannelAccount) -> serde_json::Value {
    json!({"id": a.id, "tenant_id": a.tenant_id, "location_id": a.location_id,
           "channel": faro_proto::channel_name(a.channel()), "external_account_id": a.external_account_id,
           "app_id": a.app_id, "display_name": a.display_name, "kind": a.kind,
           "waba_id": (!a.waba_id.is_empty()).then_some(&a.waba_id), "disabled": a.disabled})
}

pub async fn list(args: ListArgs) -> anyhow::Result<()> {
    let accounts = crate::admin::client(&args.target)
        .await?
        .list_channel_accounts(pb::ListChannelAccountsRequest {
            tenant_id: args.tenant.to_string(),
        })
        .await?
        .into_inner()
        .accounts;
    let out: Vec<_> = accounts.iter().map(account_json).collect();
    println!("{:#}", serde_json::Value::Array(out));
    Ok(())
}

pub async fn disable(args: DisableArgs) -> anyhow::Result<()> {
    let a = crate::admin::client(&args.target)
        .await?
        .set_channel_account_disabled(pb::SetChannelAccountDisabledRequest {
            tenant_id: args.tenant.to_string(),
            channel_account_id: args.channel_account.to_string(),
            disabled: !args.enable,
        })
        .await?
        .into_inner();
    println!("{:#}", account_json(&a));
    Ok(())
}
