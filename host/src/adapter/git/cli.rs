//! The git command line, for what libgit2 cannot do: checkouts written on
//! every core (`checkout.workers`), partial clones (`--filter`) and sparse
//! checkouts (cone mode). libgit2 has none of the three (libgit2 issues
//! 5564 and 2263, PR 4205).
//!
//! git runs here under the host's rules, as libgit2 does:
//! - an environment of its own: no system or global config, no terminal
//!   prompt, no hooks, no fsmonitor, no redirects, and only the clone URL's
//!   own protocol allowed (a promisor or a redirect cannot reach another);
//! - the credential never in an argument, a file or the environment: it is
//!   served from memory by git's credential cache for the clone URL's
//!   scheme, host and port only, for this one command
//!   ([`credential_cache`](crate::adapter::credential_cache));
//! - bounded: the transfer guard (shutdown, size, free space) is checked
//!   while it runs, a command silent for longer than the I/O timeout is
//!   stopped, and a stopped command takes its whole process group with it;
//! - its messages reported as [`GitError`]s, classified once; a network
//!   failure's detail goes to the log only.

use super::error::{GitError, GitFailure};
use super::remote::Remote;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The oldest git line whose partial clone, cone-mode sparse checkout and
/// parallel checkout this host relies on (2.38 has them too, but no 2.38
/// release has the 2024 clone fixes: see [`parse_version`]).
const MINIMUM: (u32, u32) = (2, 39);

/// How long a command may stay silent (no output, no growth of what it
/// writes) before it is stopped; set with libgit2's timeouts
/// ([`set_io_timeout`]).
static IO_TIMEOUT_MS: AtomicU64 = AtomicU64::new(120_000);

/// Set how long a git command may stay silent.
pub(crate) fn set_io_timeout(timeout: Duration) {
    IO_TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// A usable git command line.
#[derive(Debug, Clone)]
pub struct GitCli {
    program: PathBuf,
    version: (u32, u32),
}

/// The git on the PATH, if it is 2.39.4 or a later fixed release; looked
/// up once.
/// `FIXSEC_GIT_CLI=0` turns it off (everything then uses libgit2, and
/// what needs the command line says so).
pub fn git_cli() -> Option<&'static GitCli> {
    static FOUND: OnceLock<Option<GitCli>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            if std::env::var_os("FIXSEC_GIT_CLI").is_some_and(|v| v == "0") {
                return None;
            }
            let program = PathBuf::from("git");
            let out = Command::new(&program)
                .arg("--version")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let version = parse_version(&String::from_utf8_lossy(&out.stdout))?;
            if version < MINIMUM {
                tracing::warn!(
                    ?version,
                    "git on the PATH is older than 2.39.4 (or lacks the 2024 clone fixes): \
                     checkouts use one core, and partial \
                     clones and sparse checkouts are refused"
                );
                return None;
            }
            Some(GitCli { program, version })
        })
        .as_ref()
}

/// `(major, minor)` of `git version 2.47.3` (or `2.39.5.windows.1`), if
/// that release has the fixes for CVE-2024-32002 and CVE-2024-32004
/// (2.39.4, 2.40.2, 2.41.1, 2.42.2, 2.43.4, 2.44.1, 2.45.1 and later).
fn parse_version(text: &str) -> Option<(u32, u32)> {
    let number = text.trim().strip_prefix("git version ")?;
    let mut parts = number.split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    let patch: u32 = parts
        .next()
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .unwrap_or(0);
    let fixed_patch = match (major, minor) {
        // No 2.38 release has the fixes.
        (2, 38) => u32::MAX,
        (2, 39) => 4,
        (2, 40) => 2,
        (2, 41) => 1,
        (2, 42) => 2,
        (2, 43) => 4,
        (2, 44) => 1,
        (2, 45) => 1,
        _ => 0,
    };
    (patch >= fixed_patch).then_some((major, minor))
}

/// What the CLI needs to say when there is none.
pub(crate) fn needed(what: &str) -> GitError {
    GitError::other(format!(
        "{what} needs git 2.39.4 or a later fixed release on the service's PATH (libgit2 \
         cannot do it); install Debian's git, or prepare without it"
    ))
}

/// One git command: where it runs, its config, and the remote it talks to.
pub(crate) struct Run<'a> {
    /// What the command does, for messages ("cloning <url>").
    pub action: String,
    /// The working directory.
    pub dir: &'a Path,
    /// The transfer's credential, origin and bounds (none: a local command).
    pub remote: Option<&'a Remote>,
    /// A folder whose growth counts as progress and against the size limit
    /// (the clone's git directory).
    pub watch: Option<PathBuf>,
}

impl GitCli {
    /// The git version found.
    pub fn version(&self) -> (u32, u32) {
        self.version
    }

