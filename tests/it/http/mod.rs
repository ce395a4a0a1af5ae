//! The HTTP service end to end: a real server on a loopback ephemeral port,
//! a real HTTP client, real repositories.

use crate::support;

use crate::support::{Fixture, Upstream, manager};
use fixsec_workspace::WorkspaceManager;
use fixsec_workspace::http::{self, ApiToken, RunningServer, ServerConfig};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warp::Filter;

mod input;
mod limits;

const TOKEN: &str = "test-token-0123456789";

struct TestServer {
    rt: tokio::runtime::Runtime,
    server: Option<RunningServer>,
    url: String,
    client: Client,
    manager: WorkspaceManager,
    _base: tempfile::TempDir,
}

impl TestServer {
    fn start() -> Self {
        Self::start_with(ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            body_limit: 4096,
            ..ServerConfig::default()
        })
    }

    fn start_with(config: ServerConfig) -> Self {
        let base = tempfile::tempdir().unwrap();
        let manager = manager(base.path());
        Self::start_full(manager, base, config)
    }

    fn start_manager(manager: WorkspaceManager, base: tempfile::TempDir) -> Self {
        let config = ServerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            body_limit: 4096,
            ..ServerConfig::default()
        };
        Self::start_full(manager, base, config)
    }

    fn start_full(
        manager: WorkspaceManager,
        base: tempfile::TempDir,
        config: ServerConfig,
    ) -> Self {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let server = rt
            .block_on(http::start(
                manager.clone(),
                &config,
                ApiToken::new(TOKEN).unwrap(),
            ))
            .unwrap();
        TestServer {
            url: format!("http://{}", server.addr()),
            server: Some(server),
            rt,
            client: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            manager,
            _base: base,
        }
    }

    fn get(&self, path: &str) -> RequestBuilder {
        self.client
            .get(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn post(&self, path: &str) -> RequestBuilder {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn delete(&self, path: &str) -> RequestBuilder {
        self.client
            .delete(format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
    }

    fn prepare(&self, repo: &str, url: &str) -> (StatusCode, Value) {
        send(self.post("/workspace/prepare").json(&json!({
            "repo_full_name": repo, "clone_url": url, "default_branch": "main"
        })))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown(Duration::from_secs(5)));
        }
    }
}

fn send(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().unwrap();
    let status = resp.status();
    let text = resp.text().unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, body)
}

/// Issue 11, item 7: the open health answer (a liveness probe) has the
/// status and counts only; names, sizes, paths and the policy need the token.
#[test]
fn health_is_open_with_counts_only_and_whole_with_the_token() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (status, _) = s.prepare("acme/secret-project", &up.url());
    assert_eq!(status, StatusCode::OK);
    let (status, open) = send(s.client.get(format!("{}/workspace/health", s.url)));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(open["status"], "healthy");
    assert_eq!(open["workspace_stats"]["total_workspaces"], 1);
    assert!(open["workspace_stats"]["total_size_mb"].is_number());
    assert_eq!(open["warning_count"], 0);
    let text = open.to_string();
    let name = s.manager.workspace_name("acme/secret-project").unwrap();
    let base = s.manager.base_path().display().to_string();
    for secret in [
        name.as_str(),
        "secret-project",
        base.as_str(),
        "policy",
        "digest",
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the open answer: {text}"
        );
    }

    let (status, full) = send(s.get("/workspace/health"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(full["status"], "healthy");
    assert!(full["warnings"].is_array() && full["recommendations"].is_array());
    assert_eq!(
        full["workspace_stats"]["workspaces"][0]["name"],
        name.as_str()
    );
    assert_eq!(
        full["policy"]["digest"].as_str().unwrap().len(),
        32,
        "an MD5 in hex"
    );
    // A wrong token is the open answer, not an error (probes send none).
    let (status, wrong) = send(
        s.client
            .get(format!("{}/workspace/health", s.url))
            .bearer_auth("wrong"),
    );
    assert_eq!(status, StatusCode::OK);
    assert!(wrong.get("policy").is_none(), "{wrong}");
}

/// Issue 22: the open answer keeps the guide's four keys (`status`,
/// `workspace_stats`, `warnings`, `recommendations`), so a monitor written
/// for the original reads it without a token; a line that names a
/// workspace is left out and counted instead.
#[test]
fn the_open_health_answer_keeps_the_guides_keys_and_names_no_workspace() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let manager = support::builder(base.path())
        .configure(|c| c.size_warning_mb = 0)
        .build()
        .unwrap();
    let s = TestServer::start_manager(manager, base);
    let (status, _) = s.prepare("acme/secret-project", &up.url());
    assert_eq!(status, StatusCode::OK);
    let (_, full) = send(s.get("/workspace/health"));
    let name = s.manager.workspace_name("acme/secret-project").unwrap();
    assert!(
        full["warnings"].to_string().contains(name.as_str()),
        "set-up: a warning names the workspace: {full}"
    );
    let (status, open) = send(s.client.get(format!("{}/workspace/health", s.url)));
    assert_eq!(status, StatusCode::OK);
    for key in ["status", "workspace_stats", "warnings", "recommendations"] {
        assert!(open.get(key).is_some(), "{key} missing: {open}");
    }
    let warnings = open["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("name workspaces")),
        "{open}"
    );
    assert!(!open["recommendations"].as_array().unwrap().is_empty());
    assert_eq!(
        open["warning_count"],
        full["warnings"].as_array().unwrap().len()
    );
    let text = open.to_string();
    let base = s.manager.base_path().display().to_string();
    for secret in [name.as_str(), "secret-project", base.as_str()] {
        assert!(
            !text.contains(secret),
            "{secret:?} in the open answer: {text}"
        );
    }
}

