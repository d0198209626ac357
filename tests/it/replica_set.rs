//! N replicas of every service as real `faro` processes, laid out as the
//! prod overlay runs them (one conversations, N edges, ingests and streams,
//! edge i calling ingest i and stream i, all sharing one Postgres database
//! and one Redis prefix), under mTLS with the certificates `faro certs` wrote,
//! or plaintext. Used by tests/it/replicas.rs and benches/replicas.rs.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use faro_proto::mtls::{
    Identity,
    certs::{DevPki, Issued},
};

use crate::{
    cluster::Cluster,
    process::{
        Edge, Faro, PLAINTEXT, free_addr, spawn_conversations, spawn_ingest_env, spawn_stream,
        tls_env, wait_listening,
    },
};

/// `faro certs --out <a new directory under the target dir>`: a dev CA and
/// every identity's certificate, as an operator would make them.
pub fn faro_certs() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("certs-{}", uuid::Uuid::new_v4().simple()));
    let out = Command::new(env!("CARGO_BIN_EXE_faro"))
        .args(["certs", "--out", &dir.display().to_string()])
        .env("RUST_LOG", "warn")
        .output()
        .expect("faro certs runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

/// The certificates in `dir`, for the caller's own gRPC clients
/// (`Options::pki`).
pub fn pki_from(dir: &Path) -> DevPki {
    let read =
        |f: String| std::fs::read_to_string(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    DevPki {
        ca: read("ca.pem".into()),
        issued: Identity::ALL
            .iter()
            .map(|&identity| Issued {
                identity,
                cert: read(format!("{}.pem", identity.name())),
                key: read(format!("{}-key.pem", identity.name())),
            })
            .collect(),
    }
}

/// How many of each, and how they authenticate.
pub struct Layout<'a> {
    /// Edges, ingests and streams (conversations is always one).
    pub replicas: usize,
    /// mTLS with the certificates in this directory; plaintext if `None`.
    pub tls: Option<&'a Path>,
    /// Added to every process's environment (e.g. `RUST_LOG`).
    pub env: &'a [(&'a str, &'a str)],
    /// Ingest's flags (workers, batch).
    pub ingest: &'a [&'a str],
}

/// The running processes; all are killed when this is dropped.
pub struct ReplicaSet {
    pub edges: Vec<SocketAddr>,
    pub ingests: Vec<SocketAddr>,
    pub streams: Vec<SocketAddr>,
    /// Every process's role and pid (for /proc readings).
    pub pids: Vec<(&'static str, u32)>,
    _processes: Vec<Faro>,
    _edges: Vec<Edge>,
}

/// `env` as the `&str` pairs `Faro::spawn_env` takes.
fn refs<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Starts `layout` for `c`, whose conversations address (left free by
/// `Options { conversations: false, .. }`) the conversations process takes.
pub async fn start(c: &Cluster, layout: &Layout<'_>) -> ReplicaSet {
    let env = |who: &str| {
        let tls = layout.tls.map(|dir| tls_env(dir, who)).unwrap_or_default();
        let mut env: Vec<(&str, String)> = if layout.tls.is_some() {
            tls.into_iter().collect()
        } else {
            PLAINTEXT
                .iter()
                .map(|(k, v)| (*k, (*v).to_owned()))
                .collect()
        };
        env.extend(layout.env.iter().map(|(k, v)| (*k, (*v).to_owned())));
        env
    };
    let scheme = if layout.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let n = layout.replicas;
    let (conv_env, stream_env, ingest_env, edge_env) = (
        env("conversations"),
        env("stream"),
        env("ingest"),
        env("edge"),
    );
    let mut processes = vec![spawn_conversations(c, c.conversations, &refs(&conv_env))];
    let mut pids = vec![("conversations", processes[0].pid())];
    let streams: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    let ingests: Vec<SocketAddr> = (0..n).map(|_| free_addr()).collect();
    for addr in &streams {
        let p = spawn_stream(c, *addr, &c.prefix, &refs(&stream_env));
        pids.push(("stream", p.pid()));
        processes.push(p);
    }
    let conversations_url = format!("{scheme}://{}", c.conversations);
    for addr in &ingests {
        let p = spawn_ingest_env(
            c,
            *addr,
            &conversations_url,
            layout.ingest,
            &refs(&ingest_env),
        );
        pids.push(("ingest", p.pid()));
        processes.push(p);
    }
    for addr in [c.conversations].iter().chain(&streams).chain(&ingests) {
        wait_listening(*addr).await;
    }
    let mut edges = Vec::new();
    for (ingest, stream) in ingests.iter().zip(&streams) {
        let peers = [
            conversations_url.clone(),
            format!("{scheme}://{ingest}"),
            format!("{scheme}://{stream}"),
        ];
        let edge = Edge::start_with(c, &peers, &[], &refs(&edge_env)).await;
        pids.push(("edge", edge.process.pid()));
        edges.push(edge);
    }
    ReplicaSet {
        edges: edges.iter().map(|e| e.addr).collect(),
        ingests,
        streams,
        pids,
        _processes: processes,
        _edges: edges,
    }
}
