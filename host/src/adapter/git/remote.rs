//! The network side of git: what a transfer may carry (credentials, and to
//! which host), its bounds (shutdown, size, free space, libgit2's
//! timeouts). How a failure is reported is in `error.rs`.

use super::error::Stop;
use crate::clone_url::Credentials;
use git2::{
    Cred, CredentialType, ErrorClass, ErrorCode, FetchOptions, PushOptions, RemoteCallbacks,
};
use std::cell::Cell;
use std::sync::Arc;

/// Transfer progress of a clone or fetch, as libgit2 reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Objects the remote will send.
    pub total_objects: usize,
    /// Objects received so far.
    pub received_objects: usize,
    /// Objects indexed so far.
    pub indexed_objects: usize,
    /// Bytes received so far.
    pub received_bytes: usize,
}

/// A callback for transfer progress (for example a progress bar).
pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

/// What a clone or update needs besides the repository: credentials, where
/// they may go, a progress observer and the transfer's bounds.
#[derive(Clone, Default)]
pub struct Remote {
    /// The credential taken out of the clone URL, if any.
    pub credentials: Option<Credentials>,
    /// The clone URL's host: with [`scheme`](Self::scheme) and
    /// [`port`](Self::port), the only place any credential is offered to.
    pub host: Option<String>,
    /// The clone URL's scheme (`https`, `http`, `ssh`, `git`).
    pub scheme: Option<String>,
    /// The port the clone URL connects to (its own or the scheme's default).
    pub port: Option<u16>,
    /// The one object mirror a checkout for this transfer may borrow from
    /// (its folder): an alternates line of a reused checkout that names
    /// anything else (another URL's or network's mirror, any other folder)
    /// is dropped, so the checkout reads no object its own remote did not
    /// send. None: no line is kept.
    pub mirror: Option<std::path::PathBuf>,
    /// The deployment allows the service's own credentials (ssh-agent keys,
    /// the Windows logon) for this host (`WORKSPACE_SERVICE_CREDENTIAL_HOSTS`).
    pub service_credentials: bool,
    /// Called as objects arrive.
    pub progress: Option<Arc<ProgressFn>>,
    /// The URL is a local path: libgit2 cannot fetch shallow over it.
    pub local: bool,
    /// Cancellation and size bounds, checked as data arrives.
    pub guard: Option<Arc<TransferGuard>>,
    /// The key [`principal_digest`](Self::principal_digest) is made under
    /// (the base directory's; none: a key of this process).
    pub principal_key: Option<Arc<[u8; 32]>>,
}

/// Bounds a clone or fetch is held to while data arrives: a cancellation
/// flag (shutdown), a size limit and a free-space floor.
#[derive(Debug)]
pub struct TransferGuard {
    /// Set to stop every transfer (the service is shutting down).
    pub cancel: Arc<std::sync::atomic::AtomicBool>,
    /// Largest number of bytes a transfer may receive.
    pub max_bytes: Option<u64>,
    /// Free bytes the disk at `disk` must keep.
    pub min_free_bytes: u64,
    /// A folder on the disk workspaces are written to.
    pub disk: std::path::PathBuf,
    /// The setting `max_bytes` comes from (named in the message).
    max_bytes_setting: &'static str,
    /// When the transfer must be done by (submodules: the extras
    /// deadline), checked at every chunk and progress message.
    deadline: Option<std::time::Instant>,
    stopped: parking_lot::Mutex<Option<Stop>>,
    next_free_check: std::sync::atomic::AtomicU64,
}

/// How often (in received bytes) free space is measured during a transfer.
pub(super) const FREE_CHECK_EVERY: u64 = 8 << 20;

