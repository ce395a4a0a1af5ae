//! The fleet endpoints (`/fleet/...`): any node answers for every node of
//! `WORKSPACE_FLEET` by asking each over HTTP, all at once, with the
//! caller's own bearer token (the nodes of a fleet share it).
//!
//! - `GET /fleet/health`, `GET /fleet/stats`, `GET /fleet/workspaces`,
//!   `POST /fleet/cleanup`: every node's answer, and what they add up to
//!   (`crate::fleet`); a node that does not answer within the timeout is
//!   in the answer as such, and its id in `unreachable`.
//! - `GET`/`DELETE /fleet/nodes/{node}/workspaces/{name}` and `DELETE
//!   /fleet/nodes/{node}/leases/{id}`: one node's endpoint, reached
//!   through this one, so the dashboard acts on the node that holds a
//!   workspace without knowing the router's shard key for it.
//!
//! Only the configured nodes are ever asked (no address comes from a
//! request), redirects are not followed, and proxies are not used.

use super::errors::ApiError;
use super::{AppState, authorized, cleanup_age, json, limited_body, reject};
use crate::fleet::{
    FleetCleanup, FleetHealth, FleetList, FleetNode, FleetStats, NodeHealth, NodeReply,
};
use crate::model::{CleanupReport, HealthReport, Stats, WorkspaceSummary};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

/// Bytes of one node's answer, at most (a list of many workspaces).
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// The nodes and the client that asks them.
pub(crate) struct Fleet {
    nodes: Vec<FleetNode>,
    client: reqwest::Client,
}

impl Fleet {
    /// A fleet of `nodes` (empty: this node is no part of one), asked with
    /// `timeout` per request.
    pub(crate) fn new(nodes: Vec<FleetNode>, timeout: Duration) -> crate::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .map_err(|e| crate::Error::config(format!("making the fleet's HTTP client: {e}")))?;
        Ok(Fleet { nodes, client })
    }

    /// How many nodes the fleet has; none outside a fleet.
    pub(super) fn members(&self) -> Option<usize> {
        (!self.nodes.is_empty()).then_some(self.nodes.len())
    }

    fn nodes(&self) -> Result<&[FleetNode], Rejection> {
        if self.nodes.is_empty() {
            return Err(reject(ApiError::FleetNotConfigured));
        }
        Ok(&self.nodes)
    }

    fn node(&self, id: &str) -> Result<&FleetNode, Rejection> {
        self.nodes()?
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| reject(ApiError::UnknownNode(id.to_string())))
    }

    /// `method path` on `node`, with the caller's `authorization` and
    /// `body`: the status and the JSON answer, or why there is none.
    async fn send(
        &self,
        node: &FleetNode,
        method: reqwest::Method,
        path: &str,
        authorization: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, serde_json::Value), String> {
        let mut request = self
            .client
            .request(method, format!("{}{path}", node.url))
            .header("authorization", authorization);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| format!("{} at {} did not answer: {}", node.id, node.url, cause(&e)))?;
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{} stopped answering: {}", node.id, cause(&e)))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_ANSWER_BYTES {
                return Err(format!(
                    "{} answered more than {MAX_ANSWER_BYTES} bytes",
                    node.id
                ));
            }
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Ok((status, value))
    }

    /// `method path` on `node`, its answer's field at `pointer` (empty:
    /// the whole answer) read as `T`.
    async fn ask<T: DeserializeOwned>(
        &self,
        node: &FleetNode,
        method: reqwest::Method,
        path: &str,
        pointer: &str,
        authorization: &str,
        body: Option<Vec<u8>>,
    ) -> NodeReply<T> {
        let mut reply = NodeReply {
            node: node.id.clone(),
            url: node.url.clone(),
            reachable: false,
            error: None,
            answer: None,
        };
        match self.send(node, method, path, authorization, body).await {
            Err(e) => reply.error = Some(e),
            Ok((status, value)) => {
                reply.reachable = true;
                if status.is_success() {
                    match value.pointer(pointer).cloned().map(serde_json::from_value) {
                        Some(Ok(answer)) => reply.answer = Some(answer),
                        _ => {
                            reply.error = Some(format!(
                                "{} answered {path} in a shape this node does not read (another \
                                 version?)",
                                node.id
                            ))
                        }
                    }
                } else {
                    reply.error = Some(refusal(node, status, &value));
                }
            }
        }
        reply
    }

    /// [`Fleet::ask`] of every node at once, in the fleet's order.
    pub(super) async fn ask_all<T: DeserializeOwned + Send + 'static>(
        self: &Arc<Self>,
        method: reqwest::Method,
        path: &'static str,
        pointer: &'static str,
        authorization: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<NodeReply<T>>, Rejection> {
        let tasks: Vec<_> = self
            .nodes()?
            .iter()
            .cloned()
            .map(|node| {
                let fleet = self.clone();
                let (method, authorization, body) =
                    (method.clone(), authorization.to_string(), body.clone());
                tokio::spawn(async move {
                    fleet
                        .ask(&node, method, path, pointer, &authorization, body)
                        .await
                })
            })
            .collect();
        let mut replies = Vec::with_capacity(tasks.len());
        for task in tasks {
            replies.push(task.await.map_err(|e| {
                reject(ApiError::Internal(format!(
                    "asking a node did not finish: {e}"
                )))
            })?);
        }
        Ok(replies)
    }
}

