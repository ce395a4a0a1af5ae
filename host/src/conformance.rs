//! `fixsec-workspace policy check`: does a component implement the contract
//! this host speaks, and does it behave as every policy must?
//!
//! Checks: the contract version; names deterministic, valid and unique over
//! a corpus of tricky inputs; GitHub names accepted; prepare of a real
//! repository (twice); cleanup never removes a workspace in use; health
//! answers for ordinary and extreme figures. Each check runs against a real
//! manager on a temporary base directory.
//!
//! With [`Options::same_names_as_default`], the policy must also name every
//! input exactly as the default policy does: a deployment that swaps
//! policies keeps its workspaces only if the names agree.

use crate::model::{HealthStatus, PrepareRequest};
use crate::names::WorkspaceName;
use crate::policy::CONTRACT;
use crate::{Config, WorkspaceManager};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// One check and its outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What is checked.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// All checks of one component.
#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    /// The file checked.
    pub policy: String,
    /// The contract the host speaks.
    pub contract: &'static str,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// All passed.
    pub passed: bool,
}

/// Inputs every policy must name safely.
pub const NAME_CORPUS: &[&str] = &[
    "facebook/react",
    "microsoft/vscode",
    "Owner/Repo",
    "owner/repo",
    "owner/repo.git",
    "a/b",
    "..",
    "../../etc/passwd",
    "/",
    "\\",
    "a\\b",
    "nul\0byte",
    "tab\tand\nnewline",
    "CON",
    "con.txt",
    "NUL",
    "COM1",
    "LPT1.log",
    "trailing.",
    "trailing ",
    "ünïcödé/репо",
    "日本語/レポ",
    "emoji/🦀",
    "-leading-dash/-repo",
];

/// GitHub-shaped names a policy must accept.
const GITHUB_NAMES: &[&str] = &[
    "facebook/react",
    "rust-lang/rust",
    "user/project.js",
    "a-b/c_d.e",
];

fn check(checks: &mut Vec<Check>, name: &str, result: Result<String, String>) {
    let (passed, detail) = match result {
        Ok(d) => (true, d),
        Err(d) => (false, d),
    };
    checks.push(Check {
        name: name.to_string(),
        passed,
        detail,
    });
}

/// What to check beyond what every policy must do.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Names must equal the embedded default policy's, input for input.
    pub same_names_as_default: bool,
}

/// Run every check, and those `options` ask for, against `path`.
pub fn run_with(path: &Path, options: Options) -> CheckReport {
    let mut checks = Vec::new();
    let scratch = tempfile::tempdir().expect("a temporary directory for the checks");
    let manager = |base: &Path| {
        WorkspaceManager::from_config(Config {
            base_path: base.to_path_buf(),
            allow_local_urls: true,
            policy: crate::PolicySource::File(path.to_path_buf()),
            removal: crate::adapter::removal::RemovalConfig {
                max_retries: 2,
                initial_delay: std::time::Duration::from_millis(10),
                max_delay: std::time::Duration::from_millis(50),
            },
            ..Config::default()
        })
    };
    let m = match manager(&scratch.path().join("names")) {
        Ok(m) => {
            check(
                &mut checks,
                &format!("implements {CONTRACT}"),
                Ok(format!(
                    "loaded; built against {}",
                    m.policy_info().contract
                )),
            );
            m
        }
        Err(e) => {
            check(
                &mut checks,
                &format!("implements {CONTRACT}"),
                Err(e.to_string()),
            );
            return finish(path, checks);
        }
    };

    check(
        &mut checks,
        "names are deterministic, valid and unique",
        names(&m),
    );
    check(
        &mut checks,
        "GitHub repository names are accepted",
        github(&m),
    );
    if options.same_names_as_default {
        check(
            &mut checks,
            "names equal the default policy's",
            WorkspaceManager::builder()
                .base_path(scratch.path().join("default-names"))
                .build()
                .map_err(|e| e.to_string())
                .and_then(|default| same_names(&m, &default)),
        );
    }
    let upstream = scratch.path().join("upstream");
    check(
        &mut checks,
        "prepare clones a real repository and prepares it again",
        make_upstream(&upstream).and_then(|head| prepare(&m, &upstream, &head)),
    );
    check(
        &mut checks,
        "cleanup never removes a workspace in use",
        manager(&scratch.path().join("cleanup"))
            .map_err(|e| e.to_string())
            .and_then(|m| cleanup(&m, &upstream)),
    );
    check(
        &mut checks,
        "health answers with a known status",
        health(&m),
    );
    finish(path, checks)
}

