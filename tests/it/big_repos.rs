//! Issue 23: big repositories. Checkouts written by git's command line on
//! every core, partial clones (`filter`) and sparse workspaces (`sparse`)
//! against a real smart-HTTP server with two tenants, and checkouts another
//! git tool changed in ways libgit2 cannot read, healed on the next prepare.

use crate::support::forge::git;
use crate::support::smart_http::SmartHttp;
use crate::support::{GitDaemon, Upstream, files_containing, manager};
use fixsec_workspace::{ErrorKind, PrepareRequest};
use std::path::Path;
use std::process::Command;

/// A repository of `dirs` directories `pkgN/` with `files` files each and
/// a README at the top, committed on `main`: `<tempdir>/mono`.
struct Mono {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

fn monorepo(dirs: usize, files: usize) -> Mono {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mono");
    std::fs::create_dir(&path).unwrap();
    let dir = Mono { _dir: tmp, path };
    git(&dir.path, &["init", "-q", "-b", "main"]);
    for d in 0..dirs {
        let pkg = dir.path.join(format!("pkg{d}"));
        std::fs::create_dir_all(&pkg).unwrap();
        for f in 0..files {
            std::fs::write(pkg.join(format!("f{f}.txt")), format!("pkg {d} file {f}\n")).unwrap();
        }
    }
    std::fs::write(dir.path.join("README.md"), "top\n").unwrap();
    git(&dir.path, &["add", "-A"]);
    git(&dir.path, &["commit", "-q", "-m", "tree"]);
    dir
}

/// Objects the checkout at `repo` lacks (a partial clone's promised ones).
fn missing_objects(repo: &Path) -> usize {
    git(repo, &["rev-list", "--objects", "--all", "--missing=print"])
        .lines()
        .filter(|l| l.starts_with('?'))
        .count()
}

/// Top-level entries of `repo` besides `.git`, sorted.
fn on_disk(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".git")
        .collect();
    names.sort();
    names
}

/// A tree past the size where git's command line writes it, cloned over a
/// loopback `git daemon` through the object mirror: every file is there
/// with its content, git sees a clean checkout, and a reuse rewrites
/// nothing. (Before the index was read again after git wrote it, the
/// clean that follows removed every file.)
#[test]
fn a_large_checkout_is_written_whole_and_reused_without_rewriting() {
    let src = monorepo(12, 120);
    let daemon = GitDaemon::start(src.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url = daemon.url("mono");
    let first = m.prepare(&PrepareRequest::new("acme/mono", &url)).unwrap();
    assert!(!first.reused);
    for (d, f) in [(0, 0), (11, 119), (5, 60)] {
        let file = first.path.join(format!("pkg{d}/f{f}.txt"));
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            format!("pkg {d} file {f}\n")
        );
    }
    let tracked = git(&first.path, &["ls-files"]).lines().count();
    assert_eq!(tracked, 12 * 120 + 1);
    assert_eq!(git(&first.path, &["status", "--porcelain"]), "");
    let probe = first.path.join("pkg3/f7.txt");
    let written = std::fs::metadata(&probe).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = m.prepare(&PrepareRequest::new("acme/mono", &url)).unwrap();
    assert!(again.reused);
    assert_eq!(
        std::fs::metadata(&probe).unwrap().modified().unwrap(),
        written,
        "the reuse rewrote an unchanged file"
    );
    // A large upstream change is written again (by git), whole.
    for d in 0..12 {
        for f in 0..120 {
            let file = src.path.join(format!("pkg{d}/f{f}.txt"));
            std::fs::write(file, format!("v2 {d} {f}\n")).unwrap();
        }
    }
    git(&src.path, &["commit", "-q", "-am", "v2"]);
    let v2 = m.prepare(&PrepareRequest::new("acme/mono", &url)).unwrap();
    assert!(v2.reused);
    assert_eq!(
        std::fs::read_to_string(v2.path.join("pkg11/f119.txt")).unwrap(),
        "v2 11 119\n"
    );
    assert_eq!(git(&v2.path, &["status", "--porcelain"]), "");
}

