//! Starting the chosen services on their listeners, and stopping them in
//! stages on a signal or a token.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Connections the kernel queues for a service until it accepts them (std's
/// and tokio's default is 128): at the edge's connection cap, and in a burst,
/// clients wait there rather than have their SYNs dropped, which costs each
/// of them a second before it tries again.
const LISTEN_BACKLOG: u32 = 1024;

async fn bind(service: Service, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("{service:?} cannot listen on {addr}"))
}

/// The service's metrics listener, when one is configured.
async fn bind_metrics(
    service: Service,
    addr: Option<SocketAddr>,
) -> anyhow::Result<Option<TcpListener>> {
    match addr {
        Some(addr) => Ok(Some(TcpListener::bind(addr).await.with_context(|| {
            format!("{service:?} metrics cannot listen on {addr}")
        })?)),
        None => Ok(None),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            },
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Validates every selected service's configuration, binds every port, then
/// runs them until a signal. Shutdown is staged: the edge stops taking
/// webhooks and drains first, so its last submissions still reach ingest;
/// then ingest, whose workers store the batch in hand through conversations;
/// then conversations and stream. Each gRPC server drains for at most
/// `faro_proto::DRAIN_DEADLINE`.
pub async fn run(services: &[Service], args: ServeArgs) -> anyhow::Result<()> {
    run_until(services, args, signal()).await
}

pub async fn run_until(
    services: &[Service],
    args: ServeArgs,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut services = services.to_vec();
    services.dedup();
    // Fail fast: every config is checked before anything starts.
    let edge = services
        .contains(&Service::Edge)
        .then(|| args.edge())
        .transpose()?;
    let ingest = services
        .contains(&Service::Ingest)
        .then(|| args.ingest())
        .transpose()?;
    let conversations = services
        .contains(&Service::Conversations)
        .then(|| args.conversations())
        .transpose()?;
    let stream = services
        .contains(&Service::Stream)
        .then(|| args.stream())
        .transpose()?;

    if let (Some(c), true) = (&conversations, args.migrate) {
        faro_conversations::migrate(&c.database_url).await?;
        tracing::info!("migrations applied");
    }

    let front = CancellationToken::new();
    let middle = CancellationToken::new();
    let back = CancellationToken::new();
    let mut backends = JoinSet::new();
    let mut ingests = JoinSet::new();
    if let Some(c) = conversations {
        let l = bind(Service::Conversations, args.conversations_listen).await?;
        let m = bind_metrics(Service::Conversations, args.conversations_metrics_listen).await?;
        let t = back.clone();
        backends.spawn(async move {
            faro_conversations::run_with_metrics(c, l, m, t)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(c) = stream {
        let l = bind(Service::Stream, args.stream_listen).await?;
        let m = bind_metrics(Service::Stream, args.stream_metrics_listen).await?;
        let t = back.clone();
        backends.spawn(async move {
            faro_stream::run_with_metrics(c, l, m, t)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(c) = ingest {
        let l = bind(Service::Ingest, args.ingest_listen).await?;
        let m = bind_metrics(Service::Ingest, args.ingest_metrics_listen).await?;
        let t = middle.clone();
        ingests.spawn(async move {
            faro_ingest::run_with_metrics(c, l, m, t)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    let mut edge_task = match edge {
        Some(c) => {
            let l = bind(Service::Edge, args.edge_listen).await?;
            let m = bind_metrics(Service::Edge, args.edge_metrics_listen).await?;
            let t = front.clone();
            Some(tokio::spawn(async move {
                faro_edge::run_with_metrics(c, l, m, t).await
            }))
        }
        None => None,
    };

    // Run until a signal, or until any service stops on its own (a failure).
    let mut failure: Option<anyhow::Error> = None;
    tokio::select! {
        () = stop => tracing::info!("shutting down"),
        Some(done) = async {
            tokio::select! {
                Some(done) = backends.join_next() => Some(done),
                Some(done) = ingests.join_next() => Some(done),
                else => None,
            }
        } => {
            failure = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("a service stopped unexpectedly"),
                Ok(Err(e)) => e,
                Err(e) => e.into(),
            });
        }
        done = async { edge_task.as_mut().expect("guarded").await }, if edge_task.is_some() => {
            edge_task = None;
            failure = Some(match done {
                Ok(Ok(())) => anyhow::anyhow!("the edge stopped unexpectedly"),
                Ok(Err(e)) => e.into(),
                Err(e) => e.into(),
            });
        }
    }
    front.cancel();
    if let Some(task) = edge_task {
        match task.await {
            Ok(Err(e)) => tracing::error!(error = %e, "edge stopped with an error"),
            Err(e) => tracing::error!(error = %e, "edge task failed"),
            Ok(Ok(())) => {}
        }
    }
    for (token, set) in [(&middle, &mut ingests), (&back, &mut backends)] {
        token.cancel();
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Err(e)) => tracing::error!(error = %e, "service stopped with an error"),
                Err(e) => tracing::error!(error = %e, "service task failed"),
                Ok(Ok(())) => {}
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
