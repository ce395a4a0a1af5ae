//! `--server`: the CLI as a client of a running service (a node, or the
//! router in front of several). Requests carry the bearer token
//! (`WORKSPACE_API_TOKEN`, or the file `WORKSPACE_API_TOKEN_FILE`) and the
//! shard key `X-Fixsec-Shard` the router places repositories by: for a
//! prepare, the repository's network (`--network`, else its own name);
//! for other commands, `--shard` when given.

use super::backend::Backend;
use crate::adapter::git::ProgressFn;
use crate::error::{Error, ErrorKind, Result};
use crate::model::*;
use crate::{PrepareRequest, PushRequest};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The header a router hashes to pick a node (deploy/haproxy/haproxy.cfg).
pub const SHARD_HEADER: &str = "X-Fixsec-Shard";

/// A service at a base URL.
pub(super) struct Remote {
    base: String,
    token: Option<String>,
    shard: Option<String>,
    http: Client,
}

/// Whether `url` names this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl Remote {
    /// A client of `server` (`http://host:port`), with the token from the
    /// environment and `shard` for requests that name no repository.
    /// Plain `http://` is refused for a host that is not loopback unless
    /// `allow_insecure_http`: the bearer token would cross the network in
    /// clear text. Redirects are never followed (the token would go along).
    pub fn new(server: &str, shard: Option<String>, allow_insecure_http: bool) -> Result<Self> {
        let base = server.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).map_err(|e| {
            Error::invalid_input(format!(
                "--server {server:?} is not a URL ({e}); e.g. http://127.0.0.1:8080"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::invalid_input(format!(
                "--server {server:?}: use an http:// or https:// URL"
            )));
        }
        if parsed.scheme() == "http" && !allow_insecure_http && !is_loopback(&parsed) {
            return Err(Error::invalid_input(format!(
                "--server {server:?}: plain http:// to a host that is not loopback would send the \
                 API token in clear text; use https://, or pass --allow-insecure-http"
            )));
        }
        let token = match std::env::var("WORKSPACE_API_TOKEN") {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => match std::env::var("WORKSPACE_API_TOKEN_FILE") {
                Ok(path) if !path.trim().is_empty() => Some(
                    std::fs::read_to_string(path.trim())
                        .map_err(|e| Error::io("reading the API token from", path.trim(), e))?
                        .trim()
                        .to_string(),
                ),
                _ => None,
            },
        };
        let http = Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            // A prepare lasts as long as its clone; the service bounds it.
            .timeout(None)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::config(format!("starting the HTTP client: {e}")))?;
        Ok(Remote {
            base,
            token,
            shard,
            http,
        })
    }

    fn request(&self, method: Method, path: &str, shard: Option<&str>) -> RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            r = r.bearer_auth(t);
        }
        if let Some(key) = shard.or(self.shard.as_deref()) {
            r = r.header(SHARD_HEADER, key);
        }
        r
    }

    /// Send, and read a successful answer's body as `T`; an error answer
    /// becomes the error the service reported.
    fn send<T: DeserializeOwned>(&self, r: RequestBuilder) -> Result<T> {
        self.answer(r, None)
    }

    /// [`send`](Self::send), also reading the body of an answer with
    /// status `carries` as `T` when it has that shape (a removal that left
    /// files is a 500 that still carries its report).
    fn answer<T: DeserializeOwned>(
        &self,
        r: RequestBuilder,
        carries: Option<StatusCode>,
    ) -> Result<T> {
        let response = r.send().map_err(|e| {
            Error::busy(format!(
                "cannot reach the service at {}: {e}; check --server and that it runs",
                self.base
            ))
        })?;
        let status = response.status();
        let served_by = response
            .headers()
            .get("x-served-by")
            .and_then(|v| v.to_str().ok())
            .map(|n| format!(" (node {n})"))
            .unwrap_or_default();
        let text = response.text().unwrap_or_default();
        if status.is_success() || Some(status) == carries {
            match serde_json::from_str(&text) {
                Ok(v) => return Ok(v),
                Err(e) if status.is_success() => {
                    return Err(Error::config(format!(
                        "the answer of {} is not what this CLI expects ({e}); are the CLI \
                         and the service the same version?",
                        self.base
                    )));
                }
                Err(_) => {}
            }
        }
        Err(self.reported(status, &served_by, &text))
    }

    /// The error an answer with `status` and body `text` reports.
    fn reported(&self, status: StatusCode, served_by: &str, text: &str) -> Error {
        let body: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let label = body["error"].as_str().unwrap_or_default();
        let detail = body["detail"].as_str().unwrap_or_default();
        if let (Ok(kind), Some(message)) = (label.parse::<ErrorKind>(), body["message"].as_str()) {
            return Error::new(kind, message);
        }
        let detail = if detail.is_empty() {
            status.to_string()
        } else {
            detail.to_string()
        };
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::refused(format!(
                "{} refused the token{served_by}: set WORKSPACE_API_TOKEN (or \
                 WORKSPACE_API_TOKEN_FILE) to the service's token",
                self.base
            )),
            s if s.is_client_error() => Error::invalid_input(format!("{detail}{served_by}")),
            s if s == StatusCode::SERVICE_UNAVAILABLE => {
                Error::busy(format!("{detail}{served_by}; retry later"))
            }
            _ => Error::git(format!(
                "{} answered {status}: {detail}{served_by}",
                self.base
            )),
        }
    }
}