impl TransferGuard {
    /// A guard with these bounds.
    pub fn new(
        cancel: Arc<std::sync::atomic::AtomicBool>,
        max_bytes: Option<u64>,
        min_free_bytes: u64,
        disk: std::path::PathBuf,
    ) -> Self {
        TransferGuard {
            cancel,
            max_bytes,
            min_free_bytes,
            disk,
            max_bytes_setting: "WORKSPACE_MAX_WORKSPACE_MB",
            deadline: None,
            stopped: parking_lot::Mutex::new(None),
            next_free_check: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A guard for one transfer of the extras (a submodule's fetch): this
    /// guard's bounds, and besides them at most `max_bytes` (what is left
    /// of `WORKSPACE_MAX_EXTRAS_MB`) and done by `deadline` (the extras'
    /// `WORKSPACE_EXTRAS_TIMEOUT_SECONDS`), both enforced while the data
    /// arrives rather than counted after.
    pub fn for_extras(&self, max_bytes: u64, deadline: std::time::Instant) -> Self {
        // The workspace's own limit, where it is the tighter.
        let own = self.max_bytes.filter(|own| *own <= max_bytes);
        TransferGuard {
            max_bytes: Some(own.unwrap_or(max_bytes)),
            max_bytes_setting: match own {
                Some(_) => self.max_bytes_setting,
                None => "WORKSPACE_MAX_EXTRAS_MB, for submodules and LFS objects together",
            },
            deadline: Some(self.deadline.map_or(deadline, |d| d.min(deadline))),
            ..TransferGuard::new(
                self.cancel.clone(),
                None,
                self.min_free_bytes,
                self.disk.clone(),
            )
        }
    }

    /// Check before any transfer starts; `Err` says why not to start.
    pub fn check_start(&self) -> Result<(), Stop> {
        self.check(0)
            .map_err(|()| self.stopped().unwrap_or(Stop::Cancelled))
    }

    /// Whether the transfer may go on having received `received` bytes;
    /// records why not.
    pub(super) fn check(&self, received: u64) -> Result<(), ()> {
        use std::sync::atomic::Ordering;
        let stop = if self.cancel.load(Ordering::Relaxed) {
            Some(Stop::Cancelled)
        } else if let Some(max) = self.max_bytes.filter(|m| received > *m) {
            Some(Stop::Storage(format!(
                "the transfer passed the size limit of {} MB ({})",
                max >> 20,
                self.max_bytes_setting
            )))
        } else if self
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            Some(Stop::Storage(
                "the transfer ran past the time allowed for submodules and LFS objects \
                 (WORKSPACE_EXTRAS_TIMEOUT_SECONDS)"
                    .into(),
            ))
        } else if received >= self.next_free_check.load(Ordering::Relaxed) {
            self.next_free_check
                .store(received + FREE_CHECK_EVERY, Ordering::Relaxed);
            self.free_space_stop(0)
        } else {
            None
        };
        match stop {
            Some(s) => {
                self.stopped.lock().get_or_insert(s);
                Err(())
            }
            None => Ok(()),
        }
    }

    /// Whether a transfer that has no data yet (the remote is still
    /// counting objects, or trickling progress messages) may go on waiting:
    /// not past shutdown or the deadline. Records why not.
    pub(super) fn check_waiting(&self) -> Result<(), ()> {
        // No bytes yet: only shutdown, the deadline (and a first free-space
        // measure) can stop it.
        self.check(0)
    }

    /// Why not to write `more` bytes: the workspace disk would be left with
    /// less free space than the floor. None when it would not (or cannot be
    /// measured).
    pub(super) fn free_space_stop(&self, more: u64) -> Option<Stop> {
        let left = crate::adapter::fs::free_space(&self.disk)?.saturating_sub(more);
        (left < self.min_free_bytes).then(|| {
            Stop::Storage(format!(
                "only {} MB would be left free on the workspace disk, under the {} MB floor \
                 (WORKSPACE_MIN_FREE_MB); free space or run a cleanup",
                left >> 20,
                self.min_free_bytes >> 20
            ))
        })
    }

    /// Why the transfer was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.stopped.lock().clone()
    }
}

/// libgit2's process-wide network timeouts (connect, and each read or
/// write). 0 in libgit2 means "wait for ever": a tarpit would hold a
/// thread until the process dies.
pub fn set_network_timeouts(connect: std::time::Duration, io: std::time::Duration) {
    super::cli::set_io_timeout(io);
    super::partial::accept_shaped_repositories();
    let ms = |d: std::time::Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: plain integer options; libgit2 reads them at each connection.
    let result = unsafe {
        git2::opts::set_server_connect_timeout_in_milliseconds(ms(connect))
            .and_then(|()| git2::opts::set_server_timeout_in_milliseconds(ms(io)))
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot set libgit2's network timeouts");
    }
}

/// Scheme, host (lowercased) and port of a URL libgit2 asks credentials
/// for (`scheme://...`, or scp-like `user@host:path`, which is ssh on 22).
pub(crate) fn url_origin(url: &str) -> Option<(String, String, u16)> {
    if let Ok(u) = url::Url::parse(url)
        && let Some(h) = u.host_str()
    {
        let mut scheme = u.scheme().to_ascii_lowercase();
        // git's other spellings of ssh, which clone URLs accept.
        if matches!(scheme.as_str(), "git+ssh" | "ssh+git") {
            scheme = "ssh".into();
        }
        let port = u.port_or_known_default().or(match scheme.as_str() {
            "ssh" => Some(22),
            "git" => Some(9418),
            _ => None,
        })?;
        return Some((
            scheme,
            h.trim_matches(['[', ']']).to_ascii_lowercase(),
            port,
        ));
    }
    let (before, _) = url.split_once(':')?;
    Some((
        "ssh".into(),
        before.rsplit('@').next()?.to_ascii_lowercase(),
        22,
    ))
}

impl Remote {
    /// Who this remote's transfers act as, as a digest: the credential
    /// (or none) and whether the service's own may be used, under
    /// [`principal_key`](Self::principal_key) (else a random key of this
    /// process). Equal digests mean the same principal fetched; without
    /// the key the digest cannot be tried against guesses of the secret.
    pub fn principal_digest(&self) -> String {
        use sha2::{Digest, Sha256};
        static PROCESS_KEY: std::sync::LazyLock<[u8; 32]> = std::sync::LazyLock::new(rand::random);
        let key = self.principal_key.as_deref().unwrap_or(&PROCESS_KEY);
        let mut hash = Sha256::new();
        hash.update(key);
        match &self.credentials {
            Some(c) => {
                hash.update([1]);
                for part in [&c.username, &c.secret] {
                    hash.update((part.len() as u64).to_le_bytes());
                    hash.update(part.as_bytes());
                }
            }
            None => hash.update([0]),
        }
        hash.update([u8::from(self.service_credentials)]);
        format!("{:x}", hash.finalize())
    }

