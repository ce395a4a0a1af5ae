//! The integration tests, one binary (each file here used to be its own,
//! and each linked wasmtime, git2 and warp again).
//!
//! | module | what it drives |
//! |---|---|
//! | `lifecycle` | prepare against real repositories: clone, reuse, clean, heal |
//! | `cleanup` | removal, cleanup, stats and health, with injected faults |
//! | `policy` | the default policy as a component against its native twin |
//! | `cli` | the binary as a user runs it |
//! | `http` | the server on loopback with a real HTTP client |
//! | `reliability` | concurrency, crashes, deep and read-only trees |
//! | `security` | the security review's findings (issue 11) |
//! | `tenants` | two tenants on one forge: no tenant reaches another's code, credentials or network (issue 21) |
//! | `served_credential` | stock git pushing from a leased workspace with a served credential (issue 22) |
//! | `architecture_doc` | docs/ARCHITECTURE.md's module table against the source tree |
//! | `hostile` | policies that misbehave |
//! | `plugins` | other policies, swapped at run time |
//! | `extras` | submodules and Git LFS, against loopback servers |
//! | `mirrors` | the shared object store: bytes a re-clone and a fork transfer, mirror lifetime |
//! | `pr_flow` | the guide's PR route: refs, push, jobs that share a repository |
//! | `router` | three nodes behind a real haproxy with the shipped config |
//! | `prefetch` | push webhooks: a push prefetched into idle workspaces, signatures, two tenants (issue 24) |
//! | `fleet` | the fleet view through that router: every node's answer, a killed node named, actions on the right node (issue 24) |
//! | `ui` | the dashboard in chromium, through chromedriver |
//! | `deploy` | the deployment manifests |
//! | `big_repos` | parallel checkout, partial clones and sparse workspaces against loopback servers (issue 23) |
//! | `parallel_jobs` | a second job's reflinked copy on a real XFS, and two tenants (issue 23) |
//! | `caches` | the dependency caches a policy keeps through a reuse (issue 23) |
//!
//! The Windows run under Wine (`scripts/test-windows`) skips the modules
//! that build wasm components with cargo or need Unix.

mod support;

mod architecture_doc;
mod cleanup;
mod cli;
mod http;
mod lifecycle;
mod policy;
mod reliability;

#[cfg(not(windows))]
mod big_repos;
#[cfg(not(windows))]
mod caches;
#[cfg(not(windows))]
mod deploy;
#[cfg(not(windows))]
mod extras;
#[cfg(not(windows))]
mod fleet;
#[cfg(not(windows))]
mod hostile;
#[cfg(not(windows))]
mod mirrors;
#[cfg(not(windows))]
mod parallel_jobs;
#[cfg(not(windows))]
mod plugins;
#[cfg(not(windows))]
mod pr_flow;
#[cfg(not(windows))]
mod prefetch;
#[cfg(not(windows))]
mod router;
#[cfg(not(windows))]
mod security;
#[cfg(not(windows))]
mod served_credential;
#[cfg(not(windows))]
mod tenants;
#[cfg(not(windows))]
mod ui;
