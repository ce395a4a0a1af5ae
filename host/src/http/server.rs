//! The standalone server: bind, accept under a connection cap with a
//! header-read timeout, graceful shutdown, and the cleanup janitor.

use super::{ApiToken, ServerConfig, node_routes};
use crate::WorkspaceManager;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::Filter;

/// A server running on a bound address.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    janitor: Option<tokio::task::JoinHandle<()>>,
    manager: WorkspaceManager,
}

impl RunningServer {
    /// The bound address (with the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let in-flight requests finish within `grace`.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(j) = &self.janitor {
            j.abort();
        }
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            tracing::warn!(
                "in-flight requests still running after {grace:?}; stopping git transfers and exiting (a clone cut short leaves only a staging folder, cleared on the next prepare)"
            );
            self.manager.cancel_git_operations();
            self.task.abort();
        }
    }
}

/// Bind and start serving `manager`; the janitor runs cleanups as configured.
pub async fn start(
    manager: WorkspaceManager,
    config: &ServerConfig,
    token: ApiToken,
) -> Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(config.bind)
        .await
        .map_err(|e| {
            Error::config(format!(
                "cannot listen on {}: {e}; pick another address with --bind or WORKSPACE_BIND",
                config.bind
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::config(format!("reading the bound address: {e}")))?;
    let janitor = (config.cleanup_on_startup || config.cleanup_interval.is_some()).then(|| {
        tokio::spawn(janitor(
            manager.clone(),
            config.cleanup_on_startup,
            config.cleanup_interval,
        ))
    });
    // Every answer names the node that gave it: behind a router (HAProxy,
    // deploy/haproxy/) that is how a caller and a test see where a
    // repository lives.
    let routes = node_routes(manager.clone(), token, config)?
        .with(warp::reply::with::header(
            "x-served-by",
            config.node_id.clone(),
        ))
        .map(warp::Reply::into_response)
        .boxed();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve_connections(
        listener,
        routes,
        config.max_connections,
        config.header_read_timeout,
        rx,
    ));
    Ok(RunningServer {
        addr,
        shutdown: Some(tx),
        task,
        janitor,
        manager,
    })
}

/// Accept connections until `stop`, serving each with HTTP/1.1 under a
/// header-read timeout; at most `max_connections` open at once (further
/// ones wait in the kernel's backlog). After `stop`, the listener closes
/// and open connections finish their requests.
///
/// warp's own `serve` offers neither setting, so this is its loop with
/// them added (hyper-util's connection builder and graceful shutdown).
async fn serve_connections(
    listener: tokio::net::TcpListener,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
    max_connections: usize,
    header_read_timeout: Duration,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut stop => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let service = hyper_util::service::TowerToHyperService::new(warp::service(routes.clone()));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Periodic cleanup with the policy's selection.
async fn janitor(manager: WorkspaceManager, at_start: bool, every: Option<Duration>) {
    let run = |m: WorkspaceManager| async move {
        let started = Instant::now();
        match tokio::task::spawn_blocking(move || m.cleanup(None)).await {
            Ok(Ok(r)) => tracing::info!(
                cleaned = r.cleaned_workspaces,
                failed = r.failed.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "janitor cleanup"
            ),
            Ok(Err(e)) => tracing::error!(error = %e, "janitor cleanup failed"),
            Err(e) => tracing::error!(error = %e, "janitor cleanup did not finish"),
        }
    };
    if at_start {
        run(manager.clone()).await;
    }
    if let Some(every) = every {
        let mut ticker = tokio::time::interval(every);
        ticker.tick().await; // the first tick is immediate
        loop {
            ticker.tick().await;
            run(manager.clone()).await;
        }
    }
}
