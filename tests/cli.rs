//! The `fixsec-workspace` binary, run as a user (or a script) would.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use support::Upstream;

fn run(base: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fixsec-workspace"))
        .args(args)
        .env("WORKSPACE_BASE_PATH", base)
        .env_remove("WORKSPACE_POLICY")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn name_prints_the_folder_name() {
    let base = tempfile::tempdir().unwrap();
    let out = run(base.path(), &["name", "facebook/react"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "facebook_react_4f32b4cf"
    );
}

#[test]
fn a_whole_lifecycle_with_json_output() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let url = up.url();
    let prep = [
        "--allow-local-urls",
        "--json",
        "prepare",
        "acme/demo",
        url.as_str(),
        "--branch",
        "main",
    ];
    let first = run(base.path(), &prep);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Piped: no progress bar, nothing on stderr.
    assert!(
        first.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let v = json(&first);
    for key in ["name", "path", "reused", "head"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    assert_eq!(v["reused"], false);
    assert_eq!(v["head"], up.head_of("main").as_str());
    let name = v["name"].as_str().unwrap().to_string();

    let second = json(&run(base.path(), &prep));
    assert_eq!(second["reused"], true);

    let list = json(&run(base.path(), &["--json", "list"]));
    assert_eq!(list[0]["name"], name.as_str());
    assert_eq!(list[0]["repo_full_name"], "acme/demo");

    let stats = json(&run(base.path(), &["--json", "stats"]));
    assert_eq!(stats["total_workspaces"], 1);
    assert!(stats["total_size_mb"].is_number());
    assert_eq!(stats["base_path"], base.path().display().to_string());

    let health = json(&run(base.path(), &["--json", "health"]));
    assert_eq!(health["status"], "healthy");
    for key in ["workspace_stats", "warnings", "recommendations"] {
        assert!(health.get(key).is_some(), "{key}");
    }

    let keep = json(&run(base.path(), &["--json", "cleanup"]));
    assert_eq!(keep["cleaned_workspaces"], 0);
    assert_eq!(keep["max_age_hours"], 24.0);
    let clean = json(&run(
        base.path(),
        &["--json", "cleanup", "--max-age-hours", "0"],
    ));
    assert_eq!(clean["cleaned_workspaces"], 1);
    assert_eq!(clean["removed"][0]["name"], name.as_str());
    assert!(!base.path().join(&name).exists());
}

#[test]
fn human_output_and_remove() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let url = up.url();
    let out = run(
        base.path(),
        &["--allow-local-urls", "prepare", "acme/demo", &url],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("cloned acme_demo_"), "{text}");
    let name = text.split_whitespace().nth(1).unwrap().to_string();
    let list = String::from_utf8_lossy(&run(base.path(), &["list"]).stdout).into_owned();
    assert!(list.contains(&name) && list.contains("acme/demo"), "{list}");
    let removed = run(base.path(), &["remove", &name]);
    assert!(removed.status.success());
    assert!(String::from_utf8_lossy(&removed.stdout).starts_with(&format!("removed {name}")));
    let again = run(base.path(), &["remove", &name]);
    assert_eq!(again.status.code(), Some(3), "not found");
}

#[test]
fn errors_have_exit_codes_and_json_bodies() {
    let base = tempfile::tempdir().unwrap();
    let refused = run(base.path(), &["--json", "prepare", "a/b", "ext::sh -c id"]);
    assert_eq!(refused.status.code(), Some(2));
    let body = json(&refused);
    assert_eq!(body["error"], "refused");
    assert!(body["detail"].as_str().unwrap().contains("ext::"));

    let local = run(base.path(), &["prepare", "a/b", "/tmp/x"]);
    assert_eq!(local.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&local.stderr).contains("--allow-local-urls"));

    let bad_age = run(base.path(), &["cleanup", "--max-age-hours", "-3"]);
    assert_eq!(bad_age.status.code(), Some(2));

    let bad_policy = run(base.path(), &["--policy", "/nonexistent.wasm", "stats"]);
    assert_eq!(bad_policy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_policy.stderr).contains("/nonexistent.wasm"));

    let bad_env = Command::new(env!("CARGO_BIN_EXE_fixsec-workspace"))
        .args(["stats"])
        .env("WORKSPACE_BASE_PATH", base.path())
        .env("WORKSPACE_MAX_AGE_HOURS", "forever")
        .output()
        .unwrap();
    assert_eq!(bad_env.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_env.stderr).contains("WORKSPACE_MAX_AGE_HOURS"));
}

/// `serve` as a process: a generated token printed once (never logged),
/// JSON request logs, a real request, and a clean exit on SIGTERM.
#[cfg(unix)]
#[test]
fn serve_prints_a_token_once_logs_json_and_stops_on_sigterm() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;

    let base = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixsec-workspace"))
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("WORKSPACE_BASE_PATH", base.path())
        .env("WORKSPACE_LOG_FORMAT", "json")
        .env_remove("WORKSPACE_API_TOKEN")
        .env_remove("WORKSPACE_API_TOKEN_FILE")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let (mut token, mut addr) = (None, None);
    let mut seen = String::new();
    while addr.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited: {seen}"
        );
        seen.push_str(&line);
        let trimmed = line.trim();
        if token.is_none() && trimmed.len() == 64 && trimmed.chars().all(|c| c.is_ascii_hexdigit())
        {
            token = Some(trimmed.to_string());
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(trimmed)
            && let Some(a) = v["fields"]["addr"].as_str()
        {
            addr = Some(a.to_string());
        }
    }
    let token = token.expect("a generated token is printed");
    let client = reqwest::blocking::Client::new();
    let stats = client
        .get(format!("http://{}/workspace/stats", addr.as_ref().unwrap()))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(stats.status(), 200);
    let denied = client
        .get(format!("http://{}/workspace/stats", addr.as_ref().unwrap()))
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    stderr.read_to_string(&mut seen).unwrap();
    assert_eq!(
        seen.matches(&token).count(),
        1,
        "the token is printed exactly once"
    );
    let request_logs: Vec<&str> = seen.lines().filter(|l| l.contains("\"request\"")).collect();
    assert_eq!(request_logs.len(), 2, "{seen}");
    assert!(
        request_logs
            .iter()
            .all(|l| l.contains("\"status\":") && !l.contains(&token))
    );
    assert!(seen.contains("shutting down"));
}

/// The compiled policy is cached under the base; a damaged cache file is
/// recompiled and replaced, never trusted.
#[test]
fn compiled_policy_cache_is_written_and_survives_damage() {
    let base = tempfile::tempdir().unwrap();
    let cache = base.path().join(".cache/policies");
    assert!(run(base.path(), &["name", "a/b"]).status.success());
    let files: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    let good_len = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::write(&files[0], b"damaged").unwrap();
    let out = run(base.path(), &["name", "facebook/react"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "facebook_react_4f32b4cf"
    );
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().len(),
        good_len,
        "rewritten"
    );
}
