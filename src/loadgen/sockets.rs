//! `faro loadgen sockets`: many idle agent WebSockets, and when each one got
//! each marked event.
//!
//! Sockets are opened from several local addresses in turn (`--source`):
//! one address has about 28,000 ephemeral ports, so 50,000 sockets from one
//! host need more than one. Each socket's upgrade completes only once the
//! edge has joined it to its tenant's live feed, so "connected" here means
//! "subscribed". Once every socket is open the ready file is written; then
//! each socket records the wall-clock time of the first frame carrying
//! `<marker>-<n>` for each n below `--events`, and the results are written
//! when every socket has them all (or is gone, or the wait is over).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use serde_json::json;
use tokio::{net::TcpSocket, sync::Semaphore, task::JoinSet};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::{HeaderValue, Request, header::AUTHORIZATION},
        protocol::WebSocketConfig,
    },
};
use tokio_util::sync::CancellationToken;

use super::{check_marker, unix_micros, write_json};

#[derive(Args)]
pub struct SocketsArgs {
    /// WebSocket URL of an edge's live stream; repeat to spread the sockets
    /// over several edges in turn.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// The agent JWT every socket presents (see `faro token`).
    #[arg(long, env = "FARO_TOKEN", hide_env_values = true)]
    token: String,
    /// How many sockets this process opens.
    #[arg(long, default_value_t = 100)]
    sockets: usize,
    /// Local addresses to connect from, in turn (comma separated): about
    /// 28,000 sockets fit on one.
    #[arg(long = "source", value_delimiter = ',', default_value = "127.0.0.1")]
    sources: Vec<IpAddr>,
    /// Connects in progress at once.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Marked events carry `<marker>-<n>`.
    #[arg(long, default_value = "loadgen")]
    marker: String,
    /// Wait for marked events 0..N on every socket.
    #[arg(long, default_value_t = 1)]
    events: usize,
    /// Written (JSON) once every socket is open or has failed.
    #[arg(long = "ready-file")]
    ready_file: Option<PathBuf>,
    /// Where the results go (JSON); standard output without it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stop waiting for marked events after this long.
    #[arg(long = "wait-secs", default_value_t = 300)]
    wait_secs: u64,
}

/// One edge to connect to.
pub(super) struct Target {
    request: Request<()>,
    addr: SocketAddr,
}

pub(super) async fn target(url: &str, token: &str) -> anyhow::Result<Target> {
    let mut request = url.into_client_request().context("--url")?;
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).context("--token")?,
    );
    let uri = request.uri();
    let host = uri.host().context("--url needs a host")?;
    let port = uri.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((host, port))
        .await?
        .find(SocketAddr::is_ipv4)
        .with_context(|| format!("{host} has no IPv4 address"))?;
    Ok(Target { request, addr })
}

pub(super) type Ws = WebSocketStream<tokio::net::TcpStream>;

/// Small buffers: tens of thousands of idle sockets live in this process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

pub(super) async fn open(target: &Target, source: IpAddr) -> Result<Ws, String> {
    let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
    socket
        .bind(SocketAddr::new(source, 0))
        .map_err(|e| format!("bind {source}: {e}"))?;
    let stream = socket
        .connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(target.request.clone(), stream, Some(config()))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
    Ok(ws)
}

/// The `n` of the first `<marker>-<n>` in `text`.
pub(super) fn marked(text: &str, marker: &str) -> Option<usize> {
    text.match_indices(marker).find_map(|(at, _)| {
        let rest = text[at + marker.len()..].strip_prefix('-')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest[..digits].parse().ok()
    })
}

/// Counters the connect tasks, the sockets and the progress line share.
#[derive(Default)]
struct Progress {
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Sockets with every marked event, or gone.
    finished: AtomicUsize,
    errors: Mutex<BTreeMap<String, usize>>,
}

impl Progress {
    fn failure(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(why).or_default() += 1;
    }
}

/// What one socket saw.
struct Seen {
    /// Wall-clock µs per marked event; `None`: not received.
    receipts: Vec<Option<u64>>,
    /// Why it ended early, if it did.
    ended: Option<String>,
}

async fn watch(
    mut ws: Ws,
    marker: Arc<str>,
    events: usize,
    progress: Arc<Progress>,
    stop: CancellationToken,
) -> Seen {
    let mut seen = Seen {
        receipts: vec![None; events],
        ended: None,
    };
    let mut missing = events;
    let mut counted = false;
    if missing == 0 {
        progress.finished.fetch_add(1, Ordering::Relaxed);
        counted = true;
    }
    loop {
        let frame = tokio::select! {
            () = stop.cancelled() => break,
            frame = ws.next() => frame,
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                let at = unix_micros();
                if let Some(n) = marked(text.as_str(), &marker)
                    && let Some(slot @ None) = seen.receipts.get_mut(n)
                {
                    *slot = Some(at);
                    missing -= 1;
                    if missing == 0 {
                        progress.finished.fetch_add(1, Ordering::Relaxed);
                        counted = true;
                    }
                }
            }
            Some(Ok(Message::Close(c))) => {
                seen.ended =
                    Some(c.map_or_else(|| "closed".into(), |c| format!("closed {}", c.code)));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                seen.ended = Some(format!("error: {e}"));
                break;
            }
            None => {
                seen.ended = Some("ended".into());
                break;
            }
        }
    }
    if !counted {
        progress.finished.fetch_add(1, Ordering::Relaxed);
    }
    // Kept open until every socket is done: no socket closes while others
    // are still being measured.
    stop.cancelled().await;
    seen
}

