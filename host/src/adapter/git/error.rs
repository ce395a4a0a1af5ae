//! How a git failure is reported: classified once, where it happens, into
//! a [`GitFailure`], with a message that says what to do and libgit2's
//! error as the cause.

use super::remote::Remote;
use git2::{ErrorClass, ErrorCode};
use std::path::Path;

/// Why a transfer was stopped by the host rather than failed by git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The service is shutting down.
    Cancelled,
    /// The transfer grew past the size limit, or would leave too little
    /// free space; the message says which.
    Storage(String),
}

/// What kind of git failure, decided once where it happens (see
/// [`GitError::new`]); the manager's [`Error`](crate::Error) kind follows
/// from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitFailure {
    /// The remote, branch, commit or repository does not exist.
    NotFound,
    /// The remote refused the credential.
    Auth,
    /// The remote could not be reached, or did not answer as a git server.
    Network,
    /// The local repository cannot be read: corrupt objects, index or refs.
    Corrupt,
    /// The remote refused a pushed reference (not a fast-forward, a
    /// protected branch, a hook).
    Rejected,
    /// The host stopped (or never started) the transfer.
    Stopped(Stop),
    /// Anything else: a failed local write, an unexpected answer.
    Other,
}

/// A git failure: its class, what failed with what to do about it, and
/// libgit2's error when it came from libgit2.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct GitError {
    /// What kind of failure.
    pub failure: GitFailure,
    /// What failed, with what to do about it.
    pub message: String,
    /// libgit2's error.
    #[source]
    pub source: Option<git2::Error>,
}

impl GitError {
    /// A failure of `failure`'s kind, with no libgit2 error behind it.
    pub(crate) fn of(failure: GitFailure, message: impl Into<String>) -> Self {
        GitError {
            failure,
            message: message.into(),
            source: None,
        }
    }

    /// A failure outside the classes callers act on.
    pub(crate) fn other(message: impl Into<String>) -> Self {
        GitError::of(GitFailure::Other, message)
    }

    /// libgit2's error `e` while doing `action`, classified, with a hint of
    /// what to do.
    pub(super) fn new(action: &str, e: git2::Error) -> Self {
        let failure = classify(&e);
        let hint = match failure {
            GitFailure::Auth => {
                "; check the credentials in the clone URL (a token needs read access)"
            }
            GitFailure::NotFound => "; check the repository URL and the branch name",
            GitFailure::Network => "; check the network and the URL, then retry",
            GitFailure::Corrupt => "; the repository is corrupt: it will be cloned afresh",
            _ => "",
        };
        GitError {
            failure,
            // libgit2 on Windows ends system messages with "\r\n".
            message: format!("{action}: {}{hint}", e.message().trim_end()),
            source: Some(e),
        }
    }

    /// Something the caller named does not exist.
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        GitError::of(GitFailure::NotFound, message)
    }

    /// The remote refused a push.
    pub(super) fn rejected(message: String) -> Self {
        GitError::of(GitFailure::Rejected, message)
    }

    /// A filesystem failure while doing `action` on `path`.
    pub(super) fn io(action: &str, path: &Path, e: std::io::Error) -> Self {
        GitError::other(format!("{action} {}: {e}", path.display()))
    }

    /// A failed transfer: the host's reason if it stopped it, else git's.
    /// A network failure's detail (connection errors, HTTP status codes)
    /// goes to the log only: in an answer it would let a caller map hosts
    /// and ports through this service.
    ///
    /// libgit2 reports a refused connection or a failed read as an OS
    /// error, like a failed write to the disk: before any checkout
    /// (`checkout_started` false) it is the network's.
    pub(super) fn transfer(
        action: &str,
        e: git2::Error,
        remote: &Remote,
        checkout_started: bool,
    ) -> Self {
        if let Some(stop) = remote.guard.as_ref().and_then(|g| g.stopped()) {
            return GitError::stopped(action, stop);
        }
        let os_network = e.class() == ErrorClass::Os && !checkout_started;
        let (detail, class) = (e.message().trim_end().to_string(), e.class());
        let mut err = GitError::new(action, e);
        if err.failure == GitFailure::Network || (os_network && err.failure == GitFailure::Other) {
            tracing::warn!(action, detail, ?class, "git network failure");
            err.failure = GitFailure::Network;
            err.message = format!(
                "{action}: the remote could not be reached or did not answer as a git server \
                 (git's detail is in the service log); check the URL and the network, then retry"
            );
        }
        err
    }

    /// The remote refused the credential while doing `action`; `needed`
    /// says which access the token needs.
    pub(super) fn credential_refused(
        action: &str,
        needed: &str,
        e: git2::Error,
        remote: &Remote,
    ) -> Self {
        let mut err = GitError::transfer(action, e, remote, false);
        if !matches!(err.failure, GitFailure::Stopped(_)) {
            err.failure = GitFailure::Auth;
            err.message = format!(
                "{action}: the remote refused the credential; the token in the URL needs \
                 {needed} access to the repository"
            );
        }
        err
    }

    /// The host stopped (or never started) the transfer `action`.
    pub(super) fn stopped(action: &str, stop: Stop) -> Self {
        let message = match &stop {
            Stop::Cancelled => format!("{action}: stopped, the service is shutting down"),
            Stop::Storage(why) => format!("{action}: stopped, {why}"),
        };
        GitError::of(GitFailure::Stopped(stop), message)
    }

    /// A size or time limit of the host, reached: the message says which.
    pub(super) fn over_limit(message: String) -> Self {
        GitError::of(GitFailure::Stopped(Stop::Storage(message.clone())), message)
    }

    /// `Err` when the remote's guard says not to start `action` at all.
    pub(super) fn check_start(remote: &Remote, action: &str) -> Result<(), Self> {
        match remote.guard.as_ref().map(|g| g.check_start()) {
            Some(Err(stop)) => Err(GitError::stopped(action, stop)),
            _ => Ok(()),
        }
    }

    /// The host stopped this transfer (shutdown, size, free space).
    pub fn is_stopped(&self) -> bool {
        matches!(self.failure, GitFailure::Stopped(_))
    }

    /// The remote, branch or repository does not exist.
    pub fn is_not_found(&self) -> bool {
        self.failure == GitFailure::NotFound
    }
}

