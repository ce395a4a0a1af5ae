//! Policies as plug-ins: a second policy changes behaviour without a
//! rebuild, `policy check` tells good components from bad ones, and a
//! running server swaps its policy (endpoint and SIGHUP) without a restart.

use crate::support;
use crate::support::{Upstream, age_workspace, component, hostile_policy};
use fixsec_workspace::DEFAULT_POLICY;
use fixsec_workspace::http::{self, ApiToken, ServerConfig};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn quota_lru() -> PathBuf {
    component("fixsec-policy-quota-lru", None)
}

fn default_policy_file(dir: &Path) -> PathBuf {
    let path = dir.join("default.wasm");
    std::fs::write(&path, DEFAULT_POLICY).unwrap();
    path
}

fn cli(base: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    support::cli_local(base, args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn quota_lru_cleans_by_budget_where_the_default_cleans_by_age() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let url = up.url();
    let mut names = Vec::new();
    for (i, repo) in ["acme/oldest", "acme/middle", "acme/newest"]
        .iter()
        .enumerate()
    {
        let out = json(&cli(base.path(), &[], &["--json", "prepare", repo, &url]));
        let name = out["name"].as_str().unwrap().to_string();
        age_workspace(base.path(), &name, 3 - i as i64); // 3 h, 2 h, 1 h ago
        names.push(name);
    }
    // The default policy: all younger than 24 h, nothing to remove.
    let default = json(&cli(base.path(), &[], &["--json", "cleanup"]));
    assert_eq!(default["cleaned_workspaces"], 0);
    assert_eq!(default["kept"], 3);

    // quota-lru with a zero budget: least recently used go first, the most
    // recent one is kept (keep_recent=1).
    let quota = quota_lru();
    let env = [
        ("WORKSPACE_POLICY", quota.to_str().unwrap()),
        ("WORKSPACE_POLICY_SETTINGS", "quota_mb=0,keep_recent=1"),
    ];
    let health = json(&cli(base.path(), &env, &["--json", "health"]));
    assert_eq!(health["status"], "critical", "{health}");
    assert!(
        health["warnings"][0]
            .as_str()
            .unwrap()
            .contains("disk budget")
    );
    let report = json(&cli(base.path(), &env, &["--json", "cleanup"]));
    assert_eq!(report["cleaned_workspaces"], 2, "{report}");
    let removed: Vec<&str> = report["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(removed, [names[0].as_str(), names[1].as_str()]);
    assert!(base.path().join(&names[2]).join("repo").is_dir());
    assert!(
        report["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("keep_recent")
    );

    // Same names as the default: the folders stay compatible.
    let name = cli(base.path(), &env, &["name", "facebook/react"]);
    assert_eq!(
        String::from_utf8_lossy(&name.stdout).trim(),
        "facebook_react_4f32b4cf"
    );

    // A bad setting is a clear error.
    let bad = cli(
        base.path(),
        &[
            ("WORKSPACE_POLICY", quota.to_str().unwrap()),
            ("WORKSPACE_POLICY_SETTINGS", "quota_mb=lots"),
        ],
        &["cleanup"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("quota_mb"));
}

#[test]
fn policy_check_passes_good_policies_and_fails_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("unused");
    for good in [default_policy_file(dir.path()), quota_lru()] {
        let out = cli(
            &base,
            &[],
            &["--json", "policy", "check", good.to_str().unwrap()],
        );
        let report = json(&out);
        assert!(out.status.success(), "{report:#}");
        assert_eq!(report["passed"], true);
        assert_eq!(report["contract"], "fixsec:workspace@0.3.0");
        assert_eq!(report["checks"].as_array().unwrap().len(), 6);
    }
    for (bad, failing) in [
        ("escape", "names are deterministic, valid and unique"),
        ("panic", "names are deterministic, valid and unique"),
        ("future", "implements fixsec:workspace@0.3.0"),
        (
            "other-workspace",
            "prepare clones a real repository and prepares it again",
        ),
        // Its naming collides and it calls a full disk healthy. (Its cleanup
        // asks to remove a leased workspace, which the host refuses, so the
        // cleanup check holds even for it.)
        ("remove-all", "health answers with a known status"),
    ] {
        let path = hostile_policy(bad);
        let out = cli(
            &base,
            &[],
            &["--json", "policy", "check", path.to_str().unwrap()],
        );
        assert_eq!(out.status.code(), Some(1), "{bad}");
        let report = json(&out);
        let failed: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(failed.contains(&failing), "{bad}: {failed:?}");
    }
    // Asked for, names must equal the default's: quota-lru's do (it uses
    // the default's naming); the hostile policy's ("hostile_…") do not.
    for (policy, same) in [(quota_lru(), true), (hostile_policy("remove-all"), false)] {
        let out = cli(
            &base,
            &[],
            &[
                "--json",
                "policy",
                "check",
                "--same-names-as-default",
                policy.to_str().unwrap(),
            ],
        );
        let report = json(&out);
        let check = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "names equal the default policy's")
            .unwrap_or_else(|| panic!("no names check: {report:#}"))
            .clone();
        assert_eq!(check["passed"], same, "{report:#}");
        if !same {
            assert!(
                check["detail"].as_str().unwrap().contains("hostile_"),
                "{check}"
            );
        }
    }
    // Human output names each check.
    let human = cli(
        &base,
        &[],
        &["policy", "check", quota_lru().to_str().unwrap()],
    );
    let text = String::from_utf8_lossy(&human.stdout);
    assert!(
        text.contains("ok   names are deterministic") && text.contains("all checks passed"),
        "{text}"
    );
}

/// The whole health report (the policy's digest needs the token).
fn health(client: &reqwest::blocking::Client, url: &str) -> Value {
    client
        .get(format!("{url}/workspace/health"))
        .bearer_auth("t")
        .send()
        .unwrap()
        .json()
        .unwrap()
}

#[test]
fn a_running_server_swaps_its_policy_and_refuses_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.wasm");
    std::fs::copy(default_policy_file(dir.path()), &policy).unwrap();
    let config = fixsec_workspace::Config {
        base_path: dir.path().join("ws"),
        policy: fixsec_workspace::PolicySource::File(policy.clone()),
        policy_settings: [("quota_mb".to_string(), "0".to_string())].into(),
        ..Default::default()
    };
    let m = fixsec_workspace::WorkspaceManager::from_config(config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server_config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = rt
        .block_on(http::start(m, &server_config, ApiToken::new("t").unwrap()))
        .unwrap();
    let url = format!("http://{}", server.addr());
    let client = reqwest::blocking::Client::new();
    let before = health(&client, &url);
    assert_eq!(before["status"], "healthy");
    let reload = || {
        client
            .post(format!("{url}/workspace/policy/reload"))
            .bearer_auth("t")
            .send()
            .unwrap()
    };

    std::fs::copy(quota_lru(), &policy).unwrap();
    let resp = reload();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().unwrap();
    let after = health(&client, &url);
    assert_ne!(after["policy"]["digest"], before["policy"]["digest"]);
    assert_eq!(after["policy"]["digest"], body["policy"]["digest"]);
    // quota-lru with quota_mb=0 judges any use of the disk; an empty base is 0 bytes.
    assert!(
        ["healthy", "warning", "critical"].contains(&after["status"].as_str().unwrap()),
        "{after}"
    );

    std::fs::write(&policy, b"not a component").unwrap();
    let resp = reload();
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().unwrap();
    assert!(
        err["detail"]
            .as_str()
            .unwrap()
            .contains("not a WebAssembly component")
    );
    let still = health(&client, &url);
    assert_eq!(
        still["policy"]["digest"], after["policy"]["digest"],
        "the old policy stays"
    );

    let denied = client
        .post(format!("{url}/workspace/policy/reload"))
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401);
    rt.block_on(server.shutdown(Duration::from_secs(5)));
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_policy_file() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.wasm");
    std::fs::copy(default_policy_file(dir.path()), &policy).unwrap();
    let mut cmd = support::cli(&dir.path().join("ws"), &[]);
    cmd.env("WORKSPACE_POLICY", &policy)
        .env("WORKSPACE_API_TOKEN", "t");
    let support::Served {
        mut child,
        addr,
        stderr,
        ..
    } = support::serve(cmd);
    std::thread::spawn(move || for _ in stderr.lines() {});
    let url = format!("http://{addr}");
    let client = reqwest::blocking::Client::new();
    let before = health(&client, &url)["policy"]["digest"].clone();
    std::fs::copy(quota_lru(), &policy).unwrap();
    let kill = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while health(&client, &url)["policy"]["digest"] == before {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload the policy"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}
