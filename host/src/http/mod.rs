//! The HTTP service (warp on tokio): the guide's three endpoints with its
//! JSON shapes, plus prepare, list, get, delete, Prometheus metrics and the
//! OpenAPI document. Mountable under any prefix by an embedding service
//! ([`routes`]), or run standalone ([`start`]).
//!
//! Manager calls block (git, disk, the policy's sync WASI bindings), so
//! they run on tokio's blocking pool. `/workspace/health` and `/metrics`
//! (the probes) run on threads of their own, so they answer even when git
//! work has taken every blocking thread; the git queue bounds that work
//! anyway. The server reads request headers under a timeout and caps open
//! connections, so idle or slow clients cannot exhaust it.

mod auth;
mod errors;

pub use auth::ApiToken;

use crate::WorkspaceManager;
use crate::error::{Error, Result};
use crate::model::PrepareRequest;
use errors::ApiError;
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// The OpenAPI 3 document of every endpoint (`docs/openapi.json`).
pub static OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// Settings of the standalone server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (`WORKSPACE_BIND`, default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// The bearer token; none: a random one is made at start-up.
    pub token: Option<ApiToken>,
    /// Largest request body accepted (`WORKSPACE_MAX_BODY_BYTES`, 64 KiB).
    pub body_limit: u64,
    /// Run a cleanup at start-up (`WORKSPACE_CLEANUP_ON_STARTUP=1`).
    pub cleanup_on_startup: bool,
    /// Run cleanups periodically (`WORKSPACE_CLEANUP_INTERVAL_MINUTES`).
    pub cleanup_interval: Option<Duration>,
    /// How long in-flight requests may run after SIGTERM (`WORKSPACE_SHUTDOWN_GRACE_SECONDS`, 30).
    pub shutdown_grace: Duration,
    /// Open connections served at once (`WORKSPACE_MAX_CONNECTIONS`, 1024);
    /// further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send its request headers
    /// (`WORKSPACE_HEADER_TIMEOUT_SECONDS`, 10).
    pub header_read_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            body_limit: 64 * 1024,
            cleanup_on_startup: false,
            cleanup_interval: None,
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

impl ServerConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = ServerConfig::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("WORKSPACE_BIND") {
            c.bind = v.trim().parse().map_err(|_| {
                Error::Config(format!(
                    "WORKSPACE_BIND={v:?} is not an address; e.g. 127.0.0.1:8080 or 0.0.0.0:8080"
                ))
            })?;
        }
        if let Some(v) = get("WORKSPACE_API_TOKEN") {
            c.token = ApiToken::new(&v);
        } else if let Some(path) = get("WORKSPACE_API_TOKEN_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!("cannot read WORKSPACE_API_TOKEN_FILE={path}: {e}"))
            })?;
            c.token = Some(ApiToken::new(&text).ok_or_else(|| {
                Error::Config(format!("WORKSPACE_API_TOKEN_FILE={path} is empty"))
            })?);
        }
        let number = |k: &str, v: &str| -> Result<u64> {
            v.trim()
                .parse()
                .map_err(|_| Error::Config(format!("{k}={v:?} is not a whole number")))
        };
        if let Some(v) = get("WORKSPACE_MAX_BODY_BYTES") {
            c.body_limit = number("WORKSPACE_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("WORKSPACE_CLEANUP_ON_STARTUP") {
            c.cleanup_on_startup = crate::config::parse_bool("WORKSPACE_CLEANUP_ON_STARTUP", &v)?;
        }
        if let Some(v) = get("WORKSPACE_CLEANUP_INTERVAL_MINUTES") {
            let minutes = number("WORKSPACE_CLEANUP_INTERVAL_MINUTES", &v)?;
            c.cleanup_interval = (minutes > 0).then(|| Duration::from_secs(minutes * 60));
        }
        if let Some(v) = get("WORKSPACE_SHUTDOWN_GRACE_SECONDS") {
            c.shutdown_grace = Duration::from_secs(number("WORKSPACE_SHUTDOWN_GRACE_SECONDS", &v)?);
        }
        if let Some(v) = get("WORKSPACE_MAX_CONNECTIONS") {
            c.max_connections = number("WORKSPACE_MAX_CONNECTIONS", &v)?.max(1) as usize;
        }
        if let Some(v) = get("WORKSPACE_HEADER_TIMEOUT_SECONDS") {
            c.header_read_timeout =
                Duration::from_secs(number("WORKSPACE_HEADER_TIMEOUT_SECONDS", &v)?.max(1));
        }
        Ok(c)
    }
}

struct AppState {
    manager: WorkspaceManager,
    token: ApiToken,
    body_limit: u64,
}

fn reject(e: ApiError) -> Rejection {
    warp::reject::custom(e)
}

/// Run a blocking manager call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Rejection> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(reject(ApiError::Manager(e))),
        Err(e) => Err(reject(ApiError::Internal(format!(
            "the operation did not finish: {e}"
        )))),
    }
}