    /// Whether `url` is the clone URL's own scheme, host and port: the only
    /// place the caller's credential may go (another port or scheme of the
    /// same host is another service).
    pub fn is_clone_origin(&self, url: &str) -> bool {
        let Some((scheme, host, port)) = url_origin(url) else {
            return false;
        };
        self.host.as_deref() == Some(host.as_str())
            && self.scheme.as_deref() == Some(scheme.as_str())
            && self.port == Some(port)
    }
}

/// What to answer libgit2's request for credentials for `url`.
///
/// The caller's credential goes only to the clone URL's own host; the
/// service's own (ssh-agent keys, the Windows logon via DEFAULT) only
/// where the deployment configured it. Anything else is refused, so a
/// redirect or a caller-chosen host never receives a secret.
fn credential_for(
    remote: &Remote,
    url: &str,
    username_from_url: Option<&str>,
    allowed: CredentialType,
) -> Result<Cred, git2::Error> {
    let refuse = |msg: String| Err(git2::Error::new(ErrorCode::Auth, ErrorClass::Http, msg));
    if !remote.is_clone_origin(url) {
        let asking = url_origin(url).map(|(s, h, p)| format!("{s}://{h}:{p}"));
        return refuse(format!(
            "refusing to send credentials to {}, which is not the clone URL's scheme, host \
             and port",
            asking.as_deref().unwrap_or("an unknown host")
        ));
    }
    if let Some(c) = &remote.credentials
        && allowed.contains(CredentialType::USER_PASS_PLAINTEXT)
    {
        return Cred::userpass_plaintext(&c.username, &c.secret);
    }
    if allowed.contains(CredentialType::USERNAME) {
        return Cred::username(username_from_url.unwrap_or("git"));
    }
    if remote.service_credentials {
        if allowed.contains(CredentialType::SSH_KEY) {
            return Cred::ssh_key_from_agent(username_from_url.unwrap_or("git"));
        }
        if allowed.contains(CredentialType::DEFAULT) {
            return Cred::default();
        }
    }
    refuse(
        "the remote asks for credentials: put a token in the clone URL \
         (https://TOKEN@host/owner/repo.git), or list the host in \
         WORKSPACE_SERVICE_CREDENTIAL_HOSTS to offer the service's own"
            .into(),
    )
}

/// The callbacks every transfer uses: the credential (to the clone URL's
/// host only, asked at most twice), progress, and the host's bounds.
pub(super) fn callbacks(remote: &Remote) -> RemoteCallbacks<'_> {
    let mut callbacks = RemoteCallbacks::new();
    let tries = Cell::new(0u32);
    callbacks.credentials(move |url, username_from_url, allowed| {
        // libgit2 asks again after a rejected credential: answer twice at
        // most (a username first for ssh, then the key or password), then fail.
        tries.set(tries.get() + 1);
        if tries.get() > 2 {
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication failed",
            ));
        }
        credential_for(remote, url, username_from_url, allowed)
    });
    let progress = remote.progress.clone();
    let guard = remote.guard.clone();
    if progress.is_some() || guard.is_some() {
        callbacks.transfer_progress(move |p| {
            if let Some(progress) = &progress {
                progress(Progress {
                    total_objects: p.total_objects(),
                    received_objects: p.received_objects(),
                    indexed_objects: p.indexed_objects(),
                    received_bytes: p.received_bytes(),
                });
            }
            // false aborts the transfer; the guard remembers why.
            guard
                .as_ref()
                .is_none_or(|g| g.check(p.received_bytes() as u64).is_ok())
        });
    }
    if let Some(guard) = remote.guard.clone() {
        // Also while the remote is still counting objects (no data yet).
        callbacks.sideband_progress(move |_| guard.check_waiting().is_ok());
    }
    callbacks
}

