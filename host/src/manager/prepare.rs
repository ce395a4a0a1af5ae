//! Prepare: name, lock (waiting out other callers' leases), run the
//! policy's `prepare`, check the result on disk, record it.

use super::{MAX_LEASE_SECONDS, WorkspaceManager};
use crate::adapter::fs::dir_size;
use crate::adapter::git::{self, ProgressFn, Remote};
use crate::clone_url::{CloneUrl, Transport};
use crate::error::{Error, Result};
use crate::metadata::{METADATA_VERSION, WorkspaceMetadata};
use crate::metrics::Operation;
use crate::model::*;
use crate::names::WorkspaceName;
use crate::policy::{CallContext, PolicyEngine, PrepareCall};
use chrono::Utc;
use std::sync::Arc;
use std::time::Instant;

impl WorkspaceManager {
    /// The workspace name the policy gives `repo_full_name`, validated.
    pub fn workspace_name(&self, repo_full_name: &str) -> Result<String> {
        self.checked_name(repo_full_name).map(|n| n.to_string())
    }

    fn checked_name(&self, repo_full_name: &str) -> Result<WorkspaceName> {
        self.checked_name_with(&self.policy(), repo_full_name)
    }

    /// The name `policy` gives (an operation takes the policy once, so a
    /// reload in between cannot mix two policies' answers).
    fn checked_name_with(
        &self,
        policy: &PolicyEngine,
        repo_full_name: &str,
    ) -> Result<WorkspaceName> {
        let name = policy.call_workspace_name(self.store.clone(), repo_full_name)?;
        WorkspaceName::parse(&name).map_err(|e| {
            Error::policy(format!(
                "{} returned an unsafe workspace name for {repo_full_name:?}: {e}",
                policy.label()
            ))
        })
    }

    /// `raw` parsed and checked against the allow-list and the network
    /// rules, credentials split off.
    pub(super) fn checked_url(&self, raw: &str) -> Result<CloneUrl> {
        let config = self.store.config();
        let url = CloneUrl::parse(raw, config.allow_local_urls)?;
        url.check_host(&config.allowed_hosts)?;
        url.check_addresses(config.allow_private_networks)?;
        if url.credentials_in_clear() {
            tracing::warn!(url = %url.public, "credentials are sent unencrypted over this transport; use https");
        }
        Ok(url)
    }

    /// What a transfer to or from `url` may carry, and its bounds.
    pub(super) fn remote_for(&self, url: &CloneUrl, progress: Option<Arc<ProgressFn>>) -> Remote {
        let (store, config) = (&self.store, self.store.config());
        Remote {
            credentials: url.credentials.clone(),
            service_credentials: url.host.as_deref().is_some_and(|h| {
                crate::clone_url::host_listed(h, &config.service_credential_hosts)
            }),
            host: url.host.clone(),
            scheme: match url.transport {
                Transport::Https => Some("https".into()),
                Transport::Http => Some("http".into()),
                Transport::Ssh => Some("ssh".into()),
                Transport::Git => Some("git".into()),
                Transport::Local => None,
            },
            port: url.port(),
            mirror: None,
            progress,
            local: url.transport == Transport::Local,
            principal_key: store.principal_key(),
            guard: Some(Arc::new(store.transfer_guard())),
        }
    }

