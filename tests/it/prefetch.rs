//! Push prefetch (issue 24, part 3): a push upstream brings the idle
//! workspace of the pushed branch to the new commit, so the next prepare
//! finds it there; GitHub's signed push event and the generic hook reach
//! it over HTTP; nothing of another tenant's is touched.

use crate::support::forge::git;
use crate::support::smart_http::SmartHttp;
use crate::support::{GitDaemon, Upstream, builder, cli_local, serve};
use fixsec_workspace::testing::WorkspaceMetadata;
use fixsec_workspace::{PrefetchRequest, PrepareRequest};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const SECRET: &str = "hook-secret-5d8e";
const TOKEN: &str = "hook-token-0123456789";

fn prefetch(url: &str, branch: Option<&str>) -> PrefetchRequest {
    PrefetchRequest {
        repo_full_name: "acme/app".into(),
        clone_url: url.into(),
        git_ref: branch.map(str::to_string),
    }
}

fn head(repo: &Path) -> String {
    git(repo, &["rev-parse", "HEAD"])
}

/// `X-Hub-Signature-256` for `body`, as GitHub computes it.
fn signature(body: &[u8]) -> String {
    signed_with(SECRET, body)
}

/// `X-Hub-Signature-256` for `body` under `secret`.
pub(crate) fn signed_with(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// GitHub's push event for `git_ref` of acme/app at `url`.
fn push_event(url: &str, git_ref: &str) -> Vec<u8> {
    push_event_of("acme/app", url, git_ref)
}

/// GitHub's push event for `git_ref` of `repo` at `url`.
pub(crate) fn push_event_of(repo: &str, url: &str, git_ref: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "ref": git_ref,
        "before": "0000000000000000000000000000000000000000",
        "after": "1111111111111111111111111111111111111111",
        "deleted": false,
        "repository": {"full_name": repo, "clone_url": url, "default_branch": "main"},
        "pusher": {"name": "someone"},
    }))
    .unwrap()
}

#[test]
fn a_push_is_prefetched_into_an_idle_workspace_only() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let url = daemon.url("upstream");
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let first = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    let meta_path = base.path().join(&first.name).join("workspace.json");
    let used = WorkspaceMetadata::read(&meta_path).unwrap().last_used;

    // Nothing to do: no push yet, another branch, no workspace.
    let pushed = up.commit("src/lib.rs", "pub fn pushed() {}\n", "a push");
    let other = m.prefetch(&prefetch(&url, Some("develop"))).unwrap();
    assert!(!other.updated);
    assert!(other.skipped.unwrap().contains("push was to develop"));
    let mut elsewhere = prefetch(&url, None);
    elsewhere.repo_full_name = "acme/other".into();
    let none = m.prefetch(&elsewhere).unwrap();
    assert!(none.skipped.unwrap().contains("no workspace"));
    assert_eq!(head(&first.path), first.head);

    // The pushed branch: the workspace is at the push, and the prefetch
    // is no use (the cleanup's age still counts from the prepare).
    let done = m
        .prefetch(&prefetch(&url, Some("refs/heads/main")))
        .unwrap();
    assert!(done.updated, "{:?}", done.skipped);
    assert_eq!(done.head.as_deref(), Some(pushed.as_str()));
    assert_eq!(head(&first.path), pushed);
    assert_eq!(WorkspaceMetadata::read(&meta_path).unwrap().last_used, used);
    let next = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    assert!(next.reused);
    assert_eq!(next.head, pushed);

    // Leased: never touched, never waited for.
    let mut leased = PrepareRequest::new("acme/app", &url);
    leased.lease_seconds = Some(600);
    leased.holder = Some("job-1".into());
    let lease = m.prepare(&leased).unwrap().lease.unwrap();
    std::fs::write(first.path.join("work.txt"), "the job's\n").unwrap();
    up.commit("src/lib.rs", "pub fn later() {}\n", "another push");
    let started = Instant::now();
    let busy = m.prefetch(&prefetch(&url, Some("main"))).unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(busy.skipped.unwrap().contains("in use"));
    assert_eq!(head(&first.path), pushed);
    assert!(first.path.join("work.txt").exists());
    m.release_lease(lease.id).unwrap();

    // The forge's spelling of the URL (`.git`) is the same repository: the
    // workspace is prepared from its own spelling, through its own mirror.
    let mirrors = crate::support::mirror_folders(base.path()).len();
    let third = up.commit("src/lib.rs", "pub fn third() {}\n", "a third push");
    let spelt = m
        .prefetch(&prefetch(&format!("{url}.git"), Some("main")))
        .unwrap();
    assert!(spelt.updated, "{spelt:?}");
    assert_eq!(head(&first.path), third);
    assert_eq!(crate::support::mirror_folders(base.path()).len(), mirrors);

    // A prefetch never clones afresh: a broken checkout is the next
    // prepare's to heal.
    std::fs::remove_file(first.path.join(".git/HEAD")).unwrap();
    let broken = m.prefetch(&prefetch(&url, Some("main")));
    assert!(
        broken.is_err() || !broken.as_ref().unwrap().updated,
        "{broken:?}"
    );
    assert!(
        !first.path.join(".git/HEAD").exists(),
        "the prefetch cloned afresh"
    );
}

