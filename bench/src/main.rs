//! fixsec-bench: fixsec-workspace measured side by side with what git's own
//! command line, `rm -rf` and `du -sb` do, in one run on one machine.
//!
//! ```sh
//! cargo run --release -p fixsec-bench            # the 250 MB fixture
//! cargo run --release -p fixsec-bench -- --quick # a 10 MB fixture, fewer runs
//! ```
//!
//! Each figure is the median of several runs; each ratio compares two
//! medians measured in this same run; each line says whether the issue's
//! target is met.

mod fixtures;

use fixsec_workspace::{PrepareRequest, WorkspaceManager};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Bench {
    quick: bool,
    runs: usize,
    root: PathBuf,
    scratch: PathBuf,
    results: Vec<String>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

fn sh(dir: &Path, cmd: &str) {
    let status = Command::new("bash")
        .args(["-c", cmd])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd}");
}

fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

impl Bench {
    fn report(&mut self, line: String) {
        println!("{line}");
        self.results.push(line);
    }

    /// `ours` against `base`: medians, ratio, and the target `ratio <= max`.
    fn compare(&mut self, what: &str, ours: Duration, base_name: &str, base: Duration, max: f64) {
        let ratio = ours.as_secs_f64() / base.as_secs_f64();
        let verdict = if ratio <= max { "met" } else { "MISSED" };
        self.report(format!(
            "{what:<46} ours {:>10}  {base_name} {:>10}  ratio {ratio:>6.2}  (target <= {max}: {verdict})",
            ms(ours),
            ms(base)
        ));
    }

    /// A figure against an absolute target.
    fn threshold(&mut self, what: &str, figure: String, target: &str, met: bool) {
        let verdict = if met { "met" } else { "MISSED" };
        self.report(format!(
            "{what:<46} {figure:>10}  (target {target}: {verdict})"
        ));
    }

