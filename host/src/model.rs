//! The public request and report types of the library, serialized with the
//! seed guide's JSON keys (`total_workspaces`, `total_size_mb`, `base_path`,
//! `cleaned_workspaces`, `max_age_hours`, `status`, `workspace_stats`,
//! `warnings`, `recommendations`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Bytes in a megabyte, as the guide counts them (MiB).
pub const MB: f64 = 1024.0 * 1024.0;

/// Bytes -> MB rounded to 0.1, as the guide shows sizes.
pub fn to_mb(bytes: u64) -> f64 {
    (bytes as f64 / MB * 10.0).round() / 10.0
}

/// A request to prepare the workspace of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrepareRequest {
    /// `owner/repo`.
    pub repo_full_name: String,
    /// Where to clone from; may hold a token (`https://TOKEN@host/...`), which
    /// never reaches the disk or the logs.
    pub clone_url: String,
    /// What to check out: a branch or tag name, a full commit id (a
    /// detached checkout), a full reference such as `refs/pull/7/head`, or
    /// a refspec `src:dst`; none for the remote's default branch. JSON key
    /// `ref`; `branch` and `default_branch` (the original tool's name) are
    /// accepted too.
    #[serde(default, rename = "ref", alias = "branch", alias = "default_branch")]
    pub git_ref: Option<String>,
    /// Shallow clone of this many commits.
    #[serde(default)]
    pub depth: Option<u32>,
    /// Hold the workspace for this many seconds after the prepare, so no
    /// cleanup removes it while the caller works in it (release early with
    /// its lease id).
    #[serde(default)]
    pub lease_seconds: Option<u64>,
    /// Who takes the lease (a job id, a service name): shown to other
    /// callers whose prepare finds the workspace leased.
    #[serde(default)]
    pub holder: Option<String>,
    /// Check out submodules too, recursively (their URLs held to the
    /// clone URL's rules; the credential only for the clone URL's host).
    #[serde(default)]
    pub submodules: bool,
    /// Fetch Git LFS objects in place of their pointer files (the host's own
    /// client, from the clone URL's LFS endpoint, every download held to the
    /// clone URL's rules; the credential only for the clone URL's origin).
    #[serde(default)]
    pub lfs: bool,
    /// The repository network this repository belongs to: the full name of
    /// the fork network's root (`facebook/react` for a fork of it). Forks
    /// of one network share one object mirror, and a router sends them to
    /// one node. None: the repository is its own network.
    #[serde(default)]
    pub network: Option<String>,
    /// Serve the clone URL's credential to stock git run in the workspace
    /// (a job's `git push`, GitPython) for the lease's lifetime: from
    /// memory, through git's credential cache, for the clone URL's scheme,
    /// host and port only, never written to disk. Needs `lease_seconds`
    /// and an http(s) clone URL with a credential; stops when the lease is
    /// released or lapses. See docs/RELIABILITY.md#credentials-served-to-a-leased-workspace.
    #[serde(default)]
    pub serve_credential: bool,
    /// A partial clone: `blob:none` (history without file contents, which
    /// are fetched when a checkout needs them), `tree:0` (commits only), or
    /// `blob:limit=<n>[k|m|g]`. Done by git's command line (2.39.4 or later on
    /// the PATH); a workspace cloned with another filter is cloned afresh.
    /// See docs/ARCHITECTURE.md#big-repositories.
    #[serde(default)]
    pub filter: Option<String>,
    /// A sparse workspace: only these directories (and the files at the
    /// top) are on disk, in git's cone mode. Kept on reuse, changed when
    /// the request changes; clean and stats count only what is on disk.
    #[serde(default)]
    pub sparse: Option<Vec<String>>,
    /// When another job holds the workspace's lease, give this one a copy
    /// of its own at once instead of waiting: made from the leased
    /// workspace by sharing its blocks (reflinks: XFS, btrfs), reset to
    /// the prepared commit and cleaned, with its own lease, removed when
    /// that lease is released. Needs `lease_seconds` and the same
    /// credential as the leased workspace's; where the file system cannot
    /// share blocks, the prepare waits as without it.
    #[serde(default)]
    pub parallel: bool,
}

impl PrepareRequest {
    /// A request for `repo_full_name` from `clone_url` on the remote's default branch.
    pub fn new(repo_full_name: impl Into<String>, clone_url: impl Into<String>) -> Self {
        PrepareRequest {
            repo_full_name: repo_full_name.into(),
            clone_url: clone_url.into(),
            git_ref: None,
            depth: None,
            lease_seconds: None,
            holder: None,
            submodules: false,
            lfs: false,
            network: None,
            serve_credential: false,
            filter: None,
            sparse: None,
            parallel: false,
        }
    }

