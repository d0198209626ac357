//! The gRPC surface: thin handlers over the modules that do the work.

use std::sync::Arc;

use faro_proto::conversations::v1::{
    self as pb, admin_service_server::AdminService,
    conversations_service_server::ConversationsService,
};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    Error, SecretBox, account_events, admin, conv_events, db::parse_uuid, directory, inbox,
    rows::require_channel, store,
};

const MAX_IDS_PER_LOOKUP: usize = 1000;
const MAX_BATCH: usize = 5000;

#[derive(Clone)]
pub(crate) struct Service {
    pub pool: PgPool,
    /// Connected as `faro_operator`: the only role that may list or disable
    /// across tenants and re-seal secrets.
    pub operator: PgPool,
    pub secrets: Arc<SecretBox>,
    pub metrics: crate::metrics::Metrics,
    /// Gathers concurrent `CreateReply` calls into one transaction.
    pub replies: crate::replies::Creator,
}

fn limit(requested: u32, default: i64, max: i64) -> i64 {
    match requested {
        0 => default,
        n => i64::from(n).min(max),
    }
}

#[derive(sqlx::FromRow)]
struct RouteRow {
    external_account_id: String,
    tenant_id: Uuid,
    location_id: Uuid,
    channel_account_id: Uuid,
    app_id: Uuid,
    meta_app_id: String,
    key_id: String,
    app_secret_enc: Vec<u8>,
    webhook_per_minute: Option<i32>,
    webhook_burst: Option<i32>,
}

impl Service {
    async fn resolve(
        &self,
        req: pb::ResolveChannelAccountsRequest,
    ) -> Result<pb::ResolveChannelAccountsResponse, Error> {
        let channel = require_channel(req.channel)?;
        if req.external_account_ids.len() > MAX_IDS_PER_LOOKUP {
            return Err(Error::invalid(format!(
                "at most {MAX_IDS_PER_LOOKUP} external_account_ids per call"
            )));
        }
        // Postgres text cannot hold a NUL, so no connected account has one:
        // such an id resolves to nothing rather than failing the query.
        let ids: Vec<String> = req
            .external_account_ids
            .into_iter()
            .filter(|id| !id.contains('\0'))
            .collect();
        if ids.is_empty() {
            return Ok(pb::ResolveChannelAccountsResponse { routes: Vec::new() });
        }
        let rows: Vec<RouteRow> =
            sqlx::query_as("SELECT * FROM faro_resolve_channel_accounts($1, $2)")
                .bind(channel)
                .bind(&ids)
                .fetch_all(&self.pool)
                .await?;
        let routes = rows
            .into_iter()
            .map(|r| {
                let secret = self.secrets.open(
                    &r.key_id,
                    &r.app_secret_enc,
                    &admin::aad(r.app_id, "app_secret"),
                )?;
                Ok(pb::ChannelRoute {
                    external_account_id: r.external_account_id,
                    tenant_id: r.tenant_id.to_string(),
                    location_id: r.location_id.to_string(),
                    channel_account_id: r.channel_account_id.to_string(),
                    channel: req.channel,
                    app_id: r.app_id.to_string(),
                    meta_app_id: r.meta_app_id,
                    app_secret: String::from_utf8(secret)
                        .map_err(|_| Error::Crypto("app secret is not UTF-8".into()))?,
                    webhook_per_minute: r.webhook_per_minute.map_or(0, |n| n.unsigned_abs()),
                    webhook_burst: r.webhook_burst.map_or(0, |n| n.unsigned_abs()),
                })
            })
            .collect::<Result<_, Error>>()?;
        Ok(pb::ResolveChannelAccountsResponse { routes })
    }

    async fn check_verify_token(&self, req: pb::CheckVerifyTokenRequest) -> Result<bool, Error> {
        if req.verify_token.is_empty() || req.verify_token.len() > 512 {
            return Ok(false);
        }
        // Only apps with an account on this channel, and never a YCloud endpoint's placeholder.
        let channel = require_channel(req.channel)?;
        let rows: Vec<(Uuid, String, Vec<u8>)> =
            sqlx::query_as("SELECT * FROM faro_apps_by_verify_token($1, $2)")
                .bind(admin::verify_token_hash(&req.verify_token))
                .bind(channel)
                .fetch_all(&self.pool)
                .await?;
        let presented = req.verify_token.as_bytes();
        let mut matched = false;
        for (app_id, key_id, sealed) in rows {
            let stored =
                self.secrets
                    .open(&key_id, &sealed, &admin::aad(app_id, "verify_token"))?;
            matched |= bool::from(stored.ct_eq(presented));
        }
        Ok(matched)
    }
}

