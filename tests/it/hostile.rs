//! Policies a deployment might load by mistake or malice (built from
//! tests/policies/hostile): each ends in a clear error for that call or at
//! start-up, the host stays usable, nothing outside the base is touched.

use crate::support::{Upstream, builder, hostile_policy};
use fixsec_workspace::http::{self, ApiToken, ServerConfig};
use fixsec_workspace::{ErrorKind, PolicyLimits, PrepareRequest, WorkspaceManager};
use std::path::Path;
use std::time::{Duration, Instant};

/// A small CPU budget so the endless loop ends fast; memory as in production.
fn limits() -> PolicyLimits {
    PolicyLimits {
        fuel: 100_000_000,
        ..PolicyLimits::default()
    }
}

fn with_policy(feature: &str, base: &Path) -> fixsec_workspace::Result<WorkspaceManager> {
    builder(base)
        .policy_file(hostile_policy(feature))
        .policy_limits(limits())
        .build()
}

/// Everything under `outer` except the base's own bookkeeping (folders,
/// the principal key, the compiled-policy cache).
fn stray_files(outer: &Path) -> Vec<String> {
    walkdir::WalkDir::new(outer)
        .min_depth(1)
        .into_iter()
        .filter_map(Result::ok)
        .map(|e| e.path().strip_prefix(outer).unwrap().display().to_string())
        .filter(|p| {
            !matches!(
                p.as_str(),
                "ws" | "ws/.locks" | "ws/.staging" | "ws/.trash" | "ws/.principal-key"
            )
        })
        .filter(|p| !p.starts_with("ws/.cache"))
        .collect()
}

#[test]
fn names_that_escape_the_base_are_refused() {
    let up = Upstream::new();
    for feature in ["escape", "absolute"] {
        let outer = tempfile::tempdir().unwrap();
        let m = with_policy(feature, &outer.path().join("ws")).unwrap();
        let err = m.workspace_name("acme/demo").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy, "{feature}");
        assert!(
            err.to_string().contains("unsafe workspace name"),
            "{feature}: {err}"
        );
        let err = m
            .prepare(&PrepareRequest::new("acme/demo", up.url()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
        assert!(
            stray_files(outer.path()).is_empty(),
            "{feature}: {:?}",
            stray_files(outer.path())
        );
    }
}

#[test]
fn an_endless_loop_is_stopped_by_the_cpu_budget() {
    let base = tempfile::tempdir().unwrap();
    let m = with_policy("spin", base.path()).unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = m.workspace_name("acme/demo").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy);
        assert!(err.to_string().contains("CPU budget"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
    }
    // The host itself is fine.
    assert_eq!(m.stats().unwrap().total_workspaces, 0);
}

#[test]
fn the_default_cpu_budget_also_ends_a_loop() {
    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .policy_file(hostile_policy("spin"))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = m.workspace_name("acme/demo").unwrap_err();
    assert!(err.to_string().contains("CPU budget"), "{err}");
    println!(
        "default fuel ended an endless loop after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn endless_allocation_is_stopped_by_the_memory_limit() {
    let base = tempfile::tempdir().unwrap();
    let m = with_policy("hog", base.path()).unwrap();
    let err = m.workspace_name("acme/demo").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("memory"), "{err}");
    assert_eq!(m.stats().unwrap().total_workspaces, 0);
}

#[test]
fn a_panic_is_an_error_carrying_its_message() {
    let base = tempfile::tempdir().unwrap();
    let m = with_policy("panic", base.path()).unwrap();
    let err = m.workspace_name("acme/demo").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(
        err.to_string().contains("hostile policy panics on purpose"),
        "{err}"
    );
    assert!(m.health().is_err());
    assert!(m.stats().is_ok());
}

#[test]
fn an_incompatible_contract_version_is_refused_naming_both_versions() {
    let base = tempfile::tempdir().unwrap();
    let err = with_policy("future", base.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let msg = err.to_string();
    assert!(msg.contains("fixsec:workspace@0.3.0"), "{msg}");
    assert!(msg.contains("fixsec:workspace@0.2.x"), "{msg}");
    assert!(msg.contains("fixsec:workspace@0.1.x"), "{msg}");
    assert!(msg.contains("fixsec:workspace/policy@0.9.0"), "{msg}");
}

#[test]
fn a_policy_cannot_touch_another_workspace_url_or_path() {
    let up = Upstream::new();
    for (feature, expected) in [
        ("other-workspace", "only the workspace being prepared"),
        ("steal-url", "the caller asked for"),
        ("import-escape", "unsafe workspace name"),
    ] {
        let outer = tempfile::tempdir().unwrap();
        let m = with_policy(feature, &outer.path().join("ws")).unwrap();
        let err = m
            .prepare(&PrepareRequest::new("acme/demo", up.url()))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy, "{feature}");
        assert!(err.to_string().contains(expected), "{feature}: {err}");
        // At most the (empty) folder of the workspace being prepared exists.
        let strays: Vec<String> = stray_files(outer.path())
            .into_iter()
            .filter(|p| p != "ws/hostile_acmedemo" && !p.starts_with("ws/.locks/"))
            .collect();
        assert!(strays.is_empty(), "{feature}: {strays:?}");
    }
}

#[test]
fn a_policy_cannot_remove_a_workspace_in_use() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let m = with_policy("remove-all", base.path()).unwrap();
    let a = m
        .prepare(&PrepareRequest::new("acme/a", up.url()))
        .unwrap()
        .name;
    let b = m
        .prepare(&PrepareRequest::new("acme/b", up.url()))
        .unwrap()
        .name;
    let lease = m.lease(&b).unwrap();
    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 1);
    assert_eq!(report.removed[0].name, a);
    assert!(report.skipped.iter().any(|s| s.name == b));
    assert!(base.path().join(&b).join("repo/README.md").is_file());
    drop(lease);
}

#[test]
fn the_server_stays_up_through_policy_failures() {
    let base = tempfile::tempdir().unwrap();
    let m = with_policy("spin", base.path()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = ServerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = rt
        .block_on(http::start(m, &config, ApiToken::new("t").unwrap()))
        .unwrap();
    let url = format!("http://{}", server.addr());
    let client = reqwest::blocking::Client::new();
    for _ in 0..2 {
        let resp = client
            .post(format!("{url}/workspace/prepare"))
            .bearer_auth("t")
            .json(&serde_json::json!({"repo_full_name": "a/b", "clone_url": "https://127.0.0.1:1/x.git"}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 500);
        let body: serde_json::Value = resp.json().unwrap();
        assert_eq!(body["error"], "policy");
        let stats = client
            .get(format!("{url}/workspace/stats"))
            .bearer_auth("t")
            .send()
            .unwrap();
        assert_eq!(stats.status(), 200);
    }
    let metrics = client
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("fixsec_workspace_errors_total{kind=\"policy\"} 2"),
        "{metrics}"
    );
    rt.block_on(server.shutdown(Duration::from_secs(5)));
}
