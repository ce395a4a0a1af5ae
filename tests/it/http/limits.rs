//! The server at its limits: connection caps, header timeouts, a tarpit
//! flood, a full blocking pool, a full disk, shutdown; and metrics that
//! move with the work.

use super::*;

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
fn shutdown_stops_accepting() {
    let mut s = TestServer::start();
    let server = s.server.take().unwrap();
    let addr = server.addr();
    s.rt.block_on(server.shutdown(Duration::from_secs(5)));
    assert!(std::net::TcpStream::connect(addr).is_err());
}
