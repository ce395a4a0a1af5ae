//! Typed errors of the library: one [`Error`] with a kind, a message and
//! the cause. Every message says what failed and what to do.

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
    /// Every kind, in declaration order.
    pub const ALL: [ErrorKind; 11] = [
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
    ];

    /// A short stable label, used in metrics and JSON errors.
    pub fn as_str(self) -> &'static str {
        self.wording().0
    }

    /// The label, and how a message of this kind is introduced when shown.
    fn wording(self) -> (&'static str, &'static str) {
        match self {
            ErrorKind::InvalidInput => ("invalid_input", "invalid input: "),
            ErrorKind::Refused => ("refused", "refused: "),
            ErrorKind::NotFound => ("not_found", "not found: "),
            ErrorKind::InUse => ("in_use", "in use: "),
            ErrorKind::Busy => ("busy", "busy: "),
            ErrorKind::InsufficientStorage => ("insufficient_storage", "insufficient storage: "),
            ErrorKind::Git => ("git", "git: "),
            ErrorKind::Io => ("io", "filesystem: "),
            ErrorKind::Rejected => ("rejected", "rejected: "),
            ErrorKind::Policy => ("policy", "policy: "),
            ErrorKind::Config => ("config", "configuration: "),
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = String;

    /// The kind named by its label ([`as_str`](ErrorKind::as_str)), as a
    /// JSON error from the service carries it.
    fn from_str(label: &str) -> std::result::Result<Self, Self::Err> {
        ErrorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == label)
            .ok_or_else(|| format!("unknown error kind {label:?}"))
    }
}

/// The cause an [`Error`] carries: an OS error, libgit2's error, a JSON
/// error.
type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the workspace manager: what kind of failure, a message
/// that says what failed and what to do, and the underlying cause when
/// there is one (reach it with [`std::error::Error::source`]).
///
/// Shown, the message is introduced by its kind (`not found: ...`); a
/// workspace in use reads `workspace <name> is in use ...`.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<Cause>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            ErrorKind::InUse => write!(
                f,
                "workspace {} is in use (being prepared or leased): retry when it is released",
                self.message
            ),
            kind => write!(f, "{}{}", kind.wording().1, self.message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Error {
    /// An error of `kind` whose message is `message` (without the kind's
    /// introduction, which [`Display`](std::fmt::Display) adds).
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// The same error, carrying `source` as its cause.
    pub fn with_source(
        mut self,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind's introduction: what crosses the WIT
    /// boundary and what the service sends as `message`, so an error that
    /// goes out and comes back is not introduced twice. For a workspace in
    /// use, its name (and who holds it).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The caller's input is malformed.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// The input is well formed but not allowed.
    pub fn refused(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Refused, message)
    }

    /// Something named does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::NotFound, message)
    }

    /// The workspace `name` (with who holds it, when known) is busy.
    pub fn in_use(name: impl Into<String>) -> Self {
        Error::new(ErrorKind::InUse, name)
    }

    /// The service is at one of its own limits.
    pub fn busy(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Busy, message)
    }

    /// Not enough disk, or a clone over the size limit; nothing was left
    /// behind.
    pub fn insufficient_storage(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InsufficientStorage, message)
    }

    /// git failed.
    pub fn git(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Git, message)
    }

    /// The remote rejected a push (not a fast-forward, a protected branch,
    /// a hook said no): nothing changed there.
    pub fn rejected(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Rejected, message)
    }

    /// The policy failed for this call.
    pub fn policy(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Policy, message)
    }

    /// The configuration or policy file is unusable.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// An I/O error, with what was being done and where; the OS error is
    /// the cause.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        Error::new(
            ErrorKind::Io,
            format!("{action} {}: {source}", path.display()),
        )
        .with_source(source)
    }

    /// A filesystem failure without a single OS error to carry (one the
    /// policy reported, or a summary of several attempts).
    pub fn filesystem(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Io, message)
    }
}

/// Result with the library's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_reads_as_its_kind_then_its_message() {
        let e = Error::not_found("branch x");
        assert_eq!(e.to_string(), "not found: branch x");
        assert_eq!(e.message(), "branch x");
        let e = Error::in_use("acme_app_12345678 (leased by scan-7)");
        assert_eq!(
            e.to_string(),
            "workspace acme_app_12345678 (leased by scan-7) is in use (being prepared or \
             leased): retry when it is released"
        );
        // What goes out as kind and message comes back the same.
        let back = Error::new(e.kind().as_str().parse().unwrap(), e.message());
        assert_eq!(back.to_string(), e.to_string());
        assert!("unauthorized".parse::<ErrorKind>().is_err());
    }

    #[test]
    fn an_io_error_keeps_its_cause() {
        use std::error::Error as _;
        let os = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = Error::io("reading", "/x", os);
        assert_eq!(e.kind(), ErrorKind::Io);
        assert_eq!(e.to_string(), "filesystem: reading /x: denied");
        let cause = e
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(cause.kind(), std::io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn every_label_names_its_kind() {
        for kind in ErrorKind::ALL {
            assert_eq!(kind.as_str().parse::<ErrorKind>(), Ok(kind));
        }
    }
}