fn finish(path: &Path, checks: Vec<Check>) -> CheckReport {
    CheckReport {
        policy: path.display().to_string(),
        contract: CONTRACT,
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

fn names(m: &WorkspaceManager) -> Result<String, String> {
    let long = "x".repeat(10_000);
    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut errors = 0;
    for input in NAME_CORPUS.iter().copied().chain([long.as_str()]) {
        let first = m.workspace_name(input);
        let second = m.workspace_name(input);
        match (first, second) {
            (Ok(a), Ok(b)) => {
                if a != b {
                    return Err(format!("{input:?} named {a} then {b}"));
                }
                WorkspaceName::parse(&a).map_err(|e| format!("{input:?}: {e}"))?;
                if let Some(other) = seen.insert(a.clone(), input) {
                    return Err(format!("{other:?} and {input:?} both named {a}"));
                }
            }
            (Err(e), Err(_)) if e.kind() != crate::ErrorKind::Policy => errors += 1,
            (Err(e), _) | (_, Err(e)) => return Err(format!("{input:?}: {e}")),
        }
    }
    Ok(format!(
        "{} inputs named, {errors} refused with a clear error",
        seen.len()
    ))
}

/// Every corpus input, GitHub name and long name named alike by `m` and
/// the default policy.
fn same_names(m: &WorkspaceManager, default: &WorkspaceManager) -> Result<String, String> {
    let long = [
        format!("{}/{}", "o".repeat(39), "r".repeat(100)),
        format!("owner/{}", "r".repeat(60)),
        "x".repeat(10_000),
    ];
    let inputs: Vec<&str> = NAME_CORPUS
        .iter()
        .chain(GITHUB_NAMES)
        .copied()
        .chain(long.iter().map(String::as_str))
        .collect();
    for input in &inputs {
        let (ours, theirs) = (m.workspace_name(input), default.workspace_name(input));
        match (ours, theirs) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(_), Err(_)) => {}
            (a, b) => {
                return Err(format!(
                    "{:?}: this policy says {}, the default {}",
                    input.chars().take(60).collect::<String>(),
                    a.unwrap_or_else(|e| e.to_string()),
                    b.unwrap_or_else(|e| e.to_string())
                ));
            }
        }
    }
    Ok(format!("{} inputs named alike", inputs.len()))
}

fn github(m: &WorkspaceManager) -> Result<String, String> {
    for name in GITHUB_NAMES {
        m.workspace_name(name).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(format!("{} names", GITHUB_NAMES.len()))
}

fn make_upstream(dir: &Path) -> Result<String, String> {
    let fail = |e: git2::Error| format!("making a test repository: {e}");
    let repo = git2::Repository::init(dir).map_err(fail)?;
    std::fs::write(dir.join("README.md"), "# conformance\n").map_err(|e| e.to_string())?;
    let mut index = repo.index().map_err(fail)?;
    index.add_path(Path::new("README.md")).map_err(fail)?;
    index.write().map_err(fail)?;
    let tree = repo
        .find_tree(index.write_tree().map_err(fail)?)
        .map_err(fail)?;
    let sig = git2::Signature::now("check", "check@example.invalid").map_err(fail)?;
    let oid = repo
        .commit(Some("HEAD"), &sig, &sig, "conformance", &tree, &[])
        .map_err(fail)?;
    Ok(oid.to_string())
}

fn prepare(m: &WorkspaceManager, upstream: &Path, head: &str) -> Result<String, String> {
    let req = PrepareRequest::new("conformance/check", upstream.display().to_string());
    let first = m.prepare(&req).map_err(|e| format!("first prepare: {e}"))?;
    let second = m
        .prepare(&req)
        .map_err(|e| format!("second prepare: {e}"))?;
    for out in [&first, &second] {
        if out.head != head {
            return Err(format!("checked out {} instead of {head}", out.head));
        }
    }
    Ok(format!(
        "second prepare {}",
        if second.reused {
            "reused the clone"
        } else {
            "cloned again"
        }
    ))
}

fn cleanup(m: &WorkspaceManager, upstream: &Path) -> Result<String, String> {
    let url = upstream.display().to_string();
    let mut names = Vec::new();
    for repo in ["conformance/a", "conformance/b"] {
        let out = m
            .prepare(&PrepareRequest::new(repo, url.as_str()))
            .map_err(|e| format!("prepare {repo}: {e}"))?;
        names.push(out.name);
    }
    let lease = m.lease(&names[0]).map_err(|e| e.to_string())?;
    let report = m.cleanup(Some(0.0)).map_err(|e| format!("cleanup: {e}"))?;
    let still_there = m.get(&names[0]).map_err(|e| e.to_string())?.is_some();
    drop(lease);
    if !still_there {
        return Err(format!("the leased workspace {} was removed", names[0]));
    }
    if !report.failed.is_empty() {
        return Err(format!("removals failed: {:?}", report.failed));
    }
    Ok(format!(
        "in-use workspace kept; {} removed, {} skipped",
        report.cleaned_workspaces,
        report.skipped.len()
    ))
}

fn health(m: &WorkspaceManager) -> Result<String, String> {
    use crate::model::Thresholds;
    use crate::policy::HealthFigures;
    let current = m.health().map_err(|e| e.to_string())?.status;
    let thresholds = Thresholds {
        workspace_size_warning_mb: 1000,
        total_size_warning_mb: 5120,
        max_workspaces: 100,
        max_age_hours: 24.0,
    };
    let empty = HealthFigures::default();
    let extreme = HealthFigures {
        total_workspaces: u32::MAX,
        total_size_bytes: u64::MAX,
        in_use: u32::MAX,
        largest: vec![("huge_12345678".into(), u64::MAX)],
        stale: u32::MAX,
        without_metadata: u32::MAX,
        pending_deletions: u32::MAX,
        free_space_bytes: Some(0),
    };
    let mut seen = vec![current.as_str()];
    for (what, stats) in [("no workspaces", empty), ("extreme figures", extreme)] {
        let status = m
            .assess(&stats, &thresholds)
            .map_err(|e| format!("{what}: {e}"))?
            .status;
        seen.push(status.as_str());
        if what == "extreme figures" && status == HealthStatus::Healthy {
            return Err("extreme figures (disk full, u32::MAX workspaces) judged healthy".into());
        }
    }
    Ok(format!("current/empty/extreme: {}", seen.join("/")))
}
