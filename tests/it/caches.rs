//! Issue 23, item 5: the policy decides which ignored paths (dependency
//! caches) survive a reuse's clean, through contract 0.3's
//! `keep-ignored`; tracked files are always reset, and a 0.2 policy keeps
//! today's clean.

use crate::support::forge::git;
use crate::support::{GitDaemon, Upstream, builder, component};
use fixsec_workspace::{ErrorKind, PrepareRequest, WorkspaceManager};
use std::path::Path;

/// The upstream: `app.js`, two crates, and a `.gitignore` for the caches
/// (but not for `.cache`).
fn upstream() -> Upstream {
    let up = Upstream::new();
    up.commit(
        ".gitignore",
        "*.log\ntarget/\nnode_modules/\n.venv/\ndist/\n",
        "ignore caches",
    );
    up.commit("app.js", "console.log('v1')\n", "app");
    up.commit("crates/a/src/lib.rs", "pub fn a() {}\n", "crate a");
    up.commit("crates/b/src/lib.rs", "pub fn b() {}\n", "crate b");
    up
}

/// The default policy with `settings` (`key`, `value`).
fn manager(base: &Path, settings: &[(&str, &str)]) -> WorkspaceManager {
    builder(base)
        .configure(|c| {
            for (k, v) in settings {
                c.policy_settings.insert(k.to_string(), v.to_string());
            }
        })
        .build()
        .unwrap()
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// What a job leaves: caches in the named paths (one of them a link to
/// somewhere else), ignored build output, an untracked file, a changed
/// tracked file. `outside` is a folder outside the workspace.
#[cfg(unix)]
fn a_job_runs(ws: &Path, outside: &Path) {
    write(
        ws,
        "node_modules/left-pad/index.js",
        "module.exports = pad\n",
    );
    std::os::unix::fs::symlink(
        "../left-pad/index.js",
        ws.join("node_modules/.bin-left-pad"),
    )
    .unwrap();
    write(ws, "crates/a/target/debug/liba.rlib", "built a\n");
    write(ws, "crates/b/target/debug/libb.rlib", "built b\n");
    write(ws, ".cache/results.json", "{}\n");
    write(ws, "dist/bundle.js", "bundle\n");
    write(ws, "build.log", "log\n");
    write(ws, "scratch.txt", "notes\n");
    write(ws, "app.js", "console.log('tampered')\n");
    std::fs::create_dir_all(outside).unwrap();
    std::os::unix::fs::symlink(outside, ws.join(".venv")).unwrap();
}

/// The default policy keeps what `keep_ignored` names, for the
/// repositories it names, and only where git ignores it and it is no
/// link; everything else is cleaned and tracked files are reset.
#[cfg(unix)]
#[test]
fn a_reuse_keeps_the_caches_the_policy_names_and_cleans_the_rest() {
    let up = upstream();
    let base = tempfile::tempdir().unwrap();
    let m = manager(
        base.path(),
        &[
            ("keep_ignored", "node_modules **/target .venv .cache"),
            ("keep_ignored.acme/other", ""),
        ],
    );
    let first = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    let outside = base.path().join("outside-venv");
    a_job_runs(&first.path, &outside);
    let other = m
        .prepare(&PrepareRequest::new("acme/other", up.url()))
        .unwrap();
    a_job_runs(&other.path, &base.path().join("outside-other"));
    let v2 = up.commit("app.js", "console.log('v2')\n", "v2");

    let again = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    assert!(again.reused, "{:?}", again.notes);
    assert_eq!(again.head, v2);
    let ws = &again.path;
    // Kept: the named caches git ignores, links inside them as they were.
    assert_eq!(
        std::fs::read_to_string(ws.join("node_modules/left-pad/index.js")).unwrap(),
        "module.exports = pad\n"
    );
    assert_eq!(
        std::fs::read_link(ws.join("node_modules/.bin-left-pad")).unwrap(),
        Path::new("../left-pad/index.js")
    );
    assert!(ws.join("crates/a/target/debug/liba.rlib").exists());
    assert!(ws.join("crates/b/target/debug/libb.rlib").exists());
    // Cleaned: ignored but not named, untracked, named but not ignored,
    // and a named path that is a link (its target untouched).
    for gone in ["dist", "build.log", "scratch.txt", ".cache", ".venv"] {
        assert!(
            std::fs::symlink_metadata(ws.join(gone)).is_err(),
            "{gone} survived the clean"
        );
    }
    assert!(outside.exists());
    // Reset: the tracked file is upstream's.
    assert_eq!(
        std::fs::read_to_string(ws.join("app.js")).unwrap(),
        "console.log('v2')\n"
    );
    assert_eq!(git(ws, &["status", "--porcelain"]), "");

    // Another repository whose setting names nothing: today's clean.
    let other = m
        .prepare(&PrepareRequest::new("acme/other", up.url()))
        .unwrap();
    assert!(other.reused);
    for gone in ["node_modules", "crates/a/target", "dist", "scratch.txt"] {
        assert!(
            !other.path.join(gone).exists(),
            "{gone} survived in acme/other"
        );
    }
}

/// A sparse workspace (git's command line checks it out) is cleaned by
/// the same rules: the cache inside the cone stays, what a job left
/// outside it goes.
#[test]
fn a_sparse_workspace_keeps_its_caches_too() {
    let up = upstream();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), &[("keep_ignored", "**/target")]);
    let request = || PrepareRequest::new("acme/app", daemon.url("upstream")).sparse(["crates/a"]);
    let first = m.prepare(&request()).unwrap();
    assert!(!first.path.join("crates/b/src/lib.rs").exists());
    write(&first.path, "crates/a/target/debug/liba.rlib", "built a\n");
    write(&first.path, "crates/b/stray.txt", "outside the cone\n");
    up.commit("crates/a/src/lib.rs", "pub fn a2() {}\n", "a2");
    let again = m.prepare(&request()).unwrap();
    assert!(again.reused, "{:?}", again.notes);
    assert!(again.path.join("crates/a/target/debug/liba.rlib").exists());
    assert!(!again.path.join("crates/b").exists());
    assert_eq!(
        std::fs::read_to_string(again.path.join("crates/a/src/lib.rs")).unwrap(),
        "pub fn a2() {}\n"
    );
}