    /// `git <args>` as `run` says, its standard output on success.
    pub(crate) fn run(&self, run: &Run<'_>, args: &[&str]) -> Result<String, GitError> {
        if let Some(remote) = run.remote {
            GitError::check_start(remote, &run.action)?;
        }
        // The credential, served for this command only (dropped at the end).
        let served = match run
            .remote
            .and_then(|r| r.credentials.as_ref().map(|c| (r, c)))
        {
            Some((remote, credentials)) => Some(serve(remote, credentials, &run.action)?),
            None => None,
        };
        let mut config = isolation(run.remote);
        if let Some(served) = &served {
            config.push((served.key(), served.helper()));
        }
        // An empty home of its own: neither ssh (keys, config, known hosts)
        // nor curl (`.netrc`) may find the service user's.
        let home = tempfile::Builder::new()
            .prefix("fixsec-git-home-")
            .tempdir()
            .map_err(|e| GitError::other(format!("{}: a home folder for git: {e}", run.action)))?;
        let mut command = Command::new(&self.program);
        command
            .env_clear()
            .envs(std::env::var_os("PATH").map(|p| ("PATH", p)))
            .envs(std::env::var_os("SYSTEMROOT").map(|p| ("SYSTEMROOT", p)))
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path())
            .env(
                "GIT_CEILING_DIRECTORIES",
                run.dir.parent().unwrap_or(run.dir),
            )
            .env("LC_ALL", "C")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", null_device())
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PROTOCOL_FROM_USER", "0")
            .env("GIT_CONFIG_COUNT", config.len().to_string())
            .current_dir(run.dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (i, (key, value)) in config.iter().enumerate() {
            command
                .env(format!("GIT_CONFIG_KEY_{i}"), key)
                .env(format!("GIT_CONFIG_VALUE_{i}"), value);
        }
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .map_err(|e| GitError::other(format!("{}: starting git: {e}", run.action)))?;
        let last_output = std::sync::Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let stdout = child.stdout.take().map(drain);
        let stderr = child.stderr.take().map(|pipe| {
            let last = last_output.clone();
            std::thread::spawn(move || {
                let mut pipe = pipe;
                let mut kept = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    kept.extend_from_slice(&chunk[..n]);
                    if kept.len() > 16 * 1024 {
                        kept.drain(..kept.len() - 8 * 1024);
                    }
                }
                kept
            })
        });
        let status = self.supervise(run, &mut child, &last_output, started);
        let stdout = stdout.and_then(|t| t.join().ok()).unwrap_or_default();
        let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        drop(served);
        drop(home);
        let stderr = String::from_utf8_lossy(&stderr);
        match status {
            Err(stopped) => Err(stopped),
            Ok(status) if status.success() => Ok(String::from_utf8_lossy(&stdout).into_owned()),
            Ok(status) => {
                let secrets = run
                    .remote
                    .and_then(|r| r.credentials.as_ref())
                    .map(secret_spellings)
                    .unwrap_or_default();
                Err(failure(&run.action, status, &redact(&stderr, &secrets)))
            }
        }
    }

    /// Wait for `child`, stopping it (and every process it started) at
    /// shutdown, past the size limit or free-space floor, or when it has
    /// been silent for longer than the I/O timeout.
    fn supervise(
        &self,
        run: &Run<'_>,
        child: &mut std::process::Child,
        last_output: &AtomicU64,
        started: Instant,
    ) -> Result<std::process::ExitStatus, GitError> {
        let timeout = IO_TIMEOUT_MS.load(Ordering::Relaxed);
        let (mut seen_size, mut last_growth, mut next_measure) = (0u64, 0u64, 0u64);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) => {}
                Err(e) => {
                    return Err(GitError::other(format!(
                        "{}: waiting for git: {e}",
                        run.action
                    )));
                }
            }
            let now = started.elapsed().as_millis() as u64;
            let mut stop = None;
            if now >= next_measure {
                next_measure = now + 250;
                let size = run
                    .watch
                    .as_deref()
                    .map(crate::adapter::fs::dir_size)
                    .unwrap_or(0);
                if size > seen_size {
                    (seen_size, last_growth) = (size, now);
                }
                if let Some(guard) = run.remote.and_then(|r| r.guard.as_ref())
                    && guard.check(size).is_err()
                {
                    stop = guard.stopped().map(|s| GitError::stopped(&run.action, s));
                }
            }
            let quiet = now.saturating_sub(last_output.load(Ordering::Relaxed).max(last_growth));
            // Only a command that talks to a remote can hang on it; a local
            // checkout of a large tree may be quiet for long.
            if stop.is_none() && run.remote.is_some() && quiet > timeout {
                tracing::warn!(action = %run.action, quiet_ms = quiet, "git made no progress; stopped");
                stop = Some(GitError::of(
                    GitFailure::Network,
                    format!(
                        "{}: git made no progress for {} s and was stopped; check the network \
                         and the URL, then retry",
                        run.action,
                        quiet / 1000
                    ),
                ));
            }
            if let Some(stop) = stop {
                kill_group(child);
                return Err(stop);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Read a pipe to its end on a thread of its own.
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = pipe.read_to_end(&mut all);
        all
    })
}

