//! The guide's PR route (issue 13): prepare at any ref, branch, commit,
//! push with a credential that is never stored, prepare again; against
//! `git http-backend` behind Basic auth on 127.0.0.1.

use crate::support::forge::{API_TOKEN, FIX_BRANCH, Forge, SECRET, git};
use crate::support::{self, Fixture, builder, cli_local, files_containing};
use fixsec_workspace::{ErrorKind, PrepareRequest, PushRequest, WorkspaceManager};
use git2::Repository;
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// The route's own work in the workspace: a branch and a commit on it.
fn branch_and_commit(repo: &Path) -> String {
    git(repo, &["checkout", "-q", "-b", FIX_BRANCH]);
    std::fs::write(repo.join("SECURITY-FIX.md"), "fixed\n").unwrap();
    git(repo, &["add", "SECURITY-FIX.md"]);
    git(repo, &["commit", "-q", "-m", "fix: a security finding"]);
    git(repo, &["rev-parse", "HEAD"])
}

/// After the flow, the next prepare (no ref) is the default branch, clean.
fn assert_clean_default_branch(repo: &Path, forge: &Forge) {
    assert_eq!(git(repo, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    assert_eq!(git(repo, &["rev-parse", "HEAD"]), forge.up.head_of("main"));
    assert_eq!(git(repo, &["status", "--porcelain", "--ignored"]), "");
    assert!(!repo.join("SECURITY-FIX.md").exists());
}

fn assert_secret_nowhere(base: &Path) {
    assert_eq!(
        files_containing(base, SECRET),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn the_guides_pr_route_end_to_end_over_http() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let mut served = support::serve_local(base.path(), API_TOKEN);
    let client = reqwest::blocking::Client::new();
    let call = |path: &str, body: Value| {
        let r = client
            .post(format!("http://{}{path}", served.addr))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };

    // Prepare at the pull request's head: a detached checkout of it.
    let (status, prepared) = call(
        "/workspace/prepare",
        json!({"repo_full_name": "acme/app", "clone_url": forge.url(), "ref": "refs/pull/1/head"}),
    );
    assert_eq!(status, 200, "{prepared}");
    assert_eq!(prepared["head"], forge.pull_head.as_str());
    let name = prepared["name"].as_str().unwrap().to_string();
    let repo = Path::new(prepared["path"].as_str().unwrap()).to_path_buf();
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), forge.pull_head);

    // Branch, commit, push with force through the API.
    let commit = branch_and_commit(&repo);
    let push = format!("/workspace/workspaces/{name}/push");
    let (status, pushed) = call(
        &push,
        json!({"branch": FIX_BRANCH, "url": forge.url(), "force": true}),
    );
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["commit"], commit.as_str());
    assert_eq!(pushed["forced"], true);
    assert_eq!(pushed["url"], forge.http.url("acme/app"));
    assert_eq!(
        forge.branch_on_server(FIX_BRANCH).as_deref(),
        Some(commit.as_str())
    );

    // The default branch is the policy's to refuse; the server keeps it.
    let (status, refused) = call(
        &push,
        json!({"branch": "main", "url": forge.url(), "force": true}),
    );
    assert_eq!(status, 422, "{refused}");
    assert!(
        refused["detail"]
            .as_str()
            .unwrap()
            .contains("default branch"),
        "{refused}"
    );

    // Prepare again: the default branch, clean.
    let (status, again) = call(
        "/workspace/prepare",
        json!({"repo_full_name": "acme/app", "clone_url": forge.url()}),
    );
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["reused"], true);
    assert_clean_default_branch(&repo, &forge);
    assert_eq!(
        forge.branch_on_server("main"),
        Some(forge.up.head_of("main"))
    );

    let _ = served.child.kill();
    let _ = served.child.wait();
    let mut log = served.before.clone();
    std::io::Read::read_to_string(&mut served.stderr, &mut log).unwrap();
    assert!(!log.contains(SECRET), "the credential reached the log");
    assert_secret_nowhere(base.path());
    // Every request the forge saw carried the right credential after the
    // first challenge; none was answered without it.
    assert!(
        forge
            .http
            .seen()
            .iter()
            .any(|r| r.line.contains("git-receive-pack"))
    );
}

