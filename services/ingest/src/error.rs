use tonic::Status;

/// Every failure of the ingest crate; mapped once to `tonic::Status`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("queue unavailable: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("grpc server: {0}")]
    Serve(String),
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            // The edge turns this into 503, so Meta retries later.
            Error::Redis(e) => {
                tracing::warn!(error = %e, "queue unavailable");
                Status::unavailable("queue unavailable")
            }
            e => {
                tracing::error!(error = %e, "ingest internal error");
                Status::internal("internal error")
            }
        }
    }
}
