//! `faro admin list-tenants|list-locations|list-apps|list-users` and
//! `faro admin disable-tenant|disable-location|disable-app|disable-user`
//! (`--enable` undoes): what operators see of tenants, locations, Meta apps
//! and agents (never a secret), a page at a time, as JSON or a table.

use clap::{Args, Subcommand, ValueEnum};
use faro_proto::conversations::v1 as pb;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::admin::{Target, client};

#[derive(Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// One JSON object: the page's items and `next_after`.
    #[default]
    Json,
    /// Aligned columns; the next page's `--after` on stderr.
    Table,
}

#[derive(Args)]
pub struct Page {
    /// The last id of the previous page (its `next_after`).
    #[arg(long, default_value = "")]
    after: String,
    /// Items per page (at most 1000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// `--output`, not `--format`: that global flag is the log format's.
    #[arg(long = "output", value_enum, default_value_t = Format::Json)]
    output: Format,
}

// The variants are the subcommands' names (`list-tenants`, …), flattened into
// `faro admin`: the shared prefix is the point.
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
pub enum ListCommand {
    /// Every tenant (operator only: spans tenants).
    ListTenants {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        target: Target,
    },
    /// A tenant's locations.
    ListLocations {
        #[arg(long)]
        tenant: Uuid,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        target: Target,
    },
    /// Every Meta app (never its secret or verify token).
    ListApps {
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        target: Target,
    },
    /// A tenant's users (agents; their id is the JWT's `sub`).
    ListUsers {
        #[arg(long)]
        tenant: Uuid,
        #[command(flatten)]
        page: Page,
        #[command(flatten)]
        target: Target,
    },
}

