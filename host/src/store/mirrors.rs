//! Object mirrors: one bare repository per clone URL (or, where the
//! deployment says all callers may read a whole fork network, per
//! network: [`MirrorSharing`]) under `<base>/.mirrors/`, updated before a
//! full-history clone over the network and borrowed by the new checkout
//! (git's alternates), so a re-clone after a cleanup or a healing (and,
//! shared per network, the clone of a fork) fetches only what is new.
//!
//! A checkout that borrows can read every object of the mirror: that is
//! why a mirror is not shared across URLs by default. Objects on disk only
//! ever save a transfer: what is checked out is resolved against the
//! caller's remote with the caller's credential (`adapter/git/refs.rs`).
//!
//! Rules (docs/SCALING.md#shared-object-store):
//! - a mirror is fetched into, and repacked and pruned by a cleanup
//!   ([`Store::maintain_mirrors`]) only after every borrower has been
//!   walked, so no borrowed object disappears under a workspace;
//! - concurrent prepares of one network update it once: a prepare that
//!   waited for the mirror's lock while another fetched the same URL uses
//!   that fetch;
//! - a mirror is removed by a cleanup only once no workspace (and no clone
//!   in progress) has borrowed from it for the cleanup age, and never while
//!   its lock is held.

use super::Store;
use crate::adapter::fs::{child_dirs, dir_size};
use crate::adapter::git::{self, GitRef, Remote};
use crate::config::MirrorSharing;
use crate::error::{Error, Result};
use crate::model::{MirrorMaintenance, MirrorStats, to_mb};
use crate::names::WorkspaceName;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// The mirror's own record, inside its folder (git ignores it).
const STATE_FILE: &str = "fixsec-mirror.json";

/// What the host keeps about one mirror.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MirrorState {
    /// The mirror's key: the clone URL, or the network's key (field name
    /// kept from when mirrors were per network only).
    network: String,
    /// When each URL's last fetch finished (clean URLs; Unix milliseconds).
    fetched: BTreeMap<String, i64>,
    /// The last clone that borrowed from it.
    last_used: DateTime<Utc>,
    /// Bytes on disk after the last fetch.
    size_bytes: u64,
    /// Since when a cleanup has found no workspace borrowing from it.
    unreferenced_since: Option<DateTime<Utc>>,
    /// When it was last repacked and pruned.
    #[serde(default)]
    maintained: Option<DateTime<Utc>>,
}

impl MirrorState {
    fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(STATE_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let json = serde_json::to_vec(self).expect("mirror state serializes");
        crate::adapter::fs::write_atomically(&path, &json)
            .map_err(|e| Error::io("writing mirror state", &path, e))
    }
}

/// The mirror folder name for a mirror key (a clone URL, or a network's
/// key): the key sanitized (lower case, `[a-z0-9_-]`, at most 48
/// characters, a URL without its scheme) plus 8 hex digits of the MD5 of
/// the key as given, as workspace names are built.
pub(crate) fn mirror_name(key: &str) -> Result<WorkspaceName> {
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::invalid_input(
            "network must name the fork network's root repository (owner/repo)",
        ));
    }
    let label = key.split_once("://").map_or(key, |(_, rest)| rest);
    let mut readable: String = label
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    readable = readable.trim_matches('_').to_string();
    let digest = format!("{:x}", Md5::digest(key.as_bytes()));
    let name = if readable.is_empty() {
        format!("net_{}", &digest[..8])
    } else {
        format!("{readable}_{}", &digest[..8])
    };
    WorkspaceName::parse(&name)
        .map_err(|e| Error::invalid_input(format!("{key:?} gives no safe mirror name: {e}")))
}

impl Store {
    /// Which mirror a clone of `url` may borrow from, by
    /// [`MirrorSharing`]: the URL's own (the default), or its network's
    /// (the key lower-cased, as repository names are). None: no mirror.
    pub(super) fn mirror_key(&self, network: Option<&str>, url: &str) -> Option<String> {
        match self.config.mirror_sharing {
            MirrorSharing::Repository => Some(url.to_string()),
            MirrorSharing::Network => network.map(|n| n.trim().to_lowercase()),
        }
    }

