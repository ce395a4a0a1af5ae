//! Prefetch: a push upstream brings an idle workspace of the pushed
//! branch to the new commit at once, through the policy's `prepare` as a
//! job's prepare would, so the next job's prepare finds it there and
//! fetches (nearly) nothing.
//!
//! Only what a job's prepare could have done anyway, and only when nobody
//! is affected: the workspace must exist on this node, be prepared from
//! the same URL, on the pushed branch, with the same credential (the
//! checkout is per principal), not be sparse (its set is the next
//! caller's to give), and not be in use (a prefetch never waits for a
//! job's lease or lock), all checked under the workspace's lock. It does
//! not count as use: the cleanup's age still counts from the last job's
//! prepare.
//!
//! Pushes come in bursts. Prefetches of one workspace in this process
//! take turns ([`PrefetchTurns`]): one runs, one waits behind it, and
//! the pushes that arrive meanwhile fold into the waiting one (left with
//! "folded into..."), which starts its fetch after every push folded
//! into it arrived. So the last push of a burst is always fetched, and
//! fifty pushes while one prefetch runs cost one more fetch, not fifty.

use super::WorkspaceManager;
use super::prepare::Caller;
use crate::adapter::git;
use crate::error::{ErrorKind, Result};
use crate::metadata::WorkspaceMetadata;
use crate::model::{PrefetchOutcome, PrefetchRequest, PrepareRequest};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::time::Instant;

impl WorkspaceManager {
    /// Check a prefetch's repository name and URL without acting (a
    /// webhook answers at once and prefetches in the background).
    pub fn check_prefetch(&self, repo_full_name: &str, clone_url: &str) -> Result<()> {
        self.workspace_name(repo_full_name)?;
        self.checked_url(clone_url).map(drop)
    }

    /// Bring the workspace of `request.repo_full_name` to the pushed
    /// commit when it is idle and this push is its business (see the
    /// module docs); otherwise say why it was left. An error only for a
    /// bad request (name, URL) or a failure of the update itself.
    pub fn prefetch(&self, request: &PrefetchRequest) -> Result<PrefetchOutcome> {
        let started = Instant::now();
        let name = self.workspace_name(&request.repo_full_name)?;
        let url = self.checked_url(&request.clone_url)?;
        let left = |why: String| PrefetchOutcome {
            name: name.clone(),
            updated: false,
            head: None,
            skipped: Some(why),
            duration_ms: started.elapsed().as_millis() as u64,
        };
        let pushed = request
            .git_ref
            .as_deref()
            .map(|r| r.strip_prefix("refs/heads/").unwrap_or(r));
        let store = &self.store;
        let parsed = crate::names::WorkspaceName::parse(&name)
            .map_err(|e| crate::Error::policy(format!("unsafe workspace name {name:?}: {e}")))?;
        let Some(meta) = WorkspaceMetadata::read(&store.layout().metadata_path(&parsed)) else {
            return Ok(left("no workspace of it on this node".into()));
        };
        if !git::same_remote(&meta.clone_url, &url.public) {
            return Ok(left(format!(
                "the workspace holds {}, not {}",
                meta.clone_url, url.public
            )));
        }
        if let (Some(pushed), Some(branch)) = (pushed, meta.branch.as_deref())
            && pushed != branch
        {
            return Ok(left(format!(
                "the workspace is on {branch}; the push was to {pushed}"
            )));
        }
        // Prepared as the workspace was: its own spelling of the URL (so
        // its mirror is the same; the push may say `.git` where it did
        // not), its ref, depth, network, extras and filter; only the
        // credential is the push's.
        let Some(clone_url) = with_credential(&meta.clone_url, &url) else {
            return Ok(left(format!(
                "{} cannot carry the push's credential",
                meta.clone_url
            )));
        };
        let Some(_turn) = self.prefetch_turns.take(&name) else {
            return Ok(left(
                "folded into the prefetch waiting for its turn, which fetches after this push"
                    .into(),
            ));
        };
        let mut prepare = PrepareRequest::new(&request.repo_full_name, &clone_url);
        prepare.git_ref = meta.branch.clone();
        prepare.depth = meta.depth;
        prepare.filter = git::shape_of(&store.layout().repo_dir(&parsed)).filter;
        prepare.network = meta.prepared_with.network.clone();
        prepare.submodules = meta.prepared_with.submodules;
        prepare.lfs = meta.prepared_with.lfs;
        match self.prepare_inner(&prepare, None, Caller::Prefetch) {
            Ok(outcome) => {
                tracing::info!(workspace = %name, head = %outcome.head, "prefetched a push");
                Ok(PrefetchOutcome {
                    name,
                    updated: true,
                    head: Some(outcome.head),
                    skipped: None,
                    duration_ms: started.elapsed().as_millis() as u64,
                })
            }
            // What stops a prefetch is checked under the workspace's lock
            // ([`WorkspaceManager::prefetch_blocker`]), and says why.
            Err(e) if e.kind() == ErrorKind::InUse => Ok(left(e.message().to_string())),
            Err(e) if e.kind() == ErrorKind::Busy => Ok(left(format!("in use ({})", e.message()))),
            Err(e) => Err(e),
        }
    }
}

