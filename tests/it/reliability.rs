//! Concurrency, crashes and deletion faults, on real repositories and real
//! processes.

use crate::support::{Fixture, Upstream, manager};
use fixsec_workspace::PrepareRequest;
use std::path::Path;
use std::process::{Command, Output, Stdio};
#[cfg(unix)]
use std::time::{Duration, Instant};

fn cli(base: &Path, args: &[&str]) -> Command {
    crate::support::cli_local(base, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(unix)]
fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sixteen_concurrent_prepares_make_one_clone() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16).map(|_| s.spawn(|| m.prepare(&req))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let outcomes: Vec<_> = outcomes.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        outcomes.iter().filter(|o| !o.reused).count(),
        1,
        "one clone"
    );
    assert!(outcomes.iter().all(|o| o.head == up.head_of("main")));
    assert_eq!(m.list().unwrap().len(), 1);
    let repo = git2::Repository::open(&outcomes[0].path).unwrap();
    assert!(repo.statuses(None).unwrap().is_empty());
}

#[test]
fn cleanup_racing_prepares_never_breaks_a_prepare() {
    let up = Upstream::new();
    let url = up.url();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let cleaner = s.spawn(|| {
            let mut runs = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let report = m.cleanup(Some(0.0)).unwrap();
                assert!(report.failed.is_empty(), "{report:?}");
                runs += 1;
            }
            runs
        });
        let workers: Vec<_> = (0..4)
            .map(|i| {
                let (m, url) = (&m, &url);
                s.spawn(move || {
                    for _ in 0..6 {
                        let repo = format!("acme/r{}", i % 2);
                        // A caller works under a lease: without one, an age-0
                        // cleanup may remove the workspace the moment the
                        // prepare returns.
                        let mut request = PrepareRequest::new(repo, url.as_str()).branch("main");
                        request.lease_seconds = Some(60);
                        let out = m.prepare(&request).unwrap();
                        // The checkout is whole when prepare returns, cleanup or not.
                        assert!(out.path.join("src/lib.rs").is_file());
                        m.release_lease(out.lease.expect("a lease was asked for").id)
                            .unwrap();
                    }
                })
            })
            .collect();
        // Stop the cleaner even when a worker failed, so the failure shows.
        let results: Vec<_> = workers.into_iter().map(|w| w.join()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs = cleaner.join().unwrap();
        for r in results {
            if let Err(panic) = r {
                std::panic::resume_unwind(panic);
            }
        }
        assert!(runs > 0);
    });
}