    /// The folder of the one mirror a checkout of `url` in `network` may
    /// borrow from ([`mirror_key`](Self::mirror_key)), whether or not this
    /// prepare uses mirrors: the reuse hygiene keeps only its alternates
    /// line.
    pub(crate) fn mirror_folder(&self, network: &str, url: &str) -> Option<std::path::PathBuf> {
        let key = self.mirror_key(Some(network), url)?;
        mirror_name(&key).ok().map(|n| self.layout.mirror_dir(&n))
    }

    /// Whether a clone with these parameters goes through a mirror: on
    /// (`WORKSPACE_MIRRORS`), full history (a shallow mirror could not
    /// serve a later full clone), and a network URL (local paths already
    /// hard-link their objects).
    pub(super) fn uses_mirror(&self, depth: Option<u32>, remote: &Remote) -> bool {
        self.config.mirrors && depth.is_none() && !remote.local
    }

    /// Clone `url` at `git_ref` into `dest` borrowing from the mirror of
    /// `key` ([`mirror_key`](Self::mirror_key)): update the mirror (once among concurrent prepares), make
    /// `dest` borrow its objects with `url`'s references, then check out
    /// as an update does, fetching only what the mirror lacks. Returns HEAD.
    ///
    /// A fault of the mirror itself (unreadable, cannot be borrowed from)
    /// does not fail the prepare: the clone is made directly instead. A
    /// fault of the remote (unreachable, credential, missing ref, a host
    /// limit) is the answer, as it would be for a direct clone.
    pub(super) fn clone_through_mirror(
        &self,
        key: &str,
        url: &str,
        git_ref: Option<&GitRef>,
        remote: &Remote,
        dest: &Path,
    ) -> Result<String> {
        let local_fault = match self.borrow_mirror(key, url, remote, dest) {
            Ok(Ok(())) => {
                match git::update(dest, url, git_ref, None, &git::KeepIgnored::none(), remote) {
                    Ok((head, _)) => return Ok(head),
                    Err(e) if e.is_not_found() || e.is_stopped() => return Err(e.into()),
                    Err(e) => Error::from(e),
                }
            }
            Ok(Err(local)) => local,
            Err(remote_fault) => return Err(remote_fault),
        };
        tracing::warn!(url, error = %local_fault, "cloning through the mirror failed; cloning directly");
        self.metrics.mirror_fetch("failed", 0);
        if std::fs::symlink_metadata(dest).is_ok() {
            self.remover.remove_tree(dest);
        }
        git::clone(url, git_ref, None, remote, dest).map_err(Error::from)
    }