#[test]
fn the_guides_pr_route_end_to_end_through_the_cli() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = cli_local(base.path(), args)
            .env("FORGE_URL", forge.url())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let url = forge.url();
    let prepared = run(&["--json", "prepare", "acme/app", &url, "--ref", "v1.0"]);
    assert_eq!(prepared["head"], forge.first.as_str());
    let name = prepared["name"].as_str().unwrap().to_string();
    let repo = Path::new(prepared["path"].as_str().unwrap()).to_path_buf();

    let commit = branch_and_commit(&repo);
    let pushed = run(&[
        "--json",
        "push",
        &name,
        FIX_BRANCH,
        "--url-env",
        "FORGE_URL",
        "--force",
    ]);
    assert_eq!(pushed["commit"], commit.as_str());
    assert_eq!(
        forge.branch_on_server(FIX_BRANCH).as_deref(),
        Some(commit.as_str())
    );

    run(&["--json", "prepare", "acme/app", &url]);
    assert_clean_default_branch(&repo, &forge);
    assert_secret_nowhere(base.path());

    // A push the remote refuses exits 7 and says why.
    git(&repo, &["checkout", "-q", "-b", "other"]);
    git(&repo, &["reset", "-q", "--hard", &forge.first]);
    git(&repo, &["branch", "-q", "-f", FIX_BRANCH, &forge.first]);
    let out = cli_local(
        base.path(),
        &["push", &name, FIX_BRANCH, "--url-env", "FORGE_URL"],
    )
    .env("FORGE_URL", forge.url())
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a fast-forward"));
    assert_eq!(
        forge.branch_on_server(FIX_BRANCH).as_deref(),
        Some(commit.as_str())
    );
}

fn prepare_at(
    m: &WorkspaceManager,
    forge: &Forge,
    git_ref: Option<&str>,
    depth: Option<u32>,
) -> (String, std::path::PathBuf) {
    let mut request = PrepareRequest::new("acme/app", forge.url());
    request.git_ref = git_ref.map(str::to_string);
    request.depth = depth;
    let outcome = m
        .prepare(&request)
        .unwrap_or_else(|e| panic!("prepare at {git_ref:?}: {e}"));
    (outcome.head, outcome.path)
}

fn head_ref(repo: &Path) -> Option<String> {
    let r = Repository::open(repo).unwrap();
    let head = r.head().unwrap();
    head.is_branch().then(|| head.name().unwrap().to_string())
}