    /// A partial clone with `filter` (see [`filter`](Self::filter) the field).
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// Only `dirs` on disk (see [`sparse`](Self::sparse) the field).
    pub fn sparse<I: IntoIterator<Item = S>, S: Into<String>>(mut self, dirs: I) -> Self {
        self.sparse = Some(dirs.into_iter().map(Into::into).collect());
        self
    }

    /// The repository network: [`network`](Self::network) if given, else
    /// the repository's own name. Also the routing key a client sends as
    /// `X-Fixsec-Shard`.
    pub fn network_key(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.repo_full_name)
    }

    /// Check out `git_ref` (see [`git_ref`](Self::git_ref) the field).
    pub fn git_ref(mut self, git_ref: impl Into<String>) -> Self {
        self.git_ref = Some(git_ref.into());
        self
    }

    /// Check out `branch` (a branch is one kind of ref).
    pub fn branch(self, branch: impl Into<String>) -> Self {
        self.git_ref(branch)
    }

    /// Fetch only the last `depth` commits.
    pub fn depth(mut self, depth: u32) -> Self {
        self.depth = Some(depth);
        self
    }
}

/// What a prepare did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareOutcome {
    /// The workspace folder name.
    pub name: String,
    /// The checkout: `<base>/<name>/repo`.
    pub path: PathBuf,
    /// An existing clone was updated in place.
    pub reused: bool,
    /// The commit checked out.
    pub head: String,
    /// Wall time of the prepare.
    pub duration_ms: u64,
    /// What the policy healed or why it re-cloned.
    pub notes: Vec<String>,
    /// The lease taken with `lease_seconds`, if any.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lease: Option<LeaseInfo>,
}

/// A timed lease on a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    /// Pass it to release the lease early.
    pub id: u64,
    /// When the lease lapses by itself.
    pub expires_at: DateTime<Utc>,
}

/// A request to push a branch of a workspace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    /// The local branch to push, to the branch of the same name.
    pub branch: String,
    /// Where to push, usually with the caller's credential
    /// (`https://x-access-token:TOKEN@host/owner/repo.git`). The credential
    /// reaches git only through its callback, for this URL's host only; it
    /// is never written to disk or logged.
    pub url: String,
    /// Overwrite the remote branch when the push is not a fast-forward
    /// (if the policy allows force).
    #[serde(default)]
    pub force: bool,
}

impl PushRequest {
    /// Push `branch` to `url` without force.
    pub fn new(branch: impl Into<String>, url: impl Into<String>) -> Self {
        PushRequest {
            branch: branch.into(),
            url: url.into(),
            force: false,
        }
    }

    /// Allow a push that is not a fast-forward.
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushOutcome {
    /// The workspace.
    pub name: String,
    /// The branch pushed.
    pub branch: String,
    /// The commit the remote branch now points at.
    pub commit: String,
    /// Where it went, without credentials.
    pub url: String,
    /// The push was allowed to overwrite.
    pub forced: bool,
    /// Wall time.
    pub duration_ms: u64,
}

/// A push to prefetch: the pushed repository, and its branch. A push
/// webhook (GitHub's push event, or the generic `POST /hooks/push`) makes
/// one; so can a caller (`POST /workspace/prefetch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchRequest {
    /// `owner/repo`.
    pub repo_full_name: String,
    /// Where to fetch from (as a prepare's `clone_url`; a credential in it
    /// is used and never stored). A workspace prepared with another
    /// credential is not touched.
    pub clone_url: String,
    /// The pushed branch (`main` or `refs/heads/main`); none: whatever
    /// branch the workspace is on.
    #[serde(default, rename = "ref")]
    pub git_ref: Option<String>,
}