/// Two tenants: A's workspace of her private repository was prepared
/// with her credential. A push event (anonymous URL) and B's credential
/// through the generic hook leave it as it is: the checkout is A's.
#[test]
fn a_push_never_moves_another_tenants_workspace() {
    let server = SmartHttp::start("forge-admin", "admin-only-9b");
    server.add_account("alice", "alice-token-71", &["acme/app"]);
    server.add_account("bob", "bob-token-22", &["acme/app"]);
    let up = Upstream::new();
    server.publish("acme/app", &up);
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let a = m
        .prepare(&PrepareRequest::new(
            "acme/app",
            server.url_as("alice", "alice-token-71", "acme/app"),
        ))
        .unwrap();
    let bare = server.bare("acme/app");
    let tip = git(&bare, &["rev-parse", "main"]);
    assert_eq!(tip, a.head);
    // A push upstream (into the served bare repository).
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("w");
    let out = std::process::Command::new("git")
        .args(["clone", "-q"])
        .arg(&bare)
        .arg(&work)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(work.join("new.txt"), "pushed\n").unwrap();
    git(&work, &["add", "new.txt"]);
    git(
        &work,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@x",
            "commit",
            "-qm",
            "push",
        ],
    );
    git(&work, &["push", "-q", "origin", "main"]);

    for url in [
        server.url("acme/app"),
        server.url_as("bob", "bob-token-22", "acme/app"),
    ] {
        let out = m.prefetch(&prefetch(&url, Some("main"))).unwrap();
        assert!(!out.updated);
        assert!(
            out.skipped
                .as_deref()
                .unwrap()
                .contains("another credential"),
            "{out:?}"
        );
        assert_eq!(head(&a.path), a.head);
    }
    // A's own credential (the generic hook from A's backend) does.
    let own = m
        .prefetch(&prefetch(
            &server.url_as("alice", "alice-token-71", "acme/app"),
            Some("main"),
        ))
        .unwrap();
    assert!(own.updated, "{own:?}");
    assert!(a.path.join("new.txt").exists());
}

/// A burst of pushes: every push's prefetch runs, waits its turn or
/// folds into the waiting one, never "in use" by another prefetch, and
/// the workspace ends at the burst's last commit.
#[test]
fn a_burst_of_pushes_ends_at_the_last_one() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let url = daemon.url("upstream");
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let ws = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    let mut last = String::new();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let mut running = Vec::new();
        for i in 0..8 {
            last = up.commit("src/lib.rs", &format!("pub fn f{i}() {{}}\n"), "a push");
            let (m, url) = (&m, &url);
            running.push(s.spawn(move || m.prefetch(&prefetch(url, Some("main"))).unwrap()));
        }
        running.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for out in &outcomes {
        let why = out.skipped.as_deref().unwrap_or("");
        assert!(out.updated || why.starts_with("folded"), "{out:?}");
    }
    assert!(outcomes.iter().any(|o| o.updated));
    assert_eq!(head(&ws.path), last, "{outcomes:?}");
}

