//! A FARO cluster for one test: its own database, its own Redis prefix, all
//! four services in-process on port 0.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use faro_proto::conversations::v1::{
    self as pb, Channel, admin_service_client::AdminServiceClient,
};
use faro_proto::mtls::{Identity, certs::DevPki};
use fred::{
    clients::Client as Redis,
    interfaces::{ClientLike, LuaInterface, StreamsInterface},
    types::Value,
};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::test_db::{clean_up_aside, delete_keys};
pub use crate::{
    clients::{Ws, fixture, whatsapp_text},
    configs::{EdgeLimits, edge_config, ingest_config},
    test_db::{JWT_SECRET, TestDb, encryption_keys, redis, redis_url},
};

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

/// One tenant with one location and one WhatsApp number.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub id: String,
    pub location_id: String,
    pub phone_number_id: String,
    pub app_secret: String,
}

/// Where each service serves `GET /metrics`.
#[derive(Clone, Copy, Debug)]
pub struct MetricsAddrs {
    pub edge: SocketAddr,
    pub ingest: SocketAddr,
    pub conversations: SocketAddr,
    pub stream: SocketAddr,
}

pub struct Cluster {
    pub db: TestDb,
    pub prefix: String,
    pub redis: Redis,
    pub edge: SocketAddr,
    pub conversations: SocketAddr,
    pub ingest: SocketAddr,
    pub stream: SocketAddr,
    pub metrics: MetricsAddrs,
    pub http: reqwest::Client,
    /// The certificates the services hold when the cluster runs mTLS.
    pub pki: Option<Arc<DevPki>>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    redis_url: String,
    stopped: bool,
}

/// A test that fails before [`Cluster::stop`] still removes its Redis keys
/// (and, through [`TestDb`], its database).
impl Drop for Cluster {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.shutdown.cancel();
        let (url, prefix) = (self.redis_url.clone(), self.prefix.clone());
        clean_up_aside(async move {
            let redis = redis(&url).await;
            delete_keys(&redis, &prefix).await;
            redis.quit().await.ok();
        });
    }
}

/// Which services run in-process (crash tests run some as real processes).
pub struct Options {
    /// A Redis of the test's own (one it kills); default the shared one.
    pub redis_url: Option<String>,
    /// A Postgres server of the test's own (one it stops); default the shared one.
    pub postgres_url: Option<String>,
    pub ingest: bool,
    pub conversations: bool,
    pub claim_idle_ms: u64,
    pub max_body_bytes: usize,
    pub ingest_workers: usize,
    pub ingest_batch: usize,
    /// The edge's per-connection and per-socket limits.
    pub edge_limits: EdgeLimits,
    /// The bounds of each tenant's event history.
    pub history_max_events: u64,
    pub history_max_age_secs: u64,
    /// The stream service's own way to Redis (a proxy the test cuts);
    /// default: the others'.
    pub stream_redis_url: Option<String>,
    /// The edge's rate limits.
    pub rate_limits: faro_edge::RateLimits,
    /// mTLS between the services, with these certificates; default plaintext.
    pub pki: Option<Arc<DevPki>>,
    /// Where ingest sends agents' replies (a fake platform); default nowhere
    /// reachable.
    pub send: Option<faro_ingest::SendConfig>,
    /// Each service with its metrics listener (recording on); false runs them
    /// without (nothing recorded: the benchmark's "metrics off").
    pub metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            redis_url: None,
            postgres_url: None,
            ingest: true,
            conversations: true,
            claim_idle_ms: 30_000,
            max_body_bytes: 64 * 1024,
            ingest_workers: 2,
            ingest_batch: 32,
            edge_limits: EdgeLimits::default(),
            history_max_events: 10_000,
            history_max_age_secs: 3600,
            stream_redis_url: None,
            rate_limits: crate::configs::rates_off(),
            pki: None,
            send: None,
            metrics: true,
        }
    }
}

impl Cluster {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let db = match &options.postgres_url {
            Some(url) => TestDb::create_on(url).await,
            None => TestDb::create().await,
        };
        let prefix = format!("faro-it:{}:", Uuid::new_v4().simple());
        let redis_url = options.redis_url.clone().unwrap_or_else(redis_url);
        let shutdown = CancellationToken::new();
        let (conv_l, conversations) = listener().await;
        let (stream_l, stream) = listener().await;
        let (ingest_l, ingest) = listener().await;
        let (edge_l, edge) = listener().await;
        let (conv_m, conversations_metrics) = listener().await;
        let (stream_m, stream_metrics) = listener().await;
        let (ingest_m, ingest_metrics) = listener().await;
        let (edge_m, edge_metrics) = listener().await;
        let on = options.metrics;
        let metrics = MetricsAddrs {
            edge: edge_metrics,
            ingest: ingest_metrics,
            conversations: conversations_metrics,
            stream: stream_metrics,
        };
        let mut tasks = Vec::new();
        let tls = |who| options.pki.as_ref().map(|p| p.tls(who));
        let scheme = if options.pki.is_some() {
            "https"
        } else {
            "http"
        };

