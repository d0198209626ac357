//! A webhook answered 200 is a promise that it is in Redis; how long that
//! holds depends on how Redis is configured. Checked once at start (CONFIG
//! GET) and warned about, never refused: a development Redis may be
//! ephemeral on purpose, and managed Redis often disables CONFIG.

use std::collections::HashMap;

use fred::{
    clients::Client,
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, Value},
};

const SETTINGS: [&str; 3] = ["appendonly", "appendfsync", "maxmemory-policy"];

/// Logs a warning for each setting that would lose acknowledged webhooks.
pub(crate) async fn warn_if_lossy(client: &Client) {
    let cmd = CustomCommand::new_static("CONFIG", ClusterHash::Random, false);
    let mut args = vec!["GET"];
    args.extend(SETTINGS);
    let reply: Value = match client.custom(cmd, args).await {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(error = %e, "cannot read the redis configuration (CONFIG disabled?); durability not checked");
            return;
        }
    };
    let settings = pairs(reply);
    let warnings = assess(&settings);
    for w in &warnings {
        tracing::warn!(problem = %w, "redis may lose acknowledged webhooks");
    }
    if warnings.is_empty() && !settings.is_empty() {
        tracing::info!(?settings, "redis durability checked");
    }
}

fn pairs(v: Value) -> HashMap<String, String> {
    match v {
        Value::Map(m) => m
            .inner()
            .into_iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.as_string()?)))
            .collect(),
        other => {
            let mut flat = other.into_array().into_iter();
            let mut out = HashMap::new();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                if let (Some(k), Some(v)) = (k.as_string(), v.as_string()) {
                    out.insert(k, v);
                }
            }
            out
        }
    }
}

/// What each setting that is not safe would lose. Settings not reported
/// (hidden by a managed Redis) are not guessed at.
fn assess(settings: &HashMap<String, String>) -> Vec<String> {
    let get = |k: &str| settings.get(k).map(|v| v.to_ascii_lowercase());
    let mut out = Vec::new();
    if get("appendonly").is_some_and(|v| v != "yes") {
        out.push(
            "appendonly is not yes: a redis restart loses every queued webhook not yet stored \
             (set appendonly yes)"
                .to_owned(),
        );
    } else {
        match get("appendfsync").as_deref() {
            Some("everysec") => out.push(
                "appendfsync is everysec: a power loss or kernel crash loses up to about a second \
                 of acknowledged webhooks (appendfsync always loses none)"
                    .to_owned(),
            ),
            Some("no") => out.push(
                "appendfsync is no: a power loss or kernel crash loses what the OS had not yet \
                 written, typically up to 30 seconds of acknowledged webhooks"
                    .to_owned(),
            ),
            _ => {}
        }
    }
    if let Some(policy) = get("maxmemory-policy")
        && policy != "noeviction"
    {
        out.push(format!(
            "maxmemory-policy is {policy}: under memory pressure redis may evict queued jobs \
             (set noeviction, so that a full redis refuses new webhooks with 503 instead)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn only_settings_that_lose_acknowledged_webhooks_are_warned_about() {
        let safe = settings(&[
            ("appendonly", "yes"),
            ("appendfsync", "always"),
            ("maxmemory-policy", "noeviction"),
        ]);
        assert!(assess(&safe).is_empty());
        let lossy = settings(&[
            ("appendonly", "no"),
            ("appendfsync", "everysec"),
            ("maxmemory-policy", "allkeys-lru"),
        ]);
        let w = assess(&lossy);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].starts_with("appendonly") && w[1].contains("allkeys-lru"));
        let everysec = settings(&[("appendonly", "yes"), ("appendfsync", "everysec")]);
        assert!(assess(&everysec)[0].contains("about a second"));
        assert!(
            assess(&HashMap::new()).is_empty(),
            "hidden settings are not guessed"
        );
    }
}
