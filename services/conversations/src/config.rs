/// Configuration of the conversations service.
#[derive(Clone, Debug)]
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
}
