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
mod probes;
mod routes;
mod server;

pub use auth::ApiToken;
use probes::isolated;
pub use routes::ROUTES;
pub use server::{RunningServer, start};

use crate::WorkspaceManager;
use crate::error::{Error, Result};
use errors::ApiError;
use futures_util::StreamExt;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
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

/// Every endpoint of [`ROUTES`], with JSON errors and request logging: a
/// warp `Filter` another service can mount under its own prefix.
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
    ROUTES
        .iter()
        .map(|(method, path)| routes::route(&state, method, path))
        .reduce(|all, one| all.or(one).unify().boxed())
        .expect("ROUTES is not empty")
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