    /// Serve `url`'s credential to git in `repo_dir` until `lease` is
    /// released or lapses (see [`PrepareRequest::serve_credential`]).
    fn serve_credential(
        &self,
        repo_dir: &std::path::Path,
        url: &CloneUrl,
        lease: &LeaseInfo,
    ) -> Result<()> {
        let credentials = url.credentials.as_ref().ok_or_else(|| {
            Error::invalid_input("serve_credential needs a credential in the clone URL")
        })?;
        let ttl = (lease.expires_at - Utc::now()).to_std().unwrap_or_default();
        let served = crate::adapter::credential_cache::serve(
            repo_dir,
            &url.public,
            &credentials.username,
            &credentials.secret,
            ttl,
        )
        .map_err(|e| {
            use crate::adapter::credential_cache::ServeError;
            match e {
                ServeError::NotHttp(_) | ServeError::NoCredential | ServeError::Unsupported => {
                    Error::invalid_input(e.to_string())
                }
                ServeError::Cache(_) => Error::git(e.to_string()),
                ServeError::Config { .. } => Error::filesystem(e.to_string()),
            }
        })?;
        self.store
            .serve_for_lease(lease.id, lease.expires_at, served);
        tracing::info!(url = %url.public, lease = lease.id, "credential served to git in the workspace until the lease ends");
        Ok(())
    }