        let conv_config = faro_conversations::Config {
            database_url: db.owner_url.clone(),
            app_database_url: None,
            encryption_keys: encryption_keys(),
            db_max_connections: 8,
            pending_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
            sweeper_database_url: None,
            operator_database_url: None,
            tls: tls(Identity::Conversations),
        };
        if options.conversations {
            let t = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                faro_conversations::run_with_metrics(conv_config, conv_l, on.then_some(conv_m), t)
                    .await
                    .expect("conversations runs");
            }));
        } else {
            drop(conv_l);
        }
        let stream_config = faro_stream::Config {
            redis_url: options
                .stream_redis_url
                .clone()
                .unwrap_or_else(|| redis_url.clone()),
            key_prefix: prefix.clone(),
            subscriber_buffer: 1024,
            history_max_events: options.history_max_events,
            history_max_age_secs: options.history_max_age_secs,
            tls: tls(Identity::Stream),
        };
        let t = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            faro_stream::run_with_metrics(stream_config, stream_l, on.then_some(stream_m), t)
                .await
                .expect("stream runs");
        }));
        if options.ingest {
            let mut config = ingest_config(&prefix, &format!("{scheme}://{conversations}"));
            config.tls = tls(Identity::Ingest);
            config.redis_url = redis_url.clone();
            config.workers = options.ingest_workers;
            config.batch_size = options.ingest_batch;
            config.claim_idle_ms = options.claim_idle_ms;
            config.history_max_events = options.history_max_events;
            config.history_max_age_secs = options.history_max_age_secs;
            if let Some(send) = &options.send {
                config.send = send.clone();
            }
            // As long as validation allows: two calls and a pause per pass.
            config.store_deadline_ms = (options.claim_idle_ms.saturating_sub(300) / 2).min(10_000);
            let t = shutdown.clone();
            tasks.push(tokio::spawn(async move {
                faro_ingest::run_with_metrics(config, ingest_l, on.then_some(ingest_m), t)
                    .await
                    .expect("ingest runs");
            }));
        } else {
            drop(ingest_l);
        }
        let mut edge_config = edge_config(conversations, ingest, stream, options.edge_limits);
        edge_config.max_body_bytes = options.max_body_bytes;
        edge_config.key_prefix = prefix.clone();
        edge_config.rate_limits = options.rate_limits;
        if options.pki.is_some() {
            edge_config.conversations_url = format!("https://{conversations}");
            edge_config.ingest_url = format!("https://{ingest}");
            edge_config.stream_url = format!("https://{stream}");
            edge_config.tls = tls(Identity::Edge);
        }
        let t = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            faro_edge::run_with_metrics(edge_config, edge_l, on.then_some(edge_m), t)
                .await
                .expect("edge runs");
        }));
        Self {
            db,
            redis: redis(&redis_url).await,
            prefix,
            edge,
            conversations,
            ingest,
            stream,
            metrics,
            // Below the edge's 10 s header-read timeout: hyper answers an
            // idle keep-alive connection 408 and closes it, and a client
            // reusing it then fails (`UnexpectedMessage`), as the replies
            // bench did after a slow setup on a loaded machine.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_secs(5))
                .build()
                .expect("http client"),
            pki: options.pki.clone(),
            shutdown,
            tasks,
            redis_url,
            stopped: false,
        }
    }

    /// Stops the services, then removes the database and the Redis keys.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for t in std::mem::take(&mut self.tasks) {
            t.await.expect("service task ends cleanly");
        }
        delete_keys(&self.redis, &self.prefix).await;
        self.redis.quit().await.ok();
        self.db.remove().await;
        self.stopped = true;
    }

    /// An admin client; under mTLS it holds the operator's certificate.
    pub async fn admin(&self) -> AdminServiceClient<tonic::transport::Channel> {
        AdminServiceClient::new(self.grpc(self.conversations, Identity::Operator).await)
    }

    /// A connected channel to one of the gRPC services at `addr`, calling as
    /// `who` when the cluster runs mTLS (plaintext otherwise).
    pub async fn grpc(&self, addr: SocketAddr, who: Identity) -> tonic::transport::Channel {
        let tls = self.pki.as_ref().map(|p| p.tls(who));
        let scheme = if tls.is_some() { "https" } else { "http" };
        faro_proto::client::endpoint(
            "test",
            &format!("{scheme}://{addr}"),
            Duration::from_secs(30),
            tls.as_ref(),
        )
        .expect("endpoint")
        .connect()
        .await
        .expect("connects")
    }

    /// Creates a tenant with a location, its own Meta app and a WhatsApp number.
    pub async fn tenant(&self, name: &str) -> Tenant {
        let (id, location_id) = self.bare_tenant(name).await;
        let suffix = Uuid::new_v4().simple().to_string();
        let app_secret = format!("secret-{suffix}");
        let app = self
            .app(
                &format!("app-{suffix}"),
                &app_secret,
                &format!("verify-{name}"),
            )
            .await;
        let phone_number_id = format!("pn-{name}-{}", &suffix[..8]);
        let scope = (id, location_id);
        self.connect(&scope, Channel::Whatsapp, &phone_number_id, &app)
            .await;
        let (id, location_id) = scope;
        Tenant {
            id,
            location_id,
            phone_number_id,
            app_secret,
        }
    }

    /// A tenant with one location and no channels yet: (tenant id, location id).
    pub async fn bare_tenant(&self, name: &str) -> (String, String) {
        let mut admin = self.admin().await;
        let tenant = admin
            .create_tenant(pb::CreateTenantRequest { name: name.into() })
            .await
            .expect("tenant")
            .into_inner();
        let location = admin
            .create_location(pb::CreateLocationRequest {
                tenant_id: tenant.id.clone(),
                name: format!("{name} HQ"),
            })
            .await
            .expect("location")
            .into_inner();
        (tenant.id, location.id)
    }

    /// Registers an app (or a BSP endpoint) and returns FARO's id for it.
    pub async fn app(&self, meta_app_id: &str, secret: &str, verify_token: &str) -> String {
        self.admin()
            .await
            .create_meta_app(pb::CreateMetaAppRequest {
                meta_app_id: meta_app_id.into(),
                name: meta_app_id.into(),
                app_secret: secret.into(),
                verify_token: verify_token.into(),
                owner_tenant_id: String::new(),
            })
            .await
            .expect("app")
            .into_inner()
            .id
    }

    pub async fn connect(
        &self,
        (tenant, location): &(String, String),
        channel: Channel,
        account: &str,
        app: &str,
    ) {
        self.admin()
            .await
            .connect_channel(pb::ConnectChannelRequest {
                tenant_id: tenant.clone(),
                location_id: location.clone(),
                channel: channel.into(),
                external_account_id: account.into(),
                app_id: app.into(),
                display_name: String::new(),
                waba_id: String::new(),
            })
            .await
            .expect("channel");
    }

    /// A stored message as JSON (every column), by its platform id.
    pub async fn message(&self, channel_message_id: &str) -> serde_json::Value {
        sqlx::query_scalar::<_, serde_json::Value>(
            "SELECT to_jsonb(m) || jsonb_build_object('customer_id', c.customer_id,
                    'customer_name', c.customer_name, 'customer_user_id', c.customer_user_id,
                    'location_id', c.location_id, 'conversation_channel', c.channel)
             FROM messages m JOIN conversations c ON c.tenant_id = m.tenant_id AND c.id = m.conversation_id
             WHERE m.channel_message_id = $1",
        )
        .bind(channel_message_id)
        .fetch_optional(&self.db.owner)
        .await
        .expect("query")
        .unwrap_or_else(|| panic!("message {channel_message_id} is stored"))
    }

    /// Jobs ever added to the ingest stream (XINFO STREAM entries-added).
    pub async fn jobs_added(&self) -> i64 {
        let key = faro_ingest::Keys::new(&self.prefix).jobs;
        let info: Value = match self.redis.xinfo_stream(&key, false, None).await {
            Ok(v) => v,
            Err(_) => return 0, // the group is created with the stream, so this means none
        };
        let flat = match info {
            Value::Map(m) => m
                .inner()
                .into_iter()
                .flat_map(|(k, v)| [Value::from(k), v])
                .collect(),
            other => other.into_array(),
        };
        let mut it = flat.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            if k.as_str().as_deref() == Some("entries-added") {
                return v.as_i64().unwrap_or_default();
            }
        }
        panic!("XINFO STREAM has no entries-added");
    }

    /// Waits until every queued job is processed: none left in the stream,
    /// none waiting for a retry.
    pub async fn drained(&self) {
        let keys = faro_ingest::Keys::new(&self.prefix);
        for _ in 0..600 {
            // One read of both keys: a job moves between them atomically, and
            // two separate reads could each miss it.
            let left: i64 = self
                .redis
                .eval(
                    "return redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])",
                    vec![keys.jobs.clone(), keys.retry.clone()],
                    Vec::<String>::new(),
                )
                .await
                .expect("xlen + zcard");
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("ingest did not drain within 30 s");
    }

    /// The id of the only tenant (for tests that created exactly one).
    pub async fn count_tenant(&self) -> String {
        sqlx::query_scalar("SELECT id::text FROM tenants")
            .fetch_one(&self.db.owner)
            .await
            .expect("one tenant")
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.owner)
            .await
            .expect("count")
    }
}