#[test]
fn two_processes_on_one_base_take_turns() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let url = up.url();
    let children: Vec<_> = (0..4)
        .map(|_| {
            cli(
                base.path(),
                &["prepare", "acme/demo", &url, "--branch", "main"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outputs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let cloned = outputs
        .iter()
        .filter(|o| stdout(o).starts_with("cloned"))
        .count();
    assert_eq!(cloned, 1, "exactly one process cloned");
    assert_eq!(
        std::fs::read_dir(base.path())
            .unwrap()
            .filter(|e| !e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.'))
            .count(),
        1
    );
}

/// A CLI prepare of `acme/demo` (mirrors on or off: `mirrors`) from a
/// remote that accepts the connection and never answers, so it hangs with
/// its locks held; the process, and the connection it is waiting on.
#[cfg(unix)]
fn hanging_prepare(base: &Path, mirrors: &str) -> (std::process::Child, std::net::TcpStream) {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hanging_url = format!("git://127.0.0.1:{}/r", silent.local_addr().unwrap().port());
    // Mirrors per network: the hanging URL's mirror is the one the next
    // prepare of the network (from a live URL) uses.
    let child = cli(base, &["prepare", "acme/demo", &hanging_url])
        .env("WORKSPACE_MIRRORS", mirrors)
        .env("WORKSPACE_MIRROR_SHARING", "network")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (conn, _) = silent.accept().unwrap();
    (child, conn)
}

/// A prepare killed with SIGKILL mid-clone (in another process) leaves the
/// old checkout whole, holds nothing (the OS drops its lock), and its
/// staging leftovers are cleared by the next cleanup.
#[cfg(unix)]
#[test]
fn kill_9_mid_clone_leaves_nothing_half_made() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let url = up.url();
    let first = cli(base.path(), &["--json", "prepare", "acme/demo", &url])
        .output()
        .unwrap();
    assert!(first.status.success());
    let name = serde_json::from_slice::<serde_json::Value>(&first.stdout).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();

    // Same repository, a remote that accepts and then never answers: the
    // policy re-clones (remote changed) and the clone hangs, lock held.
    // (A direct clone, into staging; the mirror's crash is the next test's.)
    let (mut child, _conn) = hanging_prepare(base.path(), "0");
    let staging = base.path().join(".staging");
    wait_for("the clone to start", Duration::from_secs(10), || {
        std::fs::read_dir(&staging).unwrap().count() > 0
    });

    // Another process sees the workspace in use.
    let busy = cli(base.path(), &["remove", &name]).output().unwrap();
    assert_eq!(
        busy.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&busy.stderr)
    );
    let skipped = cli(base.path(), &["--json", "cleanup", "--max-age-hours", "0"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&skipped.stdout).unwrap();
    assert_eq!(report["cleaned_workspaces"], 0);
    assert_eq!(report["skipped"][0]["name"], name.as_str());

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // The old checkout is whole and still the origin it was.
    let repo = git2::Repository::open(base.path().join(&name).join("repo")).unwrap();
    assert_eq!(repo.find_remote("origin").unwrap().url().unwrap(), url);
    assert!(
        std::fs::read_dir(&staging).unwrap().count() > 0,
        "the crash left staging"
    );
    // The dead process's lock is gone; cleanup clears the leftovers.
    let report = cli(
        base.path(),
        &["--json", "cleanup", "--max-age-hours", "1000"],
    )
    .output()
    .unwrap();
    assert!(report.status.success());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    let again = cli(base.path(), &["--json", "prepare", "acme/demo", &url])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["reused"], true);
}

/// A process killed while it updates a mirror leaves the mirror usable:
/// its lock goes with it, and the next prepare fetches into the same
/// mirror and borrows from it.
#[cfg(unix)]
#[test]
fn kill_9_mid_mirror_update_leaves_the_mirror_usable() {
    let up = Upstream::new();
    let served = tempfile::tempdir().unwrap();
    let bare = served.path().join("demo.git");
    let cloned = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(&up.path)
        .arg(&bare)
        .status()
        .unwrap();
    assert!(cloned.success());
    let daemon = crate::support::GitDaemon::start(served.path());
    let base = tempfile::tempdir().unwrap();

    let (mut child, _conn) = hanging_prepare(base.path(), "1");
    let mirror_dirs = || crate::support::mirror_folders(base.path());
    wait_for(
        "the mirror update to start",
        Duration::from_secs(10),
        || !mirror_dirs().is_empty(),
    );
    child.kill().unwrap(); // SIGKILL, mid-fetch, mirror lock held
    child.wait().unwrap();

    let good = cli(
        base.path(),
        &["--json", "prepare", "acme/demo", &daemon.url("demo.git")],
    )
    .env("WORKSPACE_MIRROR_SHARING", "network")
    .output()
    .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&good.stdout).unwrap();
    assert_eq!(v["head"], up.head_of("main").as_str());
    let repo = Path::new(v["path"].as_str().unwrap());
    let alternates = std::fs::read_to_string(repo.join(".git/objects/info/alternates")).unwrap();
    assert_eq!(mirror_dirs().len(), 1, "the same mirror");
    assert!(
        alternates
            .trim()
            .starts_with(&*mirror_dirs()[0].to_string_lossy()),
        "{alternates}"
    );
    let stats = cli(base.path(), &["stats"]).output().unwrap();
    assert!(
        stdout(&stats).contains("1 object mirror(s)"),
        "{}",
        stdout(&stats)
    );
}

/// A read-only folder and read-only files, removed by a non-root user.
#[cfg(unix)]
#[test]
fn read_only_tree_is_removed_by_a_non_root_user() {
    use std::os::unix::fs::PermissionsExt;
    let up = Upstream::new();
    let outer = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = outer.path().join("ws");
    let m = manager(&base);
    let name = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap()
        .name;
    let repo = base.join(&name).join("repo");
    std::fs::create_dir_all(repo.join("locked/inner")).unwrap();
    std::fs::write(repo.join("locked/inner/file"), "x").unwrap();
    std::fs::write(repo.join("locked/file"), "x").unwrap();
    drop(m);
    // Hand everything to `nobody`, then make files and folders read-only.
    let chown = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&base)
        .status()
        .unwrap();
    assert!(chown.success());
    for p in ["locked/inner/file", "locked/file"] {
        std::fs::set_permissions(repo.join(p), std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    for p in ["locked/inner", "locked"] {
        std::fs::set_permissions(repo.join(p), std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_fixsec-workspace"))
        .args(["--json", "remove", &name])
        .env("WORKSPACE_BASE_PATH", &base)
        .env("HOME", "/tmp")
        .output()
        .expect("setpriv (util-linux) runs the CLI as nobody");
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"], true);
    assert!(!base.join(&name).exists());
}

/// Paths longer than PATH_MAX (4096 bytes) inside a workspace.
#[cfg(unix)]
#[test]
fn paths_deeper_than_path_max_are_removed() {
    let Fixture { up, base, m } = Fixture::new();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    // 300 levels of 20 characters: over 6000 bytes, built relative to the
    // current directory as only `cd` can.
    let script = "for i in $(seq 1 300); do mkdir d_aaaaaaaaaaaaaaaaaaa && cd d_aaaaaaaaaaaaaaaaaaa || exit 1; done; echo deep > leaf";
    let status = Command::new("bash")
        .args(["-c", script])
        .current_dir(&out.path)
        .status()
        .unwrap();
    assert!(status.success());
    let report = m.remove(&out.name).unwrap();
    assert!(report.removed, "{report:?}");
    assert!(!base.path().join(&out.name).exists());
    assert_eq!(
        std::fs::read_dir(base.path().join(".trash"))
            .unwrap()
            .count(),
        0
    );
}
