//! fixsec-workspace: persistent, named git workspaces, one per repository.
//!
//! Services that clone user repositories (scanners, fix bots, CI runners,
//! review agents) keep one workspace per repository instead of cloning into
//! a temporary folder each time. Prepare reuses and updates the clone (or
//! heals it by cloning afresh), deletion retries through file locks and
//! reports the truth, cleanup by age never removes a workspace in use.
//!
//! The native host (this crate) owns every side effect; the *policy*
//! (naming, lifecycle, cleanup selection, health verdict) is a sandboxed
//! WebAssembly component a deployment can swap. See `docs/ARCHITECTURE.md`.
//!
//! Start with [`WorkspaceManager`].
//!
//! Cargo features: `server` (the HTTP service, [`http`]: warp, hyper,
//! tokio) and `cli` (the `fixsec-workspace` program, with `server`), both
//! on by default. An embedder that only needs the manager turns default
//! features off and links no HTTP server (`examples/embed_manager.rs`).

#![warn(missing_docs)]

// The library's API is the re-exports below (and `http`, `cli` with their
// features); every module is the crate's own.
pub(crate) mod adapter;
#[cfg(feature = "cli")]
pub mod cli;
pub(crate) mod clone_url;
pub(crate) mod config;
pub mod conformance;
pub(crate) mod error;
pub mod fleet;
pub(crate) mod git_queue;
#[cfg(feature = "server")]
pub mod http;
pub(crate) mod layout;
pub(crate) mod locks;
pub(crate) mod manager;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod names;
pub(crate) mod policy;
mod store;

pub use adapter::git::ExtrasLimits;
pub use adapter::removal::RemovalConfig;
pub use config::{
    ApiToken, Config, GitLimits, MirrorSharing, PolicyLimits, PolicySource, ServerConfig,
    WebhookSecret,
};
pub use error::{Error, ErrorKind, Result};
pub use manager::{Lease, WorkspaceManager, WorkspaceManagerBuilder};
pub use metrics::{Metrics, RecentOperation, RunningOperation};
pub use model::*;
pub use names::WorkspaceName;
pub use policy::{CONTRACT, DEFAULT_POLICY, OLDER_CONTRACTS, PushQuestion, default_push_rule};
pub use store::{METRICS_MAX_AGE, SNAPSHOT_TTL};

/// Seams for this crate's own tests and benchmarks: fault injection in
/// removals, the git engine called directly, the naming corpus, the
/// metadata file. Not part of the API: it changes without notice.
#[doc(hidden)]
pub mod testing {
    pub use crate::adapter::git::{self as git, GitRef, KeepIgnored, Remote};
    pub use crate::adapter::reflink::reflink_file;
    pub use crate::adapter::removal::{FaultInjector, FsOps, RealFs, Remover};
    pub use crate::conformance::NAME_CORPUS;
    pub use crate::metadata::{METADATA_VERSION, WorkspaceMetadata};

    /// Bytes under `path`, symbolic links not followed (what stats count).
    pub fn dir_size_of(path: &std::path::Path) -> u64 {
        crate::adapter::fs::dir_size(path)
    }
}

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
