//! A bound on webhook work done before a signature is verified (reading ids,
//! looking accounts up, hashing): anyone can ask for that work, so a flood of
//! junk must queue behind a fixed number of permits instead of taking every
//! core from the deliveries that verify.

use std::sync::Arc;

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Unverified requests worked on at once. Each holds at most one body (read
/// already) and one routing lookup; with the scan and the HMAC costing
/// milliseconds even for a maximal body, this is far above what Meta's own
/// traffic needs on two cores.
pub(crate) const MAX_UNVERIFIED: usize = 64;

pub(crate) struct UnverifiedLimit(Arc<Semaphore>);

impl UnverifiedLimit {
    pub(crate) fn new(permits: usize) -> Self {
        Self(Arc::new(Semaphore::new(permits)))
    }

    /// A permit, held until the signature is verified or refused; over the
    /// bound a 503 at once (Meta retries; a flood gets no queue to fill).
    pub(crate) fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.0.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(limit = MAX_UNVERIFIED, "unverified webhook refused: too many in progress");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many webhooks are being verified; retry later",
            )
        })
    }
}

impl Default for UnverifiedLimit {
    fn default() -> Self {
        Self::new(MAX_UNVERIFIED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_the_bound_is_a_503_until_a_permit_returns() {
        let limit = UnverifiedLimit::new(2);
        let a = limit.enter().expect("first");
        let _b = limit.enter().expect("second");
        let refused = limit.enter().expect_err("third is over the bound");
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(http::header::RETRY_AFTER));
        drop(a);
        assert!(limit.enter().is_ok(), "a finished request frees its permit");
    }
}
