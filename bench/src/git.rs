//! git work measured against git's command line: clone, reuse after new
//! commits, shallow clones over a loopback daemon, removal against `rm -rf`.

use crate::*;

pub(crate) fn clone_and_reuse(b: &mut Bench, src: &Path, spec: fixtures::Spec) {
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

/// A `git daemon` serving every repository under `dir` on a loopback
/// port; its process and port.
pub(crate) fn git_daemon(dir: &Path) -> (std::process::Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // git-daemon itself rather than `git daemon` (which would leave it
    // running, holding our stdout, when the wrapper is killed).
    let exec_path = Command::new("git")
        .arg("--exec-path")
        .output()
        .unwrap()
        .stdout;
    let exec_path = String::from_utf8(exec_path).unwrap();
    let daemon = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
        .args(["--export-all", "--reuseaddr", "--listen=127.0.0.1"])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", dir.display()))
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (daemon, port)
}

pub(crate) fn shallow(b: &mut Bench, src: &Path) {
    let (mut daemon, port) = git_daemon(src.parent().unwrap());
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

pub(crate) fn removal(b: &mut Bench, src: &Path) {
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

/// The history fixture as an upstream that can be pushed to: a bare copy
/// (`<scratch>/<name>-served/src.git`) served by a loopback `git daemon`
/// at `url`, and a working clone (`work`) to push from. The daemon is
/// stopped when dropped.
pub(crate) struct ServedHistory {
    pub(crate) work: PathBuf,
    pub(crate) url: String,
    daemon: std::process::Child,
}

impl Drop for ServedHistory {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

pub(crate) fn served_history(b: &Bench, name: &str) -> ServedHistory {
    let (src, _) = fixtures::ensure_history(&b.root);
    let served = b.fresh(&format!("{name}-served"));
    std::fs::create_dir_all(&served).unwrap();
    sh(
        &served,
        &format!("git clone -q --bare {} src.git", src.display()),
    );
    let work = b.fresh(&format!("{name}-work"));
    sh(
        &b.scratch,
        &format!(
            "git clone -q {}/src.git {}",
            served.display(),
            work.display()
        ),
    );
    sh(
        &work,
        "git config user.name bench && git config user.email bench@example.invalid",
    );
    let (daemon, port) = git_daemon(&served);
    ServedHistory {
        work,
        url: format!("git://127.0.0.1:{port}/src.git"),
        daemon,
    }
}