/// Stop `child` and the processes it started (git's remote helpers,
/// `index-pack`), then reap it.
fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill(2) on the process group the child leads (it was
        // started with process_group(0)); no memory is shared.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn null_device() -> &'static str {
    if cfg!(windows) { "NUL" } else { "/dev/null" }
}

/// The config every command runs with: nothing of the repository's or the
/// machine's can run a program, redirect a fetch or reach another
/// protocol than the clone URL's.
fn isolation(remote: Option<&Remote>) -> Vec<(String, String)> {
    let mut config: Vec<(String, String)> = [
        ("core.hooksPath", null_device()),
        ("core.fsmonitor", "false"),
        ("credential.helper", ""),
        ("http.followRedirects", "false"),
        ("protocol.allow", "never"),
        ("submodule.recurse", "false"),
        ("fetch.recurseSubmodules", "false"),
        ("index.sparse", "false"),
        ("gc.auto", "0"),
        ("core.commitGraph", "false"),
        ("transfer.bundleURI", "false"),
        ("promisor.acceptFromServer", "none"),
        ("maintenance.auto", "false"),
        ("advice.detachedHead", "false"),
        ("checkout.workers", "0"),
        ("checkout.thresholdForParallelism", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let protocol = match remote {
        Some(r) if r.local => Some("file"),
        Some(r) => r.scheme.as_deref(),
        None => None,
    };
    if let Some(protocol) = protocol {
        config.push((format!("protocol.{protocol}.allow"), "always".into()));
    }
    if let Some(timeout) = Some(IO_TIMEOUT_MS.load(Ordering::Relaxed) / 1000).filter(|t| *t > 0) {
        // Below 1 KB/s for the I/O timeout: curl gives up (http only).
        config.push(("http.lowSpeedLimit".into(), "1000".into()));
        config.push(("http.lowSpeedTime".into(), timeout.to_string()));
    }
    config
}

/// The credential of `remote`, served from memory for its origin while
/// `action` runs.
fn serve(
    remote: &Remote,
    credentials: &crate::clone_url::Credentials,
    action: &str,
) -> Result<crate::adapter::credential_cache::CredentialCache, GitError> {
    let (Some(scheme), Some(host)) = (remote.scheme.as_deref(), remote.host.as_deref()) else {
        return Err(GitError::other(format!(
            "{action}: a credential for a URL without a host cannot be served to git"
        )));
    };
    if !matches!(scheme, "http" | "https") {
        return Err(GitError::other(format!(
            "{action}: git's command line is given credentials for http(s) URLs only, not \
             {scheme}://; use an https clone URL"
        )));
    }
    // `https://TOKEN@host`: a bare token, sent as forges take one.
    let (username, secret) = match credentials.secret.is_empty() {
        true => ("x-access-token", credentials.username.as_str()),
        false => (credentials.username.as_str(), credentials.secret.as_str()),
    };
    let origin = match remote.port {
        Some(port) if Some(port) != default_port(scheme) => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    };
    // Stopped when the command ends; the timeout only bounds how long it
    // would outlive a service that died mid-command.
    crate::adapter::credential_cache::CredentialCache::start(
        &origin,
        username,
        secret,
        CACHE_LIFETIME,
    )
    .map_err(|e| GitError::other(format!("{action}: {e}")))
}

/// How long a command's credential cache would outlive a service that died
/// mid-command (a command ends it itself).
const CACHE_LIFETIME: Duration = Duration::from_secs(300);

/// The ways a credential can appear in a server's echo: as given,
/// percent-encoded, and as HTTP Basic's base64 of `user:secret`.
fn secret_spellings(c: &crate::clone_url::Credentials) -> Vec<String> {
    use base64::Engine;
    let mut out = Vec::new();
    for s in [&c.secret, &c.username] {
        if s.len() >= 4 {
            out.push(s.to_string());
            out.push(url::form_urlencoded::byte_serialize(s.as_bytes()).collect());
        }
    }
    let pairs = [
        format!("{}:{}", c.username, c.secret),
        format!("x-access-token:{}", c.username),
    ];
    for pair in pairs {
        out.push(base64::engine::general_purpose::STANDARD.encode(pair));
    }
    out.retain(|s| !s.is_empty());
    out
}

/// `text` with every spelling in `secrets` replaced.
fn redact(text: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    }
}

/// git's failure as a [`GitError`]: its last `fatal:`/`error:` line, with
/// the class its words give. A network failure's detail goes to the log.
fn failure(action: &str, status: std::process::ExitStatus, stderr: &str) -> GitError {
    let said: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("fatal:") || l.starts_with("error:"))
        .collect();
    let detail = said
        .last()
        .copied()
        .or_else(|| stderr.lines().map(str::trim).rfind(|l| !l.is_empty()))
        .unwrap_or("no message")
        .to_string();
    // Classified from git's own words: a server's `remote:` lines could
    // say anything.
    let text: String = stderr
        .lines()
        .filter(|l| !l.trim_start().starts_with("remote:"))
        .collect::<Vec<_>>()
        .join("\n")
        .to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| text.contains(w));
    let failure = if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "http basic: access denied",
    ]) {
        GitFailure::Auth
    } else if has(&[
        "not found in upstream",
        "remote branch",
        "couldn't find remote ref",
        "does not appear to be a git repository",
        "repository not found",
        "not a valid object name",
        "pathspec",
    ]) {
        GitFailure::NotFound
    } else if has(&[
        "unable to access",
        "could not resolve host",
        "connection refused",
        "early eof",
        "the remote end hung up",
        "unable to connect",
        "failed to connect",
        "operation timed out",
        "protocol error",
    ]) {
        GitFailure::Network
    } else {
        GitFailure::Other
    };
    match failure {
        GitFailure::Network => {
            tracing::warn!(action, detail, %status, "git network failure");
            GitError::of(
                failure,
                format!(
                    "{action}: the remote could not be reached or did not answer as a git \
                     server (git's detail is in the service log); check the URL and the \
                     network, then retry"
                ),
            )
        }
        GitFailure::Auth => GitError::of(
            failure,
            format!(
                "{action}: the remote refused the credential; check the credentials in the \
                 clone URL (a token needs read access)"
            ),
        ),
        _ => GitError::of(failure, format!("{action}: {detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_what_git_prints() {
        assert_eq!(parse_version("git version 2.47.3\n"), Some((2, 47)));
        assert_eq!(parse_version("git version 2.39.5.windows.1"), Some((2, 39)));
        // Releases without the 2024 clone fixes are not used.
        assert_eq!(parse_version("git version 2.39.3"), None);
        assert_eq!(parse_version("git version 2.45.0"), None);
        assert_eq!(parse_version("hub version 2"), None);
        assert_eq!(parse_version("git version 2.38.5"), None);
        assert!((2, 38) < MINIMUM && (2, 39) >= MINIMUM);
    }

    /// git finds no home of the service user's (ssh keys, `.netrc`): it
    /// runs with an empty one of its own.
    #[test]
    fn git_runs_with_a_home_of_its_own() {
        let Some(git) = git_cli() else { return };
        let dir = tempfile::tempdir().unwrap();
        let run = Run {
            action: "asking git for its home".into(),
            dir: dir.path(),
            remote: None,
            watch: None,
        };
        let home = git
            .run(&run, &["-c", "alias.home=!echo \"$HOME\"", "home"])
            .unwrap();
        let home = std::path::Path::new(home.trim());
        assert!(
            home.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("fixsec-git-home-"),
            "{}",
            home.display()
        );
        assert!(!home.exists(), "the home outlived the command");
    }

    #[cfg(unix)]
    #[test]
    fn failures_are_classified_from_gits_words() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(128 << 8);
        let cases = [
            (
                "fatal: Authentication failed for 'https://h/r'",
                GitFailure::Auth,
            ),
            (
                "fatal: Remote branch nope not found in upstream origin",
                GitFailure::NotFound,
            ),
            (
                "fatal: unable to access 'https://h/': Could not resolve host: h",
                GitFailure::Network,
            ),
            ("fatal: unable to write new index file", GitFailure::Other),
        ];
        for (stderr, want) in cases {
            let e = failure("cloning", status, stderr);
            assert_eq!(e.failure, want, "{stderr}");
            assert!(!e.message.contains("Could not resolve"), "{}", e.message);
        }
        // A server's own lines neither classify the failure nor carry
        // the credential out.
        let creds = crate::clone_url::Credentials {
            username: "bob".into(),
            secret: "s3cr3t-token".into(),
        };
        let echoed = "remote: Authentication failed for Basic Ym9iOnMzY3IzdC10b2tlbg==\n\
                      fatal: remote error: s3cr3t-token is not welcome";
        let e = failure(
            "fetching",
            status,
            &redact(echoed, &secret_spellings(&creds)),
        );
        assert_eq!(e.failure, GitFailure::Other, "{}", e.message);
        assert!(
            !e.message.contains("s3cr3t") && !e.message.contains("Ym9i"),
            "{}",
            e.message
        );
    }
}
