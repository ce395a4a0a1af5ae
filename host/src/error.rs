//! Typed errors of the library. Every message says what failed and what to do.

use serde::Serialize;
use std::path::PathBuf;

/// The class of an [`Error`], for mapping to HTTP statuses and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Malformed input from the caller.
    InvalidInput,
    /// Well-formed input that is not allowed (unsafe URL, unsafe name).
    Refused,
    /// The workspace (or branch, or repository) does not exist.
    NotFound,
    /// The workspace is being prepared or is leased.
    InUse,
    /// The service is at a limit it sets itself (queued git operations, a
    /// lock held too long): retry later.
    Busy,
    /// The disk is too full, or the clone larger than allowed.
    InsufficientStorage,
    /// git failed: network, authentication, missing branch, corruption.
    Git,
    /// The filesystem failed.
    Io,
    /// The remote rejected a push (not a fast-forward, protected branch).
    Rejected,
    /// The policy component failed (trap, limit, broken contract).
    Policy,
    /// The configuration or the policy file is unusable.
    Config,
}

impl ErrorKind {
    /// A short stable label, used in metrics and JSON errors.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Refused => "refused",
            ErrorKind::NotFound => "not_found",
            ErrorKind::InUse => "in_use",
            ErrorKind::Busy => "busy",
            ErrorKind::InsufficientStorage => "insufficient_storage",
            ErrorKind::Git => "git",
            ErrorKind::Io => "io",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Policy => "policy",
            ErrorKind::Config => "config",
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    /// The kind named by its label ([`as_str`](ErrorKind::as_str)), as a
    /// JSON error from the service carries it.
    fn from_str(label: &str) -> std::result::Result<Self, Self::Err> {
        [
            ErrorKind::InvalidInput,
            ErrorKind::Refused,
            ErrorKind::NotFound,
            ErrorKind::InUse,
            ErrorKind::Busy,
            ErrorKind::InsufficientStorage,
            ErrorKind::Git,
            ErrorKind::Io,
            ErrorKind::Rejected,
            ErrorKind::Policy,
            ErrorKind::Config,
        ]
        .into_iter()
        .find(|k| k.as_str() == label)
        .ok_or_else(|| format!("unknown error kind {label:?}"))
    }
}

/// An error from the workspace manager.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The input is not allowed.
    #[error("refused: {0}")]
    Refused(String),
    /// Something named does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The workspace is busy.
    #[error("workspace {0} is in use (being prepared or leased): retry when it is released")]
    InUse(String),
    /// The service is at one of its own limits.
    #[error("busy: {0}")]
    Busy(String),
    /// Not enough disk, or a clone over the size limit; nothing was left behind.
    #[error("insufficient storage: {0}")]
    InsufficientStorage(String),
    /// git failed.
    #[error("git: {0}")]
    Git(String),
    /// A filesystem operation failed: what was being done and where, with
    /// the OS error when there is one (one reported by the policy, or a
    /// summary of several attempts, has none).
    #[error("filesystem: {message}")]
    Io {
        /// What failed, where, and what to do.
        message: String,
        /// The OS error.
        #[source]
        source: Option<std::io::Error>,
    },
    /// Push rejected by the remote (not a fast-forward, a protected
    /// branch, a hook said no): nothing changed there.
    #[error("rejected: {0}")]
    Rejected(String),
    /// The policy failed for this call.
    #[error("policy: {0}")]
    Policy(String),
    /// The configuration or policy file is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Refused(_) => ErrorKind::Refused,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::InUse(_) => ErrorKind::InUse,
            Error::Busy(_) => ErrorKind::Busy,
            Error::InsufficientStorage(_) => ErrorKind::InsufficientStorage,
            Error::Git(_) => ErrorKind::Git,
            Error::Io { .. } => ErrorKind::Io,
            Error::Rejected(_) => ErrorKind::Rejected,
            Error::Policy(_) => ErrorKind::Policy,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// The message without the kind's prefix (`not found: `, `git: `...):
    /// what crosses the WIT boundary, so an error that goes to the policy
    /// and comes back is not prefixed twice.
    pub fn detail(&self) -> String {
        match self {
            Error::InvalidInput(m)
            | Error::Refused(m)
            | Error::NotFound(m)
            | Error::Busy(m)
            | Error::InsufficientStorage(m)
            | Error::Git(m)
            | Error::Io { message: m, .. }
            | Error::Rejected(m)
            | Error::Policy(m)
            | Error::Config(m) => m.clone(),
            Error::InUse(name) => name.clone(),
        }
    }

    /// An error of `kind` with `message` as its detail.
    pub fn of_kind(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::InvalidInput => Error::InvalidInput(message),
            ErrorKind::Refused => Error::Refused(message),
            ErrorKind::NotFound => Error::NotFound(message),
            ErrorKind::InUse => Error::InUse(message),
            ErrorKind::Busy => Error::Busy(message),
            ErrorKind::InsufficientStorage => Error::InsufficientStorage(message),
            ErrorKind::Git => Error::Git(message),
            ErrorKind::Io => Error::filesystem(message),
            ErrorKind::Rejected => Error::Rejected(message),
            ErrorKind::Policy => Error::Policy(message),
            ErrorKind::Config => Error::Config(message),
        }
    }

    /// The error a service reported as `{"error": kind, "detail": text}`,
    /// where `text` is the error's whole message: its kind's wording is
    /// taken off so it is not said twice.
    pub fn from_reported(kind: ErrorKind, text: &str) -> Self {
        let marker = "\u{0}";
        let shape = Error::of_kind(kind, marker.into()).to_string();
        let (prefix, suffix) = shape.split_once(marker).unwrap_or((&shape, ""));
        let detail = text
            .strip_prefix(prefix)
            .and_then(|t| t.strip_suffix(suffix))
            .unwrap_or(text);
        Error::of_kind(kind, detail.to_string())
    }

    /// Wrap an I/O error with what was being done and where.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        Error::Io {
            message: format!("{action} {}: {source}", path.display()),
            source: Some(source),
        }
    }

    /// A filesystem failure without a single OS error to carry.
    pub fn filesystem(message: impl Into<String>) -> Self {
        Error::Io {
            message: message.into(),
            source: None,
        }
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reported_error_reads_as_the_original() {
        for e in [
            Error::NotFound("branch x not found".into()),
            Error::InUse("acme_app_12345678 (leased by scan-7)".into()),
            Error::filesystem("disk gone"),
            Error::Rejected("refs/heads/main: protected".into()),
        ] {
            let label = e.kind().as_str();
            let back = Error::from_reported(label.parse().unwrap(), &e.to_string());
            assert_eq!(back.to_string(), e.to_string());
            assert_eq!(back.kind(), e.kind());
        }
        assert!("unauthorized".parse::<ErrorKind>().is_err());
    }
}
