//! Push webhooks: a push upstream prefetches the pushed branch into the
//! idle workspaces that track it (`WorkspaceManager::prefetch`), in the
//! background, so the next prepare finds its commit already there.
//!
//! - `POST /hooks/github`: GitHub's push event (also Gitea's and
//!   Forgejo's, which send the same shape and signature), signed with
//!   `X-Hub-Signature-256` under `WORKSPACE_WEBHOOK_SECRET`. `ping` is
//!   answered; other events, tag pushes and deleted branches are ignored.
//! - `POST /hooks/push`: the generic form for any other forge or a
//!   backend: `{"repo_full_name", "clone_url", "ref"}`, signed the same
//!   way, or sent with the API's bearer token instead.
//! - `POST /workspace/prefetch`: one node's prefetch (bearer token), which
//!   the hooks call on every node of the fleet; `?wait=1` answers with the
//!   outcome instead of 202.
//!
//! A webhook reaches any node (the router cannot read a repository out of
//! a body); that node asks every node of `WORKSPACE_FLEET` (itself
//! included) with the fleet's own token, and only a node that holds an
//! idle workspace of the pushed branch acts. Without a fleet it acts
//! alone. The answer comes once every node has accepted or failed to
//! within `WORKSPACE_FLEET_TIMEOUT_SECONDS` (5), under GitHub's 10 s.
//!
//! Before a body is read (it is read before its signature can be
//! checked), the hooks must be on and the signature header well-formed
//! (or the token given, for the generic hook), a slot free (8 at once;
//! 503 past that), and the body at most 5 MB, arriving within 30 s. A
//! delivery id (`X-GitHub-Delivery`) seen before is ignored.

use super::errors::ApiError;
use super::{
    AppState, authorized, blocking, json, limited_body, limited_body_within, parse_json, reject,
    with_state,
};
use crate::model::PrefetchRequest;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warp::http::StatusCode;
use warp::{Filter, Rejection};

/// The largest webhook body read. GitHub caps payloads at 25 MB, but a
/// push event (at most 20 commits described) is far smaller; a body is
/// read before its signature can be checked, so it is kept small.
const HOOK_BODY_LIMIT: u64 = 5 << 20;

/// How long a webhook's body may take to arrive.
const HOOK_READ_DEADLINE: Duration = Duration::from_secs(30);

/// Webhook bodies read at once; more answer 503 (forges retry).
const HOOK_SLOTS: usize = 8;

/// Deliveries remembered, so a replayed one is ignored.
const REMEMBERED_DELIVERIES: usize = 1024;

/// What the hooks keep between requests: the slots for bodies being
/// read, and the recent deliveries' ids (`X-GitHub-Delivery`).
pub(super) struct HookState {
    slots: Arc<Semaphore>,
    seen: std::sync::Mutex<VecDeque<String>>,
}

impl Default for HookState {
    fn default() -> Self {
        HookState {
            slots: Arc::new(Semaphore::new(HOOK_SLOTS)),
            seen: std::sync::Mutex::new(VecDeque::new()),
        }
    }
}

impl HookState {
    /// Whether `delivery` was handled before (and remember it if not).
    fn replayed(&self, delivery: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.iter().any(|d| d == delivery) {
            return true;
        }
        if seen.len() == REMEMBERED_DELIVERIES {
            seen.pop_front();
        }
        seen.push_back(delivery.to_string());
        false
    }
}

/// A webhook's headers, read before its body.
struct HookHeaders {
    event: Option<String>,
    signature: Option<String>,
    delivery: Option<String>,
    /// It carries the API's bearer token (the generic hook takes that
    /// instead of a signature).
    bearer: bool,
}

