//! The builder: configuration into a [`WorkspaceManager`].

use super::WorkspaceManager;
use crate::adapter::git;
use crate::adapter::removal::{FsOps, RemovalConfig};
use crate::config::{Config, PolicyLimits, PolicySource};
use crate::error::Result;
use crate::layout::Layout;
use crate::policy::PolicyEngine;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// Builds a [`WorkspaceManager`]; starts from [`Config::default`] (or a
/// given config) and overrides what it is told.
pub struct WorkspaceManagerBuilder {
    pub(super) config: Config,
    pub(super) policy_bytes: Option<(Vec<u8>, String)>,
    pub(super) fs_ops: Arc<dyn FsOps>,
}

impl WorkspaceManagerBuilder {
    /// Start from `config`.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }
    /// Change any setting of the configuration built so far (limits,
    /// timeouts, waits).
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Self {
        f(&mut self.config);
        self
    }
    /// Where workspaces live.
    pub fn base_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.base_path = path.into();
        self
    }
    /// Load the policy from a `.wasm` component file.
    pub fn policy_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.policy = PolicySource::File(path.into());
        self
    }
    /// Load the policy from component bytes.
    pub fn policy_bytes(mut self, bytes: Vec<u8>, label: impl Into<String>) -> Self {
        self.policy_bytes = Some((bytes, label.into()));
        self
    }
    /// Accept local paths and `file://` URLs.
    pub fn allow_local_urls(mut self, allow: bool) -> Self {
        self.config.allow_local_urls = allow;
        self
    }
    /// Let clone hosts resolve to loopback, private and link-local
    /// addresses (tests, on-premises git servers).
    pub fn allow_private_networks(mut self, allow: bool) -> Self {
        self.config.allow_private_networks = allow;
        self
    }
    /// Default cleanup age.
    pub fn max_age_hours(mut self, hours: f64) -> Self {
        self.config.max_age_hours = hours;
        self
    }
    /// Deletion retries and backoff.
    pub fn removal(mut self, removal: RemovalConfig) -> Self {
        self.config.removal = removal;
        self
    }
    /// Per-call policy limits.
    pub fn policy_limits(mut self, limits: PolicyLimits) -> Self {
        self.config.policy_limits = limits;
        self
    }
    /// The filesystem calls deletion goes through (fault injection in tests).
    pub fn fs_ops(mut self, ops: Arc<dyn FsOps>) -> Self {
        self.fs_ops = ops;
        self
    }

    /// Load and check the policy, create the base directory, and build.
    pub fn build(self) -> Result<WorkspaceManager> {
        let layout = Layout::new(&self.config.base_path)?;
        layout.ensure()?;
        let policy = match &self.policy_bytes {
            Some((bytes, label)) => {
                PolicyEngine::from_bytes(bytes, label, self.config.policy_limits)?
            }
            None => PolicyEngine::load_cached(
                &self.config.policy,
                self.config.policy_limits,
                Some(&layout.policy_cache_dir()),
            )?,
        };
        git::set_network_timeouts(self.config.git.connect_timeout, self.config.git.io_timeout);
        let store = Store::new(self.config, layout, self.fs_ops);
        Ok(WorkspaceManager {
            store: Arc::new(store),
            policy: Arc::new(parking_lot::RwLock::new(Arc::new(policy))),
            policy_bytes: self.policy_bytes.map(Arc::new),
            prefetch_turns: Arc::default(),
        })
    }
}
