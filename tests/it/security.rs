//! The security review's findings (issue 11), each tried as an attacker
//! would against real repositories and real servers on loopback. Every
//! test here failed before its fix; docs/RELIABILITY.md maps item to test.

use crate::support;

use crate::support::{Fixture, GitDaemon, HttpStub, Upstream, builder, hostile_policy, manager};
use fixsec_workspace::{ErrorKind, PrepareRequest, WorkspaceManager};
use std::time::{Duration, Instant};

/// Item 1: URLs that the allow-list and libgit2 read differently are
/// refused, and never reach the host libgit2 would have connected to.
#[test]
fn allow_list_bypasses_are_refused_before_any_connection() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .configure(|c| c.allowed_hosts = vec!["allowed.example".into(), ".allowed.example".into()])
        .build()
        .unwrap();
    let port = daemon.port;
    for bypass in [
        format!("git://allowed.example?@127.0.0.1:{port}/upstream"),
        format!("git://allowed.example#@127.0.0.1:{port}/upstream"),
        format!("git://127.0.0.1%00.allowed.example:{port}/upstream"),
        format!("ssh://allowed.example?@127.0.0.1:{port}/upstream"),
    ] {
        let err = m
            .prepare(&PrepareRequest::new("acme/bypass", &bypass))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{bypass}: {err}");
    }
    assert!(m.list().unwrap().is_empty(), "nothing was cloned");

    // The daemon does serve the repository: the refusals above are the
    // check's, not a broken server's.
    let open = builder(base.path())
        .configure(|c| c.allowed_hosts = vec!["127.0.0.1".into()])
        .build()
        .unwrap();
    open.prepare(&PrepareRequest::new("acme/bypass", daemon.url("upstream")))
        .unwrap();
}

/// Item 2: another caller's prepare waits for a lease, then answers "in
/// use" with who holds it and until when; the leaseholder's tree is not
/// reset, cleaned or re-cloned.
#[test]
fn a_prepare_never_touches_a_leased_workspace() {
    let Fixture { up, base: _base, m } =
        Fixture::with(|b| b.configure(|c| c.lease_wait = Duration::from_millis(300)));
    let mut leased = PrepareRequest::new("acme/demo", up.url()).branch("main");
    leased.lease_seconds = Some(600);
    leased.holder = Some("scanner-7".into());
    let first = m.prepare(&leased).unwrap();
    let lease = first.lease.clone().unwrap();
    // The leaseholder's work in progress.
    std::fs::write(first.path.join("fix.patch"), "work in progress").unwrap();
    std::fs::write(first.path.join("README.md"), "# edited by the fix\n").unwrap();
    up.commit("upstream.txt", "new upstream work\n", "upstream moves on");

    let other_url = format!("{}/../upstream", up.url());
    for request in [
        PrepareRequest::new("acme/demo", up.url()).branch("main"),
        PrepareRequest::new("acme/demo", &other_url).branch("develop"),
    ] {
        let started = Instant::now();
        let err = m.prepare(&request).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
        let text = err.to_string();
        assert!(text.contains("scanner-7"), "{text}");
        assert!(text.contains(&lease.expires_at.to_rfc3339()), "{text}");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it waited first"
        );
    }
    assert_eq!(
        std::fs::read_to_string(first.path.join("fix.patch")).unwrap(),
        "work in progress"
    );
    assert_eq!(
        std::fs::read_to_string(first.path.join("README.md")).unwrap(),
        "# edited by the fix\n"
    );

    // Released: the next prepare takes over and cleans as usual.
    m.release_lease(lease.id).unwrap();
    let again = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("main"))
        .unwrap();
    assert!(again.reused);
    assert!(!again.path.join("fix.patch").exists());
    assert_eq!(again.head, up.head_of("main"));
}

