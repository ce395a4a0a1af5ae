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

pub mod adapter;
#[cfg(feature = "cli")]
pub mod cli;
pub mod clone_url;
pub mod config;
pub mod conformance;
pub mod error;
pub mod git_queue;
#[cfg(feature = "server")]
pub mod http;
pub mod layout;
pub mod locks;
pub mod manager;
pub mod metadata;
pub mod metrics;
pub mod model;
pub mod names;
pub mod policy;
mod store;

pub use config::{Config, PolicyLimits, PolicySource};
pub use error::{Error, ErrorKind, Result};
pub use manager::{Lease, WorkspaceManager, WorkspaceManagerBuilder};
pub use model::*;

/// The README's Rust examples, compiled as doctests so they stay true.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