/// Whether `header` has the shape of a signature (`sha256=` and 64 hex
/// digits), checked before the body is read.
fn signature_shaped(header: Option<&str>) -> bool {
    header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A webhook request, admitted before its body is read: hooks on (a
/// secret configured) and a signature-shaped header, or (where
/// `bearer_allowed`) the API's token; a free slot; then the body, small
/// and within a deadline.
fn hook_request(
    state: Arc<AppState>,
    bearer_allowed: bool,
) -> impl Filter<
    Extract = (Arc<AppState>, HookHeaders, OwnedSemaphorePermit, Vec<u8>),
    Error = Rejection,
> + Clone {
    with_state(state)
        .and(warp::header::optional::<String>("x-github-event"))
        .and(warp::header::optional::<String>("x-hub-signature-256"))
        .and(warp::header::optional::<String>("x-github-delivery"))
        .and(warp::header::optional::<String>("authorization"))
        .and_then(
            move |state: Arc<AppState>,
                  event: Option<String>,
                  signature: Option<String>,
                  delivery: Option<String>,
                  authorization: Option<String>| async move {
                let bearer = bearer_allowed && state.token.matches_header(authorization.as_deref());
                if !bearer {
                    if state.webhook_secret.is_none() {
                        return Err(reject(ApiError::WebhooksNotConfigured));
                    }
                    if !signature_shaped(signature.as_deref()) {
                        return Err(reject(ApiError::BadSignature));
                    }
                }
                let permit = state.hooks.slots.clone().try_acquire_owned().map_err(|_| {
                    reject(ApiError::Manager(crate::Error::busy(
                        "too many webhooks at once; the forge retries the delivery",
                    )))
                })?;
                let headers = HookHeaders {
                    event,
                    signature,
                    delivery,
                    bearer,
                };
                Ok::<_, Rejection>((state, headers, permit))
            },
        )
        .untuple_one()
        .and(limited_body_within(HOOK_BODY_LIMIT, HOOK_READ_DEADLINE))
}

/// The parts of GitHub's push event a prefetch needs.
#[derive(Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    deleted: bool,
    repository: PushedRepository,
}

#[derive(Deserialize)]
struct PushedRepository {
    full_name: String,
    clone_url: String,
}

/// The body, when `X-Hub-Signature-256` signs it with the configured
/// secret; 404 when no secret is configured, 401 when it does not sign.
fn signed(state: &AppState, signature: Option<&str>, body: &[u8]) -> Result<(), Rejection> {
    let Some(secret) = &state.webhook_secret else {
        return Err(reject(ApiError::WebhooksNotConfigured));
    };
    if secret.verifies(body, signature) {
        Ok(())
    } else {
        Err(reject(ApiError::BadSignature))
    }
}

/// Prefetch `request` on every node of the fleet (or here alone): the
/// answer to give the forge.
async fn dispatch(
    state: Arc<AppState>,
    request: PrefetchRequest,
) -> Result<warp::reply::Response, Rejection> {
    // The name and URL checked here first: a bad one is the sender's 400
    // or 422, not a line in every node's log.
    let m = state.manager.clone();
    let (repo, url) = (request.repo_full_name.clone(), request.clone_url.clone());
    blocking(move || m.check_prefetch(&repo, &url)).await?;
    let body = serde_json::to_vec(&request).unwrap_or_default();
    if let Some(nodes) = state.fleet.members() {
        let auth = format!("Bearer {}", state.token.expose());
        let asked = state
            .fleet
            .ask_all::<serde_json::Value>(
                reqwest::Method::POST,
                "/workspace/prefetch",
                "",
                &auth,
                Some(body),
            )
            .await
            .unwrap_or_default();
        let unreachable = crate::fleet::unanswered(&asked);
        tracing::info!(repo = %request.repo_full_name, nodes = nodes, ?unreachable, "push received; prefetch asked of the fleet");
        return Ok(json(
            &serde_json::json!({
                "accepted": true,
                "repo_full_name": request.repo_full_name,
                "nodes": asked.iter().map(|r| &r.node).collect::<Vec<_>>(),
                "unreachable": unreachable,
            }),
            StatusCode::ACCEPTED,
        ));
    }
    spawn_prefetch(&state, request.clone());
    Ok(json(
        &serde_json::json!({"accepted": true, "repo_full_name": request.repo_full_name}),
        StatusCode::ACCEPTED,
    ))
}

/// Run the prefetch on this node in the background; its outcome goes to
/// the log.
fn spawn_prefetch(state: &AppState, request: PrefetchRequest) {
    let m = state.manager.clone();
    tokio::task::spawn_blocking(move || match m.prefetch(&request) {
        Ok(o) if o.updated => {
            tracing::info!(workspace = %o.name, head = ?o.head, duration_ms = o.duration_ms, "prefetched")
        }
        Ok(o) => {
            tracing::debug!(workspace = %o.name, skipped = ?o.skipped, "prefetch left the workspace")
        }
        Err(e) => tracing::warn!(repo = %request.repo_full_name, error = %e, "prefetch failed"),
    });
}

/// `POST /hooks/github`.
pub(super) fn github(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("hooks" / "github")
        .and(warp::post())
        .and(hook_request(state, false))
        .and_then(
            |state: Arc<AppState>,
             headers: HookHeaders,
             _slot: OwnedSemaphorePermit,
             body: Vec<u8>| async move {
                signed(&state, headers.signature.as_deref(), &body)?;
                let ignored = |why: String| {
                    Ok::<_, Rejection>(json(
                        &serde_json::json!({"accepted": false, "ignored": why}),
                        StatusCode::ACCEPTED,
                    ))
                };
                if let Some(id) = &headers.delivery
                    && state.hooks.replayed(id)
                {
                    return ignored(format!("delivery {id} was handled already"));
                }
                match headers.event.as_deref() {
                    Some("ping") => {
                        return Ok(json(&serde_json::json!({"pong": true}), StatusCode::OK));
                    }
                    Some("push") => {}
                    other => return ignored(format!("event {other:?} is not a push")),
                }
                let push: PushEvent = parse_json(&body)?;
                let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
                    return ignored(format!("{} is not a branch", push.git_ref));
                };
                if push.deleted {
                    return ignored(format!("{branch} was deleted"));
                }
                let request = PrefetchRequest {
                    repo_full_name: push.repository.full_name,
                    clone_url: push.repository.clone_url,
                    git_ref: Some(branch.to_string()),
                };
                dispatch(state, request).await
            },
        )
        .boxed()
}

