//! A forge on loopback for the PR-flow tests: an upstream with a branch,
//! an annotated tag and a pull-request ref, published behind Basic auth by
//! [`SmartHttp`]; and `git` run in a workspace as the guide's route runs it.

use super::Upstream;
use super::smart_http::SmartHttp;
use git2::{Oid, Signature};
use std::path::Path;
use std::process::Command;

/// The forge's credential: must never reach the disk or a log.
pub const SECRET: &str = "s3cr3t-forge-token-6e1f";
pub const API_TOKEN: &str = "api-token-0123456789abcdef";
pub const FIX_BRANCH: &str = "fixsec/fix-1";

/// What a forge holds: the upstream (main, develop, an annotated tag
/// `v1.0` on the first commit, and `refs/pull/1/head`, a commit on no
/// branch) published as `acme/app.git`.
pub struct Forge {
    pub up: Upstream,
    pub http: SmartHttp,
    pub first: String,
    pub pull_head: String,
}

impl Forge {
    pub fn new() -> Self {
        let up = Upstream::new();
        let (first, pull_head) = {
            let repo = &up.repo;
            let sig = Signature::now("Test", "test@example.invalid").unwrap();
            let main = repo
                .find_commit(Oid::from_str(&up.head_of("main")).unwrap())
                .unwrap();
            let mut first = main.clone();
            while let Ok(parent) = first.parent(0) {
                first = parent;
            }
            repo.tag("v1.0", first.as_object(), &sig, "release 1.0", false)
                .unwrap();
            let blob = repo.blob(b"the fix\n").unwrap();
            let mut tree = repo.treebuilder(Some(&main.tree().unwrap())).unwrap();
            tree.insert("fix.txt", blob, 0o100644).unwrap();
            let tree = repo.find_tree(tree.write().unwrap()).unwrap();
            let pull_head = repo
                .commit(
                    Some("refs/pull/1/head"),
                    &sig,
                    &sig,
                    "a pull request",
                    &tree,
                    &[&main],
                )
                .unwrap();
            (first.id().to_string(), pull_head.to_string())
        };
        let http = SmartHttp::start("x-access-token", SECRET);
        http.publish("acme/app", &up);
        Forge {
            up,
            http,
            first,
            pull_head,
        }
    }

    pub fn url(&self) -> String {
        self.http.url_with_credential("acme/app")
    }

    pub fn branch_on_server(&self, branch: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.http.bare("acme/app"))
            .args([
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// `git` in a workspace, as the guide's route runs it; stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=fixsec-bot",
            "-c",
            "user.email=bot@example.invalid",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}
