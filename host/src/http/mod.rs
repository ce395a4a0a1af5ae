//! The HTTP service (warp on tokio): the guide's three endpoints with its
//! JSON shapes, plus prepare, list, get, delete, Prometheus metrics and the
//! OpenAPI document. Mountable under any prefix by an embedding service
//! ([`routes`]), or run standalone ([`start`]).
//!
//! Manager calls block (git, disk, the policy's sync WASI bindings), so
//! they run on tokio's blocking pool. `/workspace/health` and `/metrics`
//! (the probes) answer from a fresh snapshot, else on a two-thread probe
//! pool of their own, so they answer even when git work has taken every
//! blocking thread; the git queue bounds that work anyway. The server reads request headers under a timeout and caps open
//! connections, so idle or slow clients cannot exhaust it.

mod errors;
mod fleet;
mod hooks;
mod probes;
mod routes;
mod server;
pub mod ui;

pub use crate::config::ApiToken;
pub use crate::config::ServerConfig;
use probes::isolated;
pub use routes::ROUTES;
pub use server::{RunningServer, start};

use crate::WorkspaceManager;
use crate::error::Result;
use errors::ApiError;
use futures_util::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// The OpenAPI 3 document of every endpoint (`docs/openapi.json`).
pub static OPENAPI: &str = include_str!("../../../docs/openapi.json");

struct AppState {
    manager: WorkspaceManager,
    token: ApiToken,
    body_limit: u64,
    fleet: Arc<fleet::Fleet>,
    webhook_secret: Option<crate::config::WebhookSecret>,
    hooks: hooks::HookState,
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

/// [`limited_body`] that must also arrive `within` (a sender trickling
/// bytes holds a connection, and for a webhook, before anything checked
/// who it is).
fn limited_body_within(
    limit: u64,
    within: std::time::Duration,
) -> impl Filter<Extract = (Vec<u8>,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |declared, stream| async move {
            tokio::time::timeout(within, collect_limited(declared, stream, limit))
                .await
                .unwrap_or_else(|_| {
                    Err(reject(ApiError::BadRequest(format!(
                        "the body took longer than {} s to arrive",
                        within.as_secs()
                    ))))
                })
        })
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

/// Every endpoint of [`ROUTES`] and the dashboard (`/ui/`, which expects
/// the API at the root), with JSON errors and request logging: a
/// warp `Filter` another service can mount under its own prefix.
///
/// The `/fleet/` endpoints answer 404 `fleet_not_configured` here; a node
/// of a fleet mounts [`node_routes`] (so do push webhooks).
pub fn routes(
    manager: WorkspaceManager,
    token: ApiToken,
    body_limit: u64,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let fleet = fleet::Fleet::new(Vec::new(), crate::config::DEFAULT_FLEET_TIMEOUT)
        .expect("an HTTP client with default TLS settings");
    service(manager, token, body_limit, fleet, None)
}

/// [`routes`] as a standalone node serves them, from its `config`: the
/// body limit, the fleet the `/fleet/` endpoints ask (`config.fleet`, this
/// node among them) and the secret `/hooks/` checks.
pub fn node_routes(
    manager: WorkspaceManager,
    token: ApiToken,
    config: &ServerConfig,
) -> Result<warp::filters::BoxedFilter<(warp::reply::Response,)>> {
    let fleet = fleet::Fleet::new(config.fleet.clone(), config.fleet_timeout)?;
    Ok(service(
        manager,
        token,
        config.body_limit,
        fleet,
        config.webhook_secret.clone(),
    ))
}

fn service(
    manager: WorkspaceManager,
    token: ApiToken,
    body_limit: u64,
    fleet: fleet::Fleet,
    webhook_secret: Option<crate::config::WebhookSecret>,
) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    let state = Arc::new(AppState {
        manager,
        token,
        body_limit,
        fleet: Arc::new(fleet),
        webhook_secret,
        hooks: hooks::HookState::default(),
    });
    ROUTES
        .iter()
        .map(|(method, path)| routes::route(&state, method, path))
        .reduce(|all, one| all.or(one).unify().boxed())
        .expect("ROUTES is not empty")
        .or(ui::routes())
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