/// A blobless, sparse prepare over smart HTTP with Basic auth: only the
/// cone is on disk, the history is there without the other blobs, the
/// credential reached the server and no file; a reuse widens the cone, a
/// request without `sparse` brings the whole tree, and another tenant's
/// credential reads nothing of it.
#[test]
fn a_blobless_sparse_prepare_holds_only_its_cone_and_follows_the_request() {
    let server = SmartHttp::start("tenant-a", "secret-a-1234");
    server.add_account("tenant-b", "secret-b-5678", &["other/repo"]);
    let src = monorepo(8, 30);
    server.publish_dir("acme/mono", &src.path);
    server.git("acme/mono", &["config", "uploadpack.allowFilter", "true"]);
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url_a = server.url_as("tenant-a", "secret-a-1234", "acme/mono");

    let first = m
        .prepare(
            &PrepareRequest::new("acme/mono", &url_a)
                .filter("blob:none")
                .sparse(["pkg3"]),
        )
        .unwrap();
    assert!(!first.reused);
    assert_eq!(on_disk(&first.path), ["README.md", "pkg3"]);
    assert_eq!(
        std::fs::read_to_string(first.path.join("pkg3/f29.txt")).unwrap(),
        "pkg 3 file 29\n"
    );
    // Blobs outside the cone were never fetched.
    assert!(
        missing_objects(&first.path) >= 7 * 30,
        "not a partial clone"
    );
    assert!(
        server
            .seen()
            .iter()
            .any(|r| r.user.as_deref() == Some("tenant-a")),
        "the credential never reached the server"
    );
    assert!(files_containing(base.path(), "secret-a-1234").is_empty());
    // Stats count what is on disk, not the skipped paths.
    let size = m.get(&first.name).unwrap().unwrap().size_bytes;

    // Reuse: the cone follows the request.
    let wider = m
        .prepare(
            &PrepareRequest::new("acme/mono", &url_a)
                .filter("blob:none")
                .sparse(["pkg3", "pkg5"]),
        )
        .unwrap();
    assert!(wider.reused);
    assert_eq!(on_disk(&wider.path), ["README.md", "pkg3", "pkg5"]);
    // A job's leftovers inside and outside the cone are cleaned.
    std::fs::write(wider.path.join("pkg3/junk.log"), "x").unwrap();
    std::fs::create_dir_all(wider.path.join("pkg7")).unwrap();
    std::fs::write(wider.path.join("pkg7/f0.txt"), "planted").unwrap();
    let whole = m
        .prepare(&PrepareRequest::new("acme/mono", &url_a).filter("blob:none"))
        .unwrap();
    assert!(whole.reused);
    assert_eq!(on_disk(&whole.path).len(), 9, "{:?}", on_disk(&whole.path));
    assert_eq!(
        std::fs::read_to_string(whole.path.join("pkg7/f0.txt")).unwrap(),
        "pkg 7 file 0\n"
    );
    assert!(!whole.path.join("pkg3/junk.log").exists());
    assert_eq!(git(&whole.path, &["status", "--porcelain"]), "");
    assert!(m.get(&whole.name).unwrap().unwrap().size_bytes > size);
    assert!(files_containing(base.path(), "secret-a-1234").is_empty());

    // Tenant B's credential does not read A's repository, sparse or not.
    let url_b = server.url_as("tenant-b", "secret-b-5678", "acme/mono");
    let err = m
        .prepare(
            &PrepareRequest::new("acme/mono", &url_b)
                .filter("blob:none")
                .sparse(["pkg3"]),
        )
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Git),
        "{err}"
    );
    assert!(!err.to_string().contains("secret"), "{err}");
}

/// A workspace cloned with one filter and asked for another (or none) is
/// cloned afresh, never half of each.
#[test]
fn a_changed_filter_clones_afresh() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let partial = m
        .prepare(&PrepareRequest::new("acme/app", up.url()).filter("blob:none"))
        .unwrap();
    assert_eq!(
        git(
            &partial.path,
            &["config", "remote.origin.partialclonefilter"]
        )
        .trim(),
        "blob:none"
    );
    let full = m
        .prepare(&PrepareRequest::new("acme/app", up.url()))
        .unwrap();
    assert!(!full.reused, "a partial clone was reused for a full one");
    assert_eq!(missing_objects(&full.path), 0);
    assert!(
        Command::new("git")
            .args(["config", "remote.origin.partialclonefilter"])
            .current_dir(&full.path)
            .output()
            .unwrap()
            .stdout
            .is_empty()
    );
}

