//! Bounds on open connections: in total (a semaphore the accept loop waits
//! on) and per client IP (a count; the excess is told 429 once it has asked,
//! and closed: [`ConnLimits::refuse`]). Idle
//! connections that never send a byte are timed from accept by the server.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
};

/// Refused connections waiting at once for their request (see
/// [`ConnLimits::refuse`]); past this, a refusal is written at once.
const REFUSALS_WAITING: usize = 256;

/// How long a refused connection is given to send its request, and then to
/// read the answer.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// What a connection over its address's cap is told before it is closed.
pub(crate) const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\n\
content-type: application/json\r\ncontent-length: 97\r\nconnection: close\r\n\r\n\
{\"error\":{\"code\":\"too_many_connections\",\"message\":\"too many open connections from this address\"}}";

pub(crate) struct ConnLimits {
    total: Arc<Semaphore>,
    per_ip_max: usize,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
    refusals: Arc<Semaphore>,
}

/// Held for as long as a connection is open; releases its slots on drop.
pub(crate) struct ConnSlot {
    _total: OwnedSemaphorePermit,
    /// `None` for a trusted proxy's connection, which no address cap counts.
    ip: Option<IpAddr>,
    per_ip: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ConnLimits {
    pub(crate) fn new(total: usize, per_ip: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_ip_max: per_ip,
            per_ip: Arc::default(),
            refusals: Arc::new(Semaphore::new(REFUSALS_WAITING)),
        }
    }

    /// Tells a connection over its address's cap why, then closes it. The
    /// answer waits (up to [`REFUSAL_WAIT`]) for the client's request:
    /// written before it, as it was, hyper- and reqwest-based clients
    /// reported an unexpected message instead of reading it. What the client
    /// still sends (a body) is read and dropped after the answer, so that
    /// closing does not reset the connection before the client has read it.
    /// At most [`REFUSALS_WAITING`] wait at once; past that the answer is
    /// written at once, so an address over its cap never costs more than
    /// that many sockets and tasks for about two seconds.
    pub(crate) fn refuse(&self, stream: TcpStream) {
        match self.refusals.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    let _permit = permit;
                    refuse_after_request(stream).await;
                });
            }
            Err(_) => {
                let _ = stream.try_write(TOO_MANY_CONNECTIONS);
            }
        }
    }

    /// Waits for a free slot in the total: the accept loop calls this before
    /// accepting, so at the cap new connections wait in the kernel's backlog
    /// instead of costing a file descriptor each.
    pub(crate) async fn total_slot(&self) -> OwnedSemaphorePermit {
        self.total
            .clone()
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("the semaphore is never closed"))
    }

    /// Counts the connection against its IP, or `None` if that IP is at its cap.
    pub(crate) fn admit(&self, total: OwnedSemaphorePermit, ip: IpAddr) -> Option<ConnSlot> {
        let mut map = lock(&self.per_ip);
        let n = map.entry(ip).or_insert(0);
        if *n >= self.per_ip_max {
            return None;
        }
        *n += 1;
        Some(ConnSlot {
            _total: total,
            ip: Some(ip),
            per_ip: self.per_ip.clone(),
        })
    }

    /// A trusted proxy's connection: it carries many clients, so only the
    /// total bounds it.
    pub(crate) fn admit_proxy(&self, total: OwnedSemaphorePermit) -> ConnSlot {
        ConnSlot {
            _total: total,
            ip: None,
            per_ip: self.per_ip.clone(),
        }
    }
}

async fn refuse_after_request(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    // The request's first bytes, or nothing in time: answered either way.
    let _ = tokio::time::timeout(REFUSAL_WAIT, stream.read(&mut buf)).await;
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
}

fn lock(m: &Mutex<HashMap<IpAddr, usize>>) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
    // A panic while holding the lock cannot leave a count half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let Some(ip) = self.ip else { return };
        let mut map = lock(&self.per_ip);
        if let Some(n) = map.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_ip_at_its_cap_is_refused_until_one_closes() {
        let limits = ConnLimits::new(10, 2);
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let s1 = limits.admit(limits.total_slot().await, a).expect("first");
        let _s2 = limits.admit(limits.total_slot().await, a).expect("second");
        assert!(limits.admit(limits.total_slot().await, a).is_none());
        let _s3 = limits
            .admit(limits.total_slot().await, b)
            .expect("another ip");
        drop(s1);
        let _s4 = limits
            .admit(limits.total_slot().await, a)
            .expect("a slot freed");
        // Held: s2, s3, s4; the refused connection gave its total slot back.
        assert_eq!(limits.total.available_permits(), 10 - 3);
    }

    #[test]
    fn the_refusal_is_a_complete_json_429() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.starts_with("HTTP/1.1 429 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(json["error"]["code"], "too_many_connections");
    }

    #[tokio::test]
    async fn the_total_cap_waits() {
        let limits = ConnLimits::new(1, 1);
        let held = limits.total_slot().await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), limits.total_slot());
        assert!(
            waiting.await.is_err(),
            "no second slot while the first is held"
        );
        drop(held);
        let _ = limits.total_slot().await;
    }
}
