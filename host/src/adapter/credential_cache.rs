//! Serving a caller's credential to stock git run in a leased workspace,
//! from memory, through git's own credential cache (`git credential-cache`,
//! a daemon that holds credentials in memory behind a Unix socket).
//!
//! Why git's cache and not a helper of ours: git starts a helper as a
//! program of its own, and the library (the Python wheel included) has no
//! program to offer; `git credential-cache` is part of every git that a job
//! could push with, speaks the helper protocol, and already forgets by
//! itself after a timeout.
//!
//! What is written: the workspace's `.git/config` gets
//! `credential.<scheme>://<host[:port]>.helper = cache --socket <path>`
//! (no secret), so git asks the cache only for the clone URL's own scheme,
//! host and port. The secret goes to the daemon on a pipe, never in an
//! argument, a file or the environment. The socket lives in a fresh folder
//! only the service's user can enter. Stopping (the lease released) makes
//! the daemon exit and removes the folder and the config entry; a lease
//! that lapses is forgotten by the daemon's own timeout, and the next
//! prepare's hygiene removes the entry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Why a credential could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The clone URL is not http(s): git asks helpers only for those.
    #[error(
        "serving the credential to git works for http(s) clone URLs only, not {0}; push through \
         the service instead"
    )]
    NotHttp(String),
    /// There is no credential in the clone URL.
    #[error("the clone URL carries no credential to serve")]
    NoCredential,
    /// This system has no Unix sockets, so no git credential cache.
    #[error("serving the credential to git needs git's credential cache, which needs Unix sockets")]
    Unsupported,
    /// `git credential-cache` could not be run or refused the credential.
    #[error(
        "starting git's credential cache failed: {0}; install git (with credential-cache) on \
         the service's PATH"
    )]
    Cache(String),
    /// The workspace's config could not be written.
    #[error("writing the credential helper into {path}: {message}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// git2's message.
        message: String,
    },
}

/// A credential held in memory by a `git credential-cache` daemon of its
/// own, for one origin, until dropped (or its timeout). What git is told
/// to ask it is [`key`](Self::key) = [`helper`](Self::helper), as config.
#[derive(Debug)]
pub struct CredentialCache {
    /// The folder holding the socket (mode 0700).
    dir: PathBuf,
    socket: PathBuf,
    /// `scheme://host[:port]`, as git matches helper config to URLs.
    origin: String,
    stopped: bool,
}

impl CredentialCache {
    /// Hold `username`/`secret` for `clone_url`'s scheme, host and port,
    /// for at most `ttl`.
    pub fn start(
        clone_url: &str,
        username: &str,
        secret: &str,
        ttl: Duration,
    ) -> Result<CredentialCache, ServeError> {
        let url = url::Url::parse(clone_url).map_err(|_| ServeError::NotHttp(clone_url.into()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ServeError::NotHttp(format!("{}://", url.scheme())));
        }
        if secret.is_empty() {
            return Err(ServeError::NoCredential);
        }
        if !cfg!(unix) {
            return Err(ServeError::Unsupported);
        }
        let (protocol, host) = origin(&url).ok_or_else(|| ServeError::NotHttp(clone_url.into()))?;
        let dir = private_dir().map_err(|e| ServeError::Cache(format!("a socket folder: {e}")))?;
        let cache = CredentialCache {
            socket: dir.join("socket"),
            dir,
            origin: format!("{protocol}://{host}"),
            stopped: false,
        };
        // Bare tokens: forges take any user name with a token as password.
        let username = if username.is_empty() {
            "x-access-token"
        } else {
            username
        };
        let mut child = cache
            .command(&["--timeout", &ttl.as_secs().max(1).to_string(), "store"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ServeError::Cache(e.to_string()))?;
        let written = child.stdin.take().map(|mut stdin| {
            write!(
                stdin,
                "protocol={protocol}\nhost={host}\nusername={username}\npassword={secret}\n\n"
            )
        });
        let output = child
            .wait_with_output()
            .map_err(|e| ServeError::Cache(e.to_string()))?;
        if !output.status.success() || !matches!(written, Some(Ok(()))) {
            return Err(ServeError::Cache(
                String::from_utf8_lossy(&output.stderr).trim().to_string(),
            ));
        }
        Ok(cache)
    }

    /// The config key that makes git ask this cache, for its origin only.
    pub fn key(&self) -> String {
        format!("credential.{}.helper", self.origin)
    }

    /// The helper's config value. git's syntax: a value without `!` or `/`
    /// runs `git credential-<value>` through the shell, so the path is
    /// quoted.
    pub fn helper(&self) -> String {
        let socket = self.socket.display().to_string().replace('\'', "'\\''");
        format!("cache --socket '{socket}'")
    }

    /// `git credential-cache --socket <socket> <args>`, with an environment
    /// of PATH alone: the daemon it starts outlives this call and must not
    /// hold the service's own secrets.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("git");
        command
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .arg("credential-cache")
            .arg("--socket")
            .arg(&self.socket)
            .args(args);
        command
    }