/// Fetch options for a transfer from `remote`, `depth` commits deep
/// (none: all history; ignored for a local path).
pub(super) fn fetch_options(remote: &Remote, depth: Option<u32>) -> FetchOptions<'_> {
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks(remote));
    // libgit2 follows an offsite redirect on the first request by default;
    // a redirect may not take the caller anywhere the allow-list did not check.
    fo.follow_redirects(git2::RemoteRedirect::None);
    if let Some(d) = depth.filter(|_| !remote.local) {
        fo.depth(i32::try_from(d).unwrap_or(i32::MAX));
    }
    fo
}

/// Push options for `remote`: the same credential rule, no redirects, and
/// the remote's verdict on each reference recorded in `rejected`.
pub(super) fn push_options<'a>(
    remote: &'a Remote,
    rejected: &'a std::cell::RefCell<Vec<String>>,
) -> PushOptions<'a> {
    let mut cb = callbacks(remote);
    cb.push_update_reference(move |refname, status| {
        if let Some(why) = status {
            rejected.borrow_mut().push(format!("{refname}: {why}"));
        }
        Ok(())
    });
    let mut po = PushOptions::new();
    po.remote_callbacks(cb);
    po.follow_redirects(git2::RemoteRedirect::None);
    po
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(service_credentials: bool) -> Remote {
        Remote {
            credentials: Some(Credentials {
                username: "x-access-token".into(),
                secret: "SECRET".into(),
            }),
            host: Some("git.example".into()),
            scheme: Some("https".into()),
            port: Some(443),
            service_credentials,
            ..Remote::default()
        }
    }

    /// Review finding 3: a submodule's transfer stops at the extras'
    /// deadline even while the remote only trickles progress messages, and
    /// at what is left of the extras' bytes, each naming its setting.
    #[test]
    fn an_extras_transfer_stops_at_its_deadline_and_byte_limit() {
        let dir = tempfile::tempdir().unwrap();
        let parent = TransferGuard::new(Default::default(), Some(1 << 30), 0, dir.path().into());
        let late = parent.for_extras(u64::MAX, std::time::Instant::now());
        assert!(late.check_waiting().is_err());
        let Some(Stop::Storage(why)) = late.stopped() else {
            panic!("no stop recorded");
        };
        assert!(why.contains("WORKSPACE_EXTRAS_TIMEOUT_SECONDS"), "{why}");

        let later = std::time::Instant::now() + std::time::Duration::from_secs(600);
        let small = parent.for_extras(1000, later);
        assert!(small.check_waiting().is_ok());
        assert!(small.check(1000).is_ok());
        assert!(small.check(1001).is_err());
        let Some(Stop::Storage(why)) = small.stopped() else {
            panic!("no stop recorded");
        };
        assert!(why.contains("WORKSPACE_MAX_EXTRAS_MB"), "{why}");
        // The workspace's own limit still applies when it is the tighter.
        let big = parent.for_extras(u64::MAX, later);
        assert!(big.check((1 << 30) + 1).is_err());
        assert!(
            matches!(big.stopped(), Some(Stop::Storage(w)) if w.contains("WORKSPACE_MAX_WORKSPACE_MB"))
        );
    }

    /// Item 8: the service's own credentials (ssh-agent keys, the Windows
    /// logon) are offered only where the deployment said; the caller's
    /// only to the clone URL's host (item 3).
    #[test]
    fn credentials_go_only_where_they_belong() {
        let plain = CredentialType::USER_PASS_PLAINTEXT;
        let key = CredentialType::SSH_KEY;
        let logon = CredentialType::DEFAULT;
        let caller = remote(false);
        assert!(credential_for(&caller, "https://git.example/o/r.git", None, plain).is_ok());
        assert!(credential_for(&caller, "https://GIT.example:443/x.git", None, plain).is_ok());
        for (url, allowed) in [
            ("https://elsewhere.example/o/r.git", plain),
            ("https://git.example.evil/o/r.git", plain),
            ("http://git.example/o/r.git", plain),
            ("https://git.example:8443/o/r.git", plain),
            ("http://git.example:443/o/r.git", plain),
            ("ssh://git@git.example/o/r.git", key),
            ("https://git.example/o/r.git", logon),
            ("git@git.example:o/r.git", key),
        ] {
            let err = credential_for(&caller, url, Some("git"), allowed)
                .err()
                .unwrap_or_else(|| panic!("{url} {allowed:?} got a credential"));
            assert_eq!(err.code(), ErrorCode::Auth);
        }
        let trusted = remote(true);
        assert!(credential_for(&trusted, "https://git.example/o/r.git", None, logon).is_ok());
        // Review finding 7: git's other spellings of ssh are ssh on 22.
        let ssh = Remote {
            scheme: Some("ssh".into()),
            port: Some(22),
            ..remote(false)
        };
        for url in [
            "git+ssh://git@git.example/o/r.git",
            "ssh+git://git@git.example:22/o/r.git",
            "ssh://git@git.example/o/r.git",
            "git@git.example:o/r.git",
        ] {
            assert!(
                credential_for(&ssh, url, Some("git"), plain).is_ok(),
                "{url}"
            );
        }
        assert!(
            credential_for(&ssh, "git+ssh://git@git.example:2222/o/r.git", None, plain).is_err()
        );
        // Never to another host, configured or not.
        assert!(credential_for(&trusted, "https://other.example/r.git", None, logon).is_err());
    }
}
