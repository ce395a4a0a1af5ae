//! Test fixtures: real git repositories with history, branches, ignored and
//! untracked files; a loopback `git daemon`; managers on temp directories.

#![allow(dead_code)]

#[cfg(not(windows))]
pub mod forge;
mod servers;
#[cfg(not(windows))]
pub mod smart_http;
#[cfg(not(windows))]
pub mod webdriver;

#[allow(unused_imports)] // the Windows harness includes this file too
pub use servers::{GitDaemon, HttpStub, Tarpit};

use fixsec_workspace::RemovalConfig;
use fixsec_workspace::{WorkspaceManager, WorkspaceManagerBuilder};
use git2::{Repository, Signature};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// An upstream repository on disk (non-bare, so tests can commit to it).
pub struct Upstream {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    pub repo: Repository,
}

impl Upstream {
    /// `main` with three commits (a README, a source file, a `.gitignore`
    /// ignoring `*.log` and `target/`), and `develop` one commit ahead.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream");
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(&path, &opts).unwrap();
        let up = Upstream {
            _dir: dir,
            path,
            repo,
        };
        up.commit("README.md", "# demo\n", "initial");
        up.commit(".gitignore", "*.log\ntarget/\n", "ignore logs");
        up.commit("src/lib.rs", "pub fn f() {}\n", "add lib");
        {
            let head = up.repo.head().unwrap().peel_to_commit().unwrap();
            up.repo.branch("develop", &head, false).unwrap();
        }
        up.repo.set_head("refs/heads/develop").unwrap();
        up.commit("dev.txt", "dev\n", "develop work");
        up.repo.set_head("refs/heads/main").unwrap();
        up.repo
            .checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .unwrap();
        up
    }

    /// Commit `content` to `file` on the current branch; returns the commit id.
    pub fn commit(&self, file: &str, content: &str, message: &str) -> String {
        let full = self.path.join(file);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, content).unwrap();
        let mut index = self.repo.index().unwrap();
        index.add_path(Path::new(file)).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        let parents: Vec<git2::Commit> = self
            .repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parent_refs: Vec<&git2::Commit> = parents.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parent_refs)
            .unwrap()
            .to_string()
    }

    /// Commit files already written in the work tree (links included).
    pub fn commit_existing(&self, files: &[&str], message: &str) -> String {
        let mut index = self.repo.index().unwrap();
        for f in files {
            index.add_path(Path::new(f)).unwrap();
        }
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        let parent = self.repo.head().unwrap().peel_to_commit().unwrap();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &[&parent])
            .unwrap()
            .to_string()
    }

    /// Replace `main`'s history with one new root commit (a force push).
    pub fn rewrite_history(&self) -> String {
        let sig = Signature::now("Test", "test@example.invalid").unwrap();
        std::fs::write(self.path.join("README.md"), "# rewritten\n").unwrap();
        let mut index = self.repo.index().unwrap();
        index.add_path(Path::new("README.md")).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let oid = self
            .repo
            .commit(None, &sig, &sig, "rewritten root", &tree, &[])
            .unwrap();
        self.repo
            .reference("refs/heads/main", oid, true, "force push")
            .unwrap();
        oid.to_string()
    }

    /// The commit a branch points at.
    pub fn head_of(&self, branch: &str) -> String {
        self.repo
            .find_branch(branch, git2::BranchType::Local)
            .unwrap()
            .get()
            .peel_to_commit()
            .unwrap()
            .id()
            .to_string()
    }

    /// The path as a clone URL.
    pub fn url(&self) -> String {
        self.path.display().to_string()
    }
}

/// Retries fast, so failure tests do not wait seconds.
pub fn fast_removal(max_retries: u32) -> RemovalConfig {
    RemovalConfig {
        max_retries,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
    }
}

/// A builder on `base` allowing local URLs and loopback servers, with
/// fast retries.
pub fn builder(base: &Path) -> WorkspaceManagerBuilder {
    WorkspaceManager::builder()
        .base_path(base)
        .allow_local_urls(true)
        .allow_private_networks(true)
        .removal(fast_removal(3))
}

/// A manager on `base` allowing local URLs.
pub fn manager(base: &Path) -> WorkspaceManager {
    builder(base).build().unwrap()
}

