/// Every failure of the stream crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("grpc server: {0}")]
    Serve(String),
}