/// Item 3: a remote that redirects elsewhere never receives the caller's
/// token there; credentials go to the clone URL's host only.
#[test]
fn a_redirect_never_carries_the_token_to_another_host() {
    let secret = "SECRET-redirect-42";
    // The host the token must never reach: asks for Basic credentials.
    let elsewhere = HttpStub::start("127.0.0.2", |_| {
        "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"x\"\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
            .into()
    });
    let target = format!("http://{}", elsewhere.addr);
    let allowed = HttpStub::start("127.0.0.1", move |head| {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        format!(
            "HTTP/1.1 302 Found\r\nLocation: {target}{path}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        )
    });
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .configure(|c| c.allowed_hosts = vec!["127.0.0.1".into()])
        .build()
        .unwrap();
    let url = format!("http://x-access-token:{secret}@{}/r.git", allowed.addr);
    let err = m
        .prepare(&PrepareRequest::new("acme/redirect", &url))
        .unwrap_err();
    assert!(!err.to_string().contains(secret), "{err}");
    assert!(!allowed.seen().is_empty(), "the allowed host was asked");
    let leaked: Vec<String> = elsewhere.seen();
    assert!(leaked.is_empty(), "the redirect was followed: {leaked:?}");
}

/// Item 4: a cleanup that decided on a listing removes nothing that a
/// prepare has used since: the host re-reads `workspace.json` under the
/// lock before it deletes.
#[test]
fn cleanup_never_removes_a_workspace_prepared_after_its_listing() {
    let Fixture { up, base, m } = Fixture::with(|b| b.policy_file(hostile_policy("slow-cleanup")));
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    support::age_workspace(base.path(), &out.name, 48);
    std::thread::scope(|scope| {
        // The policy lists (the workspace is 48 h old), then waits 1.5 s.
        let cleanup = scope.spawn(|| m.cleanup(Some(24.0)).unwrap());
        std::thread::sleep(Duration::from_millis(400));
        m.prepare(&PrepareRequest::new("acme/demo", up.url()))
            .unwrap();
        let report = cleanup.join().unwrap();
        assert_eq!(report.cleaned_workspaces, 0, "{report:?}");
        assert!(
            report.skipped[0]
                .reason
                .contains("since the policy listed it"),
            "{report:?}"
        );
    });
    assert!(
        out.path.join("src/lib.rs").is_file(),
        "the prepared tree is there"
    );
    // Old again and unused: the same policy removes it.
    support::age_workspace(base.path(), &out.name, 48);
    assert_eq!(m.cleanup(Some(24.0)).unwrap().cleaned_workspaces, 1);
}

/// Item 5: a clone over the size limit, or one that would leave the disk
/// under its free-space floor, is stopped and leaves nothing behind.
#[test]
fn storage_limits_stop_a_clone_and_leave_nothing() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let too_small = builder(base.path())
        .configure(|c| c.max_workspace_bytes = Some(64))
        .build()
        .unwrap();
    let err = too_small
        .prepare(&PrepareRequest::new("acme/big", up.url()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert!(
        err.to_string().contains("WORKSPACE_MAX_WORKSPACE_MB"),
        "{err}"
    );

    let no_room = builder(base.path())
        .configure(|c| c.min_free_bytes = u64::MAX)
        .build()
        .unwrap();
    let err = no_room
        .prepare(&PrepareRequest::new("acme/big", up.url()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert!(err.to_string().contains("WORKSPACE_MIN_FREE_MB"), "{err}");

    let name = no_room.workspace_name("acme/big").unwrap();
    assert!(!base.path().join(&name).join("repo").exists());
    assert_eq!(
        std::fs::read_dir(base.path().join(".staging"))
            .unwrap()
            .count(),
        0
    );
    assert!(
        no_room
            .list()
            .unwrap()
            .iter()
            .all(|w| w.name != name || !w.has_metadata)
    );
}

/// Item 6: with no allow-list, loopback, link-local and private
/// addresses are refused by default; git's network detail stays in the
/// log.
#[test]
fn private_addresses_are_refused_by_default_and_errors_say_little() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let default = WorkspaceManager::builder()
        .base_path(base.path())
        .build()
        .unwrap();
    for url in [
        daemon.url("upstream"),
        "http://169.254.169.254/latest/meta-data/r.git".into(),
        "https://[::1]/r.git".into(),
        "ssh://git@10.0.0.1/r.git".into(),
        "git://localhost/r.git".into(),
    ] {
        let err = default
            .prepare(&PrepareRequest::new("acme/ssrf", &url))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{url}: {err}");
        assert!(err.to_string().contains("WORKSPACE_ALLOW_PRIVATE_NETWORKS"));
    }
    // Allowed (tests, on-premises): a closed port says nothing a port
    // scanner could use.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let m = manager(base.path());
    let err = m
        .prepare(&PrepareRequest::new(
            "acme/scan",
            format!("http://127.0.0.1:{port}/r.git"),
        ))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Git, "{err}");
    let text = err.to_string().to_lowercase();
    assert!(text.contains("service log"), "{text}");
    for detail in ["connect", "refused", "status code", "os error"] {
        assert!(!text.contains(detail), "{detail:?} in {text}");
    }
}

/// Item 9: a link left in `.trash/` or `.staging/` is removed as a link,
/// even when removing it fails at first; its target is never emptied
/// (a walk from the link would delete through it meanwhile). A `repo/`
/// that is a link is never opened, reset or cleaned: it is replaced.
#[cfg(unix)]
#[test]
fn deletion_never_follows_a_link_at_the_root() {
    let outside = tempfile::tempdir().unwrap();
    let precious = outside.path().join("precious");
    std::fs::create_dir_all(precious.join("deep")).unwrap();
    std::fs::write(precious.join("deep/data"), "keep me").unwrap();
    std::fs::write(precious.join("top"), "keep me too").unwrap();
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .fs_ops(std::sync::Arc::new(
            fixsec_workspace::testing::FaultInjector::new(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("evil"))
            })
            .alternating(),
        ))
        .build()
        .unwrap();
    for place in [".trash/evil.1.2", ".staging/evil.1.2"] {
        std::os::unix::fs::symlink(&precious, base.path().join(place)).unwrap();
    }
    let report = m.cleanup(Some(0.0)).unwrap();
    assert!(report.failed.is_empty(), "{report:?}");
    for place in [".trash/evil.1.2", ".staging/evil.1.2"] {
        assert!(
            std::fs::symlink_metadata(base.path().join(place)).is_err(),
            "{place} is gone"
        );
    }
    assert_eq!(
        std::fs::read_to_string(precious.join("deep/data")).unwrap(),
        "keep me"
    );
    assert_eq!(
        std::fs::read_to_string(precious.join("top")).unwrap(),
        "keep me too"
    );

    // A workspace whose repo/ a caller replaced by a link to another clone.
    let up = Upstream::new();
    let victim = Upstream::new();
    std::fs::write(victim.path.join("untracked.txt"), "not yours").unwrap();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    let repo = out.path.clone();
    support::remove_tree(&repo);
    std::os::unix::fs::symlink(&victim.path, &repo).unwrap();
    let again = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    assert!(!again.reused, "{again:?}");
    assert!(!std::fs::symlink_metadata(&repo).unwrap().is_symlink());
    assert_eq!(
        std::fs::read_to_string(victim.path.join("untracked.txt")).unwrap(),
        "not yours"
    );
}

