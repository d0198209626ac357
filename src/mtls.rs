//! The mTLS options every process shares (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, or `--plaintext`), and `faro certs`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use faro_proto::mtls::{Tls, certs::DevPki};

/// How this process authenticates to its peers and they to it. Exactly one
/// of: all three files, or `--plaintext`.
#[derive(Args, Clone, Debug, Default)]
pub struct TlsArgs {
    /// CA certificate (PEM) that every peer's certificate must chain to.
    #[arg(long = "tls-ca", env = "FARO_TLS_CA")]
    pub ca: Option<PathBuf>,
    /// This process's certificate (PEM), naming it `spiffe://faro/<name>`.
    #[arg(long = "tls-cert", env = "FARO_TLS_CERT")]
    pub cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long = "tls-key", env = "FARO_TLS_KEY")]
    pub key: Option<PathBuf>,
    /// gRPC without TLS and without authentication: local development only.
    #[arg(long = "plaintext", env = "FARO_PLAINTEXT")]
    pub plaintext: bool,
}

impl TlsArgs {
    /// Explicit plaintext, for `faro dev`.
    pub fn plaintext() -> Self {
        Self {
            plaintext: true,
            ..Self::default()
        }
    }

    /// The material to use, or `None` for plaintext when (and only when)
    /// plaintext was asked for.
    pub fn load(&self) -> anyhow::Result<Option<Tls>> {
        match (&self.ca, &self.cert, &self.key, self.plaintext) {
            (None, None, None, true) => Ok(None),
            (Some(ca), Some(cert), Some(key), false) => Tls::load(ca, cert, key)
                .map(Some)
                .map_err(|e| anyhow::anyhow!("mTLS: {e}")),
            (_, _, _, true) => anyhow::bail!(
                "--plaintext (FARO_PLAINTEXT) and --tls-* (FARO_TLS_*) exclude each other"
            ),
            (None, None, None, false) => anyhow::bail!(
                "gRPC between services needs mTLS: set --tls-ca, --tls-cert and --tls-key \
                 (FARO_TLS_CA, FARO_TLS_CERT, FARO_TLS_KEY; `faro certs --out DIR` makes \
                 development ones), or pass --plaintext (FARO_PLAINTEXT=true) for local \
                 development without authentication"
            ),
            _ => anyhow::bail!(
                "mTLS needs all three of --tls-ca, --tls-cert and --tls-key (FARO_TLS_*)"
            ),
        }
    }
}

/// An operator tool's connection: eager, so that an unreachable or refusing
/// service is reported as such before any command runs.
pub async fn connect(
    name: &str,
    url: &str,
    tls: &TlsArgs,
    deadline: std::time::Duration,
) -> anyhow::Result<tonic::transport::Channel> {
    let tls = tls.load()?;
    faro_proto::client::endpoint(name, url, deadline, tls.as_ref())
        .map_err(anyhow::Error::msg)?
        .connect()
        .await
        .with_context(|| format!("cannot reach {name} at {url}"))
}

#[derive(Args)]
pub struct CertsArgs {
    /// Directory for ca.pem, <name>.pem and <name>-key.pem.
    #[arg(long)]
    pub out: PathBuf,
    /// More DNS names (or IPs) for every certificate, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
}

/// `faro certs`: a development CA and a certificate for each service and
/// for an operator; prints the files written as JSON.
pub fn certs(args: &CertsArgs) -> anyhow::Result<()> {
    let pki = DevPki::generate(&args.dns).map_err(anyhow::Error::msg)?;
    let files = pki
        .write(&args.out)
        .with_context(|| format!("writing certificates to {}", args.out.display()))?;
    let files: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("{:#}", serde_json::json!({ "files": files }));
    Ok(())
}

#[derive(Args)]
pub struct HealthArgs {
    /// gRPC URL of the server to check (https:// under mTLS).
    #[arg(long)]
    pub url: String,
    /// The service to ask about; empty asks about the server as a whole.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// `faro health`: exits 0 when the server answers SERVING. Kubernetes' native
/// gRPC probe cannot present a client certificate, so under mTLS the probes
/// run this inside the pod, with the pod's own certificate.
pub async fn health(args: &HealthArgs) -> anyhow::Result<()> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = connect(
        "the server",
        &args.url,
        &args.tls,
        std::time::Duration::from_secs(3),
    )
    .await?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .with_context(|| format!("health check of {}", args.url))?
        .into_inner()
        .status();
    if status != ServingStatus::Serving {
        anyhow::bail!("{} is {}", args.url, status.as_str_name());
    }
    println!("{}", serde_json::json!({ "status": status.as_str_name() }));
    Ok(())
}