    /// Forget the credential now: the daemon exits and the socket folder
    /// goes. Safe to call twice.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        let exited = self
            .command(&["exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = exited {
            tracing::warn!(error = %e, "could not stop git's credential cache; it forgets at its timeout");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for CredentialCache {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A credential served to one workspace's git until [`stop`](Self::stop)
/// (or drop): a [`CredentialCache`] named in the workspace's config.
#[derive(Debug)]
pub struct ServedCredential {
    cache: CredentialCache,
    /// The workspace's checkout, whose config names the helper.
    repo_dir: PathBuf,
}

/// The origin git will ask a helper about for `url`, as git writes it in
/// the helper protocol (`protocol`, and `host` with a port only when the
/// URL names one), and as the config's URL match spells it.
fn origin(url: &url::Url) -> Option<(String, String)> {
    let host = url.host_str()?;
    let host = match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    };
    Some((url.scheme().to_string(), host))
}

/// Serve `username`/`secret` for `clone_url`'s scheme, host and port to
/// git run in the checkout at `repo_dir`, for at most `ttl`.
pub fn serve(
    repo_dir: &Path,
    clone_url: &str,
    username: &str,
    secret: &str,
    ttl: Duration,
) -> Result<ServedCredential, ServeError> {
    let served = ServedCredential {
        cache: CredentialCache::start(clone_url, username, secret, ttl)?,
        repo_dir: repo_dir.to_path_buf(),
    };
    served.write_config()?;
    Ok(served)
}

impl ServedCredential {
    fn write_config(&self) -> Result<(), ServeError> {
        let path = self.repo_dir.join(".git").join("config");
        let fail = |e: git2::Error| ServeError::Config {
            path: path.clone(),
            message: e.message().to_string(),
        };
        let mut config = git2::Config::open(&path).map_err(fail)?;
        config
            .set_str(&self.cache.key(), &self.cache.helper())
            .map_err(fail)
    }

    /// Forget the credential now: the daemon exits, the socket folder and
    /// the helper entry go. Safe to call twice.
    pub fn stop(&mut self) {
        if self.cache.stopped {
            return;
        }
        self.cache.stop();
        // Only our own entry: a later lease may have written the same key.
        let path = self.repo_dir.join(".git").join("config");
        let key = self.cache.key();
        if let Ok(mut config) = git2::Config::open(&path)
            && config.get_string(&key).ok() == Some(self.cache.helper())
        {
            let _ = config.remove(&key);
        }
    }
}

impl Drop for ServedCredential {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh folder under the temporary directory that only this user may
/// enter (a socket path must stay short, so not under the base directory).
fn private_dir() -> std::io::Result<PathBuf> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("fixsec-cred-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o700));
    }
    Ok(builder.tempdir()?.keep())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_credential_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let ttl = Duration::from_secs(60);
        for url in ["ssh://git@h/o/r.git", "git://h/o/r.git", "/srv/git/r"] {
            let err = serve(dir.path(), url, "u", "s", ttl).unwrap_err();
            assert!(matches!(err, ServeError::NotHttp(_)), "{url}: {err}");
        }
        let err = serve(dir.path(), "https://h/o/r.git", "u", "", ttl).unwrap_err();
        assert!(matches!(err, ServeError::NoCredential), "{err}");
    }

    #[test]
    fn the_origin_is_what_git_asks_helpers_about() {
        let o = |u: &str| origin(&url::Url::parse(u).unwrap()).unwrap();
        assert_eq!(
            o("https://git.example/o/r.git"),
            ("https".into(), "git.example".into())
        );
        assert_eq!(
            o("http://127.0.0.1:8080/o/r.git"),
            ("http".into(), "127.0.0.1:8080".into())
        );
    }
}
