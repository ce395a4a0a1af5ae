//! The service measured: stats against `du -sb`, policy calls, and the
//! HTTP server (throughput with wrk, start-up, memory).

use crate::*;

pub(crate) fn stats(b: &mut Bench) {
    let (workspaces, files) = if b.quick { (100, 100) } else { (100, 10_000) };
    let base = b.root.join(format!("stats-v2-{workspaces}x{files}"));
    let marker = base.join(".complete-bench");
    if !marker.exists() {
        eprintln!("generating {workspaces} workspaces of {files} files");
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        for w in 0..workspaces {
            let repo = base.join(format!("ws_{w:03}")).join("repo");
            let now = chrono::Utc::now();
            std::fs::create_dir_all(&repo).unwrap();
            fixsec_workspace::testing::WorkspaceMetadata {
                version: fixsec_workspace::testing::METADATA_VERSION,
                repo_full_name: format!("bench/ws{w}"),
                clone_url: "https://example.invalid/r.git".into(),
                branch: Some("main".into()),
                depth: None,
                head: "0".repeat(40),
                created: now,
                last_prepared: now,
                last_used: now,
                size_bytes: 0,
                copy_of: None,
                prepared_with: Default::default(),
            }
            .write(&base.join(format!("ws_{w:03}")).join("workspace.json"))
            .unwrap();
            for d in 0..(files / 100).max(1) {
                let dir = repo.join(format!("d{d:03}"));
                std::fs::create_dir_all(&dir).unwrap();
                for f in 0..files.min(100) {
                    std::fs::write(dir.join(format!("f{f:03}")), b"0123456789").unwrap();
                }
            }
        }
        std::fs::write(&marker, "").unwrap();
    }
    let m = b.manager(&base);
    let rescan = timed(|| {
        m.rescan_sizes().unwrap();
    });
    let stats = median(
        (0..20)
            .map(|_| {
                timed(|| {
                    m.refresh_stats().unwrap();
                })
            })
            .collect(),
    );
    b.threshold(
        &format!(
            "stats over {workspaces} workspaces, {} files",
            workspaces * files
        ),
        ms(stats),
        "< 20 ms",
        stats < Duration::from_millis(20),
    );
    let cached = median(
        (0..20)
            .map(|_| timed(|| drop(m.stats().unwrap())))
            .collect(),
    );
    b.report(format!(
        "{:<46} {:>10}",
        "stats from the 1 s snapshot",
        ms(cached)
    ));
    let du = median(
        (0..b.runs)
            .map(|_| timed(|| sh(&base, "du -sb . > /dev/null")))
            .collect(),
    );
    let rescans = median(
        (0..b.runs)
            .map(|_| {
                timed(|| {
                    m.rescan_sizes().unwrap();
                })
            })
            .collect(),
    );
    let _ = rescan;
    b.compare("full re-walk of sizes (rescan)", rescans, "du -sb", du, 1.0);
}

pub(crate) fn policy_calls(b: &mut Bench) {
    let m = b.manager(&b.fresh("policy-calls"));
    for _ in 0..100 {
        m.workspace_name("facebook/react").unwrap();
    }
    let calls: Vec<Duration> = (0..2000)
        .map(|_| {
            timed(|| {
                m.workspace_name("facebook/react").unwrap();
            })
        })
        .collect();
    let med = median(calls);
    b.threshold(
        "policy call (fresh instance + workspace-name)",
        ms(med),
        "< 50 µs",
        med < Duration::from_micros(50),
    );
}