/// A path the host refuses is an error for the caller, and the workspace
/// (its checkout and its caches) is left as it was: a fresh clone would
/// not cure the setting.
#[test]
fn a_keep_path_that_leaves_the_checkout_is_refused_and_nothing_is_lost() {
    let up = upstream();
    let base = tempfile::tempdir().unwrap();
    let good = manager(base.path(), &[("keep_ignored", "node_modules")]);
    let first = good
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    write(&first.path, "node_modules/x/index.js", "x\n");
    drop(good);
    for bad in ["../../escape", "node_modules/../..", ".git/hooks", "*"] {
        let m = manager(base.path(), &[("keep_ignored", bad)]);
        let err = m
            .prepare(&PrepareRequest::new("acme/app", up.url()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
        assert!(err.to_string().contains("keep-ignored entry"), "{err}");
        assert!(err.to_string().contains(bad), "{err}");
        assert!(first.path.join("node_modules/x/index.js").exists());
        assert_eq!(git(&first.path, &["rev-parse", "HEAD"]), first.head);
    }
    // A fresh clone checks the list too.
    let m = manager(base.path(), &[("keep_ignored", "/etc")]);
    let err = m
        .prepare(&PrepareRequest::new("acme/new", up.url()))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("absolute"), "{err}");
}

/// A scanner that caches its findings per file content under
/// `.scan-cache/` (ignored). Returns how many files it had to scan.
fn scan(ws: &Path) -> usize {
    let cache = ws.join(".scan-cache");
    std::fs::create_dir_all(&cache).unwrap();
    let mut scanned = 0;
    for line in git(ws, &["ls-files", "-s"]).lines() {
        let blob = line.split_whitespace().nth(1).unwrap();
        let entry = cache.join(blob);
        if !entry.exists() {
            scanned += 1;
            std::fs::write(entry, "no findings\n").unwrap();
        }
    }
    scanned
}

/// What the feature is for: a scanner's second run, after one upstream
/// change, scans one file instead of all of them, because its cache
/// survived the reuse. Without the setting it scans everything again.
#[test]
fn a_scanners_second_run_reuses_its_cache() {
    let up = upstream();
    up.commit(
        ".gitignore",
        "*.log\ntarget/\n.scan-cache/\n",
        "ignore the scan cache",
    );
    let base = tempfile::tempdir().unwrap();
    let m = manager(
        base.path(),
        &[
            ("keep_ignored.acme/cached", ".scan-cache"),
            ("keep_ignored.acme/plain", ""),
        ],
    );
    let mut runs = Vec::new();
    for repo in ["acme/cached", "acme/plain"] {
        let ws = m.prepare(&PrepareRequest::new(repo, up.url())).unwrap();
        runs.push((repo, scan(&ws.path)));
    }
    up.commit("app.js", "console.log('v3')\n", "one change");
    for repo in ["acme/cached", "acme/plain"] {
        let ws = m.prepare(&PrepareRequest::new(repo, up.url())).unwrap();
        assert!(ws.reused);
        runs.push((repo, scan(&ws.path)));
    }
    let files = git(up.path.as_path(), &["ls-files"]).lines().count();
    assert_eq!(
        runs,
        [
            ("acme/cached", files),
            ("acme/plain", files),
            ("acme/cached", 1),
            ("acme/plain", files),
        ]
    );
}

/// A 0.2 component (no `keep-ignored` in its contract) loads and keeps
/// today's clean, whatever the settings say.
#[test]
fn a_0_2_policy_keeps_todays_clean() {
    let up = upstream();
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .policy_file(component("fixsec-hostile-policy", Some("v0-2")))
        .configure(|c| {
            c.policy_settings
                .insert("keep_ignored".into(), "node_modules".into());
        })
        .build()
        .unwrap();
    assert_eq!(m.policy_info().contract, "fixsec:workspace@0.2.0");
    let first = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    write(&first.path, "node_modules/x/index.js", "x\n");
    write(&first.path, "app.js", "tampered\n");
    let again = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    assert!(again.reused);
    assert!(!again.path.join("node_modules").exists());
    assert_eq!(git(&again.path, &["status", "--porcelain"]), "");
}

/// Two tenants, both allowed to read one repository, with their own
/// credentials: A's kept cache (which may hold what A's job fetched with
/// A's rights) never reaches B. The checkout A prepared is not B's to
/// reuse, so B's prepare clones afresh, caches and all gone.
#[test]
fn a_kept_cache_never_reaches_another_tenant() {
    use crate::support::smart_http::SmartHttp;
    let up = upstream();
    let server = SmartHttp::start("forge-admin", "admin-only-c1");
    server.add_account("alice", "alice-token-c4", &["acme/app"]);
    server.add_account("bob", "bob-token-9e", &["acme/app"]);
    server.publish("acme/app", &up);
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), &[("keep_ignored", "node_modules")]);
    let as_alice = server.url_as("alice", "alice-token-c4", "acme/app");
    let a = m
        .prepare(&PrepareRequest::new("acme/app", &as_alice))
        .unwrap();
    write(
        &a.path,
        "node_modules/.cache/token",
        "alice's private registry token\n",
    );
    let again = m
        .prepare(&PrepareRequest::new("acme/app", &as_alice))
        .unwrap();
    assert!(again.reused);
    assert!(again.path.join("node_modules/.cache/token").exists());

    let as_bob = server.url_as("bob", "bob-token-9e", "acme/app");
    let b = m
        .prepare(&PrepareRequest::new("acme/app", &as_bob))
        .unwrap();
    assert!(!b.reused, "B reused A's checkout: {:?}", b.notes);
    assert!(!b.path.join("node_modules").exists());
    let leaked = crate::support::files_containing(base.path(), "alice's private registry");
    assert!(leaked.is_empty(), "A's cache is still on disk: {leaked:?}");
}

