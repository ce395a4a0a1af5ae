//! Prepare against real git repositories: clone, reuse, clean, heal.

use crate::support;

#[cfg(unix)]
use crate::support::edit_keeping_mtime;
use crate::support::{Fixture, GitDaemon, Upstream, files_containing, manager};
use fixsec_workspace::{ErrorKind, PrepareRequest};

#[test]
fn fresh_prepare_clones_and_records_metadata() {
    let Fixture { up, base, m } = Fixture::new();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("main"))
        .unwrap();
    assert!(!out.reused);
    assert_eq!(out.head, up.head_of("main"));
    assert_eq!(out.name, m.workspace_name("acme/demo").unwrap());
    assert_eq!(out.path, base.path().join(&out.name).join("repo"));
    assert!(out.path.join("src/lib.rs").is_file());

    let meta: serde_json::Value = serde_json::from_slice(
        &std::fs::read(base.path().join(&out.name).join("workspace.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["repo_full_name"], "acme/demo");
    assert_eq!(meta["branch"], "main");
    assert_eq!(meta["head"], out.head.as_str());
    assert!(meta["size_bytes"].as_u64().unwrap() > 0);
    assert_eq!(meta["created"], meta["last_prepared"]);
    // Nothing left behind in staging.
    assert_eq!(
        std::fs::read_dir(base.path().join(".staging"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn second_prepare_reuses_and_follows_upstream() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let first = m.prepare(&req).unwrap();
    let created = m.get(&first.name).unwrap().unwrap().created;

    let again = m.prepare(&req).unwrap();
    assert!(again.reused);
    assert_eq!(again.head, first.head);

    let new_head = up.commit("src/new.rs", "// new\n", "upstream moves on");
    let moved = m.prepare(&req).unwrap();
    assert!(moved.reused);
    assert_eq!(moved.head, new_head);
    assert!(moved.path.join("src/new.rs").is_file());
    let summary = m.get(&first.name).unwrap().unwrap();
    assert_eq!(summary.created, created, "reuse keeps the creation time");
    assert_eq!(summary.head.as_deref(), Some(new_head.as_str()));
}

#[test]
fn reuse_resets_changes_and_removes_untracked_and_ignored_files() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    let repo = &out.path;
    std::fs::write(repo.join("README.md"), "local edit\n").unwrap();
    std::fs::remove_file(repo.join("src/lib.rs")).unwrap();
    std::fs::write(repo.join("untracked.txt"), "x").unwrap();
    std::fs::write(repo.join("build.log"), "ignored").unwrap();
    std::fs::create_dir_all(repo.join("target/debug")).unwrap();
    std::fs::write(repo.join("target/debug/bin"), "ignored dir").unwrap();
    std::fs::create_dir_all(repo.join("newdir/sub")).unwrap();
    std::fs::write(repo.join("newdir/sub/f"), "untracked dir").unwrap();

    let again = m.prepare(&req).unwrap();
    assert!(again.reused);
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "# demo\n"
    );
    assert!(repo.join("src/lib.rs").is_file());
    for gone in ["untracked.txt", "build.log", "target", "newdir"] {
        assert!(!repo.join(gone).exists(), "{gone} should be cleaned");
    }
}

#[test]
fn reuse_restores_staged_and_same_size_edits() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    let repo = git2::Repository::open(&out.path).unwrap();
    // Same length, other bytes, written at once (racy stat data).
    std::fs::write(out.path.join("README.md"), "# DEMO\n").unwrap();
    // A change staged in the index.
    std::fs::write(out.path.join("src/lib.rs"), "pub fn g() {}\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(std::path::Path::new("src/lib.rs")).unwrap();
    index.write().unwrap();
    let again = m.prepare(&req).unwrap();
    assert!(again.reused);
    assert_eq!(
        std::fs::read_to_string(out.path.join("README.md")).unwrap(),
        "# demo\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.path.join("src/lib.rs")).unwrap(),
        "pub fn f() {}\n"
    );
    let repo = git2::Repository::open(&out.path).unwrap();
    assert!(
        repo.statuses(None).unwrap().is_empty(),
        "index and tree clean"
    );
}

/// A reuse skips its reset only when every tracked file's stat data is
/// as the index recorded it, and what changed is written again whatever
/// its stat data says (pristine.rs): an edit that put the old
/// modification time back, with and without new upstream commits, and a
/// tracked folder swapped for a link to its moved self (every file
/// behind it unchanged) are all restored. (libgit2's reset alone kept
/// the edit, and the clean then deleted the folder's files.)
#[test]
#[cfg(unix)]
fn reuse_sees_through_restored_times_and_linked_folders() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    let readme = out.path.join("README.md");
    edit_keeping_mtime(&readme, "# DEMO\n");
    let again = m.prepare(&req).unwrap();
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# demo\n");

    edit_keeping_mtime(&readme, "# DeMo\n");
    up.commit("src/new.rs", "// new\n", "upstream moves on");
    m.prepare(&req).unwrap();
    assert_eq!(std::fs::read_to_string(&readme).unwrap(), "# demo\n");

    std::fs::rename(out.path.join("src"), out.path.join("moved")).unwrap();
    std::os::unix::fs::symlink("moved", out.path.join("src")).unwrap();
    m.prepare(&req).unwrap();
    assert!(again.reused);
    let src = std::fs::symlink_metadata(out.path.join("src")).unwrap();
    assert!(src.is_dir(), "src is a folder again");
    assert_eq!(
        std::fs::read_to_string(out.path.join("src/lib.rs")).unwrap(),
        "pub fn f() {}\n"
    );
    assert!(!out.path.join("moved").exists());
    let repo = git2::Repository::open(&out.path).unwrap();
    assert!(repo.statuses(None).unwrap().is_empty(), "clean");
}

#[test]
fn prepare_switches_branches() {
    let Fixture { up, base: _base, m } = Fixture::new();
    m.prepare(&PrepareRequest::new("acme/demo", up.url()).branch("main"))
        .unwrap();
    let dev = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("develop"))
        .unwrap();
    assert!(dev.reused);
    assert_eq!(dev.head, up.head_of("develop"));
    assert!(dev.path.join("dev.txt").is_file());
    let main = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("main"))
        .unwrap();
    assert_eq!(main.head, up.head_of("main"));
    assert!(!main.path.join("dev.txt").exists());
}

