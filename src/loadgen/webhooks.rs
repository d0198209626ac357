//! `faro loadgen webhooks`: signed, realistic webhooks (WhatsApp texts,
//! batched entries and statuses; Messenger; Instagram; YCloud) against a
//! running FARO, at a fixed rate (open loop: each webhook is timed from when
//! it was due, so a server that falls behind shows its queueing instead of
//! slowing the generator down — no coordinated omission) or from N workers
//! back to back (closed loop). One agent WebSocket per `--token` (one per
//! tenant) times each message from sent to its live frame, matched by the
//! `<marker>-<n>` its id carries. With `--database-url` it then counts the
//! stored messages by the ids it sent: lost or duplicated ones fail the run.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{
    check_marker,
    http::Conn,
    payloads::{self, Media, Msg, Platform},
    sockets, unix_micros,
};

pub use super::webhooks_args::WebhooksArgs;

/// One message sent: its id, when it was due, whether acked or seen live.
pub(super) struct Sent {
    pub id: String,
    due_us: u64,
    pub acked: bool,
    delivered: bool,
}

/// What the senders, subscribers and progress line share.
pub(super) struct Shared {
    pub messages: Mutex<HashMap<usize, Sent>>,
    pub ack: Mutex<Histogram<u64>>,
    pub e2e: Mutex<Histogram<u64>>,
    pub errors: Mutex<BTreeMap<String, usize>>,
    pub webhooks_sent: AtomicUsize,
    pub webhooks_acked: AtomicUsize,
    pub messages_sent: AtomicUsize,
    pub messages_acked: AtomicUsize,
    pub delivered: AtomicUsize,
    next_webhook: AtomicUsize,
    next_message: AtomicUsize,
}