/// The hooks over HTTP: GitHub's signed push event, the generic hook,
/// and what is refused or ignored.
#[test]
fn signed_push_events_reach_the_workspace_over_http() {
    let up = Upstream::new();
    let daemon = GitDaemon::start(up.path.parent().unwrap());
    let url = daemon.url("upstream");
    let base = tempfile::tempdir().unwrap();
    let mut cmd = cli_local(base.path(), &[]);
    cmd.env("WORKSPACE_API_TOKEN", TOKEN)
        .env("WORKSPACE_WEBHOOK_SECRET", SECRET);
    let served = serve(cmd);
    let root = format!("http://{}", served.addr);
    let client = reqwest::blocking::Client::new();
    let out: Value = client
        .post(format!("{root}/workspace/prepare"))
        .bearer_auth(TOKEN)
        .json(&json!({"repo_full_name": "acme/app", "clone_url": url}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let repo = Path::new(out["path"].as_str().unwrap()).to_path_buf();
    let hook = |path: &str, event: &str, body: &[u8], sig: Option<String>| {
        let mut r = client
            .post(format!("{root}{path}"))
            .header("X-GitHub-Event", event)
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(sig) = sig {
            r = r.header("X-Hub-Signature-256", sig);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or_default())
    };

    let pushed = up.commit("src/lib.rs", "pub fn pushed() {}\n", "a push");
    let body = push_event(&url, "refs/heads/main");
    // Unsigned, or signed with another secret: refused, nothing moves.
    let (status, _) = hook("/hooks/github", "push", &body, None);
    assert_eq!(status, 401);
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    let (status, answer) = hook("/hooks/github", "push", &forged, Some(signature(&body)));
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("bad_signature"))
    );
    let (status, _) = hook("/hooks/github", "ping", b"{}", Some(signature(b"{}")));
    assert_eq!(status, 200);
    let tag = push_event(&url, "refs/tags/v1");
    let (status, answer) = hook("/hooks/github", "push", &tag, Some(signature(&tag)));
    assert_eq!((status, answer["accepted"].as_bool()), (202, Some(false)));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(head(&repo), pushed);

    // Signed: accepted at once, the workspace at the push soon after.
    let (status, answer) = hook("/hooks/github", "push", &body, Some(signature(&body)));
    assert_eq!(status, 202, "{answer}");
    wait_for_head(&repo, &pushed);

    // The generic hook, with the bearer token; ?wait=1 on the node's own
    // endpoint gives the outcome.
    let again = up.commit("src/lib.rs", "pub fn again() {}\n", "another push");
    let generic = serde_json::to_vec(&json!({
        "repo_full_name": "acme/app", "clone_url": url, "ref": "main"
    }))
    .unwrap();
    let r = client
        .post(format!("{root}/hooks/push"))
        .bearer_auth(TOKEN)
        .body(generic.clone())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    wait_for_head(&repo, &again);
    let r: Value = client
        .post(format!("{root}/workspace/prefetch?wait=1"))
        .bearer_auth(TOKEN)
        .body(generic)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(r["updated"], true, "{r}");
    let bad = client
        .post(format!("{root}/workspace/prefetch"))
        .bearer_auth(TOKEN)
        .json(&json!({"repo_full_name": "acme/app", "clone_url": "ftp://x/y"}))
        .send()
        .unwrap();
    // Checked before the 202: an ftp URL is refused (422), as a prepare's.
    assert_eq!(bad.status().as_u16(), 422);
}

/// Nothing of a webhook's body is read before it could be one: without
/// a signature-shaped header the answer is 401 at once, however large the
/// body says it is; a delivery seen before is ignored.
#[test]
fn an_unsigned_hook_is_refused_before_its_body_and_a_replay_is_ignored() {
    use std::io::{Read, Write};
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let mut cmd = cli_local(base.path(), &[]);
    cmd.env("WORKSPACE_API_TOKEN", TOKEN)
        .env("WORKSPACE_WEBHOOK_SECRET", SECRET);
    let served = serve(cmd);
    let started = Instant::now();
    let mut stream = std::net::TcpStream::connect(&served.addr).unwrap();
    write!(
        stream,
        "POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         Content-Length: 100000000\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = [0u8; 12];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 401");
    assert!(started.elapsed() < Duration::from_secs(5));

    let client = reqwest::blocking::Client::new();
    let body = push_event(&up.url(), "refs/heads/main");
    let send = || {
        let r = client
            .post(format!("http://{}/hooks/github", served.addr))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("X-Hub-Signature-256", signature(&body))
            .body(body.clone())
            .send()
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap())
    };
    let (status, first) = send();
    assert_eq!(
        (status, first["accepted"].as_bool()),
        (202, Some(true)),
        "{first}"
    );
    let (status, again) = send();
    assert_eq!(
        (status, again["accepted"].as_bool()),
        (202, Some(false)),
        "{again}"
    );
    assert!(
        again["ignored"]
            .as_str()
            .unwrap()
            .contains("handled already")
    );
}

/// A node without a webhook secret has no hooks.
#[test]
fn without_a_secret_the_hooks_are_off() {
    let base = tempfile::tempdir().unwrap();
    let served = crate::support::serve_local(base.path(), TOKEN);
    let r = reqwest::blocking::Client::new()
        .post(format!("http://{}/hooks/github", served.addr))
        .header("X-GitHub-Event", "ping")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "webhooks_not_configured");
}

fn wait_for_head(repo: &Path, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while head(repo) != want {
        assert!(Instant::now() < deadline, "the push was not prefetched");
        std::thread::sleep(Duration::from_millis(50));
    }
}
