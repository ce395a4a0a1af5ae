//! `workspace.json`: what the host remembers about a workspace.

use crate::error::{Error, Result};
use backon::{BlockingRetryable, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

    /// Write atomically: a temporary file renamed over the old one, so a
    /// crash leaves either the old or the new file, never half of one.
    pub fn write(&self, path: &Path) -> Result<()> {
        static WRITES: AtomicU64 = AtomicU64::new(0);
        // Unique per writer, so two writers never share a temporary file.
        let tmp = path.with_extension(format!(
            "json.{}.{}.tmp",
            std::process::id(),
            WRITES.fetch_add(1, Ordering::Relaxed)
        ));
        let json = serde_json::to_vec_pretty(self).expect("metadata serializes");
        std::fs::write(&tmp, json).map_err(|e| Error::io("writing metadata", &tmp, e))?;
        retry_while_in_use(|| std::fs::rename(&tmp, path)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            Error::io("replacing metadata", path, e)
        })
    }
}

/// Run `op`, retrying for about half a second while Windows says the file
/// is in use: replacing or opening a file that another thread or process
/// (a reader, a virus scanner) has open fails there for a moment with
/// error 5 or 32 (found by the Windows suite under Wine). Other errors, and
/// every error elsewhere, return at once.
fn retry_while_in_use<T>(op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    op.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .with_max_times(10),
    )
    .sleep(std::thread::sleep)
    .when(is_in_use)
    .call()
}

/// `ERROR_ACCESS_DENIED` or `ERROR_SHARING_VIOLATION` on Windows.
fn is_in_use(e: &io::Error) -> bool {
    cfg!(windows) && (e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(32))
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
        };
        meta.write(&path).unwrap();
        assert_eq!(WorkspaceMetadata::read(&path), Some(meta));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(WorkspaceMetadata::read(&path), None);
        assert_eq!(WorkspaceMetadata::read(&dir.path().join("missing")), None);
    }
}