#[tonic::async_trait]
impl ConversationsService for Service {
    async fn resolve_channel_accounts(
        &self,
        request: Request<pb::ResolveChannelAccountsRequest>,
    ) -> Result<Response<pb::ResolveChannelAccountsResponse>, Status> {
        Ok(Response::new(self.resolve(request.into_inner()).await?))
    }

    async fn check_verify_token(
        &self,
        request: Request<pb::CheckVerifyTokenRequest>,
    ) -> Result<Response<pb::CheckVerifyTokenResponse>, Status> {
        let matched = Service::check_verify_token(self, request.into_inner()).await?;
        Ok(Response::new(pb::CheckVerifyTokenResponse { matched }))
    }

    #[tracing::instrument(name = "conversations.store", skip_all)]
    async fn store_events(
        &self,
        request: Request<pb::StoreEventsRequest>,
    ) -> Result<Response<pb::StoreEventsResponse>, Status> {
        let pb::StoreEventsRequest {
            events,
            redelivered,
        } = request.into_inner();
        if events.len() > MAX_BATCH {
            return Err(Error::invalid(format!("at most {MAX_BATCH} events per call")).into());
        }
        let started = std::time::Instant::now();
        let outcome = store::store_events(&self.pool, events, redelivered).await;
        let stored = outcome.as_ref().ok().map(|o| o.stored.len());
        self.metrics.stored(started.elapsed(), stored);
        let outcome = outcome?;
        Ok(Response::new(pb::StoreEventsResponse {
            stored: outcome.stored,
            updated: outcome.updated,
            conversation_events: outcome.conversation_events,
            account_events: outcome.account_events,
        }))
    }

