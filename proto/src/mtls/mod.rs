//! Service-to-service authentication: mutual TLS between every FARO process.
//!
//! One CA signs a certificate per service (and one for operators); each
//! certificate names its holder in a SAN URI `spiffe://faro/<name>`. A server
//! accepts only clients whose certificate chains to the CA (the handshake
//! fails otherwise), then [`authorize`] decides per RPC from the caller's
//! identity and an explicit table. The same three PEM files configure both
//! halves of a process: they are its server identity and its client identity.

mod authorize;
pub mod certs;

use std::{fmt, path::Path, time::Duration};

use tonic::transport::{Certificate, ClientTlsConfig, Identity as TlsIdentity, ServerTlsConfig};
use x509_parser::{extensions::GeneralName, pem::Pem};

pub use authorize::{AuthorizeLayer, allowed};

/// The trust domain in every identity URI.
pub const TRUST_DOMAIN: &str = "faro";

/// How long a TLS handshake may take before the server drops the connection,
/// so that a client that connects and stalls does not hold a slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is calling: the name in a certificate's `spiffe://faro/<name>` SAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Edge,
    Ingest,
    Conversations,
    Stream,
    /// A person or tool administering FARO (`faro admin`, `faro dlq`, grpcurl).
    Operator,
}

impl Identity {
    pub const ALL: [Identity; 5] = [
        Identity::Edge,
        Identity::Ingest,
        Identity::Conversations,
        Identity::Stream,
        Identity::Operator,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Identity::Edge => "edge",
            Identity::Ingest => "ingest",
            Identity::Conversations => "conversations",
            Identity::Stream => "stream",
            Identity::Operator => "operator",
        }
    }

    /// `spiffe://faro/<name>`.
    pub fn uri(self) -> String {
        format!("spiffe://{TRUST_DOMAIN}/{}", self.name())
    }

    pub fn from_uri(uri: &str) -> Option<Self> {
        let name = uri
            .strip_prefix("spiffe://")?
            .strip_prefix(TRUST_DOMAIN)?
            .strip_prefix('/')?;
        Self::ALL.into_iter().find(|i| i.name() == name)
    }

    /// The identity a DER certificate names, if it names exactly one: a
    /// certificate claiming two identities is refused rather than guessed at.
    pub fn of_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut found = san.value.general_names.iter().filter_map(|n| match n {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(Self::from_uri(uri)),
            _ => None,
        });
        match (found.next(), found.next()) {
            (Some(one), None) => one,
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A process's mTLS material: the CA every peer must chain to, and its own
/// certificate and key (PEM). Cloned into each service of the process.
#[derive(Clone)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
    identity: Identity,
}

/// The key never reaches a log.
impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The DER of every `CERTIFICATE` block in a PEM buffer.
fn certificates(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| format!("not PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            out.push(block.contents);
        }
    }
    Ok(out)
}

impl Tls {
    /// Checks the material now, so that a wrong file fails the start of the
    /// process and not its first call: the CA holds a certificate, the
    /// certificate names a FARO identity, the key is a PEM private key.
    pub fn from_pem(ca: Vec<u8>, cert: Vec<u8>, key: Vec<u8>) -> Result<Self, String> {
        if certificates(&ca)
            .map_err(|e| format!("CA: {e}"))?
            .is_empty()
        {
            return Err("CA: no CERTIFICATE block".into());
        }
        let own = certificates(&cert).map_err(|e| format!("certificate: {e}"))?;
        let leaf = own.first().ok_or("certificate: no CERTIFICATE block")?;
        let identity = Identity::of_certificate(leaf).ok_or_else(|| {
            format!("certificate: no SAN URI spiffe://{TRUST_DOMAIN}/<edge|ingest|conversations|stream|operator>")
        })?;
        let is_key =
            Pem::iter_from_buffer(&key).any(|b| b.is_ok_and(|b| b.label.ends_with("PRIVATE KEY")));
        if !is_key {
            return Err("key: no PRIVATE KEY block".into());
        }
        Ok(Self {
            ca,
            cert,
            key,
            identity,
        })
    }

    /// Reads and checks the three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self, String> {
        let read = |what: &str, p: &Path| {
            std::fs::read(p).map_err(|e| format!("{what} {}: {e}", p.display()))
        };
        Self::from_pem(
            read("CA", ca)?,
            read("certificate", cert)?,
            read("key", key)?,
        )
    }

    /// Whom this process's certificate names.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// Serve with this certificate; require a client certificate from the CA.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(&self.ca))
            .client_auth_optional(false)
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// Call with this certificate; trust only servers whose certificate chains
    /// to the CA and names the host of the URL.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(TlsIdentity::from_pem(&self.cert, &self.key))
            .timeout(HANDSHAKE_TIMEOUT)
    }
}
