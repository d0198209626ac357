use clap::Args;

/// Configuration of the conversations service.
#[derive(Args, Clone, Debug)]
pub struct Config {
    /// Postgres URL of the database owner; used to run migrations and, with the
    /// user replaced by `faro_app`, to derive the service's own connection.
    #[arg(long = "database-url", env = "DATABASE_URL")]
    pub database_url: String,

    /// Postgres URL the service queries with. Must be a role that neither owns
    /// the tables nor bypasses row-level security. Default: DATABASE_URL as faro_app.
    #[arg(long = "app-database-url", env = "FARO_APP_DATABASE_URL")]
    pub app_database_url: Option<String>,

    /// Keys sealing app secrets and verify tokens, as `<key-id>:<base64 of 32 bytes>`,
    /// comma separated. The first seals new secrets; all of them open old ones.
    #[arg(
        long = "encryption-keys",
        env = "FARO_ENCRYPTION_KEYS",
        value_delimiter = ',',
        required = true
    )]
    pub encryption_keys: Vec<String>,

    /// Upper bound on Postgres connections from this process.
    #[arg(
        long = "db-max-connections",
        env = "FARO_DB_MAX_CONNECTIONS",
        default_value_t = 16
    )]
    pub db_max_connections: u32,
}