/// libgit2's error as a [`GitFailure`]. libgit2 reports a missing remote
/// branch and a path that is no repository with a generic code, so those
/// two are recognised by their text; every other case by class and code.
fn classify(e: &git2::Error) -> GitFailure {
    let message = e.message();
    match (e.class(), e.code()) {
        (_, ErrorCode::Auth) => GitFailure::Auth,
        (_, ErrorCode::NotFound) => GitFailure::NotFound,
        _ if message.contains("not found")
            || message.contains("does not appear to be a git repository") =>
        {
            GitFailure::NotFound
        }
        (_, ErrorCode::NotFastForward) => GitFailure::Rejected,
        (ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssl | ErrorClass::Ssh, _) => {
            GitFailure::Network
        }
        (ErrorClass::Odb | ErrorClass::Object | ErrorClass::Index, _) => GitFailure::Corrupt,
        _ => GitFailure::Other,
    }
}

impl From<GitError> for crate::Error {
    fn from(e: GitError) -> Self {
        use crate::ErrorKind;
        let kind = match &e.failure {
            GitFailure::Stopped(Stop::Cancelled) => ErrorKind::Busy,
            GitFailure::Stopped(Stop::Storage(_)) => ErrorKind::InsufficientStorage,
            GitFailure::NotFound => ErrorKind::NotFound,
            GitFailure::Rejected => ErrorKind::Rejected,
            GitFailure::Auth | GitFailure::Network | GitFailure::Corrupt | GitFailure::Other => {
                ErrorKind::Git
            }
        };
        let error = crate::Error::new(kind, e.message);
        match e.source {
            Some(cause) => error.with_source(cause),
            None => error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libgit2_errors_are_classified_once() {
        let cases = [
            (ErrorCode::Auth, ErrorClass::Http, "x", GitFailure::Auth),
            (
                ErrorCode::GenericError,
                ErrorClass::Net,
                "refused",
                GitFailure::Network,
            ),
            (
                ErrorCode::GenericError,
                ErrorClass::Odb,
                "bad",
                GitFailure::Corrupt,
            ),
            (
                ErrorCode::GenericError,
                ErrorClass::Reference,
                "remote branch 'x' not found",
                GitFailure::NotFound,
            ),
            (
                ErrorCode::NotFastForward,
                ErrorClass::Reference,
                "nff",
                GitFailure::Rejected,
            ),
            (
                ErrorCode::GenericError,
                ErrorClass::Os,
                "disk",
                GitFailure::Other,
            ),
        ];
        for (code, class, text, want) in cases {
            let e = GitError::new("fetching", git2::Error::new(code, class, text));
            assert_eq!(e.failure, want, "{text}");
        }
    }

    #[test]
    fn the_manager_error_keeps_libgit2s_error_as_its_cause() {
        use std::error::Error as _;
        let git = GitError::new(
            "cloning",
            git2::Error::new(ErrorCode::NotFound, ErrorClass::Reference, "no such ref"),
        );
        let e = crate::Error::from(git);
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
        let cause = e.source().unwrap().downcast_ref::<git2::Error>().unwrap();
        assert_eq!(cause.code(), ErrorCode::NotFound);
        let stopped = crate::Error::from(GitError::stopped("cloning", Stop::Cancelled));
        assert_eq!(stopped.kind(), crate::ErrorKind::Busy);
    }
}
