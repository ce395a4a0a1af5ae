//! The endpoints: one table of routes ([`ROUTES`]) that the router is
//! built from, and the handler of each.

use super::errors::ApiError;
use super::{
    AppState, OPENAPI, authorized, blocking, cleanup_age, isolated, json, limited_body, parse_json,
    reject, with_state,
};
use super::{fleet, hooks};
use crate::error::Error;
use crate::model::{PrepareRequest, PushRequest};
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// One route's filter.
pub(super) type Route = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// Every route served, as (method, path template). The router is built
/// from this list (a handler not listed here is never served), and the
/// OpenAPI test compares it with `docs/openapi.json`.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/workspace/health"),
    ("GET", "/workspace/stats"),
    ("POST", "/workspace/cleanup"),
    ("POST", "/workspace/prepare"),
    ("GET", "/workspace/name"),
    ("GET", "/workspace/workspaces"),
    ("GET", "/workspace/workspaces/{name}"),
    ("DELETE", "/workspace/workspaces/{name}"),
    ("POST", "/workspace/workspaces/{name}/push"),
    ("DELETE", "/workspace/leases/{id}"),
    ("GET", "/workspace/operations"),
    ("POST", "/workspace/policy/reload"),
    ("POST", "/workspace/prefetch"),
    ("POST", "/hooks/github"),
    ("POST", "/hooks/push"),
    ("GET", "/fleet/health"),
    ("GET", "/fleet/stats"),
    ("GET", "/fleet/workspaces"),
    ("POST", "/fleet/cleanup"),
    ("GET", "/fleet/nodes/{node}/workspaces/{name}"),
    ("DELETE", "/fleet/nodes/{node}/workspaces/{name}"),
    ("DELETE", "/fleet/nodes/{node}/leases/{id}"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
];

/// The handler of one entry of [`ROUTES`].
pub(super) fn route(state: &Arc<AppState>, method: &str, path: &str) -> Route {
    let state = state.clone();
    match (method, path) {
        ("GET", "/workspace/health") => health(state),
        ("GET", "/workspace/stats") => stats(state),
        ("POST", "/workspace/cleanup") => cleanup(state),
        ("POST", "/workspace/prepare") => prepare(state),
        ("GET", "/workspace/name") => workspace_name(state),
        ("GET", "/workspace/workspaces") => list(state),
        ("GET", "/workspace/workspaces/{name}") => get_workspace(state),
        ("DELETE", "/workspace/workspaces/{name}") => remove(state),
        ("POST", "/workspace/workspaces/{name}/push") => push(state),
        ("DELETE", "/workspace/leases/{id}") => release_lease(state),
        ("GET", "/workspace/operations") => operations(state),
        ("POST", "/workspace/policy/reload") => reload_policy(state),
        ("POST", "/workspace/prefetch") => hooks::prefetch(state),
        ("POST", "/hooks/github") => hooks::github(state),
        ("POST", "/hooks/push") => hooks::generic(state),
        ("GET", "/fleet/health") => fleet::health(state),
        ("GET", "/fleet/stats") => fleet::stats(state),
        ("GET", "/fleet/workspaces") => fleet::list(state),
        ("POST", "/fleet/cleanup") => fleet::cleanup(state),
        ("GET", "/fleet/nodes/{node}/workspaces/{name}") => {
            fleet::node_workspace(state, warp::http::Method::GET)
        }
        ("DELETE", "/fleet/nodes/{node}/workspaces/{name}") => {
            fleet::node_workspace(state, warp::http::Method::DELETE)
        }
        ("DELETE", "/fleet/nodes/{node}/leases/{id}") => fleet::node_lease(state),
        ("GET", "/healthz") => warp::path!("healthz")
            .and(warp::get())
            .map(|| json(&serde_json::json!({"status": "alive"}), StatusCode::OK))
            .boxed(),
        ("GET", "/readyz") => ready(state),
        ("GET", "/metrics") => metrics(state),
        ("GET", "/openapi.json") => warp::path!("openapi.json")
            .and(warp::get())
            .map(|| {
                warp::reply::with_header(OPENAPI, "content-type", "application/json")
                    .into_response()
            })
            .boxed(),
        _ => unreachable!("{method} {path} is in ROUTES but has no handler"),
    }
}

/// Open (a liveness probe): status and counts, and the guide's warnings
/// and recommendations with no workspace named. With the token: the whole
/// report (workspace names, sizes, paths, the policy).
fn health(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "health")
        .and(warp::get())
        .and(warp::header::optional::<String>("authorization"))
        .and(with_state(state))
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
        })
        .boxed()
}

fn stats(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "stats")
        .and(warp::get())
        .and(authorized(state))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let stats = blocking(move || m.stats()).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"status": "Workspace stats retrieved ✅", "stats": stats}),
                StatusCode::OK,
            ))
        })
        .boxed()
}

/// The age limit from `?max_age_hours=` or the JSON body (the guide's
/// shape), else the configured default.
fn cleanup(state: Arc<AppState>) -> Route {
    let limit = state.body_limit;
    warp::path!("workspace" / "cleanup")
        .and(warp::post())
        .and(authorized(state))
        .and(raw_query())
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
        )
        .boxed()
}

