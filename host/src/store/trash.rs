//! Removal: rename into `.trash/`, delete with retries, finish what an
//! earlier removal left; staging leftovers of crashed prepares.

use super::Store;
use crate::metadata::WorkspaceMetadata;
use crate::metrics::Operation;
use crate::model::RemovalReport;
use crate::names::WorkspaceName;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Suffix of a note in `.trash/` naming a workspace whose in-place deletion
/// did not finish (its folder could not be renamed into `.trash/`).
const IN_PLACE_NOTE_SUFFIX: &str = ".in-place";

impl Store {
    /// Entries in `.trash/` still waiting for deletion: folders renamed
    /// there, and notes naming workspaces deleted in place but not finished.
    pub fn pending_deletions(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.layout.trash_dir())
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default()
    }

    /// Remove a workspace unless it is in use: rename it into `.trash/`
    /// (its name is free at once), then delete it with retries.
    pub fn remove_workspace(&self, name: &WorkspaceName) -> RemovalReport {
        self.remove_workspace_unless(name, |_| None)
    }

    /// [`remove_workspace`](Self::remove_workspace), unless `stale` — asked
    /// under the workspace's lock with its `workspace.json` read afresh —
    /// gives a reason to keep it (a cleanup decided on a listing that a
    /// prepare has since made wrong).
    pub fn remove_workspace_unless(
        &self,
        name: &WorkspaceName,
        stale: impl FnOnce(Option<&WorkspaceMetadata>) -> Option<String>,
    ) -> RemovalReport {
        let mut report = RemovalReport::new(name.as_str());
        let guard = match self.locks.try_lock_idle(name) {
            Ok(Some(g)) => g,
            Ok(None) => {
                report.skipped_in_use = true;
                report.error = Some("in use (being prepared or leased)".into());
                return report;
            }
            Err(e) => {
                report.error = Some(e.to_string());
                return report;
            }
        };
        let dir = self.layout.workspace_dir(name);
        if std::fs::symlink_metadata(&dir).is_err() {
            report.removed = true;
            return report;
        }
        let meta = WorkspaceMetadata::read(&self.layout.metadata_path(name));
        if let Some(reason) = stale(meta.as_ref()) {
            tracing::info!(workspace = %name, reason, "removal skipped");
            report.skipped_in_use = true;
            report.error = Some(reason);
            return report;
        }
        let known_size = meta.map(|m| m.size_bytes);
        let trashed = self.move_to_trash(name, &dir);
        self.remove_locked(name, guard, trashed, known_size)
    }

    /// Delete a workspace whose lock `guard` holds: from `.trash/` when
    /// `trashed` says it was moved there, else in place. An in-place
    /// deletion that cannot finish leaves a note in `.trash/`, so the next
    /// cleanup finishes it.
    pub(crate) fn remove_locked(
        &self,
        name: &WorkspaceName,
        guard: crate::locks::WorkspaceGuard,
        trashed: Option<PathBuf>,
        known_size: Option<u64>,
    ) -> RemovalReport {
        let mut report = RemovalReport::new(name.as_str());
        let _timer = self.metrics.start(Operation::Remove, Some(name.as_str()));
        self.snapshots.invalidate();
        let in_place = trashed.is_none();
        let target = trashed.unwrap_or_else(|| self.layout.workspace_dir(name));
        let outcome = self.remover.remove_tree_sized(&target, known_size);
        if in_place && !outcome.removed {
            self.note_in_place_deletion(name);
        }
        // Released before its lock file goes (Windows keeps the name of an
        // open file until it is closed).
        drop(guard);
        self.snapshots.invalidate();
        self.metrics.removal(outcome.removed);
        report.removed = outcome.removed;
        report.attempts = outcome.attempts;
        report.bytes_freed = outcome.bytes_freed;
        report.error = outcome.error.map(|e| {
            format!(
                "{e}; what is left stays pending and every cleanup retries it \
                 (a file in use: close the program holding it)"
            )
        });
        report.remaining = outcome
            .remaining
            .iter()
            .map(|p| self.layout.relative(p).display().to_string())
            .collect();
        if report.removed {
            // The lock file stays: see `locks` (deleting it lets two
            // processes hold the lock).
            tracing::info!(workspace = %name, attempts = report.attempts, bytes = report.bytes_freed, "workspace removed");
        } else {
            tracing::warn!(workspace = %name, attempts = report.attempts, error = report.error.as_deref().unwrap_or_default(), "workspace removal incomplete");
        }
        report
    }

    /// Rename a workspace into `.trash/` (its name is free at once). `None`
    /// when that is impossible: on Windows, a handle open on anything inside
    /// the folder blocks renaming it. One try only: the deletion that
    /// follows is what waits for handles to close. Requires `name`'s lock.
    pub(crate) fn move_to_trash(&self, name: &WorkspaceName, dir: &Path) -> Option<PathBuf> {
        let trash = self.layout.unique_in(self.layout.trash_dir(), name);
        match self.remover.rename_once(dir, &trash) {
            Ok(()) => Some(trash),
            Err(e) => {
                tracing::warn!(workspace = %name, error = %e, "cannot move workspace to trash; deleting in place");
                None
            }
        }
    }

    /// Leave `.trash/<name>.<pid>.<nanos>.in-place` for a workspace whose
    /// in-place deletion did not finish.
    fn note_in_place_deletion(&self, name: &WorkspaceName) {
        let mut note = self
            .layout
            .unique_in(self.layout.trash_dir(), name)
            .into_os_string();
        note.push(IN_PLACE_NOTE_SUFFIX);
        if let Err(e) = std::fs::write(&note, name.as_str()) {
            tracing::warn!(workspace = %name, error = %e, "cannot record the unfinished deletion; remove the workspace again");
        }
    }

    /// Finish (or forget) an unfinished in-place deletion noted in `note`.
    /// Returns the bytes freed, or `None` while the workspace is still there.
    fn finish_in_place_deletion(&self, note: &Path) -> Option<u64> {
        let name = std::fs::read_to_string(note)
            .ok()
            .and_then(|n| WorkspaceName::parse(n.trim()).ok());
        let Some(name) = name else {
            let _ = std::fs::remove_file(note);
            return Some(0);
        };
        // Being prepared or leased: someone is using the name again.
        let Ok(Some(_guard)) = self.locks.try_lock_idle(&name) else {
            return None;
        };
        let dir = self.layout.workspace_dir(&name);
        let freed = if WorkspaceMetadata::read(&self.layout.metadata_path(&name)).is_some() {
            // Prepared again since: that prepare replaced the leftovers.
            0
        } else {
            let outcome = self.remover.remove_tree(&dir);
            if !outcome.removed {
                return None;
            }
            outcome.bytes_freed
        };
        let _ = std::fs::remove_file(note);
        Some(freed)
    }

    /// Delete `target` (`name`'s folder, already in `.trash/`) on a thread
    /// of its own, with the remover's retries; `known_size` is what its
    /// metadata said. A deletion that fails stays for the next cleanup.
    pub fn delete_in_background(
        store: &Arc<Store>,
        name: WorkspaceName,
        target: PathBuf,
        known_size: Option<u64>,
    ) {
        *store.background.0.lock() += 1;
        let store = store.clone();
        std::thread::spawn(move || {
            let outcome = store.remover.remove_tree_sized(&target, known_size);
            store.metrics.removal(outcome.removed);
            if outcome.removed {
                tracing::info!(workspace = %name, bytes = outcome.bytes_freed, "background deletion finished");
            } else {
                tracing::warn!(workspace = %name, error = outcome.error.as_deref().unwrap_or_default(), "background deletion incomplete; the next cleanup retries");
            }
            store.snapshots.invalidate();
            let (count, done) = &*store.background;
            *count.lock() -= 1;
            done.notify_all();
        });
    }

    /// Block until every background deletion has finished.
    pub fn wait_for_background_deletions(&self) {
        let (count, done) = &*self.background;
        let mut n = count.lock();
        while *n > 0 {
            done.wait(&mut n);
        }
    }

    /// Finish deletions left in `.trash/` by earlier removals, and delete
    /// staging folders left by crashed prepares (of workspaces not being
    /// prepared now).
    pub fn purge_trash(&self) -> (usize, u64) {
        self.snapshots.invalidate();
        let mut finished = 0;
        let mut freed = 0;
        let stale_staging: Vec<PathBuf> = std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                // Stale when nobody holds its workspace's lock.
                staging_owner(p)
                    .is_some_and(|n| matches!(self.locks.try_lock_idle(&n), Ok(Some(_))))
            })
            .collect();
        for path in stale_staging {
            tracing::info!(path = %path.display(), "removing a crashed prepare's staging folder");
            freed += self.remover.remove_tree(&path).bytes_freed;
        }
        for path in self.pending_deletions() {
            if path.to_string_lossy().ends_with(IN_PLACE_NOTE_SUFFIX) {
                if let Some(bytes) = self.finish_in_place_deletion(&path) {
                    finished += 1;
                    freed += bytes;
                }
                continue;
            }
            let outcome = self.remover.remove_tree(&path);
            freed += outcome.bytes_freed;
            if outcome.removed {
                finished += 1;
            }
        }
        (finished, freed)
    }
}

/// The workspace a staging folder `<name>.<pid>.<nanos>` belongs to.
pub(crate) fn staging_owner(path: &Path) -> Option<WorkspaceName> {
    path.file_name()
        .and_then(|f| f.to_str())
        .and_then(|f| f.rsplitn(3, '.').nth(2))
        .and_then(|n| WorkspaceName::parse(n).ok())
}
