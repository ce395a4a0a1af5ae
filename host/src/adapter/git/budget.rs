//! The bounds on what a prepare brings besides the repository itself
//! (submodules and Git LFS objects): how many submodules, how many bytes
//! across all of them, and until when. The repository's content decides
//! how much of each there is, so none is left unbounded: a `.gitmodules`
//! that fans out, or an LFS server that streams for ever, ends in a clear
//! error instead of holding the workspace lock and a git-queue slot.

use super::error::GitError;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The limits, from the configuration (`WORKSPACE_MAX_SUBMODULES`,
/// `WORKSPACE_MAX_EXTRAS_MB`, `WORKSPACE_EXTRAS_TIMEOUT_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtrasLimits {
    /// Submodules checked out in one prepare, at every depth together.
    pub max_submodules: u32,
    /// Bytes fetched for submodules and LFS objects together.
    pub max_bytes: u64,
    /// Time for all of it.
    pub timeout: Duration,
}

impl Default for ExtrasLimits {
    fn default() -> Self {
        ExtrasLimits {
            max_submodules: 64,
            max_bytes: 4096 << 20,
            timeout: Duration::from_secs(900),
        }
    }
}

/// What one prepare has used of its [`ExtrasLimits`] so far.
#[derive(Debug)]
pub struct ExtrasBudget {
    limits: ExtrasLimits,
    deadline: Instant,
    bytes: Cell<u64>,
    submodules: Cell<u32>,
}

impl ExtrasBudget {
    /// A budget that starts now.
    pub fn new(limits: ExtrasLimits) -> Self {
        ExtrasBudget {
            limits,
            deadline: Instant::now() + limits.timeout,
            bytes: Cell::new(0),
            submodules: Cell::new(0),
        }
    }

    /// The instant the work must be done by.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes used so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Bytes still allowed.
    pub fn remaining_bytes(&self) -> u64 {
        self.limits.max_bytes.saturating_sub(self.bytes.get())
    }

    /// `Err` once the time is up; `what` names the work (for the message).
    pub fn check_time(&self, what: &str) -> Result<(), GitError> {
        if Instant::now() < self.deadline {
            return Ok(());
        }
        Err(limit_error(format!(
            "{what}: stopped after {} s, the time allowed for submodules and LFS objects \
             (WORKSPACE_EXTRAS_TIMEOUT_SECONDS); nothing was kept",
            self.limits.timeout.as_secs()
        )))
    }

    /// Count `n` more bytes; `Err` once the total passes the limit.
    pub fn spend_bytes(&self, n: u64, what: &str) -> Result<(), GitError> {
        let total = self.bytes.get().saturating_add(n);
        self.bytes.set(total);
        if total <= self.limits.max_bytes {
            return self.check_time(what);
        }
        Err(limit_error(format!(
            "{what}: submodules and LFS objects passed {} MB together, the limit \
             (WORKSPACE_MAX_EXTRAS_MB); nothing was kept",
            self.limits.max_bytes >> 20
        )))
    }

    /// Count one more submodule; `Err` once there are more than allowed.
    pub fn count_submodule(&self, what: &str) -> Result<(), GitError> {
        let n = self.submodules.get() + 1;
        self.submodules.set(n);
        if n <= self.limits.max_submodules {
            return self.check_time(what);
        }
        Err(limit_error(format!(
            "{what}: the repository has more than {} submodules at all depths, the limit \
             (WORKSPACE_MAX_SUBMODULES); nothing was kept",
            self.limits.max_submodules
        )))
    }
}

/// A limit reached: reported as the host stopping the work for storage
/// reasons, so the caller sees a clear, non-retryable answer.
fn limit_error(message: String) -> GitError {
    GitError::over_limit(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_ends_in_a_clear_error() {
        let budget = ExtrasBudget::new(ExtrasLimits {
            max_submodules: 2,
            max_bytes: 100,
            timeout: Duration::from_secs(60),
        });
        assert!(budget.count_submodule("a").is_ok());
        assert!(budget.count_submodule("b").is_ok());
        let err = budget.count_submodule("c").unwrap_err();
        assert!(err.message.contains("WORKSPACE_MAX_SUBMODULES"), "{err}");
        assert!(budget.spend_bytes(100, "x").is_ok());
        let err = budget.spend_bytes(1, "y").unwrap_err();
        assert!(err.message.contains("WORKSPACE_MAX_EXTRAS_MB"), "{err}");
        let late = ExtrasBudget::new(ExtrasLimits {
            timeout: Duration::ZERO,
            ..ExtrasLimits::default()
        });
        let err = late.check_time("z").unwrap_err();
        assert!(
            err.message.contains("WORKSPACE_EXTRAS_TIMEOUT_SECONDS"),
            "{err}"
        );
    }
}
