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

/// Issue 11, item 7: scrapes reuse recent figures instead of reading every
/// `workspace.json` each time.
#[test]
fn metrics_scrapes_do_not_rescan_the_disk() {
    let up = Upstream::new();
    let s = TestServer::start();
    s.prepare("acme/demo", &up.url());
    let scrape = || {
        s.client
            .get(format!("{}/metrics", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap()
    };
    let first = scrape();
    assert_eq!(metric(&first, "fixsec_workspace_workspaces "), 1.0);
    let scans = metric(&first, "fixsec_workspace_listing_scans_total");
    for _ in 0..5 {
        scrape();
    }
    let last = scrape();
    assert_eq!(metric(&last, "fixsec_workspace_listing_scans_total"), scans);
    assert_eq!(metric(&last, "fixsec_workspace_workspaces "), 1.0);
}

/// Issue 11, item 10: a client that opens connections and sends nothing
/// is cut off after the header timeout, and connections beyond the cap
/// wait instead of exhausting the server.
#[test]
fn idle_connections_are_cut_off_and_capped() {
    use std::io::Read;
    let s = TestServer::start_with(ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_connections: 2,
        header_read_timeout: Duration::from_secs(1),
        ..ServerConfig::default()
    });
    let addr = s.url.trim_start_matches("http://").to_string();
    let idle: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // Both slots are taken by silent clients: a real request waits for one...
    let started = Instant::now();
    let (status, _) = send(s.client.get(format!("{}/workspace/health", s.url)));
    assert_eq!(status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    // ...which the header timeout frees: the server hung up on them.
    for mut conn in idle {
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = conn.read(&mut buf).expect("closed, not left hanging");
        let reply = String::from_utf8_lossy(&buf[..n]);
        assert!(n == 0 || reply.starts_with("HTTP/1.1 408"), "{reply}");
    }
}

/// Issue 11, item 5: a flood of prepares against a tarpit fills the git
/// queue, the excess is refused at once (503), and the probes still
/// answer at once.
#[test]
fn a_tarpit_flood_is_bounded_and_probes_still_answer() {
    let base = tempfile::tempdir().unwrap();
    let manager = support::builder(base.path())
        .configure(|c| {
            c.git.max_running = 2;
            c.git.max_per_host = 2;
            c.git.max_queued = 2;
            c.git.queue_wait = Duration::from_secs(60);
        })
        .build()
        .unwrap();
    let s = TestServer::start_manager(manager, base);
    let tarpit = support::Tarpit::start();
    std::thread::scope(|scope| {
        let floods: Vec<_> = (0..12)
            .map(|i| {
                let url = tarpit.url(&format!("r{i}"));
                let s = &s;
                scope.spawn(move || s.prepare(&format!("flood/r{i}"), &url))
            })
            .collect();
        tarpit.wait_for(2);
        // Two hold slots, two wait, the other eight are refused at once.
        let deadline = Instant::now() + Duration::from_secs(20);
        let refused = loop {
            let done: Vec<_> = floods.iter().filter(|h| h.is_finished()).collect();
            if done.len() >= 8 || Instant::now() > deadline {
                break done.len();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(refused, 8);
        for _ in 0..3 {
            let started = Instant::now();
            let (status, _) = send(s.client.get(format!("{}/workspace/health", s.url)));
            assert_eq!(status, StatusCode::OK);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
        }
        let text = s
            .client
            .get(format!("{}/metrics", s.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert_eq!(
            metric(&text, "fixsec_workspace_git_operations_running "),
            2.0
        );
        assert_eq!(
            metric(&text, "fixsec_workspace_git_operations_queued "),
            2.0
        );
        assert_eq!(
            metric(&text, "fixsec_workspace_git_operations_rejected_total"),
            8.0
        );
        tarpit.release();
        let results: Vec<(StatusCode, Value)> =
            floods.into_iter().map(|h| h.join().unwrap()).collect();
        let busy = results
            .iter()
            .filter(|(st, body)| *st == StatusCode::SERVICE_UNAVAILABLE && body["error"] == "busy")
            .count();
        assert_eq!(busy, 8, "{results:?}");
    });
}

/// Issue 11, item 5: the probes run on threads of their own, so they
/// answer even when git work holds every thread of the blocking pool (here
/// a pool of 2, both stuck on a tarpit).
#[test]
fn probes_answer_when_git_work_fills_the_blocking_pool() {
    let base = tempfile::tempdir().unwrap();
    let manager = manager(base.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = rt
        .block_on(http::start(manager, &config, ApiToken::new(TOKEN).unwrap()))
        .unwrap();
    let url = format!("http://{}", server.addr());
    let tarpit = support::Tarpit::start();
    let client = Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    std::thread::scope(|scope| {
        for i in 0..2 {
            let (client, url, clone_url) = (&client, &url, tarpit.url(&format!("r{i}")));
            scope.spawn(move || {
                client
                    .post(format!("{url}/workspace/prepare"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"repo_full_name": format!("pool/r{i}"), "clone_url": clone_url}))
                    .send()
            });
        }
        tarpit.wait_for(2);
        for path in ["/workspace/health", "/metrics"] {
            let started = Instant::now();
            let resp = client
                .get(format!("{url}{path}"))
                .timeout(Duration::from_secs(5))
                .send();
            assert!(
                resp.as_ref().is_ok_and(|r| r.status() == StatusCode::OK),
                "{path}: {resp:?}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{path}: {:?}",
                started.elapsed()
            );
        }
        tarpit.release();
    });
    rt.block_on(server.shutdown(Duration::from_secs(5)));
}

/// Issue 11, item 5: a clone the disk cannot hold answers 507.
#[test]
fn no_room_for_a_clone_is_507() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let manager = support::builder(base.path())
        .configure(|c| c.min_free_bytes = u64::MAX)
        .build()
        .unwrap();
    let s = TestServer::start_manager(manager, base);
    let (status, body) = s.prepare("acme/demo", &up.url());
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(body["error"], "insufficient_storage");
}

#[test]
fn every_protected_endpoint_wants_the_token() {
    let s = TestServer::start();
    let endpoints = [
        ("GET", "/workspace/stats"),
        ("POST", "/workspace/cleanup"),
        ("POST", "/workspace/prepare"),
        ("GET", "/workspace/workspaces"),
        ("GET", "/workspace/workspaces/x_12345678"),
        ("DELETE", "/workspace/workspaces/x_12345678"),
        ("DELETE", "/workspace/leases/7"),
        ("POST", "/workspace/policy/reload"),
    ];
    for (method, path) in endpoints {
        for auth in [
            None,
            Some("Bearer wrong"),
            Some("Basic dGVzdA=="),
            Some(TOKEN),
        ] {
            let mut req = s
                .client
                .request(method.parse().unwrap(), format!("{}{path}", s.url));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = req.send().unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path} {auth:?}"
            );
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let body: Value = resp.json().unwrap();
            assert_eq!(body["error"], "unauthorized");
            assert!(body["detail"].as_str().unwrap().contains("Bearer"));
        }
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

#[test]
fn bad_input_gets_clear_4xx_and_loses_nothing() {
    let up = Upstream::new();
    let s = TestServer::start();
    let (_, prep) = s.prepare("acme/demo", &up.url());
    let name = prep["name"].as_str().unwrap().to_string();

    let cases: Vec<(RequestBuilder, StatusCode, &str)> = vec![
        (
            s.post("/workspace/prepare").body("{not json"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"clone_url": "x"})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": up.url(), "typo": 1})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": "ext::sh -c id"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "", "clone_url": up.url()})),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            s.post("/workspace/prepare").json(
                &json!({"repo_full_name": "a/b", "clone_url": up.url(), "default_branch": "nope"}),
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.post("/workspace/prepare")
                .json(&json!({"repo_full_name": "a/b", "clone_url": "git://127.0.0.1:1/x"})),
            StatusCode::BAD_GATEWAY,
            "git",
        ),
        (
            s.post("/workspace/cleanup").body("[1,2"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/cleanup?max_age_hours=soon"),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            s.post("/workspace/cleanup?max_age_hours=-1"),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            s.post("/workspace/prepare").body(vec![b' '; 5000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            s.get("/workspace/workspaces/nope_12345678"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.get("/workspace/workspaces/..%2Fescape"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "refused",
        ),
        (
            s.delete("/workspace/workspaces/nope_12345678"),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            s.get("/workspace/nothing-here"),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            s.client.put(format!("{}/workspace/health", s.url)),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (req, status, error) in cases {
        let (got, body) = send(req);
        assert_eq!(
            (got, body["error"].as_str().unwrap()),
            (status, error),
            "{body}"
        );
        assert!(!body["detail"].as_str().unwrap().is_empty());
    }
    // The workspace prepared first is still whole.
    let (status, ws) = send(s.get(&format!("/workspace/workspaces/{name}")));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ws["repo_full_name"], "acme/demo");
    assert!(
        s.manager
            .base_path()
            .join(&name)
            .join("repo/README.md")
            .is_file()
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

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_move_after_operations() {
    let up = Upstream::new();
    let s = TestServer::start();
    let scrape = || {
        let resp = s.client.get(format!("{}/metrics", s.url)).send().unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .contains("openmetrics")
        );
        resp.text().unwrap()
    };
    let before = scrape();
    assert_eq!(metric(&before, "fixsec_workspace_workspaces "), 0.0);
    s.prepare("acme/demo", &up.url());
    s.prepare("acme/demo", &up.url());
    s.prepare("acme/bad", "ext::x"); // refused before the operation is timed? counted as an error
    send(s.post("/workspace/cleanup?max_age_hours=0"));
    let after = scrape();
    assert_eq!(
        metric(
            &after,
            "fixsec_workspace_operation_duration_seconds_count{operation=\"prepare\"}"
        ),
        3.0
    );
    assert_eq!(
        metric(
            &after,
            "fixsec_workspace_operation_duration_seconds_count{operation=\"clone\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "fixsec_workspace_operation_duration_seconds_count{operation=\"update\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "fixsec_workspace_operation_duration_seconds_count{operation=\"remove\"}"
        ),
        1.0
    );
    assert_eq!(metric(&after, "fixsec_workspace_cleanup_runs_total"), 1.0);
    assert_eq!(
        metric(&after, "fixsec_workspace_removed_workspaces_total"),
        1.0
    );
    assert_eq!(
        metric(&after, "fixsec_workspace_errors_total{kind=\"refused\"}"),
        1.0
    );
    assert_eq!(metric(&after, "fixsec_workspace_workspaces "), 0.0);
    assert_eq!(
        metric(&after, "fixsec_workspace_operations_in_flight "),
        0.0
    );
}

#[test]
fn concurrent_prepares_of_one_repository_all_succeed() {
    let up = Upstream::new();
    let s = TestServer::start();
    let url = up.url();
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.prepare("acme/demo", &url)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (status, body) in &results {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["head"], up.head_of("main").as_str());
    }
    assert_eq!(
        results.iter().filter(|(_, b)| b["reused"] == false).count(),
        1
    );
    let (_, list) = send(s.get("/workspace/workspaces"));
    assert_eq!(list["workspaces"].as_array().unwrap().len(), 1);
    let path = results[0].1["path"].as_str().unwrap();
    let repo = git2::Repository::open(path).unwrap();
    assert_eq!(
        repo.head()
            .unwrap()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string(),
        up.head_of("main")
    );
    assert!(repo.statuses(None).unwrap().is_empty(), "a clean checkout");
}

#[test]
fn a_hanging_clone_never_stalls_health() {
    let s = TestServer::start();
    // A "git server" that accepts and then says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::scope(|scope| {
        let prep = scope.spawn(|| s.prepare("acme/slow", &format!("git://127.0.0.1:{port}/r")));
        let (conn, _) = silent.accept().unwrap();
        // The prepare is now stuck in the clone; health still answers at once.
        for _ in 0..5 {
            let started = Instant::now();
            let (status, body) = send(s.client.get(format!("{}/workspace/health", s.url)));
            assert_eq!(status, StatusCode::OK);
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "{:?}",
                started.elapsed()
            );
            assert_eq!(body["workspace_stats"]["total_workspaces"], 0);
        }
        let (_, metrics) = (
            0,
            s.client
                .get(format!("{}/metrics", s.url))
                .send()
                .unwrap()
                .text()
                .unwrap(),
        );
        assert!(metric(&metrics, "fixsec_workspace_operations_in_flight ") >= 1.0);
        drop(conn); // the remote hangs up
        let (status, body) = prep.join().unwrap();
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    });
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
            path.replace("{name}", "x_12345678").replace("{id}", "7")
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
fn shutdown_stops_accepting() {
    let mut s = TestServer::start();
    let server = s.server.take().unwrap();
    let addr = server.addr();
    s.rt.block_on(server.shutdown(Duration::from_secs(5)));
    assert!(std::net::TcpStream::connect(addr).is_err());
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
