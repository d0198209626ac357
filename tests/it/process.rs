//! Real `faro` processes for the tests that kill or stop them. A [`Faro`] is
//! killed when dropped, so a failing test leaves no process behind.

use std::{
    net::SocketAddr,
    process::{Child, Command, ExitStatus, Stdio},
    time::Duration,
};

use faro_proto::conversations::v1::{self as pb, Channel};
use tokio::net::TcpStream;

use crate::cluster::{Cluster, JWT_SECRET, Tenant, redis_url};

/// A running `faro <service>`; SIGKILLed and reaped on drop.
pub struct Faro {
    child: Child,
    /// Where its log goes (under the target dir), for a failing test's reader.
    pub log: String,
}

impl Faro {
    /// `faro <service> <args>`; `tag` names its log file.
    pub fn spawn(tag: &str, service: &str, args: &[&str]) -> Self {
        // Child processes speak plaintext gRPC, as the in-process services do.
        Self::spawn_env(tag, service, args, &[("FARO_PLAINTEXT", "true")])
    }

    /// `faro <service> <args>` with `env` added (and no FARO_PLAINTEXT unless given).
    pub fn spawn_env(tag: &str, service: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = format!(
            "{}/{tag}-{service}-{}.log",
            env!("CARGO_TARGET_TMPDIR"),
            uuid::Uuid::new_v4().simple()
        );
        let child = Command::new(env!("CARGO_BIN_EXE_faro"))
            .arg(service)
            .args(args)
            .env("RUST_LOG", "info,faro_ingest=debug")
            // As in-process tests: the rate limits have their own tests.
            .env("FARO_WEBHOOK_RATE_PER_MIN", "0")
            .env("FARO_UNVERIFIED_RATE_PER_MIN", "0")
            .env("FARO_AGENT_RATE_PER_MIN", "0")
            .env_remove("FARO_PLAINTEXT")
            .env_remove("FARO_TLS_CA")
            .env_remove("FARO_TLS_CERT")
            .env_remove("FARO_TLS_KEY")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_or_else(|_| Stdio::null(), Stdio::from))
            .spawn()
            .unwrap_or_else(|e| panic!("faro {service} starts: {e}"));
        Self { child, log }
    }

    /// Its process id (for reading /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it is still running (it has not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and wait until it is gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM: the orderly stop an orchestrator asks for.
    pub fn terminate(&self) {
        self.signal("TERM");
    }

    /// Sends `SIG<name>` (e.g. `STOP` and `CONT` to freeze and thaw it).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "SIG{name} sent");
    }

    /// Its exit status, waiting at most `bound` (a bound on a hang, not a timing claim).
    pub async fn exited(&mut self, bound: Duration) -> ExitStatus {
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                started.elapsed() < bound,
                "faro did not exit within {bound:?} (log: {})",
                self.log
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Faro {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An address nothing listens on yet, for a process to bind.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// Waits until something accepts connections on `addr` (at most 20 s).
pub async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// A tenant with a location and a WhatsApp number, created through the admin
/// API of a conversations process at `conversations`; ids derive from `name`.
pub async fn tenant_at(conversations: &str, name: &str) -> Tenant {
    let mut admin =
        pb::admin_service_client::AdminServiceClient::connect(format!("http://{conversations}"))
            .await
            .expect("admin");
    let id = admin
        .create_tenant(pb::CreateTenantRequest {
            name: "alpha".into(),
        })
        .await
        .expect("tenant")
        .into_inner()
        .id;
    let location_id = admin
        .create_location(pb::CreateLocationRequest {
            tenant_id: id.clone(),
            name: "HQ".into(),
        })
        .await
        .expect("location")
        .into_inner()
        .id;
    let app_secret = format!("secret-{name}");
    let app = admin
        .create_meta_app(pb::CreateMetaAppRequest {
            meta_app_id: format!("app-{name}"),
            name: String::new(),
            app_secret: app_secret.clone(),
            verify_token: format!("verify-{name}"),
            owner_tenant_id: String::new(),
        })
        .await
        .expect("app")
        .into_inner()
        .id;
    admin
        .connect_channel(pb::ConnectChannelRequest {
            tenant_id: id.clone(),
            location_id: location_id.clone(),
            channel: Channel::Whatsapp.into(),
            external_account_id: format!("pn-{name}"),
            app_id: app,
            display_name: String::new(),
            ..Default::default()
        })
        .await
        .expect("channel");
    Tenant {
        id,
        location_id,
        phone_number_id: format!("pn-{name}"),
        app_secret,
    }
}

/// The sum of `field` over a JSON log's lines whose message is `message`
/// (`--log-format json`): what a process says it did.
pub fn log_sum(log: &str, message: &str, field: &str) -> i64 {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == message)
        .map(|l| l["fields"][field].as_i64().unwrap_or_default())
        .sum()
}

/// A `faro ingest` process of test `c` serving on `listen`, storing through
/// `conversations_url`, with JSON logs; `settings` adds its flags (workers,
/// claim idle, deadlines, retry policy).
pub fn spawn_ingest(
    c: &Cluster,
    listen: SocketAddr,
    conversations_url: &str,
    settings: &[&str],
) -> Faro {
    spawn_ingest_env(c, listen, conversations_url, settings, PLAINTEXT)
}

/// Plaintext gRPC, as the in-process services speak it.
pub const PLAINTEXT: &[(&str, &str)] = &[("FARO_PLAINTEXT", "true")];

/// The `FARO_TLS_*` variables of `who`'s files in `dir` (as `faro certs
/// --out dir` writes them): the process holds that identity.
pub fn tls_env(dir: &std::path::Path, who: &str) -> Vec<(&'static str, String)> {
    let path = |f: String| dir.join(f).display().to_string();
    vec![
        ("FARO_TLS_CA", path("ca.pem".into())),
        ("FARO_TLS_CERT", path(format!("{who}.pem"))),
        ("FARO_TLS_KEY", path(format!("{who}-key.pem"))),
    ]
}

/// A `faro conversations` process serving on `listen` for `c`'s database,
/// with `env` (e.g. [`PLAINTEXT`] or [`tls_env`]).
pub fn spawn_conversations(c: &Cluster, listen: SocketAddr, env: &[(&str, &str)]) -> Faro {
    let (listen, keys) = (
        listen.to_string(),
        crate::cluster::encryption_keys().join(","),
    );
    Faro::spawn_env(
        &c.db.name,
        "conversations",
        &[
            "--conversations-listen",
            &listen,
            "--database-url",
            &c.db.owner_url,
            "--encryption-keys",
            &keys,
        ],
        env,
    )
}

/// A `faro stream` process serving on `listen` for `c`'s Redis prefix.
pub fn spawn_stream(c: &Cluster, listen: SocketAddr, prefix: &str, env: &[(&str, &str)]) -> Faro {
    let (listen, redis) = (listen.to_string(), redis_url());
    Faro::spawn_env(
        &c.db.name,
        "stream",
        &[
            "--stream-listen",
            &listen,
            "--redis-url",
            &redis,
            "--redis-prefix",
            prefix,
        ],
        env,
    )
}

/// [`spawn_ingest`] with `env` instead of plaintext.
pub fn spawn_ingest_env(
    c: &Cluster,
    listen: SocketAddr,
    conversations_url: &str,
    settings: &[&str],
    env: &[(&str, &str)],
) -> Faro {
    let (listen, redis) = (listen.to_string(), redis_url());
    let mut args = vec![
        "--log-format",
        "json",
        "--ingest-listen",
        &listen,
        "--conversations-url",
        conversations_url,
        "--redis-url",
        &redis,
        "--redis-prefix",
        &c.prefix,
    ];
    args.extend_from_slice(settings);
    Faro::spawn_env(&c.db.name, "ingest", &args, env)
}

/// A `faro edge` process wired to `c`'s other services.
pub struct Edge {
    pub process: Faro,
    pub addr: SocketAddr,
}

impl Edge {
    pub async fn start(c: &Cluster, flags: &[&str]) -> Self {
        let url = |a: SocketAddr| format!("http://{a}");
        let peers = [url(c.conversations), url(c.ingest), url(c.stream)];
        Self::start_with(c, &peers, flags, PLAINTEXT).await
    }

    /// An edge calling the services at `[conversations, ingest, stream]`
    /// (URLs), with `env` (e.g. [`tls_env`]).
    pub async fn start_with(
        c: &Cluster,
        [conv, ingest, stream]: &[String; 3],
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let addr = free_addr();
        let redis = redis_url();
        let listen = addr.to_string();
        let mut args = vec![
            "--edge-listen",
            &listen,
            "--conversations-url",
            conv,
            "--ingest-url",
            ingest,
            "--stream-url",
            stream,
            "--jwt-secret",
            JWT_SECRET,
            "--redis-url",
            &redis,
            "--redis-prefix",
            &c.prefix,
            // Rate limits off, as in every test but ratelimit's: what is
            // tested here is the bound that answers, not the rate.
            "--webhook-rate-per-min",
            "0",
            "--unverified-rate-per-min",
            "0",
            "--agent-rate-per-min",
            "0",
        ];
        args.extend_from_slice(flags);
        let process = Faro::spawn_env(&c.db.name, "edge", &args, env);
        wait_listening(addr).await;
        Self { process, addr }
    }

    /// A field of /proc/<pid>/status, in MiB.
    pub fn status_mib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .expect("the edge is running");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"));
        kib / 1024
    }
}