/// Filters and directories outside what is offered, and refs a shaped
/// prepare cannot take, are refused by name before anything is written.
#[test]
fn bad_filters_and_sparse_sets_are_refused_before_anything_is_written() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let head = up.head_of("main");
    let cases = [
        (
            PrepareRequest::new("acme/app", up.url()).filter("sparse:oid=HEAD"),
            "filter",
        ),
        (
            PrepareRequest::new("acme/app", up.url()).filter("--upload-pack=x"),
            "filter",
        ),
        (
            PrepareRequest::new("acme/app", up.url()).sparse(["../etc"]),
            "sparse directory",
        ),
        (
            PrepareRequest::new("acme/app", up.url()).sparse([".git/hooks"]),
            "sparse directory",
        ),
        (
            PrepareRequest::new("acme/app", up.url()).sparse(["-x"]),
            "sparse directory",
        ),
        (
            PrepareRequest::new("acme/app", up.url()).sparse(Vec::<String>::new()),
            "sparse takes",
        ),
        (
            PrepareRequest::new("acme/app", up.url())
                .sparse(["src"])
                .git_ref(head.as_str()),
            "branch or a tag",
        ),
    ];
    for (request, says) in cases {
        let err = m.prepare(&request).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert!(m.list().unwrap().is_empty());
}

/// A job's own git may leave an index libgit2 cannot read (a sparse index,
/// a split index) or a newer index version: the next prepare heals the
/// workspace (updates or re-clones it), never fails.
#[test]
fn an_index_another_git_tool_wrote_is_healed_by_the_next_prepare() {
    let src = monorepo(3, 4);
    let url = src.path.display().to_string();
    let jobs: [&[&[&str]]; 3] = [
        &[
            &["sparse-checkout", "init", "--cone", "--sparse-index"],
            &["sparse-checkout", "set", "pkg1"],
        ],
        &[&["update-index", "--index-version", "4"]],
        &[&["update-index", "--split-index"]],
    ];
    for job in jobs {
        let base = tempfile::tempdir().unwrap();
        let m = manager(base.path());
        let ws = m.prepare(&PrepareRequest::new("acme/mono", &url)).unwrap();
        for args in job {
            git(&ws.path, args);
        }
        let again = m
            .prepare(&PrepareRequest::new("acme/mono", &url))
            .unwrap_or_else(|e| panic!("after {job:?}: {e}"));
        assert_eq!(
            on_disk(&again.path),
            ["README.md", "pkg0", "pkg1", "pkg2"],
            "after {job:?}"
        );
        assert_eq!(
            git(&again.path, &["status", "--porcelain"]),
            "",
            "after {job:?}"
        );
        let third = m.prepare(&PrepareRequest::new("acme/mono", &url)).unwrap();
        assert!(third.reused, "after {job:?}: not reused once healed");
    }
}