pub(crate) fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Start the release binary's server on `base`; the child, its address
/// and how long it took to listen.
fn start_server(bin: &Path, base: &Path) -> (std::process::Child, String, Duration) {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("WORKSPACE_BASE_PATH", base)
        .env("WORKSPACE_API_TOKEN", "bench")
        .env("WORKSPACE_ALLOW_LOCAL_URLS", "1")
        .env("WORKSPACE_ALLOW_PRIVATE_NETWORKS", "1")
        .env("WORKSPACE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,fixsec_workspace::cli=info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().unwrap().unwrap();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && let Some(a) = v["fields"]["addr"].as_str()
        {
            break a.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    while TcpStream::connect(&addr).is_err() {}
    (child, addr, t.elapsed())
}

/// One HTTP/1.1 request on a fresh connection (as a client without
/// keep-alive makes it); the status code.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// What HAProxy (Debian's, with `deploy/haproxy/haproxy.cfg`) adds to a
/// warm prepare: the same request straight to a node and through the
/// router, alternating, medians.
pub(crate) fn router(b: &mut Bench, src: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join("target/release/fixsec-workspace");
    if !bin.exists() || Command::new("haproxy").arg("-v").output().is_err() {
        b.report("router figures skipped: needs `cargo build --release` and haproxy".into());
        return;
    }
    let (mut node, addr, _) = start_server(&bin, &b.fresh("router"));
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let mut haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(root.join("deploy/haproxy/haproxy.cfg"))
        .env("LISTEN", &listen)
        .envs((1..=3).map(|i| (format!("NODE{i}"), addr.clone())))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&listen).is_err() || http(&listen, "GET", "/readyz", &[], "") != 200 {
        assert!(Instant::now() < deadline, "haproxy did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = format!(
        r#"{{"repo_full_name":"bench/routed","clone_url":"{}"}}"#,
        src.display()
    );
    let headers = [
        ("Authorization", "Bearer bench"),
        ("Content-Type", "application/json"),
        ("X-Fixsec-Shard", "bench/routed"),
    ];
    let prepare = |to: &str| {
        timed(|| assert_eq!(http(to, "POST", "/workspace/prepare", &headers, &body), 200))
    };
    for _ in 0..3 {
        prepare(&addr);
    }
    let runs = b.runs.max(10);
    let (to_node, to_router) = (addr.as_str(), listen.as_str());
    through_router(
        b,
        "router: warm prepare through haproxy",
        runs,
        &prepare,
        (to_node, to_router),
    );
    // A prepare varies by more than a millisecond from run to run; the
    // hop itself, on a request that does almost nothing, 500 times each.
    let light =
        |to: &str| timed(|| assert_eq!(http(to, "GET", "/workspace/stats", &headers, ""), 200));
    through_router(
        b,
        "router: the haproxy hop on one request",
        500,
        &light,
        (to_node, to_router),
    );
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    let _ = node.kill();
    let _ = node.wait();
}

/// `request` timed `runs` times straight to the node and through the
/// router, alternating; what the router adds to the median, against the
/// target of under 1 ms.
fn through_router(
    b: &mut Bench,
    what: &str,
    runs: usize,
    request: &dyn Fn(&str) -> Duration,
    (node, router): (&str, &str),
) {
    let (mut direct, mut routed) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        direct.push(request(node));
        routed.push(request(router));
    }
    let (direct, routed) = (median(direct), median(routed));
    let added = routed.as_secs_f64() - direct.as_secs_f64();
    b.threshold(
        what,
        format!(
            "{} vs {} direct, {:+.3} ms",
            ms(routed),
            ms(direct),
            added * 1000.0
        ),
        "adds < 1 ms",
        added < 0.001,
    );
}

pub(crate) fn server(b: &mut Bench, src: &Path) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/fixsec-workspace");
    if !bin.exists() {
        b.report("server figures skipped: build it with `cargo build --release` first".into());
        return;
    }
    let base = b.fresh("server");
    let start = |base: &Path| start_server(&bin, base);
    let (mut first, _, cold) = start(&base);
    let _ = first.kill();
    let _ = first.wait();
    let (mut child, addr, warm) = start(&base);
    b.threshold(
        "server start-up (compile, then cached)",
        format!("first {}, later {}", ms(cold), ms(warm)),
        "< 300 ms",
        warm < Duration::from_millis(300),
    );
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_kb(child.id(), "VmRSS:");
    b.threshold(
        "idle server resident set",
        format!("{} MB", idle / 1024),
        "< 60 MB",
        idle < 60 * 1024,
    );

    // Load while a clone runs in the server.
    let url = src.display().to_string();
    let load_name = b
        .manager(&b.fresh("names"))
        .workspace_name("bench/load")
        .unwrap();
    let body = format!(r#"{{"repo_full_name":"bench/load","clone_url":"{url}"}}"#);
    let cloning = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            for _ in 0..3 {
                let _ = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-X",
                        "POST",
                        "-H",
                        "Authorization: Bearer bench",
                    ])
                    .args(["-d", &body])
                    .arg(format!("http://{addr}/workspace/prepare"))
                    .status();
                let _ = Command::new("curl")
                    .args([
                        "-s",
                        "-o",
                        "/dev/null",
                        "-X",
                        "DELETE",
                        "-H",
                        "Authorization: Bearer bench",
                    ])
                    .arg(format!("http://{addr}/workspace/workspaces/{load_name}"))
                    .status();
            }
        })
    };
    for path in ["/workspace/health", "/workspace/stats"] {
        let out = Command::new("wrk")
            .args([
                "-t2",
                "-c32",
                "-d5s",
                "--latency",
                "-H",
                "Authorization: Bearer bench",
            ])
            .arg(format!("http://{addr}{path}"))
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let text = String::from_utf8_lossy(&o.stdout);
                let rps = text
                    .lines()
                    .find(|l| l.starts_with("Requests/sec:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                let p99 = text
                    .lines()
                    .find(|l| l.trim_start().starts_with("99%"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .unwrap_or("?")
                    .to_string();
                b.threshold(
                    &format!("GET {path} under wrk, clone running"),
                    format!("{rps:.0} req/s, p99 {p99}"),
                    ">= 10000 req/s",
                    rps >= 10_000.0,
                );
            }
            _ => b.report(format!(
                "GET {path}: wrk not available (apt-get install wrk)"
            )),
        }
    }
    let _ = cloning.join();
    let peak = rss_kb(child.id(), "VmHWM:");
    b.report(format!(
        "{:<46} {:>7} MB  (idle {} MB)",
        "server peak resident set after clones and load",
        peak / 1024,
        idle / 1024
    ));
    let _ = child.kill();
    let _ = child.wait();
}

/// What the Python package adds per call, against the library in this
/// process, on the same calls: `workspace_name` (a policy call, no I/O)
/// and a warm prepare of the fixture. Needs the package built in release:
/// `(cd python && maturin develop --release)` into the interpreter named
/// by `FIXSEC_PYTHON` (default `target/python-venv/bin/python`).
pub(crate) fn python(b: &mut Bench, src: &Path) {
    let python = std::env::var("FIXSEC_PYTHON").unwrap_or_else(|_| {
        b.root
            .join("../python-venv/bin/python")
            .display()
            .to_string()
    });
    // Warm prepares vary most in their first runs after a clone: more runs
    // than elsewhere, after two warm-ups, on both sides alike.
    let runs = b.runs.max(10);
    let rust_base = b.fresh("python-rust");
    let m = b.manager(&rust_base);
    let names: Vec<Duration> = (0..2000)
        .map(|i| timed(|| drop(m.workspace_name(&format!("acme/r{}", i % 50)).unwrap())))
        .collect();
    let request = PrepareRequest::new("acme/app", src.display().to_string());
    for _ in 0..3 {
        m.prepare(&request).unwrap();
    }
    let prepares: Vec<Duration> = (0..runs)
        .map(|_| timed(|| drop(m.prepare(&request).unwrap())))
        .collect();
    let py_base = b.fresh("python-py");
    let script = format!(
        r#"
import json, time, statistics, fixsec_workspace as f
m = f.WorkspaceManager({base:?}, allow_local_urls=True)
names = []
for i in range(2000):
    t = time.perf_counter(); m.workspace_name("acme/r%d" % (i % 50)); names.append(time.perf_counter() - t)
for _ in range(3):
    m.prepare("acme/app", {src:?})
prepares = []
for _ in range({runs}):
    t = time.perf_counter(); m.prepare("acme/app", {src:?}); prepares.append(time.perf_counter() - t)
print(json.dumps({{"name": statistics.median(names), "prepare": statistics.median(prepares)}}))
"#,
        base = py_base.display().to_string(),
        src = src.display().to_string(),
    );
    let out = Command::new(&python).args(["-c", &script]).output();
    let figures = match out {
        Ok(o) if o.status.success() => {
            serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap_or_default()
        }
        other => {
            b.report(format!(
                "python: skipped ({python} could not run the package: {}); build it with \
                 `(cd python && maturin develop --release)`",
                other
                    .map(|o| String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                        .to_string())
                    .unwrap_or_else(|e| e.to_string())
            ));
            return;
        }
    };
    let secs = |k: &str| Duration::from_secs_f64(figures[k].as_f64().unwrap_or(0.0));
    let (rust_name, py_name) = (median(names), secs("name"));
    b.report(format!(
        "{:<46} python {:>10}  rust {:>10}  overhead {:>8.1} µs/call",
        "python: workspace_name per call",
        ms(py_name),
        ms(rust_name),
        (py_name.as_secs_f64() - rust_name.as_secs_f64()) * 1e6
    ));
    b.compare(
        "python: warm prepare (fetch, reset, clean)",
        secs("prepare"),
        "rust",
        median(prepares),
        1.10,
    );
}