pub async fn run(args: SocketsArgs) -> anyhow::Result<()> {
    check_marker(&args.marker)?;
    anyhow::ensure!(!args.sources.is_empty(), "--source needs an address");
    anyhow::ensure!(args.concurrency > 0, "--concurrency must be at least 1");
    let mut targets = Vec::new();
    for url in &args.urls {
        targets.push(Arc::new(target(url, &args.token).await?));
    }
    let marker: Arc<str> = args.marker.as_str().into();
    let progress = Arc::new(Progress::default());
    let stop = CancellationToken::new();
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let started = Instant::now();
    let mut sockets = JoinSet::new();
    let ticker = tokio::spawn(report_progress(progress.clone(), args.sockets));
    for i in 0..args.sockets {
        let permit = permits.clone().acquire_owned().await?;
        let target = targets[i % targets.len()].clone();
        let source = args.sources[(i / targets.len()) % args.sources.len()];
        let (marker, progress, stop) = (marker.clone(), progress.clone(), stop.clone());
        sockets.spawn(async move {
            // Counted before the permit goes back: once every permit is
            // back, the counts are final.
            let ws = match open_retrying(&target, source).await {
                Ok(ws) => {
                    progress.connected.fetch_add(1, Ordering::Relaxed);
                    ws
                }
                Err(why) => {
                    progress.failure(why);
                    return None;
                }
            };
            drop(permit);
            Some(watch(ws, marker, args.events, progress, stop).await)
        });
    }
    // Every connect has ended once all permits are back.
    let _all = permits.acquire_many(args.concurrency as u32).await?;
    let connect_secs = started.elapsed().as_secs_f64();
    let connected = progress.connected.load(Ordering::Relaxed);
    let failed = progress.failed.load(Ordering::Relaxed);
    eprintln!("loadgen: {connected} sockets open, {failed} failed, in {connect_secs:.1} s");
    let errors = progress
        .errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ready = json!({"connected": connected, "failed": failed, "connect_secs": connect_secs,
                       "errors": errors});
    if let Some(path) = &args.ready_file {
        write_json(Some(path), &ready)?;
    }
    let deadline = Instant::now() + Duration::from_secs(args.wait_secs);
    while progress.finished.load(Ordering::Relaxed) < connected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ticker.abort();
    stop.cancel();
    let mut receipts: Vec<Vec<u64>> = vec![Vec::new(); args.events];
    let mut ended: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = sockets.join_next().await {
        let Some(seen) = done.context("a socket task")? else {
            continue;
        };
        for (n, at) in seen.receipts.into_iter().enumerate() {
            receipts[n].extend(at);
        }
        if let Some(why) = seen.ended {
            *ended.entry(why).or_default() += 1;
        }
    }
    let received: Vec<usize> = receipts.iter().map(Vec::len).collect();
    eprintln!("loadgen: marked events received per event: {received:?} of {connected}");
    write_json(
        args.out.as_deref(),
        &json!({
            "sockets": args.sockets, "connected": connected, "failed": failed,
            "connect_secs": connect_secs, "errors": errors, "ended_early": ended,
            "marker": args.marker, "events": args.events,
            "receipts_unix_us": receipts,
        }),
    )
}

/// A connect that failed for want of a port or a backlog slot is tried
/// again a few times before it counts as failed.
async fn open_retrying(target: &Target, source: IpAddr) -> Result<Ws, String> {
    let mut wait = Duration::from_millis(100);
    for _ in 0..4 {
        match open(target, source).await {
            Ok(ws) => return Ok(ws),
            Err(why) if why.starts_with("upgrade: HTTP error") => return Err(why),
            Err(_) => tokio::time::sleep(wait).await,
        }
        wait *= 2;
    }
    open(target, source).await
}

async fn report_progress(progress: Arc<Progress>, wanted: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!(
            "loadgen: {}/{wanted} open, {} failed, {} done",
            progress.connected.load(Ordering::Relaxed),
            progress.failed.load(Ordering::Relaxed),
            progress.finished.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::marked;

    #[test]
    fn the_marked_number_is_read_after_the_marker() {
        assert_eq!(marked(r#"{"agent":"lg-12"}"#, "lg"), Some(12));
        assert_eq!(marked(r#"{"text":"lg-0 rest"}"#, "lg"), Some(0));
        assert_eq!(marked(r#"{"agent":"lg_12"}"#, "lg"), None);
        assert_eq!(marked(r#"{"agent":"lg-"}"#, "lg"), None);
        assert_eq!(marked("nothing", "lg"), None);
    }
}
