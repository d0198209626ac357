//! A fake Graph API and YCloud API on loopback: records every request (path,
//! credential, JSON body, arrival time) and answers from a script, or, with
//! the script empty, the platform's documented success for that path.

use std::{
    collections::VecDeque,
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{
    net::TcpListener,
    sync::{Notify, Semaphore},
};

#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    /// `Authorization` (Graph) or `X-API-Key` (YCloud).
    pub authorization: Option<String>,
    pub api_key: Option<String>,
    pub body: Value,
    /// When it arrived (the replies benchmark's end point).
    #[allow(dead_code)]
    pub at: Instant,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Recorded>,
    script: VecDeque<(u16, Value)>,
    sent: u64,
    /// While set and not opened, answers wait (requests are recorded at once).
    gate: Option<Arc<Semaphore>>,
}

/// Held answers: [`Gate::open`] lets them (and every later one) go.
pub struct Gate(Arc<Semaphore>);

impl Gate {
    pub fn open(&self) {
        self.0.close();
    }
}

pub struct FakePlatform {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakePlatform {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The documented success answer for a send to `path`.
fn success(path: &str, body: &Value, n: u64) -> Value {
    if path.ends_with("/whatsapp/messages/sendDirectly") {
        json!({"id": format!("yc-{n}"), "wamid": format!("wamid.fake{n}"), "status": "accepted"})
    } else if body.get("messaging_product").is_some() {
        json!({"messaging_product": "whatsapp", "contacts": [{"input": body["to"], "wa_id": body["to"]}],
               "messages": [{"id": format!("wamid.fake{n}")}]})
    } else {
        json!({"recipient_id": body["recipient"]["id"], "message_id": format!("m_fake{n}")})
    }
}

impl FakePlatform {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let inner = Arc::new(Mutex::new(Inner::default()));
        let arrived = Arc::new(Notify::new());
        let (i, a) = (inner.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (i, a) = (i.clone(), a.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (i, a) = (i.clone(), a.clone());
                        async move { Ok::<_, Infallible>(answer(req, &i, &a).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            inner,
            arrived,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next requests with these, in order (then successes).
    pub fn script(&self, answers: impl IntoIterator<Item = (u16, Value)>) {
        self.inner.lock().expect("lock").script.extend(answers);
    }

    /// Holds every answer until the gate is opened: the platform has the
    /// send but the sender does not know it yet (an echo webhook can win).
    #[allow(dead_code)]
    pub fn hold_answers(&self) -> Gate {
        let gate = Arc::new(Semaphore::new(0));
        self.inner.lock().expect("lock").gate = Some(gate.clone());
        Gate(gate)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().expect("lock").requests.clone()
    }

    /// The first `n` requests, once they have come (at most 10 s).
    pub async fn wait_requests(&self, n: usize) -> Vec<Recorded> {
        self.wait_requests_for(n, Duration::from_secs(10)).await
    }

    /// The first `n` requests, once they have come (at most `patience`).
    pub async fn wait_requests_for(&self, n: usize, patience: Duration) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.arrived.notified();
            // Counted, not copied, on every arrival: copying all of them each
            // time was quadratic, and in the replies benchmark it took the
            // cores the server under test needed.
            let got = self.inner.lock().expect("lock").requests.len();
            if got >= n {
                return self.requests();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("expected {n} requests at the fake platform, got {got}");
            }
        }
    }
}

async fn answer(
    req: Request<Incoming>,
    inner: &Mutex<Inner>,
    arrived: &Notify,
) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let path = req.uri().path().to_owned();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (authorization, api_key) = (header("authorization"), header("x-api-key"));
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let (status, reply, gate) = {
        let mut i = inner.lock().expect("lock");
        i.sent += 1;
        let n = i.sent;
        let scripted = i.script.pop_front();
        i.requests.push(Recorded {
            path: path.clone(),
            authorization,
            api_key,
            body: body.clone(),
            at,
        });
        let (status, reply) = scripted.unwrap_or_else(|| (200, success(&path, &body, n)));
        (status, reply, i.gate.clone())
    };
    arrived.notify_waiters();
    if let Some(gate) = gate {
        // Closed when opened: every waiter goes on.
        let _ = gate.acquire().await;
    }
    let mut r = Response::new(Full::new(Bytes::from(reply.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("value"));
    r
}