#[test]
fn default_branch_is_the_remotes() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    assert_eq!(out.head, up.head_of("main"));
    let again = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()))
        .unwrap();
    assert!(again.reused);
    assert_eq!(
        m.get(&out.name).unwrap().unwrap().branch.as_deref(),
        Some("main")
    );
}

#[test]
fn stale_index_lock_is_cleared_and_the_clone_reused() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    std::fs::write(out.path.join(".git/index.lock"), "").unwrap();
    std::fs::write(out.path.join(".git/shallow.lock"), "").unwrap();
    let again = m.prepare(&req).unwrap();
    assert!(again.reused, "{:?}", again.notes);
    assert!(again.notes.iter().any(|n| n.contains("index.lock")));
    assert!(!out.path.join(".git/index.lock").exists());
}

#[test]
fn broken_clones_are_healed_by_a_fresh_clone() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    type Breakage = Box<dyn Fn(&std::path::Path)>;
    let breakages: Vec<(&str, Breakage)> = vec![
        (
            "missing HEAD",
            Box::new(|r| std::fs::remove_file(r.join(".git/HEAD")).unwrap()),
        ),
        (
            "corrupt HEAD",
            Box::new(|r| std::fs::write(r.join(".git/HEAD"), "garbage\n").unwrap()),
        ),
        (
            "not a repository",
            Box::new(|r| support::remove_tree(&r.join(".git"))),
        ),
        (
            "objects gone",
            Box::new(|r| {
                support::remove_tree(&r.join(".git/objects"));
                std::fs::create_dir_all(r.join(".git/objects")).unwrap();
            }),
        ),
        (
            "repo/ is a file",
            Box::new(|r| {
                support::remove_tree(r);
                std::fs::write(r, "not a folder").unwrap();
            }),
        ),
    ];
    for (what, break_it) in breakages {
        break_it(&out.path);
        let healed = m.prepare(&req).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(!healed.reused, "{what}");
        assert_eq!(healed.head, up.head_of("main"), "{what}");
        assert!(healed.path.join("src/lib.rs").is_file(), "{what}");
        assert!(
            !healed.notes.is_empty(),
            "{what}: a note says why it re-cloned"
        );
    }
}

