//! `workspace.json`: what the host remembers about a workspace.

use crate::adapter::fs::{retry_while_in_use, write_atomically};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The metadata kept beside `repo/`. The clone URL never holds credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceMetadata {
    /// Format version of this file.
    pub version: u32,
    /// `owner/repo` as given to prepare.
    pub repo_full_name: String,
    /// The clone URL without credentials.
    pub clone_url: String,
    /// The branch asked for; none means the remote's default.
    pub branch: Option<String>,
    /// Shallow depth asked for, if any.
    pub depth: Option<u32>,
    /// The commit checked out by the last prepare.
    pub head: String,
    /// When the workspace was first prepared.
    pub created: DateTime<Utc>,
    /// When the last prepare finished.
    pub last_prepared: DateTime<Utc>,
    /// When a caller last used the workspace (prepare or lease).
    pub last_used: DateTime<Utc>,
    /// Bytes of `repo/` after the last prepare (or rescan), symbolic links not followed.
    pub size_bytes: u64,
    /// This workspace is a second job's copy of the named one (sharing
    /// its blocks), removed when its lease is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<String>,
    /// What else the last prepare asked for, so a push's prefetch prepares
    /// it alike (older files: none of it).
    #[serde(default)]
    pub prepared_with: PreparedWith,
}

/// The parts of a prepare request beyond URL, ref and depth that a
/// prefetch repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedWith {
    /// The fork network whose mirror it borrows from.
    pub network: Option<String>,
    /// Submodules were checked out.
    pub submodules: bool,
    /// Git LFS objects were fetched.
    pub lfs: bool,
}

/// The current format version.
pub const METADATA_VERSION: u32 = 1;

impl WorkspaceMetadata {
    /// Read `path`. `Ok(None)` when it is missing or unreadable as metadata
    /// (a corrupt file is treated as absent and rewritten by the next prepare).
    pub fn read(path: &Path) -> Option<Self> {
        let bytes = retry_while_in_use(|| std::fs::read(path)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Write atomically ([`write_atomically`]): a crash leaves either the
    /// old or the new file, never half of one.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("metadata serializes");
        write_atomically(path, &json).map_err(|e| Error::io("writing metadata", path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_treats_garbage_as_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workspace.json");
        let now = Utc::now();
        let meta = WorkspaceMetadata {
            version: METADATA_VERSION,
            repo_full_name: "o/r".into(),
            clone_url: "https://h/o/r.git".into(),
            branch: Some("main".into()),
            depth: None,
            head: "abc".into(),
            created: now,
            last_prepared: now,
            last_used: now,
            size_bytes: 42,
            copy_of: None,
            prepared_with: PreparedWith::default(),
        };
        meta.write(&path).unwrap();
        assert_eq!(WorkspaceMetadata::read(&path), Some(meta));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(WorkspaceMetadata::read(&path), None);
        assert_eq!(WorkspaceMetadata::read(&dir.path().join("missing")), None);
    }
}