#[test]
fn every_kind_of_ref_checks_out_and_a_branch_returns() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .allow_private_networks(true)
        .build()
        .unwrap();
    let develop = forge.up.head_of("develop");
    let main = forge.up.head_of("main");
    // Shallow, as a scanner would; every ref still resolves (an old
    // commit by deepening, since this server refuses unadvertised wants).
    for (git_ref, head, branch) in [
        (
            Some("develop"),
            develop.as_str(),
            Some("refs/heads/develop"),
        ),
        (Some("v1.0"), forge.first.as_str(), None),
        (Some("refs/tags/v1.0"), forge.first.as_str(), None),
        (
            Some(forge.pull_head.as_str()),
            forge.pull_head.as_str(),
            None,
        ),
        (Some(forge.first.as_str()), forge.first.as_str(), None),
        (Some("refs/pull/1/head"), forge.pull_head.as_str(), None),
        (
            Some("+refs/pull/1/head:refs/heads/pr-1"),
            forge.pull_head.as_str(),
            Some("refs/heads/pr-1"),
        ),
        (None, main.as_str(), Some("refs/heads/main")),
        (
            Some("develop"),
            develop.as_str(),
            Some("refs/heads/develop"),
        ),
    ] {
        let (got, repo) = prepare_at(&m, &forge, git_ref, Some(1));
        assert_eq!(got, head, "{git_ref:?}");
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "{git_ref:?}");
        assert_eq!(head_ref(&repo).as_deref(), branch, "{git_ref:?}");
        assert_eq!(git(&repo, &["status", "--porcelain"]), "", "{git_ref:?}");
    }
    // A fresh clone straight at a commit (the workspace removed first).
    let name = m.workspace_name("acme/app").unwrap();
    assert!(m.remove(&name).unwrap().removed);
    let (got, repo) = prepare_at(&m, &forge, Some(&forge.pull_head), Some(1));
    assert_eq!(got, forge.pull_head);
    assert_eq!(head_ref(&repo), None);

    // A server that allows fetching by id is asked for the commit alone.
    forge.http.git(
        "acme/app",
        &["config", "uploadpack.allowReachableSHA1InWant", "true"],
    );
    let (got, _) = prepare_at(&m, &forge, Some(&forge.first), Some(1));
    assert_eq!(got, forge.first);

    // What does not exist, or is not a ref at all, is a clear error.
    for (bad, kind) in [
        ("no-such-branch", ErrorKind::NotFound),
        ("refs/pull/99/head", ErrorKind::NotFound),
        (
            "0123456789abcdef0123456789abcdef01234567",
            ErrorKind::NotFound,
        ),
        ("a..b", ErrorKind::InvalidInput),
        ("main:dev", ErrorKind::InvalidInput),
    ] {
        let err = m
            .prepare(&PrepareRequest::new("acme/app", forge.url()).git_ref(bad))
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{bad}: {err}");
    }
}