#[test]
fn stats_and_cleanup_keep_the_seeds_shapes() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (status, prep) = s.prepare("acme/demo", &up.url());
    assert_eq!(status, StatusCode::OK, "{prep}");
    let name = prep["name"].as_str().unwrap().to_string();

    let (status, body) = send(s.get("/workspace/stats"));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "Workspace stats retrieved ✅");
    assert_eq!(body["stats"]["total_workspaces"], 1);
    assert!(body["stats"]["total_size_mb"].is_number());
    assert_eq!(
        body["stats"]["base_path"],
        s.manager.base_path().display().to_string()
    );

    // Default age (24 h): nothing old enough.
    let (status, body) = send(s.post("/workspace/cleanup"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "Workspace cleanup completed ✅");
    assert_eq!(body["cleaned_workspaces"], 0);
    assert_eq!(body["max_age_hours"], 24.0);
    // Query string.
    let (_, body) = send(s.post("/workspace/cleanup?max_age_hours=12"));
    assert_eq!(body["max_age_hours"], 12.0);
    // JSON body, as the guide shows; it wins over the query.
    support::age_workspace(s.manager.base_path(), &name, 48);
    let (status, body) = send(
        s.post("/workspace/cleanup?max_age_hours=100")
            .json(&json!({"max_age_hours": 24})),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["max_age_hours"], 24.0);
    assert_eq!(body["cleaned_workspaces"], 1);
    assert_eq!(body["report"]["removed"][0]["name"], name.as_str());
}