/// What a prefetch did on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefetchOutcome {
    /// The workspace's name.
    pub name: String,
    /// The workspace was brought to the pushed commit (fetched, reset,
    /// cleaned by the policy, as a prepare does), so the next prepare
    /// finds it there.
    pub updated: bool,
    /// Its head afterwards, when updated.
    pub head: Option<String>,
    /// Why it was left, when it was (no workspace here, in use, another
    /// branch or credential).
    pub skipped: Option<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// One workspace as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceSummary {
    /// Folder name.
    pub name: String,
    /// `owner/repo`, when known.
    pub repo_full_name: Option<String>,
    /// Clone URL without credentials.
    pub clone_url: Option<String>,
    /// Branch of the last prepare.
    pub branch: Option<String>,
    /// Commit of the last prepare.
    pub head: Option<String>,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The same in MB.
    pub size_mb: f64,
    /// First prepare.
    pub created: Option<DateTime<Utc>>,
    /// Last prepare.
    pub last_prepared: Option<DateTime<Utc>>,
    /// Last use (prepare or lease).
    pub last_used: Option<DateTime<Utc>>,
    /// Being prepared or leased.
    pub in_use: bool,
    /// Who holds the lease, when one is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leased_by: Option<String>,
    /// When that lease lapses (none: when its holder releases it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leased_until: Option<DateTime<Utc>>,
    /// `workspace.json` was readable.
    pub has_metadata: bool,
}

/// Size of one workspace, in stats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceSize {
    /// Folder name.
    pub name: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// The same in MB.
    pub size_mb: f64,
}

/// Totals over all workspaces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of workspaces.
    pub total_workspaces: usize,
    /// Their size in MB.
    pub total_size_mb: f64,
    /// Their size in bytes.
    pub total_size_bytes: u64,
    /// The base directory.
    pub base_path: String,
    /// Workspaces being prepared or leased.
    pub in_use: usize,
    /// Removed workspaces whose deletion is not finished.
    pub pending_deletions: usize,
    /// Free bytes on the base directory's filesystem.
    pub free_space_bytes: Option<u64>,
    /// Per-workspace sizes, largest first.
    pub workspaces: Vec<WorkspaceSize>,
    /// The object mirrors workspaces borrow from (not counted in the
    /// workspace totals above; on the same disk).
    #[serde(default)]
    pub mirrors: MirrorStats,
}

/// The object mirrors under the base directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MirrorStats {
    /// Number of mirrors.
    pub count: usize,
    /// Their size in bytes, as measured after their last fetch.
    pub size_bytes: u64,
    /// The same in MB.
    pub size_mb: f64,
    /// Mirrors no workspace borrows from now (removed once unreferenced
    /// for the cleanup age).
    pub unreferenced: usize,
}

/// The truth about one removal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovalReport {
    /// Workspace folder name.
    pub name: String,
    /// Gone from disk, all of it.
    pub removed: bool,
    /// Not attempted because the workspace is in use.
    pub skipped_in_use: bool,
    /// Deletion attempts.
    pub attempts: u32,
    /// Bytes of files deleted.
    pub bytes_freed: u64,
    /// Paths (relative to the base directory) still present.
    pub remaining: Vec<String>,
    /// The last error when not removed.
    pub error: Option<String>,
    /// Renamed away (the name is free) and being deleted in the background.
    #[serde(default)]
    pub pending_deletion: bool,
}

impl RemovalReport {
    /// A report for `name` with nothing done yet.
    pub fn new(name: impl Into<String>) -> Self {
        RemovalReport {
            name: name.into(),
            removed: false,
            skipped_in_use: false,
            attempts: 0,
            bytes_freed: 0,
            remaining: Vec::new(),
            error: None,
            pending_deletion: false,
        }
    }
}

/// A workspace a cleanup left in place, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedWorkspace {
    /// Folder name.
    pub name: String,
    /// Why it was left.
    pub reason: String,
}

/// What a cleanup did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleanupReport {
    /// Workspaces removed.
    pub cleaned_workspaces: usize,
    /// The age limit applied.
    pub max_age_hours: f64,
    /// Bytes freed, by removals and by finishing earlier deletions.
    pub bytes_freed: u64,
    /// Each workspace removed.
    pub removed: Vec<RemovalReport>,
    /// Each removal that failed (still on disk, retried next time).
    pub failed: Vec<RemovalReport>,
    /// Workspaces left in place, with the reason.
    pub skipped: Vec<SkippedWorkspace>,
    /// Workspaces young enough to keep.
    pub kept: u32,
    /// Earlier deletions finished by this cleanup.
    pub pending_deletions_finished: usize,
    /// Object mirrors removed: no workspace had borrowed from them for the
    /// cleanup age.
    #[serde(default)]
    pub mirrors_removed: Vec<String>,
    /// Object mirrors repacked and pruned (each at most once per
    /// `WORKSPACE_MIRROR_MAINTENANCE_HOURS`).
    #[serde(default)]
    pub mirrors_maintained: Vec<MirrorMaintenance>,
}

