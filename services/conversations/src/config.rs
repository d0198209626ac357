/// Configuration of the conversations service.
#[derive(Clone)]
pub struct Config {
    /// Postgres URL of the database owner; used to run migrations and, with the
    /// user replaced by `faro_app`, to derive the service's own connection.
    pub database_url: String,

    /// Postgres URL the service queries with. Must be a role that neither owns
    /// the tables nor bypasses row-level security. Default: DATABASE_URL as faro_app.
    pub app_database_url: Option<String>,

    /// Keys sealing app secrets and verify tokens, as `<key-id>:<base64 of 32 bytes>`,
    /// comma separated. The first seals new secrets; all of them open old ones.
    pub encryption_keys: Vec<String>,

    /// Upper bound on Postgres connections from this process.
    pub db_max_connections: u32,

    /// Events still waiting for their message after this long are dropped
    /// (Meta stops retrying after 7 days). Checked every ten minutes.
    pub pending_ttl: std::time::Duration,

    /// Postgres URL the sweeper of expired pending events connects with: the
    /// one role allowed to delete across tenants, and allowed nothing else.
    /// Default: DATABASE_URL as faro_sweeper.
    pub sweeper_database_url: Option<String>,
    /// Postgres URL operator RPCs that span tenants connect with (listing and
    /// disabling tenants and apps, re-sealing secrets): a role that may call
    /// those functions and nothing else. Default: DATABASE_URL as faro_operator.
    pub operator_database_url: Option<String>,
    /// mTLS material for serving and for calling the other services;
    /// `None` is plaintext, which the `faro` binary allows only when told to.
    pub tls: Option<faro_proto::mtls::Tls>,
}

/// Never prints key material or database passwords.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |url: &str| match url.split_once('@') {
            Some((creds, host)) => match creds.rsplit_once(':') {
                Some((user, _)) if !user.ends_with('/') => format!("{user}:<redacted>@{host}"),
                _ => url.to_owned(),
            },
            None => url.to_owned(),
        };
        let key_ids: Vec<&str> = self
            .encryption_keys
            .iter()
            .map(|k| k.split_once(':').map_or("<malformed>", |(id, _)| id))
            .collect();
        f.debug_struct("Config")
            .field("database_url", &redact(&self.database_url))
            .field(
                "app_database_url",
                &self.app_database_url.as_deref().map(redact),
            )
            .field("encryption_key_ids", &key_ids)
            .field("db_max_connections", &self.db_max_connections)
            .field("pending_ttl", &self.pending_ttl)
            .field(
                "sweeper_database_url",
                &self.sweeper_database_url.as_deref().map(redact),
            )
            .field(
                "operator_database_url",
                &self.operator_database_url.as_deref().map(redact),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_keys_and_passwords() {
        let c = Config {
            database_url: "postgres://owner:hunter2@db:5432/faro".into(),
            app_database_url: Some("postgres://faro_app@db/faro".into()),
            encryption_keys: vec!["k1:c2VjcmV0LWtleS1tYXRlcmlhbA==".into()],
            db_max_connections: 4,
            pending_ttl: std::time::Duration::from_secs(3600),
            sweeper_database_url: Some("postgres://faro_sweeper:pw2@db/faro".into()),
            operator_database_url: Some("postgres://faro_operator:pw3@db/faro".into()),
            tls: Some(
                faro_proto::mtls::certs::DevPki::generate(&[])
                    .expect("pki")
                    .tls(faro_proto::mtls::Identity::Conversations),
            ),
        };
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2")
                && !shown.contains("pw2")
                && !shown.contains("pw3")
                && !shown.contains("c2VjcmV0")
                && !shown.contains("PRIVATE KEY"),
            "{shown}"
        );
        assert!(
            shown.contains("owner:<redacted>@db:5432/faro") && shown.contains("\"k1\""),
            "{shown}"
        );
    }
}