/// 1 µs to an hour, 3 significant digits (as `faro loadgen report`).
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000, 3)?)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            messages: Mutex::default(),
            ack: Mutex::new(histogram()?),
            e2e: Mutex::new(histogram()?),
            errors: Mutex::default(),
            webhooks_sent: AtomicUsize::new(0),
            webhooks_acked: AtomicUsize::new(0),
            messages_sent: AtomicUsize::new(0),
            messages_acked: AtomicUsize::new(0),
            delivered: AtomicUsize::new(0),
            next_webhook: AtomicUsize::new(0),
            next_message: AtomicUsize::new(0),
        })
    }

    pub(super) fn error(&self, what: String) {
        *lock(&self.errors).entry(what).or_default() += 1;
    }

    /// A live frame carrying message `n` arrived.
    pub(super) fn seen(&self, n: usize, at_us: u64) {
        let mut messages = lock(&self.messages);
        if let Some(m) = messages.get_mut(&n)
            && !m.delivered
        {
            m.delivered = true;
            let _ = lock(&self.e2e).record(at_us.saturating_sub(m.due_us).max(1));
            self.delivered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One webhook ready to post.
struct Webhook {
    platform: Platform,
    body: String,
    /// The messages it carries (none for a status).
    messages: Vec<usize>,
}

/// What to send: (platform, account) in turn.
struct Plan {
    accounts: Vec<(Platform, String)>,
    marker: String,
    customers: usize,
    batch: usize,
    status_every: usize,
    media_every: usize,
    meta_secret: String,
    ycloud_secret: String,
}

impl Plan {
    /// Webhook `i`, its messages registered as due at `due_us`.
    fn build(&self, shared: &Shared, i: usize, due_us: u64) -> Webhook {
        let (platform, account) = &self.accounts[i % self.accounts.len()];
        let round = i / self.accounts.len();
        let unix_ms = i64::try_from(due_us / 1000).unwrap_or_default();
        let customer = round % self.customers;
        if *platform == Platform::WhatsApp
            && self.status_every > 0
            && round % self.status_every == self.status_every - 1
        {
            let id = format!("wamid.LGSTATUS.{}.{i}", self.marker.replace('.', "_"));
            let body = payloads::whatsapp_status(account, &id, customer, unix_ms);
            return Webhook {
                platform: *platform,
                body,
                messages: vec![],
            };
        }
        let k = if *platform == Platform::WhatsApp {
            self.batch
        } else {
            1
        };
        let first = shared.next_message.fetch_add(k, Ordering::Relaxed);
        let msgs: Vec<Msg<'_>> = (first..first + k)
            .map(|n| Msg {
                account,
                customer: (customer + n - first) % self.customers,
                id: payloads::message_id(*platform, &self.marker, n),
                text: format!("Hola, ¿tienen disponibilidad? {}-{n}", self.marker),
                unix_ms,
                media: Media::nth(n, self.media_every),
            })
            .collect();
        let body = match platform {
            Platform::WhatsApp => payloads::whatsapp(&msgs),
            Platform::Messenger | Platform::Instagram => payloads::messaging(*platform, &msgs[0]),
            Platform::YCloud => payloads::ycloud(&msgs[0]),
        };
        let mut messages = lock(&shared.messages);
        for (n, m) in (first..).zip(msgs) {
            messages.insert(
                n,
                Sent {
                    id: m.id,
                    due_us,
                    acked: false,
                    delivered: false,
                },
            );
        }
        drop(messages);
        Webhook {
            platform: *platform,
            body,
            messages: (first..first + k).collect(),
        }
    }
}

/// Posts one webhook on `conn` (opening one if needed) and records the answer,
/// timed from `due` (open loop: when it should have gone; closed: when it went).
async fn send(
    plan: &Plan,
    shared: &Shared,
    edge: SocketAddr,
    conn: &mut Option<Conn>,
    hook: Webhook,
    due: Instant,
) {
    shared.webhooks_sent.fetch_add(1, Ordering::Relaxed);
    shared
        .messages_sent
        .fetch_add(hook.messages.len(), Ordering::Relaxed);
    let (name, value) = payloads::signature(
        hook.platform,
        &plan.meta_secret,
        &plan.ycloud_secret,
        hook.body.as_bytes(),
    );
    let result = match conn {
        Some(c) => Ok(c),
        None => Conn::open(edge).await.map(|c| conn.insert(c)),
    };
    let answer = match result {
        Ok(c) => {
            c.post(
                edge,
                hook.platform.path(),
                (name, &value),
                hook.body.as_bytes(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    let took = u64::try_from(due.elapsed().as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    match answer {
        Ok((200, keep)) => {
            let _ = lock(&shared.ack).record(took);
            shared.webhooks_acked.fetch_add(1, Ordering::Relaxed);
            shared
                .messages_acked
                .fetch_add(hook.messages.len(), Ordering::Relaxed);
            let mut messages = lock(&shared.messages);
            for n in &hook.messages {
                if let Some(m) = messages.get_mut(n) {
                    m.acked = true;
                }
            }
            if !keep {
                *conn = None;
            }
        }
        Ok((status, keep)) => {
            shared.error(format!("{} {status}", hook.platform.name()));
            if !keep {
                *conn = None;
            }
        }
        Err(e) => {
            shared.error(format!("io: {}", e.kind()));
            *conn = None;
        }
    }
}

fn plan(args: &WebhooksArgs) -> anyhow::Result<Plan> {
    check_marker(&args.marker)?;
    let mut accounts = Vec::new();
    for (platform, ids) in [
        (Platform::WhatsApp, &args.whatsapp),
        (Platform::Messenger, &args.messenger),
        (Platform::Instagram, &args.instagram),
        (Platform::YCloud, &args.ycloud),
    ] {
        accounts.extend(ids.iter().map(|id| (platform, id.clone())));
    }
    anyhow::ensure!(
        !accounts.is_empty(),
        "name an account: --whatsapp, --messenger, --instagram or --ycloud"
    );
    anyhow::ensure!(
        args.ycloud.is_empty() || args.ycloud_secret.is_some(),
        "--ycloud needs --ycloud-secret"
    );
    anyhow::ensure!(
        args.count.is_some() || args.duration_secs.is_some(),
        "give --count or --duration-secs"
    );
    anyhow::ensure!(
        args.customers > 0 && args.batch > 0 && args.concurrency > 0 && args.max_connections > 0,
        "--customers, --batch, --concurrency and --max-connections must be at least 1"
    );
    anyhow::ensure!(
        args.rate.is_none_or(|r| r > 0.0 && r.is_finite()),
        "--rate must be positive"
    );
    anyhow::ensure!(
        args.tokens.is_empty() || args.ws_url.is_some(),
        "--token needs --ws-url"
    );
    Ok(Plan {
        accounts,
        marker: args.marker.clone(),
        customers: args.customers,
        batch: args.batch,
        status_every: args.status_every,
        media_every: args.media_every,
        meta_secret: args.app_secret.clone(),
        ycloud_secret: args.ycloud_secret.clone().unwrap_or_default(),
    })
}

pub async fn run(mut args: WebhooksArgs) -> anyhow::Result<()> {
    check_marker(&args.marker)?; // before provisioning anything
    if args.provision.tenants > 0 {
        let p = super::provision::provision(
            &args.provision,
            &args.app_secret,
            args.ycloud_secret.as_deref(),
        )
        .await?;
        eprintln!("loadgen: provisioned {} tenants", p.tokens.len());
        if let Some(path) = &args.provision.provisioned_out {
            super::provision::write(&p, path)?;
        }
        args.whatsapp.extend(p.whatsapp);
        args.messenger.extend(p.messenger);
        args.instagram.extend(p.instagram);
        args.ycloud.extend(p.ycloud);
        if args.ws_url.is_some() {
            args.tokens.extend(p.tokens);
        }
    }
    let plan = Arc::new(plan(&args)?);
    let shared = Arc::new(Shared::new()?);
    let stop = CancellationToken::new();
    let mut subscribers = JoinSet::new();
    if let Some(url) = &args.ws_url {
        for token in &args.tokens {
            let target = sockets::target(url, token).await?;
            let ws = sockets::open(&target, IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                .await
                .map_err(|e| anyhow::anyhow!("subscriber: {e}"))?;
            subscribers.spawn(super::webhooks_report::subscribe(
                ws,
                args.marker.clone(),
                shared.clone(),
                stop.clone(),
            ));
        }
    }
    let ticker = tokio::spawn(super::webhooks_report::progress(shared.clone()));
    let started = Instant::now();
    let deadline = args
        .duration_secs
        .map(|s| started + Duration::from_secs_f64(s));
    let count = args.count.unwrap_or(usize::MAX);
    let (start_us, edge) = (unix_micros(), args.edge);
    if let Some(rate) = args.rate {
        // Open loop: webhook i is due at start + i / rate, sent then whatever
        // earlier ones are still waiting for, and timed from then.
        let pool: Arc<Mutex<Vec<Conn>>> = Arc::default();
        let slots = Arc::new(tokio::sync::Semaphore::new(args.max_connections));
        let mut inflight = JoinSet::new();
        for i in 0..count {
            let offset = Duration::from_secs_f64(i as f64 / rate);
            let due = started + offset;
            if deadline.is_some_and(|d| due >= d) {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let due_us = start_us + u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
            let (plan, shared, pool) = (plan.clone(), shared.clone(), pool.clone());
            let slots = slots.clone();
            inflight.spawn(async move {
                let _slot = slots.acquire().await; // held until sent
                // A server far behind would keep the run going for minutes
                // after its duration: what is still unsent 2 s past it is
                // counted, not sent.
                if deadline.is_some_and(|d| Instant::now() > d + Duration::from_secs(2)) {
                    shared.error("unsent: the server fell behind".into());
                    return;
                }
                let hook = plan.build(&shared, i, due_us);
                let mut conn = lock(&pool).pop();
                send(&plan, &shared, edge, &mut conn, hook, due).await;
                lock(&pool).extend(conn);
            });
            while inflight.try_join_next().is_some() {}
        }
        while inflight.join_next().await.is_some() {}
    } else {
        let mut workers = JoinSet::new();
        for _ in 0..args.concurrency {
            let (plan, shared) = (plan.clone(), shared.clone());
            workers.spawn(async move {
                let mut conn = None;
                loop {
                    let i = shared.next_webhook.fetch_add(1, Ordering::Relaxed);
                    if i >= count || deadline.is_some_and(|d| Instant::now() >= d) {
                        return;
                    }
                    let due = Instant::now();
                    let hook = plan.build(&shared, i, unix_micros());
                    send(&plan, &shared, edge, &mut conn, hook, due).await;
                }
            });
        }
        while workers.join_next().await.is_some() {}
    }
    let load_secs = started.elapsed().as_secs_f64();
    let result =
        super::webhooks_report::finish(&args, &shared, load_secs, !subscribers.is_empty()).await;
    ticker.abort();
    stop.cancel();
    while subscribers.join_next().await.is_some() {}
    result
}

impl WebhooksArgs {
    pub(super) fn rate_given(&self) -> bool {
        self.rate.is_some()
    }
}

pub(super) fn errors(shared: &Shared) -> BTreeMap<String, usize> {
    lock(&shared.errors).clone()
}

pub(super) fn histogram_of(h: &Mutex<Histogram<u64>>) -> Histogram<u64> {
    lock(h).clone()
}

/// The ids of every acknowledged message: what Postgres must hold once each.
pub(super) fn acked_ids(shared: &Shared) -> Vec<String> {
    lock(&shared.messages)
        .values()
        .filter(|m| m.acked)
        .map(|m| m.id.clone())
        .collect()
}