/// The innermost cause of a client error (reqwest's own text is "error
/// sending request for url").
fn cause(e: &reqwest::Error) -> String {
    let timeout = if e.is_timeout() { " (timed out)" } else { "" };
    let mut source: &dyn std::error::Error = e;
    while let Some(inner) = source.source() {
        source = inner;
    }
    format!("{source}{timeout}")
}

/// What a node's error answer says, for the fleet's answer.
fn refusal(node: &FleetNode, status: StatusCode, value: &serde_json::Value) -> String {
    if status == StatusCode::UNAUTHORIZED {
        return format!(
            "{} refused the token (401): every node of a fleet must share WORKSPACE_API_TOKEN",
            node.id
        );
    }
    let detail = value
        .get("detail")
        .and_then(|d| d.as_str())
        .unwrap_or("no detail");
    format!("{} answered {status}: {detail}", node.id)
}

/// A node's health answer read as the full report. A node that refuses
/// the token still answers `/workspace/health`, with the open summary
/// (which has no `policy`): that is a refused token, said so.
fn refused_summary(mut reply: NodeReply<serde_json::Value>) -> NodeReply<HealthReport> {
    let answer = reply.answer.take();
    let report = answer
        .as_ref()
        .and_then(|v| serde_json::from_value::<HealthReport>(v.clone()).ok());
    if report.is_none() && reply.error.is_none() {
        reply.error = Some(match answer.as_ref().and_then(|v| v.get("policy")) {
            None => format!(
                "{} answered only the open health summary: it refused the token; every node \
                 of a fleet must share WORKSPACE_API_TOKEN",
                reply.node
            ),
            Some(_) => format!(
                "{} answered /workspace/health in a shape this node does not read (another \
                 version?)",
                reply.node
            ),
        });
    }
    NodeReply {
        node: reply.node,
        url: reply.url,
        reachable: reply.reachable,
        error: reply.error,
        answer: report,
    }
}

fn authorization() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").map(Option::unwrap_or_default)
}