#[test]
fn changed_remote_is_recloned_from_the_new_one() {
    let a = Upstream::new();
    let b = Upstream::new();
    let b_head = b.commit("b.txt", "b\n", "b only");
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    m.prepare(&PrepareRequest::new("acme/demo", a.url()).branch("main"))
        .unwrap();
    let out = m
        .prepare(&PrepareRequest::new("acme/demo", b.url()).branch("main"))
        .unwrap();
    assert!(!out.reused);
    assert_eq!(out.head, b_head);
    assert!(out.notes.iter().any(|n| n.contains("remote changed")));
}

#[test]
fn history_rewritten_upstream_is_followed() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    m.prepare(&req).unwrap();
    let rewritten = up.rewrite_history();
    let out = m.prepare(&req).unwrap();
    assert_eq!(out.head, rewritten);
    assert_eq!(
        std::fs::read_to_string(out.path.join("README.md")).unwrap(),
        "# rewritten\n"
    );
}

#[test]
fn unknown_branch_is_not_found_and_leaves_nothing_behind() {
    let Fixture { up, base, m } = Fixture::new();
    let err = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("no-such-branch"))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
    // Through the policy and back, the kind is named once.
    assert_eq!(err.to_string().matches("not found:").count(), 1, "{err}");
    assert!(err.to_string().starts_with("not found: cloning"), "{err}");
    assert_eq!(
        std::fs::read_dir(base.path().join(".staging"))
            .unwrap()
            .count(),
        0
    );
    let name = m.workspace_name("acme/demo").unwrap();
    assert!(!base.path().join(name).join("workspace.json").exists());
}

#[test]
fn branch_deleted_upstream_fails_clearly_and_keeps_the_workspace() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let dev = PrepareRequest::new("acme/demo", up.url()).branch("develop");
    let first = m.prepare(&dev).unwrap();
    up.repo
        .find_branch("develop", git2::BranchType::Local)
        .unwrap()
        .delete()
        .unwrap();
    let err = m.prepare(&dev).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    // The old checkout is still there (a failed clone never replaces it).
    assert!(first.path.join("dev.txt").is_file());
    // And the default branch still prepares.
    let main = m
        .prepare(&PrepareRequest::new("acme/demo", up.url()).branch("main"))
        .unwrap();
    assert!(main.reused);
}

#[test]
fn corrupt_or_missing_metadata_is_rewritten() {
    let Fixture { up, base, m } = Fixture::new();
    let req = PrepareRequest::new("acme/demo", up.url()).branch("main");
    let out = m.prepare(&req).unwrap();
    let meta = base.path().join(&out.name).join("workspace.json");
    for damage in [Some("{not json"), None] {
        match damage {
            Some(text) => std::fs::write(&meta, text).unwrap(),
            None => std::fs::remove_file(&meta).unwrap(),
        }
        assert!(!m.get(&out.name).unwrap().unwrap().has_metadata);
        let again = m.prepare(&req).unwrap();
        assert!(
            again.reused,
            "a damaged workspace.json does not force a re-clone"
        );
        assert!(m.get(&out.name).unwrap().unwrap().has_metadata);
    }
}