/// Issue 22: `GET /workspace/name` answers the name the library gives,
/// behind the token; a manager's error carries its message without the
/// kind's introduction, so a client rebuilds the same error.
#[test]
fn the_name_route_answers_the_librarys_name_and_errors_carry_their_message() {
    let s = TestServer::start();
    let (status, body) = send(s.get("/workspace/name?repo=facebook%2Freact"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["name"], "facebook_react_4f32b4cf");
    assert_eq!(body["repo_full_name"], "facebook/react");
    assert_eq!(
        body["name"].as_str(),
        Some(s.manager.workspace_name("facebook/react").unwrap().as_str())
    );
    let (status, body) = send(
        s.client
            .get(format!("{}/workspace/name?repo=a/b", s.url))
            .bearer_auth("wrong"),
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = send(s.get("/workspace/name"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("repo="), "{body}");
    // A hostile name gets a safe folder name; an empty one a clear error.
    let (status, body) = send(s.get("/workspace/name?repo=%2E%2E%2F%2E%2E"));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!body["name"].as_str().unwrap().contains(".."), "{body}");
    let (status, body) = send(s.get("/workspace/name?repo=%20"));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("owner/repo"),
        "{body}"
    );
    assert!(s.manager.list().unwrap().is_empty());

    let (status, body) = send(s.get("/workspace/workspaces/nobody_here_12345678"));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error"], "not_found");
    assert_eq!(body["message"], "no workspace named nobody_here_12345678");
    assert_eq!(
        body["detail"],
        "not found: no workspace named nobody_here_12345678"
    );
}

#[test]
fn prepare_twice_reuses_then_list_get_delete() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (status, first) = s.prepare("acme/demo", &up.url());
    assert_eq!(status, StatusCode::OK, "{first}");
    for key in ["name", "path", "reused", "head", "duration_ms"] {
        assert!(first.get(key).is_some(), "{key}");
    }
    assert_eq!(first["reused"], false);
    let (_, second) = s.prepare("acme/demo", &up.url());
    assert_eq!(second["reused"], true);
    assert_eq!(second["head"], up.head_of("main").as_str());
    let name = first["name"].as_str().unwrap().to_string();

    let (_, list) = send(s.get("/workspace/workspaces"));
    let ws = &list["workspaces"][0];
    assert_eq!(ws["name"], name.as_str());
    assert_eq!(ws["in_use"], false);
    assert_eq!(ws["head"], up.head_of("main").as_str());
    assert!(ws["size_bytes"].as_u64().unwrap() > 0);
    let last_used =
        chrono::DateTime::parse_from_rfc3339(ws["last_used"].as_str().unwrap()).unwrap();
    assert!((chrono::Utc::now() - last_used.to_utc()).num_seconds() < 60);

    let lease = s.manager.lease(&name).unwrap();
    let (status, body) = send(s.delete(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "in_use");
    drop(lease);
    let (status, body) = send(s.delete(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["report"]["removed"], true);
    let (status, _) = send(s.delete(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::NOT_FOUND);

    // In the background: 202 as soon as the name is free.
    let (_, again) = s.prepare("acme/demo", &up.url());
    assert_eq!(again["reused"], false);
    let (status, body) = send(s.delete(&format!("/workspace/workspaces/{name}?background=true")));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["report"]["pending_deletion"], true);
    let (status, _) = send(s.get(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.manager.wait_for_background_deletions();
}

#[test]
fn the_openapi_document_matches_the_routes() {
    let s = TestServer::start();
    let (status, doc) = send(s.client.get(format!("{}/openapi.json", s.url)));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc, serde_json::from_str::<Value>(http::OPENAPI).unwrap());
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    // What the router serves is exactly `http::ROUTES` (it is built from
    // that table), so a route added without documentation fails here.
    let mut served: Vec<(String, String)> = http::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    // Every documented operation is really routed (no "no_route"/405).
    for (method, path) in &documented {
        let url = format!(
            "{}{}",
            s.url,
            path.replace("{name}", "x_12345678")
                .replace("{id}", "7")
                .replace("{node}", "node1")
        );
        let resp = s
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(TOKEN)
            .send()
            .unwrap();
        assert_ne!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let text = resp.text().unwrap();
        assert!(!text.contains("no_route"), "{method} {path}: {text}");
    }
}

#[test]
fn the_routes_mount_under_another_services_prefix() {
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let routes = http::routes(m, ApiToken::new(TOKEN).unwrap(), 4096);
    let app = warp::path("api").and(routes);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(warp::serve(app).incoming(listener).run());
    let client = Client::new();
    let health = client
        .get(format!("http://{addr}/api/workspace/health"))
        .send()
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let stats: Value = client
        .get(format!("http://{addr}/api/workspace/stats"))
        .bearer_auth(TOKEN)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["stats"]["total_workspaces"], 0);
    let outside = client
        .get(format!("http://{addr}/workspace/health"))
        .send()
        .unwrap();
    assert_eq!(outside.status(), StatusCode::NOT_FOUND);
}

#[test]
fn startup_cleanup_runs_the_janitor() {
    // A workspace made (and aged) before the server starts is cleaned at start-up.
    let Fixture { up, base, m } = Fixture::new();
    let name = m
        .prepare(&fixsec_workspace::PrepareRequest::new("acme/old", up.url()))
        .unwrap()
        .name;
    support::age_workspace(base.path(), &name, 100);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        cleanup_on_startup: true,
        ..ServerConfig::default()
    };
    let server = rt
        .block_on(http::start(
            m.clone(),
            &config,
            ApiToken::new(TOKEN).unwrap(),
        ))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while base.path().join(&name).exists() {
        assert!(Instant::now() < deadline, "the janitor did not clean up");
        std::thread::sleep(Duration::from_millis(20));
    }
    rt.block_on(server.shutdown(Duration::from_secs(5)));
}

#[test]
fn a_prepare_lease_holds_off_cleanup_until_released() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (status, out) = send(s.post("/workspace/prepare").json(&json!({
        "repo_full_name": "acme/demo", "clone_url": up.url(), "lease_seconds": 600
    })));
    assert_eq!(status, StatusCode::OK, "{out}");
    let id = out["lease"]["id"].as_u64().unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(out["lease"]["expires_at"].as_str().unwrap()).unwrap();
    let left = (expires.to_utc() - chrono::Utc::now()).num_seconds();
    assert!(
        (590..=600).contains(&left),
        "{left} s left of a 600 s lease"
    );
    let (_, ws) = send(s.get(&format!(
        "/workspace/workspaces/{}",
        out["name"].as_str().unwrap()
    )));
    assert_eq!(ws["in_use"], true);

    let (_, report) = send(s.post("/workspace/cleanup?max_age_hours=0"));
    assert_eq!(report["cleaned_workspaces"], 0);
    assert!(
        report["report"]["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("in use")
    );

    let (status, released) = send(s.delete(&format!("/workspace/leases/{id}")));
    assert_eq!(status, StatusCode::OK, "{released}");
    assert_eq!(released["name"], out["name"]);
    let (status, again) = send(s.delete(&format!("/workspace/leases/{id}")));
    assert_eq!(
        (status, again["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );

    let (_, report) = send(s.post("/workspace/cleanup?max_age_hours=0"));
    assert_eq!(report["cleaned_workspaces"], 1);

    let (status, body) = send(s.post("/workspace/prepare").json(&json!({
        "repo_full_name": "acme/demo", "clone_url": up.url(), "lease_seconds": 0
    })));
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_input"))
    );
}