/// The command line's `--filter` and `--sparse` (comma-separated) over a
/// loopback `git daemon` that allows filters.
#[test]
fn the_cli_prepares_a_blobless_sparse_workspace() {
    let src = monorepo(4, 5);
    git(&src.path, &["config", "uploadpack.allowFilter", "true"]);
    let daemon = GitDaemon::start(src.path.parent().unwrap());
    let base = tempfile::tempdir().unwrap();
    let out = crate::support::cli_local(
        base.path(),
        &[
            "--json",
            "prepare",
            "acme/mono",
            &daemon.url("mono"),
            "--filter",
            "blob:none",
            "--sparse",
            "pkg1,pkg2",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = Path::new(v["path"].as_str().unwrap());
    assert_eq!(on_disk(path), ["README.md", "pkg1", "pkg2"]);
    assert!(missing_objects(path) >= 2 * 5, "not a partial clone");
}

/// Review of issue 23: a job's `update-index --skip-worktree` or
/// `--assume-unchanged` must not keep its own content in a tracked file
/// through the next prepare (which claims the checkout is the commit's),
/// on the libgit2 path and the shaped one.
#[test]
fn a_file_a_job_hid_from_git_is_reset_by_the_next_prepare() {
    let src = monorepo(2, 3);
    let url = src.path.display().to_string();
    for shaped in [false, true] {
        for flag in ["--skip-worktree", "--assume-unchanged"] {
            let base = tempfile::tempdir().unwrap();
            let m = manager(base.path());
            let request = || mono_request(&url, shaped);
            let ws = m.prepare(&request()).unwrap();
            std::fs::write(ws.path.join("pkg1/f2.txt"), "BACKDOOR\n").unwrap();
            git(&ws.path, &["update-index", flag, "pkg1/f2.txt"]);
            let again = m.prepare(&request()).unwrap();
            assert_eq!(
                std::fs::read_to_string(again.path.join("pkg1/f2.txt")).unwrap(),
                "pkg 1 file 2\n",
                "{flag} (shaped: {shaped}) kept the job's content"
            );
        }
    }
}

/// What a job leaves never shapes the next prepare's checkout, on the
/// libgit2 path and the shaped one: its own `.gitattributes` (gone before
/// the reset writes anything: else `eol=crlf` rewrote the files it
/// wrote), and a same-size edit whose old modification time it put back.
#[test]
fn a_jobs_attributes_and_restored_times_never_survive_the_next_prepare() {
    let src = monorepo(2, 3);
    let url = src.path.display().to_string();
    for shaped in [false, true] {
        let base = tempfile::tempdir().unwrap();
        let m = manager(base.path());
        let request = || mono_request(&url, shaped);
        let ws = m.prepare(&request()).unwrap();
        std::fs::write(ws.path.join("pkg1/.gitattributes"), "* text eol=crlf\n").unwrap();
        std::fs::write(ws.path.join("pkg1/f1.txt"), "changed\n").unwrap();
        crate::support::edit_keeping_mtime(&ws.path.join("pkg1/f2.txt"), "PKG 1 FILE 2\n");
        let again = m.prepare(&request()).unwrap();
        for (file, want) in [
            ("pkg1/f1.txt", "pkg 1 file 1\n"),
            ("pkg1/f2.txt", "pkg 1 file 2\n"),
        ] {
            assert_eq!(
                std::fs::read_to_string(again.path.join(file)).unwrap(),
                want,
                "{file} (shaped: {shaped})"
            );
        }
        assert!(!again.path.join("pkg1/.gitattributes").exists());
    }
}

/// acme/mono from `url`: the whole tree, or (`shaped`) two folders of it
/// through git's command line.
fn mono_request(url: &str, shaped: bool) -> PrepareRequest {
    let r = PrepareRequest::new("acme/mono", url);
    if shaped {
        r.sparse(["pkg0", "pkg1"])
    } else {
        r
    }
}

/// Review of issue 23: a job that adds a second `url` to `origin` (git's
/// fetch takes the first, libgit2's check the last) finds exactly the
/// requested one after the next prepare, which fetches from it.
#[test]
fn a_second_origin_url_a_job_added_is_dropped() {
    let src = monorepo(2, 3);
    let other = monorepo(1, 1);
    std::fs::write(other.path.join("pkg0/f0.txt"), "OTHER\n").unwrap();
    git(&other.path, &["commit", "-qam", "other"]);
    let url = src.path.display().to_string();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let request = || PrepareRequest::new("acme/mono", &url).sparse(["pkg0"]);
    let ws = m.prepare(&request()).unwrap();
    let config = ws.path.join(".git/config");
    let text = std::fs::read_to_string(&config).unwrap();
    let planted = text.replacen(
        "[remote \"origin\"]\n",
        &format!("[remote \"origin\"]\n\turl = {}\n", other.path.display()),
        1,
    );
    assert_ne!(planted, text);
    std::fs::write(&config, planted).unwrap();
    let again = m.prepare(&request()).unwrap();
    let urls = git(&again.path, &["config", "--get-all", "remote.origin.url"]);
    assert_eq!(urls.lines().collect::<Vec<_>>(), [url.as_str()]);
    assert_eq!(
        std::fs::read_to_string(again.path.join("pkg0/f0.txt")).unwrap(),
        "pkg 0 file 0\n"
    );
}
