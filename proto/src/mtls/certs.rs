//! A development CA and one certificate per identity (`faro certs`), made
//! with rcgen. Production may use any CA (cert-manager, Vault, a SPIFFE
//! issuer): FARO only needs the SAN URI `spiffe://faro/<name>` in each
//! certificate, and DNS/IP SANs matching the URLs the clients use.

use std::{
    io,
    path::{Path, PathBuf},
};

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

use super::{Identity, Tls};

/// One issued certificate with its key (PEM).
pub struct Issued {
    pub identity: Identity,
    pub cert: String,
    pub key: String,
}

/// A CA certificate and the certificates it issued. The CA's key is dropped
/// once they are signed: nothing more can be issued from this set, so there
/// is no CA key file lying around a developer's disk.
pub struct DevPki {
    pub ca: String,
    pub issued: Vec<Issued>,
}

/// The DNS names every service certificate holds: the Kubernetes Service
/// names (k8s/) and loopback, so that the URLs of the manifests and of a
/// laptop both verify.
fn default_names(identity: Identity) -> Vec<String> {
    let mut names = Vec::new();
    if identity != Identity::Operator {
        names.push(format!("faro-{}", identity.name()));
    }
    names.extend(["localhost".to_owned(), "127.0.0.1".to_owned()]);
    names
}

fn rcgen_error(e: rcgen::Error) -> String {
    format!("certificate generation: {e}")
}

impl DevPki {
    /// A new CA and a certificate for each of [`Identity::ALL`]; `extra_dns`
    /// are added to every certificate's SANs (other hostnames the services
    /// are reached by). Valid from the start of last year for three years.
    pub fn generate(extra_dns: &[String]) -> Result<Self, String> {
        let now = chrono::Utc::now();
        let (from, until) = (
            date_time_ymd(now.year() - 1, 1, 1),
            date_time_ymd(now.year() + 2, 1, 1),
        );
        let ca_key = KeyPair::generate().map_err(rcgen_error)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        ca.distinguished_name
            .push(DnType::CommonName, "FARO development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        (ca.not_before, ca.not_after) = (from, until);
        let ca_cert = ca.self_signed(&ca_key).map_err(rcgen_error)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut issued = Vec::new();
        for identity in Identity::ALL {
            let key = KeyPair::generate().map_err(rcgen_error)?;
            let mut names = default_names(identity);
            names.extend(extra_dns.iter().cloned());
            let mut params = CertificateParams::new(names).map_err(rcgen_error)?;
            let uri = identity.uri().try_into().map_err(rcgen_error)?;
            params.subject_alt_names.push(SanType::URI(uri));
            params
                .distinguished_name
                .push(DnType::CommonName, format!("faro-{}", identity.name()));
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = if identity == Identity::Operator {
                vec![ExtendedKeyUsagePurpose::ClientAuth]
            } else {
                // Every service serves and calls others.
                vec![
                    ExtendedKeyUsagePurpose::ServerAuth,
                    ExtendedKeyUsagePurpose::ClientAuth,
                ]
            };
            params.use_authority_key_identifier_extension = true;
            (params.not_before, params.not_after) = (from, until);
            let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
            issued.push(Issued {
                identity,
                cert: cert.pem(),
                key: key.serialize_pem(),
            });
        }
        Ok(Self {
            ca: ca_cert.pem(),
            issued,
        })
    }

    /// The material of `identity`, as a process holding it would load it.
    pub fn tls(&self, identity: Identity) -> Tls {
        let i = self
            .issued
            .iter()
            .find(|i| i.identity == identity)
            .expect("DevPki issues every identity");
        Tls::from_pem(
            self.ca.clone().into_bytes(),
            i.cert.clone().into_bytes(),
            i.key.clone().into_bytes(),
        )
        .expect("a generated certificate names its identity")
    }

    /// Writes `ca.pem`, `<name>.pem` and `<name>-key.pem` for each identity
    /// into `dir` (created if missing); keys are readable by the owner only.
    /// Returns the files written.
    pub fn write(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, &self.ca)?;
        written.push(ca);
        for i in &self.issued {
            let cert = dir.join(format!("{}.pem", i.identity.name()));
            std::fs::write(&cert, &i.cert)?;
            let key = dir.join(format!("{}-key.pem", i.identity.name()));
            write_private(&key, &i.key)?;
            written.extend([cert, key]);
        }
        Ok(written)
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_names_its_identity() {
        let pki = DevPki::generate(&["faro.example.com".into()]).expect("pki");
        for who in Identity::ALL {
            assert_eq!(pki.tls(who).identity(), who);
        }
    }

    #[test]
    fn a_certificate_without_a_faro_uri_is_refused() {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let err = Tls::from_pem(
            cert.pem().into_bytes(),
            cert.pem().into_bytes(),
            key.serialize_pem().into_bytes(),
        )
        .expect_err("no identity");
        assert!(err.contains("spiffe://faro/"), "{err}");
    }
}