/// One mirror's maintenance: repacked and pruned, keeping what borrowing
/// checkouts reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorMaintenance {
    /// The mirror's folder name.
    pub name: String,
    /// Its bytes before.
    pub bytes_before: u64,
    /// Its bytes after (the same when it failed).
    pub bytes_after: u64,
    /// Objects kept because a borrower reaches them.
    pub kept_for_borrowers: usize,
    /// Why it was not done (nothing was dropped then).
    pub error: Option<String>,
}

/// The health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Nothing to do.
    Healthy,
    /// Something needs attention soon.
    Warning,
    /// Something needs attention now.
    Critical,
}

impl HealthStatus {
    /// `healthy`, `warning` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Warning => "warning",
            HealthStatus::Critical => "critical",
        }
    }
}

/// Which policy is loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    /// "default policy" or the file it was loaded from.
    pub source: String,
    /// MD5 of the component's bytes: changes when a reload swaps it.
    pub digest: String,
    /// The contract version the component was built against
    /// (`fixsec:workspace@0.3.0`, or `@0.2.0` or `@0.1.0` for an older one).
    pub contract: String,
}

/// The deployment's health thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// One workspace above this is a warning.
    pub workspace_size_warning_mb: u64,
    /// All workspaces together above this is a warning.
    pub total_size_warning_mb: u64,
    /// More workspaces than this is a warning.
    pub max_workspaces: u32,
    /// The cleanup age.
    pub max_age_hours: f64,
}

/// Health with the figures it was judged on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The verdict.
    pub status: HealthStatus,
    /// The policy that judged it.
    pub policy: PolicyInfo,
    /// What it was judged against.
    pub thresholds: Thresholds,
    /// The figures.
    pub workspace_stats: Stats,
    /// What is wrong.
    pub warnings: Vec<String>,
    /// What to do.
    pub recommendations: Vec<String>,
}

/// The health answer anyone may read (the open `/workspace/health`, a
/// liveness probe): the verdict and counts, nothing that names a
/// workspace, a repository, a path or the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicHealth {
    /// The verdict.
    pub status: HealthStatus,
    /// Counts and the total size.
    pub workspace_stats: PublicStats,
    /// The full report's warnings that name no workspace and no path; one
    /// line says how many others there are (the guide's key, kept so a
    /// monitor written for the original reads it without a token).
    pub warnings: Vec<String>,
    /// The full report's recommendations, filtered the same way.
    pub recommendations: Vec<String>,
    /// How many warnings the full report has.
    pub warning_count: usize,
    /// How many recommendations it has.
    pub recommendation_count: usize,
    /// Where the rest is.
    pub detail: String,
}

/// The figures of [`PublicHealth`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublicStats {
    /// Number of workspaces.
    pub total_workspaces: usize,
    /// Their size in MB.
    pub total_size_mb: f64,
    /// How many are in use.
    pub in_use: usize,
    /// Deletions not finished.
    pub pending_deletions: usize,
}

impl HealthReport {
    /// `lines` without those that name a workspace or the base path (a
    /// policy writes them, so they are filtered, not trusted), plus one
    /// line counting what was left out.
    fn lines_naming_nothing(&self, lines: &[String], what: &str) -> Vec<String> {
        let stats = &self.workspace_stats;
        let names_something = |line: &&String| {
            line.contains(&stats.base_path)
                || stats.workspaces.iter().any(|w| line.contains(&w.name))
        };
        let mut open: Vec<String> = lines
            .iter()
            .filter(|l| !names_something(l))
            .cloned()
            .collect();
        let hidden = lines.len() - open.len();
        if hidden > 0 {
            open.push(format!(
                "{hidden} more {what}(s) name workspaces; send the bearer token to read them"
            ));
        }
        open
    }

    /// What may be shown without the token.
    pub fn public_summary(&self) -> PublicHealth {
        let s = &self.workspace_stats;
        PublicHealth {
            status: self.status,
            workspace_stats: PublicStats {
                total_workspaces: s.total_workspaces,
                total_size_mb: s.total_size_mb,
                in_use: s.in_use,
                pending_deletions: s.pending_deletions,
            },
            warnings: self.lines_naming_nothing(&self.warnings, "warning"),
            recommendations: self.lines_naming_nothing(&self.recommendations, "recommendation"),
            warning_count: self.warnings.len(),
            recommendation_count: self.recommendations.len(),
            detail: "send the bearer token for the lines that name workspaces and the per-workspace figures"
                .into(),
        }
    }
}