impl WorkspaceManager {
    /// Why a prefetch must leave `name` as it is, checked under its lock:
    /// leased, prepared with another credential than `url`'s, sparse (its
    /// set is the next caller's to give), or no longer on `branch`.
    pub(super) fn prefetch_blocker(
        &self,
        name: &crate::names::WorkspaceName,
        url: &crate::clone_url::CloneUrl,
        branch: &Option<String>,
    ) -> Option<String> {
        let store = &self.store;
        if let Some(holder) = store.locks().lease_holder(name) {
            return Some(format!("in use ({holder})"));
        }
        let repo_dir = store.layout().repo_dir(name);
        let principal = self.remote_for(url, None).principal_digest();
        if git::prepared_by(&repo_dir).as_deref() != Some(principal.as_str()) {
            return Some("the workspace was prepared with another credential".into());
        }
        if git::shape_of(&repo_dir).sparse {
            return Some("a sparse workspace's set is the next prepare's to give".into());
        }
        let meta = WorkspaceMetadata::read(&store.layout().metadata_path(name));
        if meta.is_none_or(|m| &m.branch != branch) {
            return Some("the workspace changed branch before the prefetch took it".into());
        }
        None
    }
}

/// `public` (a workspace's recorded URL) with the credential `url` carries;
/// `public` itself when it carries none. None when `public` cannot hold
/// one (an scp-like ssh address).
fn with_credential(public: &str, url: &crate::clone_url::CloneUrl) -> Option<String> {
    let Some(credentials) = &url.credentials else {
        return Some(public.to_string());
    };
    let mut parsed = url::Url::parse(public).ok()?;
    parsed.set_username(&credentials.username).ok()?;
    parsed.set_password(Some(&credentials.secret)).ok()?;
    Some(parsed.into())
}

/// Whose turn it is to prefetch each workspace, in this process: at most
/// one prefetch runs and one waits per workspace (see the module docs).
/// A job's prepare never takes a turn; a prefetch still finds its lock
/// and leaves a workspace a job holds.
#[derive(Debug, Default)]
pub(super) struct PrefetchTurns {
    turns: Mutex<HashMap<String, Turn>>,
    ended: Condvar,
}

/// One workspace's prefetches: one running, one waiting.
#[derive(Debug, Default)]
struct Turn {
    running: bool,
    waiting: bool,
}

/// A prefetch's turn, given back when dropped.
pub(super) struct PrefetchTurn<'a> {
    turns: &'a PrefetchTurns,
    name: String,
}

impl PrefetchTurns {
    /// Wait for `name`'s turn; None when a prefetch already waits for it
    /// (it starts after this call, so it fetches what this one would).
    pub(super) fn take(&self, name: &str) -> Option<PrefetchTurn<'_>> {
        let mut turns = self.turns.lock();
        let mut waiting = false;
        loop {
            let turn = turns.entry(name.to_string()).or_default();
            if !turn.running {
                turn.running = true;
                if waiting {
                    turn.waiting = false;
                }
                return Some(PrefetchTurn {
                    turns: self,
                    name: name.to_string(),
                });
            }
            if turn.waiting && !waiting {
                return None;
            }
            turn.waiting = true;
            waiting = true;
            self.ended.wait(&mut turns);
        }
    }
}

impl Drop for PrefetchTurn<'_> {
    fn drop(&mut self) {
        let mut turns = self.turns.turns.lock();
        if let Some(turn) = turns.get_mut(&self.name) {
            turn.running = false;
            if !turn.waiting {
                turns.remove(&self.name);
            }
        }
        self.turns.ended.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::PrefetchTurns;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// One runs, one waits, the rest fold; the waiting one runs after
    /// the running one ends; other workspaces are not held up.
    #[test]
    fn prefetches_of_one_workspace_take_turns_and_fold() {
        let turns = Arc::new(PrefetchTurns::default());
        let running = turns.take("a").expect("the first runs");
        assert!(turns.take("b").is_some(), "another workspace runs at once");
        let ran = Arc::new(AtomicUsize::new(0));
        let waiter = {
            let (turns, ran) = (turns.clone(), ran.clone());
            std::thread::spawn(move || {
                let turn = turns.take("a");
                ran.fetch_add(1, Ordering::SeqCst);
                turn.is_some()
            })
        };
        while !turns.turns.lock().get("a").is_some_and(|t| t.waiting) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(turns.take("a").is_none(), "a third folds into the waiter");
        assert_eq!(ran.load(Ordering::SeqCst), 0, "the waiter waits");
        drop(running);
        assert!(waiter.join().unwrap(), "the waiter gets its turn");
        assert!(turns.turns.lock().is_empty(), "nothing left behind");
        assert!(turns.take("a").is_some());
    }
}