#[test]
fn push_refusals_are_clear_and_change_nothing_on_the_server() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .allow_private_networks(true)
        .build()
        .unwrap();
    let (_, repo) = prepare_at(&m, &forge, None, None);
    let name = m.workspace_name("acme/app").unwrap();
    let commit = branch_and_commit(&repo);
    let push = |branch: &str, url: String, force: bool| {
        m.push(&name, &PushRequest::new(branch, url).force(force))
    };
    // A server hook protects release/*.
    let hook = forge.http.bare("acme/app").join("hooks/update");
    std::fs::write(
        &hook,
        "#!/bin/sh\ncase \"$1\" in refs/heads/release/*) echo protected >&2; exit 1;; esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    git(&repo, &["branch", "-q", "release/1", "HEAD"]);

    let wrong = format!(
        "http://x-access-token:wrong@{}",
        forge.http.url("acme/app").trim_start_matches("http://")
    );
    for (branch, url, force, kind, says) in [
        (
            "main",
            forge.url(),
            true,
            ErrorKind::Refused,
            "default branch",
        ),
        (
            "release/1",
            forge.url(),
            false,
            ErrorKind::Rejected,
            "rejected",
        ),
        (
            "no-such",
            forge.url(),
            false,
            ErrorKind::NotFound,
            "does not exist in the workspace",
        ),
        (
            "bad..name",
            forge.url(),
            false,
            ErrorKind::InvalidInput,
            "not a valid branch",
        ),
        (FIX_BRANCH, wrong, false, ErrorKind::Git, "write access"),
        (
            FIX_BRANCH,
            "ext::sh -c x".into(),
            false,
            ErrorKind::Refused,
            "",
        ),
    ] {
        let before = forge.branch_on_server(branch);
        let err = push(branch, url, force).unwrap_err();
        assert_eq!(err.kind(), kind, "{branch}: {err}");
        assert!(err.to_string().contains(says), "{branch}: {err}");
        assert_eq!(forge.branch_on_server(branch), before, "{branch} changed");
    }
    assert_eq!(
        forge.branch_on_server("main"),
        Some(forge.up.head_of("main"))
    );

    // Pushed; then a rewrite is not a fast-forward without force.
    assert_eq!(push(FIX_BRANCH, forge.url(), false).unwrap().commit, commit);
    git(&repo, &["commit", "-q", "--amend", "-m", "fix: reworded"]);
    let amended = git(&repo, &["rev-parse", "HEAD"]);
    let err = push(FIX_BRANCH, forge.url(), false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(forge.branch_on_server(FIX_BRANCH), Some(commit));
    assert_eq!(push(FIX_BRANCH, forge.url(), true).unwrap().commit, amended);
    assert_eq!(forge.branch_on_server(FIX_BRANCH), Some(amended));
    assert_secret_nowhere(base.path());
}

/// The contract's 0.2.0 gives the push decision to the policy; a 0.1.x
/// component still loads and pushes under the host's default rule.
#[test]
fn the_policy_decides_pushes_and_a_0_1_policy_follows_the_default_rule() {
    let forge = Forge::new();
    let no_force = "push_allow_force=false";
    let current = tempfile::tempdir().unwrap();
    let m = builder(current.path())
        .allow_private_networks(true)
        .configure(|c| {
            c.policy_settings
                .insert("push_allow_force".into(), "false".into());
        })
        .build()
        .unwrap();
    assert_eq!(m.policy_info().contract, "fixsec:workspace@0.3.0");
    let old = tempfile::tempdir().unwrap();
    let m01 = builder(old.path())
        .allow_private_networks(true)
        .policy_file(support::component("fixsec-hostile-policy", None))
        .configure(|c| {
            c.policy_settings
                .insert("push_allow_force".into(), "false".into());
        })
        .build()
        .unwrap();
    assert_eq!(m01.policy_info().contract, "fixsec:workspace@0.1.0");

    for (m, branch, force_allowed) in [(&m, "fix/current", false), (&m01, "fix/old", true)] {
        let (_, repo) = prepare_at(m, &forge, Some("develop"), None);
        let name = m.workspace_name("acme/app").unwrap();
        git(&repo, &["checkout", "-q", "-b", branch]);
        let forced = m.push(&name, &PushRequest::new(branch, forge.url()).force(true));
        assert_eq!(forced.is_ok(), force_allowed, "{branch}: {forced:?}");
        if let Err(e) = forced {
            assert_eq!(e.kind(), ErrorKind::Refused);
            assert!(e.to_string().contains(no_force), "{e}");
            m.push(&name, &PushRequest::new(branch, forge.url()))
                .unwrap();
        }
        assert_eq!(
            forge.branch_on_server(branch),
            Some(forge.up.head_of("develop"))
        );
        // Both refuse the default branch.
        let err = m
            .push(&name, &PushRequest::new("main", forge.url()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    }
}

/// Jobs that share a repository queue: a fix waits for the scan's lease,
/// then gets the workspace; the scan's tree is untouched until then.
#[test]
fn two_jobs_on_one_repository_queue_rather_than_clobber() {
    let Fixture { up, base: _base, m } =
        Fixture::with(|b| b.configure(|c| c.lease_wait = Duration::from_secs(20)));
    let job = |holder: &str| {
        let mut r = PrepareRequest::new("acme/app", up.url()).branch("main");
        r.lease_seconds = Some(60);
        r.holder = Some(holder.into());
        r
    };
    let scan = m.prepare(&job("scan-1")).unwrap();
    let report = scan.path.join("scan-report.json");
    std::fs::write(&report, "{}").unwrap();
    let started = Instant::now();
    let fix = {
        let (m, r) = (m.clone(), job("fix-1"));
        std::thread::spawn(move || m.prepare(&r))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!fix.is_finished(), "the fix did not wait for the scan");
    assert!(
        report.exists(),
        "the scan's tree was touched under its lease"
    );
    m.release_lease(scan.lease.unwrap().id).unwrap();
    let fix = fix.join().unwrap().unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(fix.reused);
    assert!(!report.exists(), "the fix got an unclean tree");
    assert!(fix.lease.is_some());
}