/// `POST /hooks/push`: signed, or with the bearer token.
pub(super) fn generic(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("hooks" / "push")
        .and(warp::post())
        .and(hook_request(state, true))
        .and_then(
            |state: Arc<AppState>,
             headers: HookHeaders,
             _slot: OwnedSemaphorePermit,
             body: Vec<u8>| async move {
                if !headers.bearer {
                    signed(&state, headers.signature.as_deref(), &body)?;
                }
                let request: PrefetchRequest = parse_json(&body)?;
                dispatch(state, request).await
            },
        )
        .boxed()
}

/// `POST /workspace/prefetch` (`?wait=1`: the outcome, 200).
pub(super) fn prefetch(state: Arc<AppState>) -> super::routes::Route {
    let limit = state.body_limit;
    warp::path!("workspace" / "prefetch")
        .and(warp::post())
        .and(authorized(state))
        .and(super::routes::raw_query())
        .and(limited_body(limit))
        .and_then(
            |state: Arc<AppState>, query: String, body: Vec<u8>| async move {
                let request: PrefetchRequest = parse_json(&body)?;
                let wait = super::routes::query_value(&query, "wait")
                    .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
                if wait {
                    let m = state.manager.clone();
                    let outcome = blocking(move || m.prefetch(&request)).await?;
                    return Ok::<_, Rejection>(json(&outcome, StatusCode::OK));
                }
                // The name and URL checked now, so a bad request is the
                // caller's 400 rather than a line in the log.
                let m = state.manager.clone();
                let (repo, url) = (request.repo_full_name.clone(), request.clone_url.clone());
                blocking(move || m.check_prefetch(&repo, &url)).await?;
                spawn_prefetch(&state, request);
                Ok(json(
                    &serde_json::json!({"accepted": true}),
                    StatusCode::ACCEPTED,
                ))
            },
        )
        .boxed()
}