/// The attacker review: a job cannot make its files "ignored" with
/// untracked `.gitignore` files of its own (they are gone before anything
/// is judged), and never keeps a `.gitattributes` (it would rewrite
/// tracked files on the next reset, or on this one: it is gone before the
/// reset writes anything). Caches under an untracked folder on
/// the way to a named path, and folders whose contents only are ignored
/// (`target/*`), are kept.
#[test]
fn a_job_cannot_widen_what_is_kept_and_nested_caches_are_kept() {
    let up = Upstream::new();
    up.commit(
        ".gitignore",
        "target/*\n!target/keep.txt\nweb/\n",
        "ignore build output",
    );
    up.commit("target/keep.txt", "tracked\n", "a tracked file in target");
    let base = tempfile::tempdir().unwrap();
    let m = manager(
        base.path(),
        &[("keep_ignored", "**/node_modules **/target web/.venv")],
    );
    let first = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    let ws = &first.path;
    // node_modules is not ignored by the commit: twenty folders each try
    // to make theirs ignored with an untracked .gitignore (whatever order
    // the file system lists them in).
    for i in 0..20 {
        write(ws, &format!("src{i}/.gitignore"), "node_modules\n");
        write(ws, &format!("src{i}/node_modules/payload"), "x\n");
    }
    write(ws, "target/.gitattributes", "* text eol=crlf\n");
    // A tracked file the job changed is written again by the reset: with
    // the commit's attributes, not the job's.
    write(ws, "target/keep.txt", "changed by the job\n");
    write(ws, "target/debug/app", "built\n");
    write(ws, "web/.venv/bin/python", "venv\n");
    write(ws, "web/notes.txt", "not kept\n");
    let again = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    assert!(again.reused, "{:?}", again.notes);
    for i in 0..20 {
        assert!(!ws.join(format!("src{i}")).exists(), "src{i} survived");
    }
    assert!(!ws.join("target/.gitattributes").exists());
    assert!(ws.join("target/debug/app").exists());
    assert_eq!(
        std::fs::read_to_string(ws.join("target/keep.txt")).unwrap(),
        "tracked\n"
    );
    assert!(ws.join("web/.venv/bin/python").exists());
    assert!(!ws.join("web/notes.txt").exists());
    assert_eq!(git(ws, &["status", "--porcelain", "--ignored=no"]), "");
}

