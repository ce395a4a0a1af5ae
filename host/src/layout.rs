//! Where things live under the base directory.
//!
//! ```text
//! <base>/<name>/repo/            the clone
//! <base>/<name>/workspace.json   metadata
//! <base>/.trash/                 renamed-away workspaces being deleted
//! <base>/.locks/                 lock files (one per workspace)
//! <base>/.staging/               clones in progress, swapped in when complete
//! <base>/.mirrors/<name>/        bare mirror of a repository network (objects borrowed)
//! <base>/.mirrors/.locks/        lock files (one per mirror)
//! <base>/.leases/<id>.json       leases (one file per lease)
//! <base>/.leases/owners/         lease owners' lock files (one per process holding open-ended leases)
//! <base>/.cache/policies/        compiled policy components (0700), sealed
//! <base>/.api-token              a token `serve` generated (0600)
//! ```

use crate::error::{Error, Result};
use crate::names::WorkspaceName;
use std::path::{Path, PathBuf};

/// Paths under one base directory. Workspace paths are built only from
/// validated [`WorkspaceName`]s.
#[derive(Debug, Clone)]
pub struct Layout {
    base: PathBuf,
}

impl Layout {
    /// A layout rooted at `base` (made absolute, not yet created).
    pub fn new(base: impl AsRef<Path>) -> Result<Self> {
        let base = std::path::absolute(base.as_ref())
            .map_err(|e| Error::io("resolving base path", base.as_ref(), e))?;
        Ok(Layout { base })
    }

    /// Create the base directory and the host's own folders.
    pub fn ensure(&self) -> Result<()> {
        for dir in [
            self.base.clone(),
            self.trash_dir(),
            self.locks_dir(),
            self.staging_dir(),
        ] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io("creating workspace folder", &dir, e))?;
        }
        Ok(())
    }

    /// The base directory.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// `<base>/<name>`.
    pub fn workspace_dir(&self, name: &WorkspaceName) -> PathBuf {
        self.base.join(name.as_str())
    }

    /// `<base>/<name>/repo`.
    pub fn repo_dir(&self, name: &WorkspaceName) -> PathBuf {
        self.workspace_dir(name).join("repo")
    }

    /// `<base>/<name>/workspace.json`.
    pub fn metadata_path(&self, name: &WorkspaceName) -> PathBuf {
        self.workspace_dir(name).join("workspace.json")
    }

    /// `<base>/<name>/index.prepared`: the index the last prepare wrote,
    /// kept outside the checkout (a job can rewrite `.git/index`).
    pub fn prepared_index_path(&self, name: &WorkspaceName) -> PathBuf {
        self.workspace_dir(name).join("index.prepared")
    }

    /// `<base>/.trash`.
    pub fn trash_dir(&self) -> PathBuf {
        self.base.join(".trash")
    }

    /// `<base>/.locks`.
    pub fn locks_dir(&self) -> PathBuf {
        self.base.join(".locks")
    }

    /// `<base>/.leases`: one file per live lease, shared by every process
    /// on this base directory.
    pub fn leases_dir(&self) -> PathBuf {
        self.base.join(".leases")
    }

    /// `<base>/.leases/owners`: one locked file per process that holds
    /// open-ended leases (`<token>.lock`); a lease naming a token whose
    /// file can be locked by another process is dead.
    pub fn lease_owners_dir(&self) -> PathBuf {
        self.leases_dir().join("owners")
    }

    /// `<base>/.cache/policies`: compiled policy components.
    pub fn policy_cache_dir(&self) -> PathBuf {
        self.base.join(".cache").join("policies")
    }

    /// `<base>/.staging`.
    pub fn staging_dir(&self) -> PathBuf {
        self.base.join(".staging")
    }

    /// `<base>/.principal-key`: the random key (mode 0600) under which a
    /// checkout records who prepared it (`.git/fixsec-fetched-by`), the
    /// same for every process on the base so a CLI run or a restart still
    /// recognises its own checkouts.
    pub fn principal_key_path(&self) -> PathBuf {
        self.base.join(".principal-key")
    }

    /// `<base>/.mirrors`: one bare mirror per repository network.
    pub fn mirrors_dir(&self) -> PathBuf {
        self.base.join(".mirrors")
    }

    /// `<base>/.mirrors/<name>`.
    pub fn mirror_dir(&self, name: &WorkspaceName) -> PathBuf {
        self.mirrors_dir().join(name.as_str())
    }

    /// `<base>/.mirrors/.locks`: the mirrors' lock files.
    pub fn mirror_locks_dir(&self) -> PathBuf {
        self.mirrors_dir().join(".locks")
    }

    /// A fresh, unique path in `dir` for `name` (for staging and trash).
    pub fn unique_in(&self, dir: PathBuf, name: &WorkspaceName) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        dir.join(format!("{name}.{}.{nanos}", std::process::id()))
    }

    /// `path` relative to the base, for reports that must not leak host layout.
    pub fn relative<'a>(&self, path: &'a Path) -> &'a Path {
        path.strip_prefix(&self.base).unwrap_or(path)
    }
}