    fn fresh(&self, name: &str) -> PathBuf {
        let p = self.scratch.join(name);
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn manager(&self, base: &Path) -> WorkspaceManager {
        WorkspaceManager::builder()
            .base_path(base)
            .allow_local_urls(true)
            .allow_private_networks(true)
            .build()
            .unwrap()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-fixtures");
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut b = Bench {
        quick,
        runs: if quick { 3 } else { 5 },
        root,
        scratch,
        results: Vec::new(),
    };
    let spec = if quick {
        fixtures::SMALL
    } else {
        fixtures::LARGE
    };
    let src = fixtures::ensure(&b.root, spec);
    println!(
        "fixture {}: {} files, {} MB, {} commits; {} runs each; {}",
        spec.name,
        spec.files,
        spec.total_bytes / (1024 * 1024),
        spec.commits,
        b.runs,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    // `--only clone,daemon,removal,stats,policy,server` runs a subset.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    if wanted("clone") {
        clone_and_reuse(&mut b, &src, spec);
    }
    if wanted("daemon") {
        shallow(&mut b, &src);
    }
    if wanted("removal") {
        removal(&mut b, &src);
    }
    if wanted("stats") {
        stats(&mut b);
    }
    if wanted("policy") {
        policy_calls(&mut b);
    }
    if wanted("server") {
        server(&mut b, &src);
    }
    println!("\n{} figures", b.results.len());
}

fn clone_and_reuse(b: &mut Bench, src: &Path, spec: fixtures::Spec) {
    let url = src.display().to_string();
    // Fresh clones.
    let mut git_fresh = Vec::new();
    let mut our_fresh = Vec::new();
    for i in 0..b.runs {
        let dst = b.fresh(&format!("git-clone-{i}"));
        git_fresh.push(timed(|| {
            sh(
                &b.scratch,
                &format!("git clone -q --no-local {url} {}", dst.display()),
            )
        }));
        let base = b.fresh(&format!("ours-clone-{i}"));
        let m = b.manager(&base);
        let req = PrepareRequest::new("bench/repo", url.as_str()).branch("main");
        our_fresh.push(timed(|| {
            m.prepare(&req).unwrap();
        }));
    }
    let (git_fresh, our_fresh) = (median(git_fresh), median(our_fresh));
    b.compare(
        "fresh clone (prepare, empty base)",
        our_fresh,
        "git clone --no-local",
        git_fresh,
        1.3,
    );

    // Warm, unchanged.
    let git_dst = b.scratch.join("git-clone-0");
    let reuse = "git fetch -q origin && git reset -q --hard origin/main && git clean -ffdxq";
    let git_warm = median((0..b.runs).map(|_| timed(|| sh(&git_dst, reuse))).collect());
    let base = b.scratch.join("ours-clone-0");
    let m = b.manager(&base);
    let req = PrepareRequest::new("bench/repo", url.as_str()).branch("main");
    let our_warm = median(
        (0..b.runs)
            .map(|_| {
                let t = Instant::now();
                assert!(m.prepare(&req).unwrap().reused);
                t.elapsed()
            })
            .collect(),
    );
    b.compare(
        "warm prepare, unchanged upstream",
        our_warm,
        "git fetch+reset+clean",
        git_warm,
        1.5,
    );
    // "Faster than a fresh clone": the original cloned afresh with git on
    // every prepare; our own fresh clone of a local path copies the object
    // store and is itself faster than that, so both are shown.
    let speedup = git_fresh.as_secs_f64() / our_warm.as_secs_f64();
    b.report(format!(
        "{:<46} git clone {:>10}  our warm {:>10}  {speedup:>6.1}x (target >= 50x: {})",
        "reuse vs the original's fresh clone",
        ms(git_fresh),
        ms(our_warm),
        if speedup >= 50.0 { "met" } else { "MISSED" }
    ));
    b.report(format!(
        "{:<46} our fresh/warm {:.1}x, git's own fresh/warm {:.1}x",
        "",
        our_fresh.as_secs_f64() / our_warm.as_secs_f64(),
        git_fresh.as_secs_f64() / git_warm.as_secs_f64()
    ));

    // Warm after 10 new upstream commits (each side gets its own 10).
    let mut rng = fixtures::Rng::new(7);
    let mut n = 10_000;
    let mut ten = |rng: &mut fixtures::Rng| {
        for _ in 0..10 {
            n += 1;
            fixtures::advance(src, rng, spec.files, n);
        }
    };
    let mut git_times = Vec::new();
    let mut our_times = Vec::new();
    for _ in 0..b.runs {
        ten(&mut rng);
        git_times.push(timed(|| sh(&git_dst, reuse)));
        ten(&mut rng);
        our_times.push(timed(|| {
            assert!(m.prepare(&req).unwrap().reused);
        }));
    }
    b.compare(
        "warm prepare after 10 upstream commits",
        median(our_times),
        "git fetch+reset+clean",
        median(git_times),
        2.0,
    );
}

fn shallow(b: &mut Bench, src: &Path) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let parent = src.parent().unwrap();
    let mut daemon = Command::new("git")
        .args([
            "daemon",
            "--export-all",
            "--reuseaddr",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", parent.display()))
        .arg(parent)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!("git://127.0.0.1:{port}/src");
    let mut full = Vec::new();
    let mut shallow = Vec::new();
    let mut git_full = Vec::new();
    for i in 0..b.runs {
        let dst = b.fresh(&format!("daemon-git-{i}"));
        git_full.push(timed(|| {
            sh(&b.scratch, &format!("git clone -q {url} {}", dst.display()))
        }));
        let m = b.manager(&b.fresh(&format!("daemon-full-{i}")));
        full.push(timed(|| {
            m.prepare(&PrepareRequest::new("bench/full", url.as_str()).branch("main"))
                .unwrap();
        }));
        let m = b.manager(&b.fresh(&format!("daemon-shallow-{i}")));
        shallow.push(timed(|| {
            m.prepare(
                &PrepareRequest::new("bench/shallow", url.as_str())
                    .branch("main")
                    .depth(1),
            )
            .unwrap();
        }));
    }
    let (full, shallow) = (median(full), median(shallow));
    b.compare(
        "fresh clone over loopback git daemon",
        full,
        "git clone git://",
        median(git_full),
        1.3,
    );
    b.report(format!(
        "{:<46} depth 1 {:>10}  full {:>10}  ratio {:>6.2}",
        "clone over loopback git daemon",
        ms(shallow),
        ms(full),
        shallow.as_secs_f64() / full.as_secs_f64()
    ));
    let _ = daemon.kill();
    let _ = daemon.wait();
}

fn removal(b: &mut Bench, src: &Path) {
    let url = src.display().to_string();
    let mut rm = Vec::new();
    let mut free = Vec::new();
    let mut background = Vec::new();
    let mut sync = Vec::new();
    for i in 0..b.runs {
        let copy = b.fresh(&format!("rm-{i}"));
        sh(
            &b.scratch,
            &format!("git clone -q --no-local {url} {}", copy.display()),
        );
        rm.push(timed(|| {
            sh(&b.scratch, &format!("rm -rf {}", copy.display()))
        }));

        let base = b.fresh(&format!("remove-{i}"));
        let m = b.manager(&base);
        let name = m
            .prepare(&PrepareRequest::new("bench/rm", url.as_str()))
            .unwrap()
            .name;
        let t = Instant::now();
        let report = m.remove_in_background(&name).unwrap();
        free.push(t.elapsed());
        assert!(!base.join(&name).exists() && report.pending_deletion);
        m.wait_for_background_deletions();
        background.push(t.elapsed());

        let name = m
            .prepare(&PrepareRequest::new("bench/rm2", url.as_str()))
            .unwrap()
            .name;
        sync.push(timed(|| assert!(m.remove(&name).unwrap().removed)));
    }
    let free = median(free);
    b.threshold(
        "removal: name free (rename away)",
        ms(free),
        "< 50 ms",
        free < Duration::from_millis(50),
    );
    let rm = median(rm);
    b.compare(
        "removal: background deletion finished",
        median(background),
        "rm -rf",
        rm,
        1.1,
    );
    b.compare(
        "removal: synchronous remove (honest report)",
        median(sync),
        "rm -rf",
        rm,
        1.1,
    );
}

fn stats(b: &mut Bench) {
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
            fixsec_workspace::metadata::WorkspaceMetadata {
                version: fixsec_workspace::metadata::METADATA_VERSION,
                repo_full_name: format!("bench/ws{w}"),
                clone_url: "https://example.invalid/r.git".into(),
                branch: Some("main".into()),
                depth: None,
                head: "0".repeat(40),
                created: now,
                last_prepared: now,
                last_used: now,
                size_bytes: 0,
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

fn policy_calls(b: &mut Bench) {
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

fn rss_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn server(b: &mut Bench, src: &Path) {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/fixsec-workspace");
    if !bin.exists() {
        b.report("server figures skipped: build it with `cargo build --release` first".into());
        return;
    }
    let base = b.fresh("server");
    let start = |base: &Path| {
        let t = Instant::now();
        let mut child = Command::new(&bin)
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
    };
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