/// `GET /fleet/health`: each node's `/readyz` and full health report.
pub(super) fn health(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("fleet" / "health")
        .and(warp::get())
        .and(authorized(state))
        .and(authorization())
        .and_then(|state: Arc<AppState>, auth: String| async move {
            let fleet = &state.fleet;
            let get = reqwest::Method::GET;
            let (ready, health) = tokio::join!(
                fleet.ask_all::<serde_json::Value>(get.clone(), "/readyz", "", &auth, None),
                fleet.ask_all::<serde_json::Value>(get, "/workspace/health", "", &auth, None),
            );
            let nodes = ready?
                .into_iter()
                .zip(health?.into_iter().map(refused_summary))
                .map(|(ready, health)| NodeReply {
                    node: health.node,
                    url: health.url,
                    reachable: ready.reachable || health.reachable,
                    error: health.error.or(ready.error.filter(|_| !ready.reachable)),
                    answer: health.answer.map(|health| NodeHealth {
                        ready: ready.answer.is_some(),
                        health,
                    }),
                })
                .collect();
            Ok::<_, Rejection>(json(&FleetHealth::from_replies(nodes), StatusCode::OK))
        })
        .boxed()
}

/// `GET /fleet/stats`.
pub(super) fn stats(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("fleet" / "stats")
        .and(warp::get())
        .and(authorized(state))
        .and(authorization())
        .and_then(|state: Arc<AppState>, auth: String| async move {
            let replies = state
                .fleet
                .ask_all::<Stats>(
                    reqwest::Method::GET,
                    "/workspace/stats",
                    "/stats",
                    &auth,
                    None,
                )
                .await?;
            Ok::<_, Rejection>(json(&FleetStats::from_replies(replies), StatusCode::OK))
        })
        .boxed()
}

/// `GET /fleet/workspaces`: every workspace with the node that holds it.
pub(super) fn list(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("fleet" / "workspaces")
        .and(warp::get())
        .and(authorized(state))
        .and(authorization())
        .and_then(|state: Arc<AppState>, auth: String| async move {
            let replies = state
                .fleet
                .ask_all::<Vec<WorkspaceSummary>>(
                    reqwest::Method::GET,
                    "/workspace/workspaces",
                    "/workspaces",
                    &auth,
                    None,
                )
                .await?;
            Ok::<_, Rejection>(json(&FleetList::from_replies(replies), StatusCode::OK))
        })
        .boxed()
}

/// `POST /fleet/cleanup`: the age (`max_age_hours` in the body or the
/// query) checked here, then every node's cleanup with it (none: each
/// node's own default).
pub(super) fn cleanup(state: Arc<AppState>) -> super::routes::Route {
    let limit = state.body_limit;
    warp::path!("fleet" / "cleanup")
        .and(warp::post())
        .and(authorized(state))
        .and(authorization())
        .and(super::routes::raw_query())
        .and(limited_body(limit))
        .and_then(
            |state: Arc<AppState>, auth: String, query: String, body: Vec<u8>| async move {
                let age = cleanup_age(&query, &body)?;
                if age.is_some_and(|h| !h.is_finite() || h < 0.0) {
                    return Err(reject(ApiError::BadRequest(format!(
                        "max_age_hours must be a finite number >= 0, got {}",
                        age.unwrap_or_default()
                    ))));
                }
                let body = serde_json::to_vec(&serde_json::json!({ "max_age_hours": age }))
                    .unwrap_or_default();
                let replies = state
                    .fleet
                    .ask_all::<CleanupReport>(
                        reqwest::Method::POST,
                        "/workspace/cleanup",
                        "/report",
                        &auth,
                        Some(body),
                    )
                    .await?;
                Ok::<_, Rejection>(json(&FleetCleanup::from_replies(replies), StatusCode::OK))
            },
        )
        .boxed()
}

