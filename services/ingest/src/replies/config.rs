//! How replies are sent: where the platforms are, how long a send may take,
//! and how often a transient failure is retried.

use std::time::Duration;

use crate::Error;

#[derive(Clone, Debug)]
pub struct SendConfig {
    /// Meta's Graph API, without the version (`https://graph.facebook.com`).
    pub graph_base_url: String,
    /// The Graph API version in every path (`v23.0`).
    pub graph_api_version: String,
    /// YCloud's API root (`https://api.ycloud.com/v2`).
    pub ycloud_base_url: String,
    /// The whole of one HTTP send, connect included (milliseconds).
    pub timeout_ms: u64,
    /// Sends a reply gets, the first included, before a transient failure
    /// marks it failed.
    pub attempts: u32,
    /// Full-jitter backoff between sends: the cap of the first delay, doubling
    /// up to the max (milliseconds).
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Replies in flight per ingest process.
    pub concurrency: usize,
}

impl Default for SendConfig {
    fn default() -> Self {
        Self {
            graph_base_url: "https://graph.facebook.com".into(),
            graph_api_version: "v23.0".into(),
            ycloud_base_url: "https://api.ycloud.com/v2".into(),
            timeout_ms: 10_000,
            attempts: 5,
            retry_base_ms: 500,
            retry_max_ms: 30_000,
            concurrency: 256,
        }
    }
}

impl SendConfig {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        for (name, url) in [
            ("graph-base-url", &self.graph_base_url),
            ("ycloud-base-url", &self.ycloud_base_url),
        ] {
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.ends_with('/') {
                return Err(Error::Config(format!(
                    "{name} must be an http(s) URL without a trailing slash"
                )));
            }
        }
        let v = &self.graph_api_version;
        if !v.starts_with('v')
            || v.len() > 10
            || !v[1..].chars().all(|c| c.is_ascii_digit() || c == '.')
        {
            return Err(Error::Config(
                "graph-api-version must look like v23.0".into(),
            ));
        }
        if self.timeout_ms == 0 || self.attempts == 0 || self.concurrency == 0 {
            return Err(Error::Config(
                "send-timeout-ms, send-attempts and send-concurrency must be at least 1".into(),
            ));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err(Error::Config(
                "send-retry-base-ms must be at least 1 and send-retry-max-ms at least that".into(),
            ));
        }
        Ok(())
    }

    pub(crate) fn retry(&self) -> crate::retry::Policy {
        crate::retry::Policy {
            attempts: self.attempts,
            base: Duration::from_millis(self.retry_base_ms),
            max: Duration::from_millis(self.retry_max_ms),
        }
    }

    /// One pooled client for every send: rustls, timeouts, no redirects
    /// (a send is a POST; a redirect is the platform misbehaving).
    pub(crate) fn http_client(&self) -> Result<reqwest::Client, Error> {
        reqwest::Client::builder()
            .timeout(Duration::from_millis(self.timeout_ms))
            .connect_timeout(Duration::from_millis(self.timeout_ms.min(5_000)))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("faro")
            .build()
            .map_err(|e| Error::Config(format!("http client: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_urls_and_versions() {
        assert!(SendConfig::default().validate().is_ok());
        for c in [
            SendConfig {
                graph_base_url: "graph.facebook.com".into(),
                ..SendConfig::default()
            },
            SendConfig {
                ycloud_base_url: "https://api.ycloud.com/v2/".into(),
                ..SendConfig::default()
            },
            SendConfig {
                graph_api_version: "23".into(),
                ..SendConfig::default()
            },
            SendConfig {
                attempts: 0,
                ..SendConfig::default()
            },
        ] {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
