//! The `fixsec-workspace` binary, run as a user (or a script) would.

use crate::support;

use crate::support::Upstream;
use std::path::Path;
use std::process::{Command, Output};

fn run(base: &Path, args: &[&str]) -> Output {
    support::cli(base, args).output().unwrap()
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

/// `serve` as a process: a generated token never printed (stderr is the
/// log) but written to a file only this user can read; JSON request logs,
/// a real request, and a clean exit on SIGTERM.
#[cfg(unix)]
#[test]
fn serve_writes_its_token_to_a_private_file_logs_json_and_stops_on_sigterm() {
    use std::io::Read;

    let base = tempfile::tempdir().unwrap();
    let mut cmd = support::cli(base.path(), &[]);
    cmd.env_remove("WORKSPACE_API_TOKEN")
        .env_remove("WORKSPACE_API_TOKEN_FILE");
    let support::Served {
        mut child,
        addr,
        before,
        mut stderr,
    } = support::serve(cmd);
    let mut seen = before.clone();
    let mut token = None;
    for line in before.lines() {
        let trimmed = line.trim();
        if token.is_none() && trimmed.contains(".api-token") {
            let file = base.path().join(".api-token");
            assert!(trimmed.contains(&file.display().to_string()), "{trimmed}");
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&file).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            }
            token = Some(std::fs::read_to_string(&file).unwrap().trim().to_string());
        }
    }
    let token = token.expect("where the generated token is, is printed");
    assert_eq!(token.len(), 64);
    let client = reqwest::blocking::Client::new();
    let stats = client
        .get(format!("http://{addr}/workspace/stats"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(stats.status(), 200);
    let denied = client
        .get(format!("http://{addr}/workspace/stats"))
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
        0,
        "the token never reaches stderr (the log)"
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
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
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

/// Issue 11, item 10: the compiled-policy cache is sealed to its
/// component and kept private. Another policy's compiled code copied over
/// the default's cache file (with its seal) is recompiled, never run.
/// (Builds a policy component with cargo: not in the Wine run.)
#[cfg(unix)]
#[test]
fn a_swapped_policy_cache_is_never_run() {
    let hostile = support::hostile_policy("remove-all");
    let theirs = tempfile::tempdir().unwrap();
    let out = run(
        theirs.path(),
        &[
            "--policy",
            hostile.to_str().unwrap(),
            "name",
            "facebook/react",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hostile_facebookreact"
    );
    let ours = tempfile::tempdir().unwrap();
    assert!(run(ours.path(), &["name", "a/b"]).status.success());
    let cwasm = |dir: &Path| -> std::path::PathBuf {
        std::fs::read_dir(dir.join(".cache/policies"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .unwrap()
    };
    let (victim, foreign) = (cwasm(ours.path()), cwasm(theirs.path()));
    std::fs::copy(&foreign, &victim).unwrap();
    std::fs::copy(
        foreign.with_extension("cwasm.sha256"),
        victim.with_extension("cwasm.sha256"),
    )
    .unwrap();
    let out = run(ours.path(), &["name", "facebook/react"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "facebook_react_4f32b4cf",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = ours.path().join(".cache/policies");
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // A cache others could write is not trusted at all.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::copy(&foreign, &victim).unwrap();
        let out = run(ours.path(), &["name", "facebook/react"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "facebook_react_4f32b4cf"
        );
    }
}

/// Issue 11, item 5: a remote that accepts and then says nothing fails
/// the prepare after the git timeout, instead of holding it for ever.
#[test]
fn a_silent_remote_times_out() {
    let tarpit = support::Tarpit::start();
    let base = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fixsec-workspace"))
        .args(["prepare", "acme/slow", &tarpit.url("r")])
        .env("WORKSPACE_BASE_PATH", base.path())
        .env("WORKSPACE_ALLOW_PRIVATE_NETWORKS", "1")
        .env("WORKSPACE_GIT_IO_TIMEOUT_SECONDS", "1")
        .env_remove("WORKSPACE_POLICY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the prepare still hangs on a silent remote after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(1), "a git failure");
    assert_eq!(tarpit.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// Issue 11, item 5: SIGTERM ends `serve` after the grace period even
/// while a clone hangs on a silent remote.
#[cfg(unix)]
#[test]
fn sigterm_ends_serve_while_a_clone_hangs() {
    let tarpit = support::Tarpit::start();
    let base = tempfile::tempdir().unwrap();
    let mut cmd = support::cli_local(base.path(), &[]);
    cmd.env("WORKSPACE_API_TOKEN", "t")
        .env("WORKSPACE_SHUTDOWN_GRACE_SECONDS", "1");
    let support::Served {
        mut child,
        addr,
        mut stderr,
        ..
    } = support::serve(cmd);
    std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    });
    let url = tarpit.url("r");
    std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::new()
            .post(format!("http://{addr}/workspace/prepare"))
            .bearer_auth("t")
            .json(&serde_json::json!({"repo_full_name": "acme/slow", "clone_url": url}))
            .send();
    });
    tarpit.wait_for(1);
    let started = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = started + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve still running 15 s after SIGTERM with a hung clone");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}