/// Run a manager call on the probe pool, not tokio's blocking pool: for
/// the probes, which must answer while git work fills that pool.
async fn isolated<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> std::result::Result<T, Rejection> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    probe_pool().run(Box::new(move || {
        let _ = tx.send(f());
    }));
    match rx.await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(reject(ApiError::Manager(e))),
        Err(_) => Err(reject(ApiError::Internal(
            "the probe pool dropped the request".into(),
        ))),
    }
}

/// Two threads of the process's own that only ever run probe work
/// (health and metrics figures). Their work is short (a listing and a
/// policy call at most), and usually skipped: a fresh snapshot is
/// answered without them.
struct ProbePool {
    jobs: parking_lot::Mutex<std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

impl ProbePool {
    fn run(&self, job: Box<dyn FnOnce() + Send>) {
        // The workers live as long as the process, so sending cannot fail.
        let _ = self.jobs.lock().send(job);
    }
}

fn probe_pool() -> &'static ProbePool {
    static POOL: std::sync::OnceLock<ProbePool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let rx = Arc::new(parking_lot::Mutex::new(rx));
        for i in 0..2 {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("fixsec-probe-{i}"))
                .spawn(move || {
                    loop {
                        let job = rx.lock().recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })
                .expect("starting the probe threads");
        }
        ProbePool {
            jobs: parking_lot::Mutex::new(tx),
        }
    })
}

fn with_state(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Passes only requests with the right bearer token.
fn authorized(
    state: Arc<AppState>,
) -> impl Filter<Extract = (Arc<AppState>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_state(state))
        .and_then(|header: Option<String>, state: Arc<AppState>| async move {
            if state.token.matches_header(header.as_deref()) {
                Ok(state)
            } else {
                Err(reject(ApiError::Unauthorized))
            }
        })
}

/// The request body, refused past `limit` bytes (declared or streamed).
fn limited_body(limit: u64) -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared, stream| collect_limited(declared, stream, limit))
}

async fn collect_limited<B: warp::Buf>(
    declared: Option<u64>,
    stream: impl futures_util::Stream<Item = std::result::Result<B, warp::Error>>,
    limit: u64,
) -> std::result::Result<Vec<u8>, Rejection> {
    if declared.is_some_and(|n| n > limit) {
        return Err(reject(ApiError::TooLarge(limit)));
    }
    let mut stream = std::pin::pin!(stream);
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| reject(ApiError::BadRequest(format!("reading the body: {e}"))))?;
        body.extend_from_slice(chunk.chunk());
        if body.len() as u64 > limit {
            return Err(reject(ApiError::TooLarge(limit)));
        }
    }
    Ok(body)
}

/// Parse a JSON body, with serde's message on failure.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, Rejection> {
    serde_json::from_slice(body)
        .map_err(|e| reject(ApiError::BadRequest(format!("invalid JSON body: {e}"))))
}

fn json(value: &impl serde::Serialize, status: StatusCode) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(value), status).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CleanupBody {
    max_age_hours: Option<f64>,
}

/// `max_age_hours` from the JSON body, else from the query string.
fn cleanup_age(query: &str, body: &[u8]) -> std::result::Result<Option<f64>, Rejection> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let parsed: CleanupBody = parse_json(body)?;
        if parsed.max_age_hours.is_some() {
            return Ok(parsed.max_age_hours);
        }
    }
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if k == "max_age_hours" {
            return v.trim().parse::<f64>().map(Some).map_err(|_| {
                reject(ApiError::BadRequest(format!(
                    "max_age_hours={v:?} is not a number"
                )))
            });
        }
    }
    Ok(None)
}