    async fn list_conversations(
        &self,
        request: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        Ok(Response::new(
            inbox::list(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn get_conversation(
        &self,
        request: Request<pb::GetConversationRequest>,
    ) -> Result<Response<pb::Conversation>, Status> {
        Ok(Response::new(
            inbox::get(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        Ok(Response::new(
            inbox::list_messages(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn update_conversation(
        &self,
        request: Request<pb::UpdateConversationRequest>,
    ) -> Result<Response<pb::UpdateConversationResponse>, Status> {
        Ok(Response::new(
            inbox::update(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn mark_read(
        &self,
        request: Request<pb::MarkReadRequest>,
    ) -> Result<Response<pb::MarkReadResponse>, Status> {
        Ok(Response::new(
            inbox::mark_read(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_conversation_events(
        &self,
        request: Request<pb::ListConversationEventsRequest>,
    ) -> Result<Response<pb::ListConversationEventsResponse>, Status> {
        let req = request.into_inner();
        let tenant = parse_uuid("tenant_id", &req.tenant_id)?;
        let conversation = match req.conversation_id.as_str() {
            "" => None,
            id => Some(parse_uuid("conversation_id", id)?),
        };
        let limit = limit(req.limit, 100, 1000);
        let events = conv_events::list(&self.pool, tenant, conversation, limit).await?;
        Ok(Response::new(pb::ListConversationEventsResponse { events }))
    }

    async fn claim_outbox(
        &self,
        request: Request<pb::ClaimOutboxRequest>,
    ) -> Result<Response<pb::ClaimOutboxResponse>, Status> {
        Ok(Response::new(
            crate::outbox::claim(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn ack_outbox(
        &self,
        request: Request<pb::AckOutboxRequest>,
    ) -> Result<Response<pb::AckOutboxResponse>, Status> {
        Ok(Response::new(
            crate::outbox::done(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn check_agent_access(
        &self,
        request: Request<pb::CheckAgentAccessRequest>,
    ) -> Result<Response<pb::CheckAgentAccessResponse>, Status> {
        Ok(Response::new(
            directory::check_agent_access(&self.pool, request.into_inner()).await?,
        ))
    }
}

#[tonic::async_trait]
impl AdminService for Service {
    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        Ok(Response::new(
            directory::list_tenants(&self.operator, request.into_inner()).await?,
        ))
    }

    async fn set_tenant_disabled(
        &self,
        request: Request<pb::SetTenantDisabledRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(
            directory::set_tenant_disabled(&self.operator, request.into_inner()).await?,
        ))
    }

    async fn list_locations(
        &self,
        request: Request<pb::ListLocationsRequest>,
    ) -> Result<Response<pb::ListLocationsResponse>, Status> {
        Ok(Response::new(
            directory::list_locations(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn set_location_disabled(
        &self,
        request: Request<pb::SetLocationDisabledRequest>,
    ) -> Result<Response<pb::Location>, Status> {
        Ok(Response::new(
            directory::set_location_disabled(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_meta_apps(
        &self,
        request: Request<pb::ListMetaAppsRequest>,
    ) -> Result<Response<pb::ListMetaAppsResponse>, Status> {
        Ok(Response::new(
            directory::list_apps(&self.operator, request.into_inner()).await?,
        ))
    }

    async fn set_meta_app_disabled(
        &self,
        request: Request<pb::SetMetaAppDisabledRequest>,
    ) -> Result<Response<pb::MetaApp>, Status> {
        Ok(Response::new(
            directory::set_app_disabled(&self.operator, request.into_inner()).await?,
        ))
    }

    async fn set_agent_disabled(
        &self,
        request: Request<pb::SetAgentDisabledRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        Ok(Response::new(
            directory::set_agent_disabled(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_channel_accounts(
        &self,
        request: Request<pb::ListChannelAccountsRequest>,
    ) -> Result<Response<pb::ListChannelAccountsResponse>, Status> {
        Ok(Response::new(
            crate::channel_accounts::list(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn set_channel_account_disabled(
        &self,
        request: Request<pb::SetChannelAccountDisabledRequest>,
    ) -> Result<Response<pb::ChannelAccount>, Status> {
        Ok(Response::new(
            crate::channel_accounts::set_disabled(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn reseal_secrets(
        &self,
        request: Request<pb::ResealSecretsRequest>,
    ) -> Result<Response<pb::ResealSecretsResponse>, Status> {
        Ok(Response::new(
            crate::reseal::reseal(&self.operator, &self.secrets, request.into_inner()).await?,
        ))
    }

    async fn upsert_agent(
        &self,
        request: Request<pb::Agent>,
    ) -> Result<Response<pb::Agent>, Status> {
        Ok(Response::new(
            inbox::upsert_agent(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Ok(Response::new(
            inbox::list_agents(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn set_tenant_rate_limit(
        &self,
        request: Request<pb::TenantRateLimit>,
    ) -> Result<Response<pb::TenantRateLimit>, Status> {
        Ok(Response::new(
            admin::set_rate_limit(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        Ok(Response::new(
            admin::create_tenant(&self.pool, &request.into_inner().name).await?,
        ))
    }

    async fn create_location(
        &self,
        request: Request<pb::CreateLocationRequest>,
    ) -> Result<Response<pb::Location>, Status> {
        Ok(Response::new(
            admin::create_location(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn create_meta_app(
        &self,
        request: Request<pb::CreateMetaAppRequest>,
    ) -> Result<Response<pb::MetaApp>, Status> {
        let app = admin::create_meta_app(&self.pool, &self.secrets, request.into_inner()).await?;
        Ok(Response::new(app))
    }

    async fn connect_channel(
        &self,
        request: Request<pb::ConnectChannelRequest>,
    ) -> Result<Response<pb::ChannelAccount>, Status> {
        Ok(Response::new(
            admin::connect_channel(&self.pool, request.into_inner()).await?,
        ))
    }

    async fn list_account_events(
        &self,
        request: Request<pb::ListAccountEventsRequest>,
    ) -> Result<Response<pb::ListAccountEventsResponse>, Status> {
        let events = account_events::list(&self.pool, request.into_inner()).await?;
        Ok(Response::new(pb::ListAccountEventsResponse { events }))
    }
}