    /// The mirror updated and `dest` borrowing from it. The outer error is
    /// the remote's (the answer); the inner one the mirror's own (worth a
    /// direct clone).
    fn borrow_mirror(
        &self,
        key: &str,
        url: &str,
        remote: &Remote,
        dest: &Path,
    ) -> Result<Result<()>> {
        let name = mirror_name(key)?;
        let dir = self.layout.mirror_dir(&name);
        let locks = self.layout.mirror_locks_dir();
        std::fs::create_dir_all(&locks).map_err(|e| Error::io("creating", &locks, e))?;
        let asked = Utc::now().timestamp_millis();
        let _guard = self.mirror_locks.lock(&name, self.config.lock_wait)?;
        let repo = match git::mirror::open_or_init(&dir) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.into())),
        };
        // The folder name carries 32 bits of the key's digest: a key
        // crafted to collide must find a mirror that is not its own.
        let state = match MirrorState::read(&dir) {
            Some(s) if s.network != key => {
                return Ok(Err(Error::git(format!(
                    "mirror {name} holds {:?}, not {key:?} (the names collide); not borrowed",
                    s.network
                ))));
            }
            None if repo.references().is_ok_and(|mut r| r.next().is_some()) => {
                return Ok(Err(Error::git(format!(
                    "mirror {name} has references but no state file, so whose it is cannot be \
                     told; not borrowed"
                ))));
            }
            state => state,
        };
        let mut state = state.unwrap_or_else(|| MirrorState {
            network: key.to_string(),
            fetched: BTreeMap::new(),
            last_used: Utc::now(),
            size_bytes: 0,
            unreferenced_since: None,
            maintained: None,
        });
        if state.fetched.get(url).is_some_and(|&t| t >= asked) {
            // Another prepare fetched this URL while we waited: use it.
            self.metrics.mirror_fetch("shared", 0);
        } else {
            let fetched = git::mirror::fetch(&repo, url, remote).inspect_err(|_| {
                self.metrics.mirror_fetch("failed", 0);
            })?;
            self.metrics.mirror_fetch("fetched", fetched.received_bytes);
            tracing::info!(
                mirror = %name, url, received_bytes = fetched.received_bytes,
                "mirror updated"
            );
            state
                .fetched
                .insert(url.to_string(), Utc::now().timestamp_millis());
            state.size_bytes = dir_size(&dir);
        }
        state.last_used = Utc::now();
        state.unreferenced_since = None;
        if let Err(e) = state.write(&dir) {
            return Ok(Err(e));
        }
        // Under the lock: once `dest` names the mirror in its alternates,
        // a cleanup sees it borrowed.
        Ok(git::mirror::borrow(&dir, url, dest).map_err(Error::from))
    }

    /// The mirrors on disk: count, size, and how many no workspace borrows
    /// from now.
    pub fn mirror_stats(&self) -> MirrorStats {
        let names = self.mirror_names();
        if names.is_empty() {
            self.metrics.set_mirror_size(0);
            return MirrorStats::default();
        }
        let borrowed = self.borrowed_lines();
        let mut stats = MirrorStats::default();
        for name in &names {
            let dir = self.layout.mirror_dir(name);
            stats.count += 1;
            stats.size_bytes += MirrorState::read(&dir).map_or(0, |s| s.size_bytes);
            if !git::mirror::borrow_id(&dir).is_some_and(|id| borrowed.contains(&id)) {
                stats.unreferenced += 1;
            }
        }
        stats.size_mb = to_mb(stats.size_bytes);
        self.metrics.set_mirror_size(stats.size_bytes);
        stats
    }

    /// Remove the mirrors no workspace has borrowed from for
    /// `max_age_hours` (counted from the cleanup that first found one
    /// unreferenced). A mirror whose lock is held (a prepare is updating or
    /// borrowing it) is left for the next cleanup. Returns the names
    /// removed.
    pub fn clean_mirrors(&self, max_age_hours: f64) -> Vec<String> {
        let names = self.mirror_names();
        if names.is_empty() {
            return Vec::new();
        }
        let max_age = chrono::Duration::milliseconds((max_age_hours * 3_600_000.0) as i64);
        // Read once for all mirrors. A clone that borrows after this read
        // does so under the mirror's lock, having cleared the mirror's
        // `unreferenced_since` first; that state is read below under the
        // same lock, so such a mirror is at most marked, never removed.
        let borrowed = self.borrowed_lines();
        let mut removed = Vec::new();
        for name in names {
            let Ok(_guard) = self.mirror_locks.lock(&name, Duration::ZERO) else {
                continue;
            };
            let dir = self.layout.mirror_dir(&name);
            let Some(mut state) = MirrorState::read(&dir) else {
                tracing::warn!(mirror = %name, "mirror without its state file; left in place");
                continue;
            };
            let now = Utc::now();
            if git::mirror::borrow_id(&dir).is_some_and(|id| borrowed.contains(&id)) {
                if state.unreferenced_since.take().is_some() {
                    let _ = state.write(&dir);
                }
                continue;
            }
            match state.unreferenced_since {
                None => {
                    state.unreferenced_since = Some(now);
                    let _ = state.write(&dir);
                }
                Some(since) if now - since >= max_age => {
                    let report = self.remover.remove_tree(&dir);
                    if report.removed {
                        tracing::info!(mirror = %name, "unreferenced mirror removed");
                        removed.push(name.to_string());
                    } else {
                        tracing::warn!(mirror = %name, error = ?report.error, "mirror not removed");
                    }
                }
                Some(_) => {}
            }
        }
        removed
    }

    /// Repack and prune every mirror not maintained within `every`,
    /// keeping whatever a borrowing checkout reaches
    /// (`git::maintain_mirror`). A mirror whose lock is held is left for
    /// the next cleanup.
    pub fn maintain_mirrors(&self, every: Duration) -> Vec<MirrorMaintenance> {
        let mut done = Vec::new();
        for name in self.mirror_names() {
            let Ok(_guard) = self.mirror_locks.lock(&name, Duration::ZERO) else {
                continue;
            };
            let dir = self.layout.mirror_dir(&name);
            let Some(mut state) = MirrorState::read(&dir) else {
                continue;
            };
            let due = state
                .maintained
                .is_none_or(|t| (Utc::now() - t).to_std().unwrap_or_default() >= every);
            if !due {
                continue;
            }
            let bytes_before = dir_size(&dir);
            let id = git::mirror::borrow_id(&dir);
            let borrowers: Vec<std::path::PathBuf> = self
                .borrower_dirs()
                .into_iter()
                .filter(|p| {
                    id.as_ref()
                        .is_some_and(|id| git::mirror::borrowed(p).contains(id))
                })
                .collect();
            let outcome = git::maintain_mirror(&dir, &borrowers);
            let bytes_after = dir_size(&dir);
            let (kept_for_borrowers, error) = match outcome {
                Ok(m) => {
                    state.maintained = Some(Utc::now());
                    state.size_bytes = bytes_after;
                    let _ = state.write(&dir);
                    tracing::info!(mirror = %name, bytes_before, bytes_after, kept = m.kept_for_borrowers, "mirror repacked and pruned");
                    (m.kept_for_borrowers, None)
                }
                Err(e) => {
                    tracing::warn!(mirror = %name, error = %e, "mirror not maintained; nothing was dropped");
                    (0, Some(e.to_string()))
                }
            };
            done.push(MirrorMaintenance {
                name: name.to_string(),
                bytes_before,
                bytes_after,
                kept_for_borrowers,
                error,
            });
        }
        done
    }

    /// Every checkout that may borrow from a mirror: clones in progress,
    /// workspaces and their copies.
    /// Read in that order (as [`Store::borrowed_lines`] does): a clone
    /// moved into place between the two reads is seen in one of them.
    fn borrower_dirs(&self) -> Vec<std::path::PathBuf> {
        let staging: Vec<std::path::PathBuf> = std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let workspaces = child_dirs(self.layout.base()).unwrap_or_default();
        staging
            .into_iter()
            .chain(
                workspaces
                    .iter()
                    .filter_map(|n| WorkspaceName::parse(n).ok())
                    .map(|n| self.layout.repo_dir(&n)),
            )
            .filter(|p| p.join(".git").exists())
            .collect()
    }

    fn mirror_names(&self) -> Vec<WorkspaceName> {
        child_dirs(&self.layout.mirrors_dir())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| WorkspaceName::parse(n).ok())
            .collect()
    }

    /// The folders named by the alternates of the clones in progress, then
    /// of the workspaces (in that order: a clone swapped into place between
    /// the two reads is seen in one of them), by identity, so another
    /// spelling of the base path still counts.
    fn borrowed_lines(&self) -> HashSet<git::mirror::FolderId> {
        let staging = std::fs::read_dir(self.layout.staging_dir())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()));
        let mut lines: HashSet<_> = staging.flat_map(|p| git::mirror::borrowed(&p)).collect();
        let workspaces = child_dirs(self.layout.base()).unwrap_or_default();
        for name in workspaces
            .iter()
            .filter_map(|n| WorkspaceName::parse(n).ok())
        {
            lines.extend(git::mirror::borrowed(&self.layout.repo_dir(&name)));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::mirror_name;

    #[test]
    fn mirror_names_are_safe_and_stable() {
        let a = mirror_name("facebook/react").unwrap();
        assert!(a.as_str().starts_with("facebook_react_"), "{a}");
        assert_ne!(a, mirror_name("Facebook/React").unwrap());
        let url = mirror_name("https://git.example/Acme/App.git").unwrap();
        assert!(
            url.as_str().starts_with("git_example_acme_app_git_"),
            "{url}"
        );
        assert_ne!(
            url,
            mirror_name("https://git.example/acme/app.git").unwrap()
        );
        assert_ne!(a, mirror_name("facebook/react-native").unwrap());
        let odd = mirror_name("../..//\u{0}").unwrap();
        assert!(odd.as_str().starts_with("net_"), "{odd}");
        assert!(mirror_name("  ").is_err());
        assert!(mirror_name(&"x".repeat(500)).unwrap().as_str().len() <= 57);
    }
}