#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
pub enum DisableCommand {
    /// Disable a tenant: its webhooks are refused and its agents' JWTs get
    /// 401, on edges within their route cache (`--enable` undoes).
    DisableTenant {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Disable a location: its accounts' webhooks are refused and its
    /// conversations hidden from the inbox (`--enable` undoes).
    DisableLocation {
        #[arg(long)]
        tenant: Uuid,
        #[arg(long)]
        location: Uuid,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Disable a Meta app: webhooks it signs are refused (`--enable` undoes).
    DisableApp {
        /// FARO's id of the app (from create-app or list-apps).
        #[arg(long)]
        app: Uuid,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Disable a user (agent): their JWTs get 401 (`--enable` undoes).
    DisableUser {
        #[arg(long)]
        tenant: Uuid,
        /// The agent's id (the JWT's `sub`).
        #[arg(long)]
        user: String,
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        target: Target,
    },
}

fn tenant_json(t: &pb::Tenant) -> Value {
    json!({"id": t.id, "name": t.name, "disabled": t.disabled})
}

fn location_json(l: &pb::Location) -> Value {
    json!({"id": l.id, "tenant_id": l.tenant_id, "name": l.name, "disabled": l.disabled})
}

fn app_json(a: &pb::MetaApp) -> Value {
    json!({"id": a.id, "meta_app_id": a.meta_app_id, "name": a.name,
           "owner_tenant_id": (!a.owner_tenant_id.is_empty()).then_some(&a.owner_tenant_id),
           "disabled": a.disabled})
}

fn user_json(a: &pb::Agent) -> Value {
    json!({"id": a.id, "tenant_id": a.tenant_id, "name": a.name, "role": a.role,
           "location_ids": a.location_ids, "disabled": a.disabled})
}

/// Prints a page as JSON (`{"<name>": [...], "next_after": ...}`) or a table.
fn print_page(name: &str, columns: &[&str], items: Vec<Value>, next_after: &str, format: Format) {
    match format {
        Format::Json => {
            let next = (!next_after.is_empty()).then_some(next_after);
            println!("{:#}", json!({name: items, "next_after": next}));
        }
        Format::Table => {
            let cell = |v: &Value, c: &str| match &v[c] {
                Value::String(s) => s.clone(),
                Value::Null => "-".into(),
                Value::Array(a) if a.is_empty() => "all".into(),
                other => other.to_string(),
            };
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|v| columns.iter().map(|c| cell(v, c)).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| rows.iter().map(|r| r[i].len()).fold(c.len(), usize::max))
                .collect();
            let line = |cells: Vec<String>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                println!("{}", padded.join("  ").trim_end());
            };
            line(columns.iter().map(|c| c.to_uppercase()).collect());
            for r in rows {
                line(r);
            }
            if !next_after.is_empty() {
                eprintln!("more: --after {next_after}");
            }
        }
    }
}

pub async fn list(cmd: ListCommand) -> anyhow::Result<()> {
    match cmd {
        ListCommand::ListTenants { page, target } => {
            let r = client(&target)
                .await?
                .list_tenants(pb::ListTenantsRequest {
                    after: page.after,
                    limit: page.limit,
                })
                .await?
                .into_inner();
            let items = r.tenants.iter().map(tenant_json).collect();
            print_page(
                "tenants",
                &["id", "name", "disabled"],
                items,
                &r.next_after,
                page.output,
            );
        }
        ListCommand::ListLocations {
            tenant,
            page,
            target,
        } => {
            let r = client(&target)
                .await?
                .list_locations(pb::ListLocationsRequest {
                    tenant_id: tenant.to_string(),
                    after: page.after,
                    limit: page.limit,
                })
                .await?
                .into_inner();
            let items = r.locations.iter().map(location_json).collect();
            let columns = ["id", "name", "disabled"];
            print_page("locations", &columns, items, &r.next_after, page.output);
        }
        ListCommand::ListApps { page, target } => {
            let r = client(&target)
                .await?
                .list_meta_apps(pb::ListMetaAppsRequest {
                    after: page.after,
                    limit: page.limit,
                })
                .await?
                .into_inner();
            let items = r.apps.iter().map(app_json).collect();
            let columns = ["id", "meta_app_id", "name", "owner_tenant_id", "disabled"];
            print_page("apps", &columns, items, &r.next_after, page.output);
        }
        ListCommand::ListUsers {
            tenant,
            page,
            target,
        } => {
            let r = client(&target)
                .await?
                .list_agents(pb::ListAgentsRequest {
                    tenant_id: tenant.to_string(),
                    after: page.after,
                    limit: page.limit,
                })
                .await?
                .into_inner();
            let items = r.agents.iter().map(user_json).collect();
            let columns = ["id", "name", "role", "location_ids", "disabled"];
            print_page("users", &columns, items, &r.next_after, page.output);
        }
    }
    Ok(())
}

pub async fn disable(cmd: DisableCommand) -> anyhow::Result<()> {
    let out = match cmd {
        DisableCommand::DisableTenant {
            tenant,
            enable,
            target,
        } => tenant_json(
            &client(&target)
                .await?
                .set_tenant_disabled(pb::SetTenantDisabledRequest {
                    tenant_id: tenant.to_string(),
                    disabled: !enable,
                })
                .await?
                .into_inner(),
        ),
        DisableCommand::DisableLocation {
            tenant,
            location,
            enable,
            target,
        } => location_json(
            &client(&target)
                .await?
                .set_location_disabled(pb::SetLocationDisabledRequest {
                    tenant_id: tenant.to_string(),
                    location_id: location.to_string(),
                    disabled: !enable,
                })
                .await?
                .into_inner(),
        ),
        DisableCommand::DisableApp {
            app,
            enable,
            target,
        } => app_json(
            &client(&target)
                .await?
                .set_meta_app_disabled(pb::SetMetaAppDisabledRequest {
                    app_id: app.to_string(),
                    disabled: !enable,
                })
                .await?
                .into_inner(),
        ),
        DisableCommand::DisableUser {
            tenant,
            user,
            enable,
            target,
        } => user_json(
            &client(&target)
                .await?
                .set_agent_disabled(pb::SetAgentDisabledRequest {
                    tenant_id: tenant.to_string(),
                    agent_id: user,
                    disabled: !enable,
                })
                .await?
                .into_inner(),
        ),
    };
    println!("{out:#}");
    Ok(())
}