fn prepare(state: Arc<AppState>) -> Route {
    let limit = state.body_limit;
    warp::path!("workspace" / "prepare")
        .and(warp::post())
        .and(authorized(state))
        .and(limited_body(limit))
        .and_then(|state: Arc<AppState>, body: Vec<u8>| async move {
            let request: PrepareRequest = parse_json(&body)?;
            let m = state.manager.clone();
            let outcome = blocking(move || m.prepare(&request)).await?;
            Ok::<_, Rejection>(json(&outcome, StatusCode::OK))
        })
        .boxed()
}

/// `?repo=owner/name`: the folder name this node's policy gives it,
/// without preparing anything.
fn workspace_name(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "name")
        .and(warp::get())
        .and(authorized(state))
        .and(raw_query())
        .and_then(|state: Arc<AppState>, query: String| async move {
            let repo = query_value(&query, "repo").ok_or_else(|| {
                reject(ApiError::BadRequest(
                    "missing `repo`: ask /workspace/name?repo=owner/name".into(),
                ))
            })?;
            let m = state.manager.clone();
            let asked = repo.clone();
            let name = blocking(move || m.workspace_name(&asked)).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"repo_full_name": repo, "name": name}),
                StatusCode::OK,
            ))
        })
        .boxed()
}

fn list(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "workspaces")
        .and(warp::get())
        .and(authorized(state))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let list = blocking(move || m.list()).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({ "workspaces": list }),
                StatusCode::OK,
            ))
        })
        .boxed()
}

fn get_workspace(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "workspaces" / String)
        .and(warp::get())
        .and(authorized(state))
        .and_then(|name: String, state: Arc<AppState>| async move {
            let name = crate::clone_url::percent_decode(&name);
            let m = state.manager.clone();
            let lookup = name.clone();
            match blocking(move || m.get(&lookup)).await? {
                Some(ws) => Ok::<_, Rejection>(json(&ws, StatusCode::OK)),
                None => Err(reject(ApiError::Manager(Error::not_found(format!(
                    "no workspace named {name}"
                ))))),
            }
        })
        .boxed()
}

/// Remove one workspace (`?background=1`: answer once it is in the
/// trash). 200 removed, 202 pending, 500 with the report when files stay.
fn remove(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "workspaces" / String)
        .and(warp::delete())
        .and(authorized(state))
        .and(raw_query())
        .and_then(
            |name: String, state: Arc<AppState>, query: String| async move {
                let name = crate::clone_url::percent_decode(&name);
                let background = query_value(&query, "background")
                    .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
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
        )
        .boxed()
}

fn push(state: Arc<AppState>) -> Route {
    let limit = state.body_limit;
    warp::path!("workspace" / "workspaces" / String / "push")
        .and(warp::post())
        .and(authorized(state))
        .and(limited_body(limit))
        .and_then(
            |name: String, state: Arc<AppState>, body: Vec<u8>| async move {
                let name = crate::clone_url::percent_decode(&name);
                let request: PushRequest = parse_json(&body)?;
                let m = state.manager.clone();
                let outcome = blocking(move || m.push(&name, &request)).await?;
                Ok::<_, Rejection>(json(&outcome, StatusCode::OK))
            },
        )
        .boxed()
}

fn release_lease(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "leases" / String)
        .and(warp::delete())
        .and(authorized(state))
        .and_then(|id: String, state: Arc<AppState>| async move {
            // Any id that is not one a prepare could have handed out
            // (not a number, past u64) is simply not a lease here.
            let id: u64 = id.parse().map_err(|_| {
                reject(ApiError::Manager(Error::not_found(format!(
                    "no lease with id {id:?}; lease ids are the numbers prepare returns"
                ))))
            })?;
            let m = state.manager.clone();
            let name = blocking(move || m.release_lease(id)).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"released": true, "id": id, "name": name}),
                StatusCode::OK,
            ))
        })
        .boxed()
}

fn operations(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "operations")
        .and(warp::get())
        .and(authorized(state))
        .map(|state: Arc<AppState>| {
            json(
                &serde_json::json!({ "operations": state.manager.recent_operations() }),
                StatusCode::OK,
            )
        })
        .boxed()
}

/// A policy file that does not load is refused (422): the old one stays.
fn reload_policy(state: Arc<AppState>) -> Route {
    warp::path!("workspace" / "policy" / "reload")
        .and(warp::post())
        .and(authorized(state))
        .and_then(|state: Arc<AppState>| async move {
            let m = state.manager.clone();
            let info = blocking(move || m.reload_policy()).await?;
            Ok::<_, Rejection>(json(
                &serde_json::json!({"status": "Policy reloaded", "policy": info}),
                StatusCode::OK,
            ))
        })
        .boxed()
}

/// 503 while draining, so a load balancer stops sending new work.
fn ready(state: Arc<AppState>) -> Route {
    warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: Arc<AppState>| {
            if state.manager.is_draining() {
                json(
                    &serde_json::json!({"status": "draining"}),
                    StatusCode::SERVICE_UNAVAILABLE,
                )
            } else {
                json(&serde_json::json!({"status": "ready"}), StatusCode::OK)
            }
        })
        .boxed()
}

fn metrics(state: Arc<AppState>) -> Route {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
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
        })
        .boxed()
}

/// The raw query string, empty when there is none.
pub(super) fn raw_query()
-> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// The first value of `key` in the query string `query`, decoded.
pub(super) fn query_value(query: &str, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}
