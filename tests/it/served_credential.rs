//! Issue 22: stock git pushes from a leased workspace with the caller's
//! credential served from memory (git's credential cache), for the clone
//! URL's origin only and for the lease's lifetime only. Against a
//! Basic-auth smart-HTTP server on 127.0.0.1.

use crate::lifecycle::support_logs;
use crate::support::files_containing;
use crate::support::forge::git;
use crate::support::smart_http::SmartHttp;
use crate::support::{Upstream, builder};
use fixsec_workspace::{ErrorKind, PrepareRequest};
use std::path::Path;
use std::process::Output;

const TOKEN: &str = "served-token-5c2e91";

/// `git push origin <branch>` as a job would run it: stock git, no
/// terminal to prompt on, a home of its own (no helper of the user's).
pub(crate) fn job_push(repo: &Path, home: &Path, branch: &str) -> Output {
    std::process::Command::new("git")
        .current_dir(repo)
        .env_clear()
        .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["push", "origin", branch])
        .output()
        .unwrap()
}

pub(crate) fn commit_on(repo: &Path, branch: &str) -> String {
    git(repo, &["checkout", "-q", "-B", branch]);
    std::fs::write(repo.join(format!("{branch}.txt")), "fix\n").unwrap();
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "fix"]);
    git(repo, &["rev-parse", "HEAD"])
}

#[test]
fn a_leased_workspace_pushes_with_stock_git_until_the_lease_is_released() {
    let forge = SmartHttp::start("alice", TOKEN);
    forge.publish("acme/app", &Upstream::new());
    let other_port = SmartHttp::start("alice", TOKEN);
    other_port.publish("acme/app", &Upstream::new());
    let base = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let url = forge.url_as("alice", TOKEN, "acme/app");

    let logs = support_logs::capture(|| {
        let mut request = PrepareRequest::new("acme/app", url.clone());
        request.lease_seconds = Some(600);
        request.serve_credential = true;
        let ws = m.prepare(&request).unwrap();
        let lease = ws.lease.clone().unwrap();
        let commit = commit_on(&ws.path, "fix-1");
        let pushed = job_push(&ws.path, home.path(), "fix-1");
        assert!(pushed.status.success(), "{pushed:?}");
        assert_eq!(forge.git("acme/app", &["rev-parse", "fix-1"]), commit);

        // Another port of the same host is another service: nothing for it.
        git(
            &ws.path,
            &["remote", "add", "elsewhere", &other_port.url("acme/app")],
        );
        let elsewhere = std::process::Command::new("git")
            .current_dir(&ws.path)
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .env("HOME", home.path())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(["push", "elsewhere", "fix-1"])
            .output()
            .unwrap();
        assert!(!elsewhere.status.success(), "{elsewhere:?}");
        assert!(other_port.seen().iter().all(|r| r.user.is_none()));

        // Released: stock git is asked for a user name it cannot read.
        m.release_lease(lease.id).unwrap();
        commit_on(&ws.path, "fix-2");
        let refused = job_push(&ws.path, home.path(), "fix-2");
        assert!(!refused.status.success(), "{refused:?}");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("could not read Username"),
            "{refused:?}"
        );
    });
    // Nor in the folders the sockets live in (any left by other tests too).
    let socket_dirs = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("fixsec-cred-"));
    for dir in [base.path().to_path_buf(), home.path().to_path_buf()]
        .into_iter()
        .chain(socket_dirs)
    {
        assert_eq!(
            files_containing(&dir, TOKEN),
            Vec::<std::path::PathBuf>::new()
        );
    }
    assert!(!logs.contains(TOKEN), "the token is in the log");
}

#[test]
fn a_served_credential_needs_a_lease_and_an_http_url_with_a_credential() {
    let forge = SmartHttp::start("alice", TOKEN);
    forge.publish("acme/app", &Upstream::new());
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let mut no_lease = PrepareRequest::new("acme/app", forge.url_as("alice", TOKEN, "acme/app"));
    no_lease.serve_credential = true;
    let err = m.prepare(&no_lease).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("lease_seconds"), "{err}");
    let mut no_credential = PrepareRequest::new("acme/app", forge.url("acme/app"));
    no_credential.serve_credential = true;
    no_credential.lease_seconds = Some(60);
    let err = m.prepare(&no_credential).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("credential"), "{err}");
    // Nothing was prepared or leased for either.
    assert!(m.list().unwrap().is_empty());
}

/// The same through the HTTP service: `serve_credential` on
/// `POST /workspace/prepare`, stopped by `DELETE /workspace/leases/{id}`.
#[test]
fn the_http_service_serves_a_credential_until_the_lease_is_deleted() {
    use fixsec_workspace::http::{self, ApiToken, ServerConfig};
    let forge = SmartHttp::start("alice", TOKEN);
    forge.publish("acme/app", &Upstream::new());
    let base = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let m = builder(base.path()).build().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let api_token = "api-token-0123456789";
    let server = rt
        .block_on(http::start(m, &config, ApiToken::new(api_token).unwrap()))
        .unwrap();
    let api = format!("http://{}", server.addr());
    let client = reqwest::blocking::Client::new();
    let prepared: serde_json::Value = client
        .post(format!("{api}/workspace/prepare"))
        .bearer_auth(api_token)
        .json(&serde_json::json!({
            "repo_full_name": "acme/app",
            "clone_url": forge.url_as("alice", TOKEN, "acme/app"),
            "lease_seconds": 600,
            "serve_credential": true,
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let repo = std::path::PathBuf::from(prepared["path"].as_str().expect("a path"));
    let commit = commit_on(&repo, "fix-1");
    let pushed = job_push(&repo, home.path(), "fix-1");
    assert!(pushed.status.success(), "{pushed:?}");
    assert_eq!(forge.git("acme/app", &["rev-parse", "fix-1"]), commit);

    let id = prepared["lease"]["id"].as_u64().expect("a lease id");
    let released = client
        .delete(format!("{api}/workspace/leases/{id}"))
        .bearer_auth(api_token)
        .send()
        .unwrap();
    assert!(released.status().is_success(), "{released:?}");
    commit_on(&repo, "fix-2");
    let refused = job_push(&repo, home.path(), "fix-2");
    assert!(!refused.status.success(), "{refused:?}");
    assert_eq!(
        files_containing(base.path(), TOKEN),
        Vec::<std::path::PathBuf>::new()
    );
    rt.block_on(server.shutdown(std::time::Duration::from_secs(5)));
}
