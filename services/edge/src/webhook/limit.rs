//! A bound on webhook work done before a signature is verified (reading ids,
//! looking accounts up, hashing): anyone can ask for that work, so a flood of
//! junk must queue behind a fixed number of permits instead of taking every
//! core from the deliveries that verify. A request waits its turn (Meta sends
//! bursts), but not forever: past `wait` it is a 503 and Meta retries.

use std::{sync::Arc, time::Duration};

use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// Unverified requests worked on at once. Each holds at most one body (read
/// already) and one routing lookup; with the scan and the HMAC costing
/// milliseconds even for a maximal body, this is far above what two cores can
/// usefully run at once.
pub(crate) const MAX_UNVERIFIED: usize = 64;
/// How long a request waits for its turn before it is answered 503.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct UnverifiedLimit {
    permits: Arc<Semaphore>,
    wait: Duration,
}

impl UnverifiedLimit {
    pub(crate) fn new(permits: usize, wait: Duration) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(permits)),
            wait,
        }
    }

    /// A permit, held until the signature is verified or refused; a 503 if
    /// none frees up within the wait.
    pub(crate) async fn enter(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let acquire = self.permits.clone().acquire_owned();
        match tokio::time::timeout(self.wait, acquire).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => {
                tracing::warn!(
                    limit = MAX_UNVERIFIED,
                    "unverified webhook refused: too many in progress"
                );
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many webhooks are being verified; retry later",
                ))
            }
        }
    }
}

impl Default for UnverifiedLimit {
    fn default() -> Self {
        Self::new(MAX_UNVERIFIED, MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn over_the_bound_requests_wait_their_turn_then_get_a_503() {
        let limit = Arc::new(UnverifiedLimit::new(2, Duration::ZERO));
        let a = limit.enter().await.expect("first");
        let _b = limit.enter().await.expect("second");
        let refused = limit.enter().await.expect_err("third is over the bound");
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
        );
        let response = refused.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key(http::header::RETRY_AFTER));
        drop(a);
        assert!(
            limit.enter().await.is_ok(),
            "a finished request frees its permit"
        );

        // With a wait, a request queued behind a busy permit gets it when freed.
        let patient = Arc::new(UnverifiedLimit::new(1, Duration::from_secs(3600)));
        let held = patient.enter().await.expect("first");
        let waiter = tokio::spawn({
            let patient = patient.clone();
            async move { patient.enter().await.is_ok() }
        });
        tokio::task::yield_now().await;
        drop(held);
        assert!(
            waiter.await.expect("joined"),
            "the queued request is served"
        );
    }
}