#[test]
fn bad_requests_are_refused_before_anything_is_written() {
    let Fixture { up, base, m } = Fixture::new();
    let cases = [
        (PrepareRequest::new("", up.url()), ErrorKind::InvalidInput),
        (
            PrepareRequest::new("a/b", "ext::sh -c touch% /tmp/x"),
            ErrorKind::Refused,
        ),
        (
            PrepareRequest::new("a/b", "--upload-pack=x"),
            ErrorKind::Refused,
        ),
        (
            PrepareRequest::new("a/b", up.url()).branch("bad..name"),
            ErrorKind::InvalidInput,
        ),
        (
            PrepareRequest::new("a/b", up.url()).depth(0),
            ErrorKind::InvalidInput,
        ),
    ];
    for (req, kind) in cases {
        let err = m.prepare(&req).unwrap_err();
        assert_eq!(err.kind(), kind, "{req:?}: {err}");
    }
    let strict = fixsec_workspace::WorkspaceManager::builder()
        .base_path(base.path())
        .build()
        .unwrap();
    let err = strict
        .prepare(&PrepareRequest::new("a/b", up.url()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused);
    assert!(
        err.to_string().contains("WORKSPACE_ALLOW_LOCAL_URLS"),
        "{err}"
    );
    assert!(m.list().unwrap().is_empty());
}

#[test]
fn shallow_prepare_over_git_daemon() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url = daemon.url("upstream");
    let shallow = m
        .prepare(
            &PrepareRequest::new("acme/shallow", &url)
                .branch("main")
                .depth(1),
        )
        .unwrap();
    let repo = git2::Repository::open(&shallow.path).unwrap();
    assert!(repo.is_shallow());
    assert_eq!(shallow.head, up.head_of("main"));
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    assert_eq!(walk.count(), 1, "depth 1 fetches one commit");

    let new_head = up.commit("more.txt", "more\n", "more");
    let again = m
        .prepare(
            &PrepareRequest::new("acme/shallow", &url)
                .branch("main")
                .depth(1),
        )
        .unwrap();
    assert!(again.reused);
    assert_eq!(again.head, new_head);

    let full = m
        .prepare(&PrepareRequest::new("acme/full", &url).branch("main"))
        .unwrap();
    assert!(!git2::Repository::open(&full.path).unwrap().is_shallow());

    // A full clone over the network borrows from its network's mirror
    // (an alternates line; forward slashes on Windows, as Git for Windows
    // writes them), and a clone after a removal borrows again, whole.
    let alternates = full.path.join(".git/objects/info/alternates");
    let line = std::fs::read_to_string(&alternates).unwrap();
    assert!(line.contains(".mirrors"), "{line}");
    assert!(!line.contains('\\'), "{line}");
    assert!(m.remove(&full.name).unwrap().removed);
    let again = m
        .prepare(&PrepareRequest::new("acme/full", &url).branch("main"))
        .unwrap();
    assert!(!again.reused);
    assert_eq!(again.head, new_head);
    let repo = git2::Repository::open(&again.path).unwrap();
    let mut walk = repo.revwalk().unwrap();
    walk.push_head().unwrap();
    assert_eq!(
        walk.count(),
        4,
        "the whole history of main, read through the mirror"
    );
    assert!(again.path.join("src/lib.rs").is_file());
    assert_eq!(m.stats().unwrap().mirrors.count, 1);
}

#[test]
fn credentials_never_reach_disk_or_logs() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let secret = "s3cretTOKEN42";
    let logs = support_logs::capture(|| {
        // git:// ignores credentials, so this clone succeeds with the token stripped.
        let url = daemon.url("upstream").replacen(
            "git://",
            &format!("git://x-access-token:{secret}@"),
            1,
        );
        let out = m
            .prepare(&PrepareRequest::new("acme/creds", &url).branch("main"))
            .unwrap();
        let origin = git2::Repository::open(&out.path)
            .unwrap()
            .find_remote("origin")
            .unwrap()
            .url()
            .unwrap()
            .to_string();
        assert_eq!(origin, daemon.url("upstream"));
        m.prepare(&PrepareRequest::new("acme/creds", &url).branch("main"))
            .unwrap();
        // A failing clone with a token: the error must not echo it.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = m
            .prepare(&PrepareRequest::new(
                "acme/other",
                format!("https://user:{secret}@127.0.0.1:{port}/r.git"),
            ))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Git, "{err}");
        assert!(!err.to_string().contains(secret), "{err}");
    });
    assert!(
        logs.contains("workspace prepared"),
        "logs were captured: {logs}"
    );
    assert!(!logs.contains(secret), "secret in logs: {logs}");
    assert!(files_containing(base.path(), secret).is_empty());
}

/// Captures everything the host and the policy log (at trace level) while `f` runs.
///
/// A process-wide subscriber: a thread-local one races with tracing's
/// callsite cache when tests run in parallel. Other tests' lines land in the
/// buffer too, which only makes the "no secret" check stricter.
pub(crate) mod support_logs {
    use std::sync::{Arc, Mutex, OnceLock};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn buffer() -> &'static Buf {
        static BUF: OnceLock<Buf> = OnceLock::new();
        BUF.get_or_init(|| {
            let buf = Buf::default();
            let writer = buf.clone();
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(
                    "fixsec_workspace=trace,policy=trace",
                ))
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            buf
        })
    }

    pub fn capture(f: impl FnOnce()) -> String {
        let buf = buffer();
        f();
        String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned()
    }
}
