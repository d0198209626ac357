//! `faro loadgen bare-server`: the ceiling the edge is measured against in
//! `scripts/bench-limits`. The same hyper server stack as the edge (hyper 1,
//! `hyper_util`'s auto builder on the multi-threaded runtime, `TCP_NODELAY`),
//! reading each POST's body whole and checking its `X-Hub-Signature-256`
//! (HMAC-SHA256 under the app secret, compared in constant time) as Meta's
//! signature is checked, then answering 200 — and nothing else: no routing
//! lookup, no parse, no queue. FARO's acks/s as a fraction of this server's,
//! driven by the same `faro loadgen webhooks` in the same run, is how close
//! to the machine its edge is.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context;
use clap::Args;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode, body::Bytes, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use sha2::Sha256;

#[derive(Args)]
pub struct BareServerArgs {
    /// Where to listen (plain HTTP/1.1 or h2c, as the edge).
    #[arg(long, default_value = "127.0.0.1:18999")]
    listen: SocketAddr,
    /// The secret the bodies are signed with (as the loadgen's --app-secret).
    #[arg(
        long = "app-secret",
        env = "FARO_LOADGEN_APP_SECRET",
        hide_env_values = true
    )]
    app_secret: String,
    /// Larger bodies get 413 (the edge's default limit).
    #[arg(long = "max-body-bytes", default_value_t = 3 * 1024 * 1024)]
    max_body_bytes: usize,
}

/// What the server answered, printed when it stops.
#[derive(Default)]
struct Counts {
    ok: AtomicU64,
    refused: AtomicU64,
}

/// The decoded digest of a `sha256=<64 hex>` header value.
fn digest(value: &[u8]) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(value.strip_prefix(b"sha256=")?, &mut out).ok()?;
    Some(out)
}

/// Whether `header` is the HMAC-SHA256 of `body` under `secret`.
fn signed(secret: &[u8], body: &[u8], header: Option<&[u8]>) -> bool {
    let (Some(want), Ok(mut mac)) = (
        header.and_then(digest),
        Hmac::<Sha256>::new_from_slice(secret),
    ) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&want).is_ok()
}

async fn answer(
    req: Request<Incoming>,
    secret: Arc<[u8]>,
    max_body: usize,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = req
        .headers()
        .get("x-hub-signature-256")
        .map(|v| v.as_bytes().to_vec());
    let body = Limited::new(req.into_body(), max_body)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes);
    let (status, text) = match body {
        Err(_) => (StatusCode::PAYLOAD_TOO_LARGE, "{\"error\":\"body\"}"),
        Ok(body) if signed(&secret, &body, header.as_deref()) => {
            (StatusCode::OK, "{\"status\":\"ok\"}")
        }
        Ok(_) => (StatusCode::UNAUTHORIZED, "{\"error\":\"bad_signature\"}"),
    };
    let counter = if status == StatusCode::OK {
        &counts.ok
    } else {
        &counts.refused
    };
    counter.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

pub async fn run(args: BareServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    eprintln!("bare-server: listening on {}", listener.local_addr()?);
    let secret: Arc<[u8]> = args.app_secret.into_bytes().into();
    let counts = Arc::new(Counts::default());
    let max_body = args.max_body_bytes;
    let signal = crate::serve::signal();
    tokio::pin!(signal);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("bare-server: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (secret, counts) = (secret.clone(), counts.clone());
        tokio::spawn(async move {
            let service =
                service_fn(move |req| answer(req, secret.clone(), max_body, counts.clone()));
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
    eprintln!(
        "bare-server: stopped; {} answered 200, {} refused",
        counts.ok.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_secrets_own_signature_passes() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = faro_edge::sign_meta_payload(b"s3cret", body);
        assert!(signed(b"s3cret", body, Some(good.as_bytes())));
        assert!(!signed(b"other", body, Some(good.as_bytes())));
        assert!(!signed(b"s3cret", b"{}", Some(good.as_bytes())));
        assert!(!signed(b"s3cret", body, Some(&good.as_bytes()[7..])));
        assert!(!signed(b"s3cret", body, None));
    }
}