/// The fleet view (`/fleet/...`), which any node of a fleet, or the router
/// in front of them, answers for every node.
impl Remote {
    /// `GET /fleet/health`.
    pub fn fleet_health(&self) -> Result<crate::fleet::FleetHealth> {
        self.send(self.request(Method::GET, "/fleet/health", None))
    }

    /// `GET /fleet/stats`.
    pub fn fleet_stats(&self) -> Result<crate::fleet::FleetStats> {
        self.send(self.request(Method::GET, "/fleet/stats", None))
    }

    /// `GET /fleet/workspaces`.
    pub fn fleet_list(&self) -> Result<crate::fleet::FleetList> {
        self.send(self.request(Method::GET, "/fleet/workspaces", None))
    }

    /// `POST /fleet/cleanup` (none: each node's own age).
    pub fn fleet_cleanup(&self, max_age_hours: Option<f64>) -> Result<crate::fleet::FleetCleanup> {
        let body = serde_json::json!({ "max_age_hours": max_age_hours });
        self.send(
            self.request(Method::POST, "/fleet/cleanup", None)
                .json(&body),
        )
    }
}

fn segment(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

impl Backend for Remote {
    fn location(&self) -> String {
        self.base.clone()
    }

    fn workspace_name(&self, repo: &str) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            name: String,
        }
        let path = format!("/workspace/name?repo={}", segment(repo));
        let a: Answer = self.send(self.request(Method::GET, &path, Some(repo)))?;
        Ok(a.name)
    }

    fn prepare(
        &self,
        request: &PrepareRequest,
        _progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome> {
        let r = self.request(
            Method::POST,
            "/workspace/prepare",
            Some(request.network_key()),
        );
        self.send(r.json(request))
    }

    fn push(&self, name: &str, request: &PushRequest) -> Result<PushOutcome> {
        let path = format!("/workspace/workspaces/{}/push", segment(name));
        self.send(self.request(Method::POST, &path, None).json(request))
    }

    fn list(&self) -> Result<Vec<WorkspaceSummary>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            workspaces: Vec<WorkspaceSummary>,
        }
        let a: Answer = self.send(self.request(Method::GET, "/workspace/workspaces", None))?;
        Ok(a.workspaces)
    }

    fn stats(&self) -> Result<Stats> {
        #[derive(serde::Deserialize)]
        struct Answer {
            stats: Stats,
        }
        let a: Answer = self.send(self.request(Method::GET, "/workspace/stats", None))?;
        Ok(a.stats)
    }

    fn cleanup(&self, max_age_hours: Option<f64>) -> Result<CleanupReport> {
        #[derive(serde::Deserialize)]
        struct Answer {
            report: CleanupReport,
        }
        let body = serde_json::json!({ "max_age_hours": max_age_hours });
        let r = self.request(Method::POST, "/workspace/cleanup", None);
        let a: Answer = self.send(r.json(&body))?;
        Ok(a.report)
    }

    fn health(&self) -> Result<HealthReport> {
        if self.token.is_none() {
            // Without it the service answers the open summary only.
            return Err(Error::refused(
                "the whole health report needs the token: set WORKSPACE_API_TOKEN",
            ));
        }
        self.send(self.request(Method::GET, "/workspace/health", None))
    }

    fn remove(&self, name: &str) -> Result<RemovalReport> {
        #[derive(serde::Deserialize)]
        struct Answer {
            report: RemovalReport,
        }
        let path = format!("/workspace/workspaces/{}", segment(name));
        let r = self.request(Method::DELETE, &path, None);
        let a: Answer = self.answer(r, Some(StatusCode::INTERNAL_SERVER_ERROR))?;
        Ok(a.report)
    }
}

#[cfg(test)]
mod tests {
    use super::Remote;

    #[test]
    fn plain_http_only_to_loopback_unless_asked() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.8.0.1:1",
            "http://localhost:9",
            "http://[::1]:9",
            "https://fixsec.example",
        ] {
            assert!(Remote::new(ok, None, false).is_ok(), "{ok}");
        }
        let err = Remote::new("http://fixsec.example:8080", None, false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("--allow-insecure-http"), "{err}");
        assert!(Remote::new("http://fixsec.example:8080", None, true).is_ok());
        assert!(Remote::new("ftp://fixsec.example", None, true).is_err());
    }
}