/// The attacker review of the reset's stat check (F5): a job that edits
/// or deletes the commit's `.gitignore` gets it written back by the
/// reset, and the kept caches are judged by it then; the clean before
/// the reset (which drops a job's `.gitattributes`) judges nothing.
#[test]
fn a_cache_survives_a_job_that_edits_the_ignore_rules() {
    let up = upstream();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), &[("keep_ignored", "node_modules")]);
    let request = PrepareRequest::new("acme/app", up.url());
    let ws = m.prepare(&request).unwrap().path;
    for edit in ["edited", "deleted"] {
        write(&ws, "node_modules/left-pad/index.js", "cached\n");
        if edit == "edited" {
            write(&ws, ".gitignore", "*.log\n");
        } else {
            std::fs::remove_file(ws.join(".gitignore")).unwrap();
        }
        let again = m.prepare(&request).unwrap();
        assert!(again.reused, "{:?}", again.notes);
        assert_eq!(
            std::fs::read_to_string(ws.join("node_modules/left-pad/index.js"))
                .ok()
                .as_deref(),
            Some("cached\n"),
            "{edit} .gitignore: the cache went"
        );
        assert!(
            std::fs::read_to_string(ws.join(".gitignore"))
                .unwrap()
                .contains("node_modules/")
        );
    }
}