/// The object mirrors under `base` (`.mirrors/<name>`, its `.locks` aside).
pub fn mirror_folders(base: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(base.join(".mirrors"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// Write `content` over `file` and put its modification time back, as a
/// job hiding an edit from stat data would.
pub fn edit_keeping_mtime(file: &Path, content: &str) {
    let modified = std::fs::metadata(file).unwrap().modified().unwrap();
    std::fs::write(file, content).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// Every file under `dir` whose bytes contain `needle` (symlinks not followed).
pub fn files_containing(dir: &Path, needle: &str) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            std::fs::read(e.path())
                .map(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|e| e.into_path())
        .collect()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "git daemon did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Delete a tree the way a test's own clean-up must on Windows too: read-only
/// files (git's objects and packs) included, which `std::fs::remove_dir_all`
/// refuses there.
pub fn remove_tree(path: &Path) {
    let outcome = fixsec_workspace::testing::Remover::default().remove_tree(path);
    assert!(outcome.removed, "removing {}: {outcome:?}", path.display());
}

/// Set `last_used` (and `last_prepared`) of a workspace `hours` in the past.
pub fn age_workspace(base: &Path, name: &str, hours: i64) {
    let path = base.join(name).join("workspace.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let when = (chrono::Utc::now() - chrono::Duration::hours(hours)).to_rfc3339();
    meta["last_used"] = serde_json::Value::String(when.clone());
    meta["last_prepared"] = serde_json::Value::String(when);
    std::fs::write(&path, serde_json::to_vec(&meta).unwrap()).unwrap();
}

/// Build the hostile test policy with `feature` as a component (once per
/// process and feature) and return its path.
pub fn hostile_policy(feature: &str) -> PathBuf {
    component("fixsec-hostile-policy", Some(feature))
}

/// Build a policy crate of the workspace as a wasm32-wasip2 component (once
/// per process, package and feature) and return its path.
pub fn component(package: &str, feature: Option<&str>) -> PathBuf {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let key = format!("{package}-{}", feature.unwrap_or("default"));
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let built = built.get_or_insert_with(HashMap::new);
    if let Some(p) = built.get(&key) {
        return p.clone();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("test-policies");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(&root)
        .args([
            "rustc",
            "--package",
            package,
            "--lib",
            "--release",
            "--locked",
        ])
        .args(["--target", "wasm32-wasip2", "--crate-type", "cdylib"])
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(f) = feature {
        cmd.args(["--features", f]);
    }
    let status = cmd
        .status()
        .expect("running cargo to build a policy component");
    assert!(status.success(), "building {key} as a component");
    let out = target.join(format!("{key}.wasm"));
    std::fs::copy(
        target.join(format!(
            "wasm32-wasip2/release/{}.wasm",
            package.replace('-', "_")
        )),
        &out,
    )
    .unwrap();
    built.insert(key, out.clone());
    out
}

/// What most tests start from: an upstream repository, a base directory
/// and a manager on it (local URLs and loopback allowed, fast retries).
/// Destructure it: `let Fixture { up, base, m } = Fixture::new();`.
pub struct Fixture {
    pub up: Upstream,
    pub base: tempfile::TempDir,
    pub m: WorkspaceManager,
}

impl Fixture {
    /// The default manager.
    pub fn new() -> Self {
        Self::with(|b| b)
    }

    /// A manager with `configure` applied to the test builder.
    pub fn with(
        configure: impl FnOnce(WorkspaceManagerBuilder) -> WorkspaceManagerBuilder,
    ) -> Self {
        let up = Upstream::new();
        let base = tempfile::tempdir().unwrap();
        let m = configure(builder(base.path())).build().unwrap();
        Fixture { up, base, m }
    }
}

/// The `fixsec-workspace` binary with `args` on `base`, with nothing from
/// the test run's own environment (policy, settings, log level).
pub fn cli(base: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fixsec-workspace"));
    cmd.args(args)
        .env("WORKSPACE_BASE_PATH", base)
        .env_remove("WORKSPACE_POLICY")
        .env_remove("WORKSPACE_POLICY_SETTINGS")
        .env_remove("RUST_LOG");
    cmd
}

/// [`cli`], also accepting local paths and loopback servers as clone URLs.
pub fn cli_local(base: &Path, args: &[&str]) -> Command {
    let mut cmd = cli(base, args);
    cmd.env("WORKSPACE_ALLOW_LOCAL_URLS", "1")
        .env("WORKSPACE_ALLOW_PRIVATE_NETWORKS", "1");
    cmd
}

/// `serve` on `base` with local URLs and loopback allowed and `token` as
/// the API token.
pub fn serve_local(base: &Path, token: &str) -> Served {
    let mut cmd = cli_local(base, &[]);
    cmd.env("WORKSPACE_API_TOKEN", token);
    serve(cmd)
}

/// A `serve` process, listening.
pub struct Served {
    pub child: KillOnDrop,
    /// `host:port` it listens on.
    pub addr: String,
    /// What it wrote to stderr before it listened.
    pub before: String,
    /// The rest of its stderr.
    pub stderr: std::io::BufReader<std::process::ChildStderr>,
}

/// Start `serve` from `cmd` (the binary with its environment set, e.g.
/// from [`cli`] with no arguments) on an ephemeral loopback port with JSON
/// logs, and wait until it listens.
pub fn serve(cmd: Command) -> Served {
    serve_at(cmd, "127.0.0.1:0")
}

/// A child process killed when dropped, so a test that fails half-way
/// leaves no server behind.
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// [`serve`] on `bind` (a node restarted on its old address, say).
#[allow(clippy::zombie_processes)] // the child goes to the caller, who waits for it
pub fn serve_at(mut cmd: Command, bind: &str) -> Served {
    use std::io::BufRead;
    let mut child = cmd
        .args(["serve", "--bind", bind])
        .env("WORKSPACE_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut before = String::new();
    loop {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            let status = child.wait();
            panic!("serve exited before listening ({status:?}): {before}");
        }
        before.push_str(&line);
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim())
            && let Some(addr) = v["fields"]["addr"].as_str()
        {
            return Served {
                addr: addr.to_string(),
                child: KillOnDrop(child),
                before,
                stderr,
            };
        }
    }
}