/// Every endpoint, with JSON errors and request logging: a warp `Filter`
/// another service can mount under its own prefix.
pub fn routes(
    manager: WorkspaceManager,
    token: ApiToken,
    body_limit: u64,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let state = Arc::new(AppState {
        manager,
        token,
        body_limit,
    });
    let limit = state.body_limit;

    // Open (a liveness probe): status and counts. With the token: the
    // whole report (workspace names, sizes, paths, the policy).
    let health = warp::path!("workspace" / "health")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_state(state.clone()))
        .and_then(|header: Option<String>, state: Arc<AppState>| async move {
            let h = match state.manager.cached_health() {
                Some(h) => h,
                None => {
                    let m = state.manager.clone();
                    isolated(move || m.health()).await?
                }
            };
            if state.token.matches_header(header.as_deref()) {
                Ok::<_, Rejection>(json(&h, StatusCode::OK))
            } else {
                Ok(json(&h.public_summary(), StatusCode::OK))
            }
        });

    let stats = warp::path!("workspace" / "stats")
        .and(warp::get())
        .and(authorized(state.clone()))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let stats = blocking(move || m.stats()).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"status": "Workspace stats retrieved ✅", "stats": stats}),
                StatusCode::OK,
            ))
        });

    let cleanup = warp::path!("workspace" / "cleanup")
        .and(warp::post())
        .and(authorized(state.clone()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(limited_body(limit))
        .and_then(
            |state: Arc<AppState>, query: String, body: Vec<u8>| async move {
                let age = cleanup_age(&query, &body)?;
                let m = state.manager.clone();
                let report = blocking(move || m.cleanup(age)).await?;
                Ok::<_, Rejection>(json(
                    &serde_json::json!({
                        "status": if report.failed.is_empty() {
                            "Workspace cleanup completed ✅"
                        } else {
                            "Workspace cleanup completed with failures"
                        },
                        "cleaned_workspaces": report.cleaned_workspaces,
                        "failed_workspaces": report.failed.len(),
                        "max_age_hours": report.max_age_hours,
                        "report": report,
                    }),
                    StatusCode::OK,
                ))
            },
        );

    let prepare = warp::path!("workspace" / "prepare")
        .and(warp::post())
        .and(authorized(state.clone()))
        .and(limited_body(limit))
        .and_then(|state: Arc<AppState>, body: Vec<u8>| async move {
            let request: PrepareRequest = parse_json(&body)?;
            let m = state.manager.clone();
            let outcome = blocking(move || m.prepare(&request)).await?;
            Ok::<_, Rejection>(json(&outcome, StatusCode::OK))
        });

    let list = warp::path!("workspace" / "workspaces")
        .and(warp::get())
        .and(authorized(state.clone()))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let list = blocking(move || m.list()).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({ "workspaces": list }),
                StatusCode::OK,
            ))
        });

    let get_one = warp::path!("workspace" / "workspaces" / String)
        .and(warp::get())
        .and(authorized(state.clone()))
        .and_then(|name: String, state: Arc<AppState>| async move {
            let name = crate::clone_url::percent_decode(&name);
            let m = state.manager.clone();
            let lookup = name.clone();
            match blocking(move || m.get(&lookup)).await? {
                Some(ws) => Ok::<_, Rejection>(json(&ws, StatusCode::OK)),
                None => Err(reject(ApiError::Manager(Error::NotFound(format!(
                    "no workspace named {name}"
                ))))),
            }
        });

    let delete = warp::path!("workspace" / "workspaces" / String)
        .and(warp::delete())
        .and(authorized(state.clone()))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and_then(
            |name: String, state: Arc<AppState>, query: String| async move {
                let name = crate::clone_url::percent_decode(&name);
                let background = url::form_urlencoded::parse(query.as_bytes())
                    .any(|(k, v)| k == "background" && matches!(v.as_ref(), "1" | "true"));
                let m = state.manager.clone();
                let report = blocking(move || {
                    if background {
                        m.remove_in_background(&name)
                    } else {
                        m.remove(&name)
                    }
                })
                .await?;
                let status = if report.removed {
                    StatusCode::OK
                } else if report.pending_deletion {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                Ok::<_, Rejection>(json(
                    &serde_json::json!({
                        "error": (!report.removed).then_some("removal_incomplete"),
                        "detail": report.error.clone(),
                        "report": report,
                    }),
                    status,
                ))
            },
        );

    let release = warp::path!("workspace" / "leases" / u64)
        .and(warp::delete())
        .and(authorized(state.clone()))
        .and_then(|id: u64, state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let name = blocking(move || m.release_lease(id)).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"released": true, "id": id, "name": name}),
                StatusCode::OK,
            ))
        });

    let reload = warp::path!("workspace" / "policy" / "reload")
        .and(warp::post())
        .and(authorized(state.clone()))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            // A policy file that does not load is the caller's to fix: 422,
            // and the old policy stays.
            let info = blocking(move || {
                m.reload_policy().map_err(|e| match e {
                    Error::Config(msg) => Error::Refused(msg),
                    other => other,
                })
            })
            .await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"status": "Policy reloaded", "policy": info}),
                StatusCode::OK,
            ))
        });

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let text = isolated(move || m.encode_metrics()).await?;
            Ok::<_, Rejection>(
                warp::reply::with_header(
                    text,
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .into_response(),
            )
        });

    let openapi = warp::path!("openapi.json").and(warp::get()).map(|| {
        warp::reply::with_header(OPENAPI, "content-type", "application/json").into_response()
    });

    health
        .or(stats)
        .unify()
        .or(cleanup)
        .unify()
        .or(prepare)
        .unify()
        .or(list)
        .unify()
        .or(get_one)
        .unify()
        .or(delete)
        .unify()
        .or(release)
        .unify()
        .or(reload)
        .unify()
        .or(metrics)
        .unify()
        .or(openapi)
        .unify()
        .recover(errors::recover)
        .unify()
        .with(warp::log::custom(|info| {
            tracing::info!(
                target: "fixsec_workspace::http",
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                duration_ms = info.elapsed().as_secs_f64() * 1000.0,
                "request"
            );
        }))
        .map(Reply::into_response)
        .boxed()
}

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
            Error::Config(format!(
                "cannot listen on {}: {e}; pick another address with --bind or WORKSPACE_BIND",
                config.bind
            ))
        })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("reading the bound address: {e}")))?;
    let janitor = (config.cleanup_on_startup || config.cleanup_interval.is_some()).then(|| {
        tokio::spawn(janitor(
            manager.clone(),
            config.cleanup_on_startup,
            config.cleanup_interval,
        ))
    });
    let routes = routes(manager.clone(), token, config.body_limit);
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