/// One node's answer, passed through: its status and JSON, and the node
/// in `X-Fleet-Node`; 502 when it does not answer.
async fn pass_through(
    state: &AppState,
    node: &str,
    method: reqwest::Method,
    path: &str,
    auth: &str,
) -> Result<warp::reply::Response, Rejection> {
    let node = state.fleet.node(node)?;
    let (status, value) = state
        .fleet
        .send(node, method, path, auth, None)
        .await
        .map_err(|e| reject(ApiError::NodeUnreachable(e)))?;
    // This node took the caller's token; a node that refuses it is the
    // fleet's fault (tokens differ), not the caller's: not a 401.
    if status == StatusCode::UNAUTHORIZED {
        return Err(reject(ApiError::NodeUnreachable(refusal(
            node, status, &value,
        ))));
    }
    let mut response = json(&value, status);
    if let Ok(v) = warp::http::HeaderValue::from_str(&node.id) {
        response.headers_mut().insert("x-fleet-node", v);
    }
    Ok(response)
}

/// `/fleet/nodes/{node}/workspaces/{name}` (GET, DELETE with
/// `?background=1` passed on): that node's `/workspace/workspaces/{name}`.
pub(super) fn node_workspace(
    state: Arc<AppState>,
    method: warp::http::Method,
) -> super::routes::Route {
    let method_filter = match method {
        warp::http::Method::DELETE => warp::delete().boxed(),
        _ => warp::get().boxed(),
    };
    let forwarded =
        reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap_or(reqwest::Method::GET);
    warp::path!("fleet" / "nodes" / String / "workspaces" / String)
        .and(method_filter)
        .and(authorized(state))
        .and(authorization())
        .and(super::routes::raw_query())
        .and_then(
            move |node: String, name: String, state: Arc<AppState>, auth: String, query: String| {
                let forwarded = forwarded.clone();
                async move {
                    let node = crate::clone_url::percent_decode(&node);
                    let background = super::routes::query_value(&query, "background")
                        .is_some_and(|v| matches!(v.as_str(), "1" | "true"));
                    let path = format!(
                        "/workspace/workspaces/{}{}",
                        name_segment(&name)?,
                        if background { "?background=1" } else { "" }
                    );
                    pass_through(&state, &node, forwarded, &path, &auth).await
                }
            },
        )
        .boxed()
}

/// `DELETE /fleet/nodes/{node}/leases/{id}`: that node's lease release.
pub(super) fn node_lease(state: Arc<AppState>) -> super::routes::Route {
    warp::path!("fleet" / "nodes" / String / "leases" / String)
        .and(warp::delete())
        .and(authorized(state))
        .and(authorization())
        .and_then(
            |node: String, id: String, state: Arc<AppState>, auth: String| async move {
                let node = crate::clone_url::percent_decode(&node);
                // Only a number a prepare could have handed out reaches
                // the node (as its own route answers any other: 404).
                let id: u64 = id.parse().map_err(|_| {
                    reject(ApiError::Manager(crate::Error::not_found(format!(
                        "no lease with id {id:?}; lease ids are the numbers prepare returns"
                    ))))
                })?;
                let path = format!("/workspace/leases/{id}");
                pass_through(&state, &node, reqwest::Method::DELETE, &path, &auth).await
            },
        )
        .boxed()
}

/// A workspace name from a request path (percent-encoded, as warp hands
/// it over), encoded again for the node's path: every byte but the
/// unreserved ones as `%XX`, so no `/`, `..` or query reaches the node's
/// URL. `.` and `..` are refused.
fn name_segment(raw: &str) -> Result<String, Rejection> {
    let name = crate::clone_url::percent_decode(raw);
    if name.is_empty() || name == "." || name == ".." {
        return Err(reject(ApiError::BadRequest(format!(
            "{name:?} is not a workspace name; take the names GET /fleet/workspaces lists"
        ))));
    }
    Ok(name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workspace_name_reaches_the_node_as_one_segment() {
        assert_eq!(name_segment("acme_app_1a2b").unwrap(), "acme_app_1a2b");
        assert_eq!(name_segment("a%2Fb").unwrap(), "a%2Fb");
        assert_eq!(name_segment("a?b#c d").unwrap(), "a%3Fb%23c%20d");
        for bad in ["..", "%2e%2e", ".", ""] {
            assert!(name_segment(bad).is_err(), "{bad}");
        }
    }
}