    /// The workspace's lock, once no other caller holds a lease on it:
    /// waits up to the configured lease wait, then answers `InUse` with
    /// who holds the lease and until when. A leased tree is never reset,
    /// cleaned or re-cloned under its holder.
    fn lock_unleased(&self, name: &WorkspaceName) -> Result<crate::locks::WorkspaceGuard> {
        let store = &self.store;
        let deadline = Instant::now() + store.config().lease_wait;
        loop {
            let guard = store.locks().lock(name, store.config().lock_wait)?;
            let Some(holder) = store.locks().lease_holder(name) else {
                return Ok(guard);
            };
            drop(guard);
            if Instant::now() >= deadline {
                return Err(Error::in_use(format!("{name} ({holder})")));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// Prepare the workspace of a repository: reuse and update its clone, or
    /// clone afresh. Serialized per workspace, parallel across workspaces.
    pub fn prepare(&self, request: &PrepareRequest) -> Result<PrepareOutcome> {
        self.prepare_with_progress(request, None)
    }

    /// [`prepare`](Self::prepare), reporting transfer progress to `progress`.
    pub fn prepare_with_progress(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
    ) -> Result<PrepareOutcome> {
        let timer = self
            .store
            .metrics()
            .start(Operation::Prepare, Some(&request.repo_full_name));
        self.counted_as(&timer, self.prepare_inner(request, progress, Caller::Job))
    }

    /// [`prepare`](Self::prepare) for `caller`.
    pub(super) fn prepare_inner(
        &self,
        request: &PrepareRequest,
        progress: Option<Arc<ProgressFn>>,
        caller: Caller,
    ) -> Result<PrepareOutcome> {
        let started = Instant::now();
        crate::store::parse_ref(request.git_ref.as_deref())?;
        if request
            .lease_seconds
            .is_some_and(|s| s == 0 || s > MAX_LEASE_SECONDS)
        {
            return Err(Error::invalid_input(format!(
                "lease_seconds must be between 1 and {MAX_LEASE_SECONDS}"
            )));
        }
        if request
            .holder
            .as_ref()
            .is_some_and(|h| h.is_empty() || h.len() > 200 || h.chars().any(char::is_control))
        {
            return Err(Error::invalid_input(
                "holder must be 1 to 200 characters without control characters",
            ));
        }
        if request.network.as_ref().is_some_and(|n| {
            n.trim().is_empty() || n.len() > 200 || n.chars().any(char::is_control)
        }) {
            return Err(Error::invalid_input(
                "network must be the fork network root's full name (owner/repo): \
                 1 to 200 characters without control characters",
            ));
        }
        if request.serve_credential && request.lease_seconds.is_none() {
            return Err(Error::invalid_input(
                "serve_credential needs lease_seconds: the credential is served to git in the \
                 workspace for the lease's lifetime only",
            ));
        }
        if request.depth == Some(0) {
            return Err(Error::invalid_input(
                "depth must be at least 1 (omit it for full history)",
            ));
        }
        let (filter, sparse) = checked_shape(request)?;
        if request.parallel && request.lease_seconds.is_none() {
            return Err(Error::invalid_input(
                "parallel needs lease_seconds: the copy for a second job lives as long as its \
                 lease",
            ));
        }
        // The name first: a bad one is the caller's to fix, found without
        // any lookup of the clone host.
        let policy = self.policy();
        let name = self.checked_name_with(&policy, &request.repo_full_name)?;
        let url = self.checked_url(&request.clone_url)?;
        if (filter.is_some() || sparse.is_some()) && url.transport == Transport::Ssh {
            return Err(Error::invalid_input(
                "filter and sparse take an https, http or git clone URL (git's command line \
                 is given no ssh keys); prepare an ssh URL without them",
            ));
        }
        if request.serve_credential
            && (url.credentials.is_none()
                || !matches!(url.transport, Transport::Https | Transport::Http))
        {
            return Err(Error::invalid_input(
                "serve_credential needs an http(s) clone URL with a credential in it (git asks \
                 credential helpers for http(s) only)",
            ));
        }
        let store = &self.store;
        store.layout().ensure()?;
        if request.parallel {
            let principal = self.remote_for(&url, None).principal_digest();
            let copy = self.parallel_copy(&name, request, &url.public, &principal, started)?;
            if let Some(copy) = copy {
                if let (true, Some(lease)) = (request.serve_credential, &copy.lease) {
                    self.serve_credential(&copy.path, &url, lease)
                        .inspect_err(|_| {
                            store.locks().release_lease(lease.id);
                        })?;
                }
                return Ok(copy);
            }
        }
        let _guard = match caller {
            Caller::Job => self.lock_unleased(&name)?,
            // Nobody waits for a prefetch: a workspace in use is left, and
            // so is one that changed since the prefetch looked at it.
            Caller::Prefetch => {
                let guard = store.locks().lock(&name, std::time::Duration::ZERO)?;
                if let Some(why) = self.prefetch_blocker(&name, &url, &request.git_ref) {
                    return Err(Error::in_use(why));
                }
                guard
            }
        };
        store.snapshots().invalidate(); // now in use
        store.clear_staging(&name);

        let mut remote = self.remote_for(&url, progress);
        remote.mirror = store.mirror_folder(request.network_key(), &url.public);
        let principal = remote.principal_digest();
        let mut call = CallContext::prepare(name.clone(), url.public.clone(), remote);
        call.network = Some(request.network_key().to_string());
        call.extras = git::Extras {
            submodules: request.submodules,
            lfs: request.lfs,
        };
        (call.filter, call.sparse) = (filter, sparse);
        call.no_clone = caller == Caller::Prefetch;
        let question = PrepareCall {
            repo_full_name: request.repo_full_name.clone(),
            name: name.to_string(),
            clone_url: url.public.clone(),
            git_ref: request.git_ref.clone(),
            depth: request.depth,
        };
        let (outcome, mut ctx) = policy.call_prepare(store.clone(), call, &question)?;
        // A host limit (queue, disk, shutdown) is the answer, whatever the
        // policy made of it.
        if let Some(stop) = ctx.host_stop.take() {
            return Err(stop);
        }
        let outcome = outcome?;

        // Trust the disk, not the policy's word.
        let repo_dir = store.layout().repo_dir(&name);
        let state = git::inspect(&repo_dir);
        let head = match (state.healthy, state.head) {
            (true, Some(head)) => head,
            _ => {
                return Err(Error::policy(format!(
                    "{} reported a prepared workspace, but {} is not a healthy repository: {}",
                    policy.label(),
                    repo_dir.display(),
                    state.problem.unwrap_or_else(|| "it is missing".into())
                )));
            }
        };
        if state.remote_url.as_deref() != Some(url.public.as_str()) {
            return Err(Error::policy(format!(
                "{} left a clone of {:?} where {} was asked for",
                policy.label(),
                state.remote_url,
                url.public
            )));
        }
        // Whatever the policy did (a policy may hand back a checkout without
        // updating it), the checkout must be this caller's own.
        if git::prepared_by(&repo_dir).as_deref() != Some(principal.as_str()) {
            return Err(Error::policy(format!(
                "{} handed back a checkout last prepared with another credential without \
                 updating or re-cloning it; it was not given to this caller",
                policy.label()
            )));
        }
        let reused = ctx.updated && !ctx.cloned;
        if outcome.reused != reused {
            tracing::warn!(workspace = %name, "policy's reused={} disagrees with what the host saw", outcome.reused);
        }

        let now = Utc::now();
        let meta_path = store.layout().metadata_path(&name);
        let previous = WorkspaceMetadata::read(&meta_path);
        let meta = WorkspaceMetadata {
            version: METADATA_VERSION,
            repo_full_name: request.repo_full_name.clone(),
            clone_url: url.public.clone(),
            branch: request.git_ref.clone().or(state.branch),
            depth: request.depth,
            head: head.clone(),
            created: previous
                .as_ref()
                .filter(|_| reused)
                .map_or(now, |p| p.created),
            last_prepared: now,
            // A prefetch is no use: the cleanup's age still counts from
            // the last job's.
            last_used: match (caller, &previous) {
                (Caller::Prefetch, Some(p)) => p.last_used,
                _ => now,
            },
            // Measured by the clone or update that just ran; a policy that
            // did neither (a reuse without update) gets a walk.
            size_bytes: ctx.measured_size.unwrap_or_else(|| dir_size(&repo_dir)),
            copy_of: None,
            prepared_with: crate::metadata::PreparedWith {
                network: request.network.clone(),
                submodules: request.submodules,
                lfs: request.lfs,
            },
        };
        meta.write(&meta_path)?;
        // Taken before the lock is released: no cleanup can slip in between.
        let lease = request.lease_seconds.map(|secs| {
            let ttl = std::time::Duration::from_secs(secs);
            let holder = request
                .holder
                .as_deref()
                .unwrap_or("another caller's prepare");
            let (id, expires_at) = store.locks().add_lease(&name, holder, Some(ttl));
            LeaseInfo {
                id,
                expires_at: expires_at.unwrap_or(now),
            }
        });
        if let (true, Some(lease)) = (request.serve_credential, &lease) {
            self.serve_credential(&repo_dir, &url, lease)
                .inspect_err(|_| {
                    store.locks().release_lease(lease.id);
                })?;
        }
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::info!(workspace = %name, reused, head = %head, duration_ms, "workspace prepared");
        Ok(PrepareOutcome {
            name: name.to_string(),
            path: repo_dir,
            reused,
            head,
            duration_ms,
            notes: outcome.notes,
            lease,
        })
    }
}

/// Who a prepare is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    /// A job: waits for a lease, counts as use.
    Job,
    /// A push's prefetch: never waits, never counts as use.
    Prefetch,
}

/// The request's filter and sparse directories, checked; both need git's
/// command line and a branch, a tag or the default branch as ref.
fn checked_shape(request: &PrepareRequest) -> Result<(Option<String>, Option<Vec<String>>)> {
    let filter = request
        .filter
        .as_deref()
        .map(git::parse_filter)
        .transpose()
        .map_err(Error::invalid_input)?;
    let sparse = request
        .sparse
        .as_deref()
        .map(git::parse_sparse)
        .transpose()
        .map_err(Error::invalid_input)?;
    if filter.is_some() || sparse.is_some() {
        let git_ref = crate::store::parse_ref(request.git_ref.as_deref())?;
        git::check_ref(git_ref.as_ref()).map_err(Error::invalid_input)?;
        if git::git_cli().is_none() {
            return Err(Error::config(
                "filter and sparse need git 2.39.4 or later on the service's PATH (libgit2 \
                 cannot do them); install git there, or prepare without them",
            ));
        }
    }
    Ok((filter, sparse))
}
