use tonic::{Code, Status};

/// Every failure of the conversations crate; mapped once to `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    /// An edit made against a version that is no longer current.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("unsafe database role: {0}")]
    UnsafeRole(String),
    #[error("sealed secret cannot be opened: {0}")]
    Crypto(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("grpc server: {0}")]
    Serve(String),
    /// A platform rule the request breaks (a reply outside its window, too
    /// long, …): FAILED_PRECONDITION with the rule's code in `faro-rule`.
    #[error("rule {code}: {message}")]
    Rule { code: &'static str, message: String },
}

impl Error {
    pub(crate) fn invalid(what: impl Into<String>) -> Self {
        Self::InvalidArgument(what.into())
    }
}

/// Postgres error codes FARO answers as a caller mistake rather than a fault.
fn database_code(e: &sqlx::Error) -> Option<Code> {
    let code = e.as_database_error()?.code()?;
    match code.as_ref() {
        "23505" => Some(Code::AlreadyExists),
        "23503" | "23514" | "22P02" | "23502" => Some(Code::InvalidArgument),
        _ => None,
    }
}

/// Postgres errors that a retry of the same call resolves.
fn transient(e: &sqlx::Error) -> bool {
    let code = e.as_database_error().and_then(|d| d.code());
    // deadlock_detected, serialization_failure: the other transaction won; try again.
    // Class 08 (connection exception) and 57P01..57P03 (shut down, crashed,
    // starting up): Postgres is restarting; the call succeeds once it is back.
    matches!(
        code.as_deref(),
        Some("40P01" | "40001" | "57P01" | "57P02" | "57P03")
    ) || code.as_deref().is_some_and(|c| c.starts_with("08"))
        || matches!(
            e,
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed
        )
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match &e {
            Error::Database(db) if transient(db) => {
                tracing::warn!(error = %e, "transient database error");
                Status::unavailable("database busy; retry")
            }
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound(m) => Status::not_found(m.clone()),
            Error::AlreadyExists(m) => Status::already_exists(m.clone()),
            Error::Conflict(m) => Status::aborted(m.clone()),
            Error::Rule { code, message } => {
                let mut status = Status::failed_precondition(message.clone());
                status.metadata_mut().insert(
                    faro_proto::RULE_METADATA,
                    tonic::metadata::MetadataValue::from_static(code),
                );
                status
            }
            Error::Database(db) if database_code(db).is_some() => {
                let code = database_code(db).unwrap_or(Code::InvalidArgument);
                // The constraint name tells the caller what was wrong, not the data.
                let constraint = db
                    .as_database_error()
                    .and_then(|d| d.constraint())
                    .unwrap_or("a constraint");
                Status::new(code, format!("rejected by {constraint}"))
            }
            _ => {
                tracing::error!(error = %e, "conversations internal error");
                Status::internal("internal error")
            }
        }
    }
}