/// Item 10: staging folders of other workspaces survive a prepare whose
/// name is their prefix; lock files survive removal.
#[test]
fn a_prepare_clears_only_its_own_staging_and_removal_keeps_lock_files() {
    let Fixture { up, base, m } = Fixture::new();
    let name = m.workspace_name("acme/app").unwrap();
    // The in-flight clone of a workspace named `<name>.web`.
    let theirs = base
        .path()
        .join(".staging")
        .join(format!("{name}.web.4242.99"));
    std::fs::create_dir_all(theirs.join("objects")).unwrap();
    std::fs::write(theirs.join("objects/pack"), "in flight").unwrap();
    let ours = base.path().join(".staging").join(format!("{name}.4242.98"));
    std::fs::create_dir_all(&ours).unwrap();
    m.prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    assert!(
        theirs.join("objects/pack").is_file(),
        "another workspace's staging"
    );
    assert!(!ours.exists(), "its own crashed staging is cleared");

    let lock = base.path().join(".locks").join(format!("{name}.lock"));
    assert!(lock.is_file());
    assert!(m.remove(&name).unwrap().removed);
    assert!(lock.is_file(), "lock files are never deleted");
}

/// Item 10: hooks and config a previous user left in a reused clone are
/// gone after the next prepare (they would run commands or redirect
/// fetches for whoever works there next).
#[test]
fn reuse_resets_hooks_and_config_left_by_a_caller() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    let git_dir = out.path.join(".git");
    std::fs::write(
        git_dir.join("hooks/post-checkout"),
        "#!/bin/sh\ntouch /tmp/pwned\n",
    )
    .unwrap();
    std::fs::create_dir_all(git_dir.join("hooks/lib")).unwrap();
    {
        let repo = git2::Repository::open(&out.path).unwrap();
        let mut config = repo
            .config()
            .unwrap()
            .open_level(git2::ConfigLevel::Local)
            .unwrap();
        config.set_str("core.hooksPath", "/tmp/evil-hooks").unwrap();
        config
            .set_str("core.fsmonitor", "touch /tmp/pwned")
            .unwrap();
        config
            .set_str("url.http://evil.example/.insteadOf", "https://github.com/")
            .unwrap();
        config.set_str("include.path", "/tmp/evil.config").unwrap();
        config.set_str("user.name", "left behind").unwrap();
    }
    let again = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    assert!(again.reused);
    let hooks: Vec<String> = std::fs::read_dir(git_dir.join("hooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".sample"))
        .collect();
    assert!(hooks.is_empty(), "{hooks:?}");
    let text = std::fs::read_to_string(git_dir.join("config")).unwrap();
    for left in [
        "hooksPath",
        "fsmonitor",
        "insteadOf",
        "include",
        "left behind",
    ] {
        assert!(!text.contains(left), "{left} in:\n{text}");
    }
    for kept in ["[remote \"origin\"]", "url = ", "longpaths"] {
        assert!(text.contains(kept), "{kept} missing in:\n{text}");
    }
}

/// Item 10: a policy may use each import only from the export that needs
/// it: `assess-health`, reached without a token, cannot remove.
#[test]
fn assess_health_cannot_remove_workspaces() {
    let Fixture { up, base: _base, m } = Fixture::with(|b| {
        b.policy_file(hostile_policy("health-remove"))
            .configure(|c| c.size_warning_mb = 0)
    });
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    let err = m.health().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    assert!(
        err.to_string().contains("assess-health, which may not"),
        "{err}"
    );
    assert!(
        out.path.join("src/lib.rs").is_file(),
        "the workspace survives"
    );
    assert_eq!(m.list().unwrap().len(), 1);
}

/// Item 5: waiting for another prepare of the same workspace is bounded.
#[test]
fn waiting_for_a_busy_workspace_ends_busy() {
    let Fixture { up, base, m } =
        Fixture::with(|b| b.configure(|c| c.lock_wait = Duration::from_millis(200)));
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    // Another process holds the workspace's lock (a CLI mid-prepare).
    let holder = std::fs::OpenOptions::new()
        .write(true)
        .open(
            base.path()
                .join(".locks")
                .join(format!("{}.lock", out.name)),
        )
        .unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let err = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
    assert!(
        err.to_string().contains("WORKSPACE_LOCK_WAIT_SECONDS"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(holder);
    m.prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
}

/// The attacker review of keep-ignored (issue 23): a job that swaps a
/// folder of its git directory for a link (`hooks -> ../../..`, the base
/// directory; `info ->` another workspace's) must not make the next
/// prepare's hygiene delete or write through it. The checkout is cloned
/// afresh, and every other workspace is as it was.
#[cfg(unix)]
#[test]
fn a_link_in_the_git_directory_is_never_followed() {
    let Fixture { up, base, m } = Fixture::new();
    let victim = m
        .prepare(&PrepareRequest::new("acme/victim", up.url()))
        .unwrap();
    std::fs::write(
        victim.path.join(".git/info/exclude"),
        "# the victim's own\n",
    )
    .unwrap();
    for (i, (folder, target)) in [
        ("hooks", std::path::PathBuf::from("../../..")),
        ("info", victim.path.join(".git/info")),
        ("config", victim.path.join(".git/config")),
    ]
    .into_iter()
    .enumerate()
    {
        let repo = format!("acme/job-{i}");
        let out = m.prepare(&PrepareRequest::new(&repo, up.url())).unwrap();
        let link = out.path.join(".git").join(folder);
        let _ = std::fs::remove_dir_all(&link);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let again = m.prepare(&PrepareRequest::new(&repo, up.url())).unwrap();
        assert!(!again.reused, "{folder}: a checkout with a link was reused");
        assert!(
            again.notes.iter().any(|n| n.contains("symbolic link")),
            "{folder}: {:?}",
            again.notes
        );
        assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    }
    // Nothing of the victim's (or of the base) was touched through them.
    assert!(
        base.path()
            .join(&victim.name)
            .join("workspace.json")
            .exists()
    );
    assert_eq!(
        std::fs::read_to_string(victim.path.join(".git/info/exclude")).unwrap(),
        "# the victim's own\n"
    );
    let config = std::fs::read_to_string(victim.path.join(".git/config")).unwrap();
    assert!(config.contains("[remote \"origin\"]"), "{config}");
    let again = m
        .prepare(&PrepareRequest::new("acme/victim", up.url()))
        .unwrap();
    assert!(again.reused, "{:?}", again.notes);
}

/// `.git/index` as a job could write it by hand: version 2, `paths`
/// (in order) as regular files of zero stat data and a made-up blob.
#[cfg(unix)]
fn write_raw_index(git_dir: &std::path::Path, paths: &[&[u8]]) {
    let mut out = b"DIRC".to_vec();
    out.extend(2u32.to_be_bytes());
    out.extend((paths.len() as u32).to_be_bytes());
    for path in paths {
        let start = out.len();
        for field in [0u32, 0, 0, 0, 0, 0, 0o100644, 0, 0, 0] {
            out.extend(field.to_be_bytes());
        }
        out.extend([0x5a; 20]);
        out.extend((path.len() as u16).to_be_bytes());
        out.extend(*path);
        let len = out.len() - start;
        out.extend(std::iter::repeat_n(0u8, 8 - len % 8));
    }
    let body = git_dir.join("index.body");
    std::fs::write(&body, &out).unwrap();
    let sum = std::process::Command::new("sha1sum")
        .arg(&body)
        .output()
        .unwrap();
    let hex = String::from_utf8(sum.stdout).unwrap();
    for i in (0..40).step_by(2) {
        out.push(u8::from_str_radix(&hex[i..i + 2], 16).unwrap());
    }
    std::fs::remove_file(&body).unwrap();
    std::fs::write(git_dir.join("index"), &out).unwrap();
}

/// The attacker review of the reset's stat check: libgit2 reads an index
/// naming `/somewhere/else` (or ``), and a removal of what "changed"
/// would have deleted it on the host. Such an index is refused and the
/// checkout cloned afresh; nothing outside it is touched. A FIFO for an
/// index (reading it would block with the lock held) is refused too.
#[cfg(unix)]
#[test]
fn a_hand_written_index_never_reaches_outside_the_checkout() {
    use std::os::unix::ffi::OsStrExt;
    let Fixture { up, base: _base, m } = Fixture::new();
    let elsewhere = tempfile::tempdir().unwrap();
    let precious = elsewhere.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("data"), "keep me\n").unwrap();
    let request = PrepareRequest::new("acme/job", up.url());
    let out = m.prepare(&request).unwrap();
    let git_dir = out.path.join(".git");
    let kept = out.path.parent().unwrap().join("index.prepared");
    for paths in [
        vec![precious.as_os_str().as_bytes(), b"README.md"],
        vec![b"" as &[u8], b"README.md"],
        vec![b"README.md", b"src//lib.rs"],
    ] {
        // With the index the last prepare wrote kept, it is put back over
        // the job's (K17): reused, nothing outside touched.
        write_raw_index(&git_dir, &paths);
        let again = m.prepare(&request).unwrap();
        assert!(again.reused, "{:?}", again.notes);
        assert!(precious.join("data").exists());
        // Without it (a workspace prepared before K17), the job's index is
        // read, and refused.
        write_raw_index(&git_dir, &paths);
        std::fs::remove_file(&kept).unwrap();
        let again = m.prepare(&request).unwrap();
        assert_eq!(
            std::fs::read_to_string(precious.join("data"))
                .ok()
                .as_deref(),
            Some("keep me\n"),
            "{paths:?}: deleted outside the checkout"
        );
        assert!(!again.reused, "{paths:?}: reused");
        assert!(
            again.notes.iter().any(|n| n.contains("the index names")),
            "{:?}",
            again.notes
        );
        assert!(again.path.join("src/lib.rs").is_file());
    }
    let fifo = git_dir.join("index");
    std::fs::remove_file(&fifo).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // On its own thread: a prepare that blocks fails the test, not hangs it.
    let (done, waited) = std::sync::mpsc::channel();
    let (m, request) = (m.clone(), request.clone());
    std::thread::spawn(move || drop(done.send(m.prepare(&request))));
    let again = waited
        .recv_timeout(Duration::from_secs(60))
        .expect("a FIFO index blocked the prepare")
        .unwrap();
    assert!(!again.reused);
    assert!(again.path.join("src/lib.rs").is_file());
}

/// The attacker review of the reset's stat check (F4): a submodule's
/// place swapped for a link to another repository was kept by the reset
/// and the clean (it is tracked), and the submodule's hygiene would have
/// acted in the link's target. The link goes; its target is untouched.
#[cfg(unix)]
#[test]
fn a_link_at_a_submodules_place_is_removed() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let head = up.head_of("main");
    let git = |args: &[&str]| crate::support::forge::git(&up.path, args);
    git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},vendor/sub"),
    ]);
    git(&["commit", "-qm", "a submodule"]);
    let request = PrepareRequest::new("acme/sub", up.url()).branch("main");
    let out = m.prepare(&request).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("mine"), "keep me\n").unwrap();
    let place = out.path.join("vendor/sub");
    let _ = std::fs::remove_dir_all(&place);
    std::os::unix::fs::symlink(elsewhere.path(), &place).unwrap();
    let again = m.prepare(&request).unwrap();
    assert!(again.reused, "{:?}", again.notes);
    let now = std::fs::symlink_metadata(&place);
    assert!(!now.is_ok_and(|m| m.is_symlink()), "the link survived");
    assert_eq!(
        std::fs::read_to_string(elsewhere.path().join("mine")).unwrap(),
        "keep me\n"
    );
}

/// What a job could do to `.git/index` of the checkout at `repo`: the
/// entry for `file` keeps the commit's blob id but gets the file's
/// present stat data (libgit2 takes an entry as given).
#[cfg(unix)]
fn forge_stat_data(repo: &std::path::Path, file: &str) {
    use std::os::unix::fs::MetadataExt;
    let git = git2::Repository::open(repo).unwrap();
    let mut index = git.index().unwrap();
    let mut entry = index.get_path(std::path::Path::new(file), 0).unwrap();
    let meta = std::fs::symlink_metadata(repo.join(file)).unwrap();
    entry.ctime = git2::IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32);
    entry.mtime = git2::IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32);
    (entry.dev, entry.ino) = (meta.dev() as u32, meta.ino() as u32);
    (entry.uid, entry.gid) = (meta.uid(), meta.gid());
    entry.file_size = meta.size() as u32;
    index.add(&entry).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    index.write().unwrap();
}

/// K17: a job that changes a tracked file and writes the file's new stat
/// data into `.git/index` under the commit's blob id (libgit2 takes an
/// entry as given) passed the stat check, and its content survived the
/// reuse. The next prepare puts the index it wrote itself back first.
#[cfg(unix)]
#[test]
fn a_job_cannot_vouch_for_its_own_edit_in_the_index() {
    use std::os::unix::fs::MetadataExt;
    let Fixture { up, base: _base, m } = Fixture::new();
    let request = PrepareRequest::new("acme/job", up.url()).branch("main");
    let out = m.prepare(&request).unwrap();
    let readme = out.path.join("README.md");
    std::fs::write(&readme, "# EVIL\n").unwrap();
    forge_stat_data(&out.path, "README.md");
    // The index put back keeps the modification time it was written with
    // (git's racy-clean rule reads it).
    let kept = out.path.parent().unwrap().join("index.prepared");
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let prepared_at = modified(&kept);
    let again = m.prepare(&request).unwrap();
    assert!(again.reused, "{:?}", again.notes);
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# demo\n");
    assert_ne!(modified(&kept), prepared_at, "the reset's index is kept");
    assert_eq!(modified(&kept), modified(&out.path.join(".git/index")));

    // A copy that cannot be put back (here a folder where it is staged)
    // fails the update: the checkout is cloned afresh, the forged index
    // neither trusted nor kept.
    std::fs::write(&readme, "# EVIL\n").unwrap();
    forge_stat_data(&out.path, "README.md");
    let blocker = out.path.parent().unwrap().join("index.restoring");
    std::fs::create_dir_all(blocker.join("x")).unwrap();
    let again = m.prepare(&request).unwrap();
    assert!(!again.reused, "{:?}", again.notes);
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# demo\n");
    std::fs::remove_dir_all(&blocker).unwrap();

    // A job that only refreshed the index (`git status`, `git add` of
    // nothing) has no file written again.
    let written = std::fs::metadata(&readme).unwrap().ino();
    crate::support::forge::git(&out.path, &["status", "--porcelain"]);
    crate::support::forge::git(&out.path, &["add", "-A"]);
    let again = m.prepare(&request).unwrap();
    assert!(again.reused, "{:?}", again.notes);
    assert_eq!(std::fs::metadata(&readme).unwrap().ino(), written);
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# demo\n");
}
