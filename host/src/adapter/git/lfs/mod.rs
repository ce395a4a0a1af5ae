//! Git LFS objects in place of their pointer files, when a prepare asks.
//!
//! libgit2 has no LFS, so this is a small native client of the Git LFS
//! batch API: downloads only, the `basic` transfer only. It replaces a
//! `git lfs pull` child process, which honoured the repository's
//! `.lfsconfig`, sent requests wherever the LFS server's answer pointed
//! (with whatever headers it named), ignored the size, free-space and time
//! limits, and inherited the service's environment. The caller is trusted;
//! the repository's content and the LFS server's answers are not, hence:
//!
//! - **Pointers** come from the index: regular files whose blob is at most
//!   1024 bytes, parses as a v1 pointer, and whose path has the `filter`
//!   attribute `lfs`. A file that already holds its object is left alone.
//! - **The endpoint** is always the clone URL's own (`<url>.git/info/lfs`,
//!   as git-lfs derives it by default); `.lfsconfig` and `lfs.url` are
//!   ignored.
//! - **Every URL** (the batch endpoint, each download `href`) goes through
//!   the caller's [`LfsUrlCheck`] (allow-list, private-network rule) before
//!   any request, and the connection goes only to the addresses it
//!   returned (no second DNS look-up). http and https only, no redirects,
//!   no proxies, nothing read from the environment.
//! - **The caller's credential** goes only to the clone URL's scheme, host
//!   and port, and not to a download for which the LFS server supplied its
//!   own `Authorization`. Headers the server names are sent except `Host`,
//!   `Content-Length`, `Cookie`, `Proxy-*` and the hop-by-hop ones.
//! - **Limits**: each object's declared size, the extras budget (bytes and
//!   time, [`ExtrasBudget`]) and the transfer guard (shutdown, workspace
//!   size, free-space floor), checked as data arrives. Requests run on a
//!   thread of their own, so a stalled server never holds a shutdown.
//! - **Writing**: each object goes to a temporary file in the git
//!   directory, is checked (size, SHA-256) and renamed over its pointer
//!   file; a symbolic link or folder in its place is never written
//!   through. The index keeps the pointer's blob id, with the new file's
//!   stat data, so git and libgit2 see the file as unmodified.
//!
//! Messages and log lines name hosts and paths, never a credential nor a
//! URL's query string (download URLs often carry signed tokens).

use super::budget::ExtrasBudget;
use super::error::{GitError, Stop};
use super::remote::{FREE_CHECK_EVERY, Remote};
use git2::{AttrCheckFlags, Index, IndexEntry, IndexTime, ObjectType, Oid, Repository};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, sync_channel};
use std::time::{Duration, Instant};
use url::Url;

/// Checks a URL the LFS server (or the repository) names before any request goes to it:
/// `Ok(addrs)` = the socket addresses that may be connected to (the caller resolved the
/// host and checked it against the allow-list and the private-network rule; connect ONLY
/// to these, pin them with reqwest's ClientBuilder::resolve_to_addrs so DNS is not asked again),
/// `Err(why)` = refused.
pub type LfsUrlCheck<'a> = dyn Fn(&url::Url) -> Result<Vec<std::net::SocketAddr>, String> + 'a;

/// Largest blob read as a possible pointer file (git-lfs's own limit).
const POINTER_MAX: usize = 1024;
/// The first line of every pointer file this client understands.
const POINTER_VERSION_LINE: &str = "version https://git-lfs.github.com/spec/v1";
/// Objects asked for in one batch request.
const BATCH_SIZE: usize = 100;
/// Largest batch answer read (100 objects with their actions fit many times over).
const MAX_BATCH_ANSWER: usize = 16 << 20;
/// The media type of the LFS batch API.
const LFS_MEDIA_TYPE: &str = "application/vnd.git-lfs+json";
/// How the client introduces itself.
const USER_AGENT: &str = concat!(
    "fixsec-workspace/",
    env!("CARGO_PKG_VERSION"),
    " (Git LFS basic download)"
);
/// Bytes read from the network at a time.
const CHUNK: usize = 64 << 10;
/// Chunks the request thread may read ahead of the writer.
const CHUNKS_AHEAD: usize = 8;
/// Time allowed to open a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often a wait for the network looks at cancellation and the deadline.
const POLL: Duration = Duration::from_millis(200);
/// The folder of partial downloads, inside the git directory.
const TMP_DIR: &str = "fixsec-lfs-tmp";
/// The stage bits of an index entry's flags (non-zero: a conflict side).
const STAGE_MASK: u16 = 0x3000;
/// Headers an LFS server's action may not set: the transport's own, the
/// hop-by-hop ones, and cookies (`Proxy-*` is dropped by prefix).
const DROPPED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "cookie",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// Replace the LFS pointer files of the checkout at `repo_dir` with their objects, fetched
/// from the LFS endpoint of `url` (the clean clone URL) with `remote`'s credential.
/// Returns the bytes downloaded.
pub fn pull(
    repo_dir: &Path,
    url: &str,
    remote: &Remote,
    budget: &super::budget::ExtrasBudget,
    check: &LfsUrlCheck<'_>,
) -> Result<u64, GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    let mut index = repo
        .index()
        .map_err(|e| GitError::new("reading the index", e))?;
    let found = find_pointers(&repo, &index, repo_dir)?;
    let mut recorded = 0usize;
    for rel in &found.present {
        // Replaced by an earlier prepare, but the index does not know yet.
        record_stat(&mut index, rel, &repo_dir.join(rel))?;
        recorded += 1;
    }
    let outcome = if found.wanted.is_empty() {
        Ok(0)
    } else {
        if std::fs::symlink_metadata(repo_dir.join(".lfsconfig")).is_ok() {
            tracing::info!(
                repo = %repo_dir.display(),
                "the repository's .lfsconfig is ignored: LFS objects come only from the clone URL's own endpoint"
            );
        }
        match Session::start(url, remote, budget, check) {
            Ok(mut session) => {
                let fetched = session.run(&found.wanted, repo_dir, repo.path(), &mut index);
                recorded += session.recorded;
                fetched
            }
            Err(e) => Err(e),
        }
    };
    if recorded > 0
        && let Err(e) = index.write()
    {
        let written = GitError::new("writing the index after placing LFS objects", e);
        return Err(outcome.err().unwrap_or(written));
    }
    if let Ok(bytes) = &outcome {
        tracing::debug!(repo = %repo_dir.display(), bytes, files = recorded, "LFS pointers replaced");
    }
    outcome
}

mod rules;
#[cfg(test)]
mod tests;
mod worktree;

use rules::*;
use worktree::*;

/// The batch API's answer (only what a download needs; the rest is ignored).
#[derive(Deserialize)]
struct BatchAnswer {
    /// The transfer the server chose (`basic` when absent).
    #[serde(default)]
    transfer: Option<String>,
    /// The hash the oids are (`sha256` when absent).
    #[serde(default)]
    hash_algo: Option<String>,
    /// One per object asked for.
    #[serde(default)]
    objects: Vec<AnswerObject>,
}

/// The answer for one object.
#[derive(Deserialize)]
struct AnswerObject {
    /// The object's oid.
    oid: String,
    /// Where to fetch it.
    #[serde(default)]
    actions: Option<Actions>,
    /// Why it cannot be fetched.
    #[serde(default)]
    error: Option<ObjectError>,
}

/// The actions offered for an object.
#[derive(Deserialize)]
struct Actions {
    /// The download, if offered.
    #[serde(default)]
    download: Option<Action>,
}

/// One action: a URL and the headers to send it (no Debug: the URL and the
/// headers may hold tokens).
#[derive(Deserialize)]
struct Action {
    /// The URL to request.
    href: String,
    /// Headers to send with it.
    #[serde(default)]
    header: Option<BTreeMap<String, serde_json::Value>>,
}

/// An object's error in a batch answer.
#[derive(Deserialize)]
struct ObjectError {
    /// An HTTP-like status code (404: no such object).
    #[serde(default)]
    code: i64,
    /// The server's explanation (logged only).
    #[serde(default)]
    message: String,
}

/// What the request thread passes on.
enum Piece {
    /// The response arrived with this status.
    Status(StatusCode),
    /// The next part of the body.
    Data(Vec<u8>),
    /// The body is complete.
    End,
    /// The request failed (detail for the log, without the URL).
    Failed(String),
}

/// `e` and its sources, one after the other.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Send `request` and read its body on a thread of its own: the caller
/// waits on the channel, so it can stop at once on cancellation or the
/// deadline. Once the receiver is dropped the thread ends at its next
/// chunk (or when the request times out).
fn spawn_request(request: RequestBuilder) -> std::io::Result<Receiver<Piece>> {
    let (tx, rx) = sync_channel(CHUNKS_AHEAD);
    std::thread::Builder::new()
        .name("fixsec-lfs-http".into())
        .spawn(move || {
            let mut response = match request.send() {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Piece::Failed(error_chain(&e.without_url())));
                    return;
                }
            };
            if tx.send(Piece::Status(response.status())).is_err() {
                return;
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                match response.read(&mut buf) {
                    Ok(0) => {
                        let _ = tx.send(Piece::End);
                        return;
                    }
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.send(Piece::Data(buf)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Piece::Failed(error_chain(&e)));
                        return;
                    }
                }
            }
        })?;
    Ok(rx)
}

/// One pull's network side: the clone URL, the bounds, and a client per
/// checked host (pinned to the addresses the check returned).
struct Session<'a, 'c> {
    /// Credential, guard.
    remote: &'a Remote,
    /// Bytes and time for all extras.
    budget: &'a ExtrasBudget,
    /// The caller's rule for every URL.
    check: &'a LfsUrlCheck<'c>,
    /// The clone URL: the only origin the caller's credential goes to.
    clone: Url,
    /// `<endpoint>/objects/batch`.
    batch_url: Url,
    /// What is being done, for messages (no credential, no query).
    action: String,
    /// Clients by host and allowed addresses.
    clients: HashMap<(String, Vec<SocketAddr>), Client>,
    /// Object bytes downloaded so far.
    received: u64,
    /// When (in `received`) free space is measured next.
    next_free_check: u64,
    /// Index entries updated.
    recorded: usize,
    /// Temporary files named so far.
    files: u64,
}

impl<'a, 'c> Session<'a, 'c> {
    /// A session for the clone URL `url` (http or https), if the guard and
    /// the budget let it start.
    fn start(
        url: &str,
        remote: &'a Remote,
        budget: &'a ExtrasBudget,
        check: &'a LfsUrlCheck<'c>,
    ) -> Result<Self, GitError> {
        let parsed = Url::parse(url).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty())
        });
        let action = format!(
            "fetching Git LFS objects for {}",
            parsed.as_ref().map_or_else(|| url.to_string(), shown_url)
        );
        let Some(clone) = parsed else {
            return Err(fail(format!(
                "{action}: Git LFS objects are fetched over http or https only; use an https \
                 clone URL"
            )));
        };
        GitError::check_start(remote, &action)?;
        budget.check_time(&action)?;
        let batch_url =
            Url::parse(&format!("{}/objects/batch", lfs_endpoint(url))).map_err(|_| {
                fail(format!(
                    "{action}: no LFS endpoint can be derived from the clone URL"
                ))
            })?;
        Ok(Session {
            remote,
            budget,
            check,
            clone,
            batch_url,
            action,
            clients: HashMap::new(),
            received: 0,
            next_free_check: FREE_CHECK_EVERY,
            recorded: 0,
            files: 0,
        })
    }

    /// Download `wanted` into a temporary folder under `git_dir` and put
    /// each object in place in `repo_dir`, recording it in `index`. The
    /// folder is removed whatever happens.
    fn run(
        &mut self,
        wanted: &[Wanted],
        repo_dir: &Path,
        git_dir: &Path,
        index: &mut Index,
    ) -> Result<u64, GitError> {
        let tmp = git_dir.join(TMP_DIR);
        // Leftovers of a run that crashed.
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| GitError::io("creating", &tmp, e))?;
        let fetched = self.fetch_all(wanted, repo_dir, &tmp, index);
        if let Err(e) = std::fs::remove_dir_all(&tmp)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove the LFS download folder");
        }
        fetched
    }

    /// Batch by batch: ask, download each object, put it in place.
    fn fetch_all(
        &mut self,
        wanted: &[Wanted],
        repo_dir: &Path,
        tmp: &Path,
        index: &mut Index,
    ) -> Result<u64, GitError> {
        let no_header = BTreeMap::new();
        for group in wanted.chunks(BATCH_SIZE) {
            self.budget.check_time(&self.action)?;
            let mut answers = self.batch(group)?;
            for w in group {
                let path = w.targets.first().map_or("?", |t| t.shown.as_str());
                let Some(answer) = answers.remove(&w.pointer.oid) else {
                    return Err(fail(format!(
                        "{}: the LFS server's answer left out the object of {path}; check the \
                         LFS server, then retry",
                        self.action
                    )));
                };
                if let Some(error) = &answer.error {
                    return Err(self.object_error(path, error));
                }
                let Some(download) = answer.actions.as_ref().and_then(|a| a.download.as_ref())
                else {
                    return Err(fail(format!(
                        "{}: the LFS server offered no download for {path}; check the LFS server",
                        self.action
                    )));
                };
                let header = download.header.as_ref().unwrap_or(&no_header);
                let file = self.download(w, &download.href, header, tmp)?;
                self.place(&file, w, repo_dir, tmp, index)?;
            }
        }
        Ok(self.received)
    }

    /// Ask the batch endpoint for downloads of `group`; the answers by oid.
    fn batch(&mut self, group: &[Wanted]) -> Result<HashMap<String, AnswerObject>, GitError> {
        let objects: Vec<serde_json::Value> = group
            .iter()
            .map(|w| serde_json::json!({"oid": w.pointer.oid, "size": w.pointer.size}))
            .collect();
        let body = serde_json::json!({
            "operation": "download",
            "transfers": ["basic"],
            "objects": objects,
        })
        .to_string();
        let batch_url = self.batch_url.clone();
        let host = host_of(&batch_url);
        let client = self.client_for(&batch_url, "the LFS endpoint of the clone URL")?;
        let mut request = client
            .post(batch_url.clone())
            .header(ACCEPT, LFS_MEDIA_TYPE)
            .header(CONTENT_TYPE, LFS_MEDIA_TYPE)
            .timeout(self.time_left())
            .body(body);
        if let Some(c) = &self.remote.credentials
            && credential_goes_to(&batch_url, &self.clone, &BTreeMap::new())
        {
            request = request.basic_auth(&c.username, Some(&c.secret));
        }
        let (status, rx) = self.send(request, &host)?;
        if !status.is_success() {
            let why = match status.as_u16() {
                401 | 403 if self.remote.credentials.is_some() => {
                    "the LFS server refused the credential; the token in the clone URL needs \
                     read access"
                }
                401 | 403 => {
                    "the LFS server wants a credential; put a token with read access in the \
                     clone URL"
                }
                _ if status.is_redirection() => {
                    "the LFS server answered with a redirect, which is not followed; the LFS \
                     objects must be served at the clone URL's own endpoint"
                }
                _ => {
                    tracing::warn!(host, status = status.as_u16(), "LFS batch request failed");
                    "the LFS server did not answer the batch request (its status is in the \
                     service log); check that the clone URL's host serves the repository's \
                     LFS objects"
                }
            };
            return Err(fail(format!("{}: {why}", self.action)));
        }
        let bytes = self.read_all(&rx, &host)?;
        let answer: BatchAnswer = serde_json::from_slice(&bytes).map_err(|e| {
            tracing::warn!(host, error = %e, "unreadable LFS batch answer");
            fail(format!(
                "{}: the LFS server's batch answer is not valid Git LFS JSON (the detail is in \
                 the service log); check the LFS server",
                self.action
            ))
        })?;
        if answer.transfer.as_deref().is_some_and(|t| t != "basic")
            || answer.hash_algo.as_deref().is_some_and(|h| h != "sha256")
        {
            return Err(fail(format!(
                "{}: the LFS server chose a transfer or hash other than basic and sha256, which \
                 this host does not support",
                self.action
            )));
        }
        Ok(answer
            .objects
            .into_iter()
            .map(|o| (o.oid.to_ascii_lowercase(), o))
            .collect())
    }

    /// Download the object of `wanted` from `href` (with the action's
    /// `header`) into a temporary file under `tmp`, checked against the
    /// pointer; its path.
    fn download(
        &mut self,
        wanted: &Wanted,
        href: &str,
        header: &BTreeMap<String, serde_json::Value>,
        tmp: &Path,
    ) -> Result<PathBuf, GitError> {
        let path = wanted.targets.first().map_or("?", |t| t.shown.as_str());
        let size = wanted.pointer.size;
        let href = Url::parse(href).map_err(|_| {
            fail(format!(
                "{}: the LFS server named a download for {path} that is not a URL",
                self.action
            ))
        })?;
        let host = host_of(&href);
        let client = self.client_for(&href, &format!("named by the LFS server for {path}"))?;
        self.check_free(size)?;
        let mut headers = HeaderMap::new();
        let mut dropped = 0usize;
        for (name, value) in header {
            match value.as_str().and_then(|v| action_header(name, v)) {
                Some((name, value)) => {
                    let _ = headers.append(name, value);
                }
                None => dropped += 1,
            }
        }
        if dropped > 0 {
            tracing::debug!(host, path, dropped, "LFS action headers not sent");
        }
        let mut request = client
            .get(href.clone())
            .headers(headers)
            .timeout(self.time_left());
        if let Some(c) = &self.remote.credentials
            && credential_goes_to(&href, &self.clone, header)
        {
            request = request.basic_auth(&c.username, Some(&c.secret));
        }
        let (status, rx) = self.send(request, &host)?;
        if !status.is_success() {
            let why = match status.as_u16() {
                _ if status.is_redirection() => {
                    "answered with a redirect, which is not followed".to_string()
                }
                404 | 410 => "does not have it (it was never pushed, or was deleted)".to_string(),
                401 | 403 => {
                    "refused the download; the token in the clone URL needs read access".to_string()
                }
                other => {
                    tracing::warn!(host, path, status = other, "LFS download failed");
                    "did not send it (its status is in the service log)".to_string()
                }
            };
            return Err(fail(format!(
                "{}: cannot download the LFS object of {path}: {host} {why}",
                self.action
            )));
        }
        let part = self.temp_name(tmp, "part");
        let mut file = create_temp(&part).map_err(|e| GitError::io("creating", &part, e))?;
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        loop {
            match self.next_piece(&rx)? {
                Piece::Data(chunk) => {
                    let n = chunk.len() as u64;
                    got = got.saturating_add(n);
                    if got > size {
                        return Err(fail(format!(
                            "{}: {host} sent more than the {size} bytes the pointer of {path} \
                             declares; nothing was kept",
                            self.action
                        )));
                    }
                    self.budget.spend_bytes(n, &self.action)?;
                    self.received = self.received.saturating_add(n);
                    self.check_guard()?;
                    hasher.update(&chunk);
                    file.write_all(&chunk)
                        .map_err(|e| GitError::io("writing", &part, e))?;
                }
                Piece::End => break,
                Piece::Failed(detail) => return Err(self.unreachable(&host, &detail)),
                Piece::Status(_) => return Err(self.unreachable(&host, "a second status")),
            }
        }
        file.flush()
            .map_err(|e| GitError::io("writing", &part, e))?;
        drop(file);
        if got != size || hex(&hasher.finalize()) != wanted.pointer.oid {
            return Err(fail(format!(
                "{}: what {host} sent for {path} does not match its pointer (size or SHA-256); \
                 nothing was kept",
                self.action
            )));
        }
        Ok(part)
    }

    /// Put the checked object at `file` in place of each pointer file of
    /// `wanted` (a copy for all but the last), recording each in `index`.
    fn place(
        &mut self,
        file: &Path,
        wanted: &Wanted,
        repo_dir: &Path,
        tmp: &Path,
        index: &mut Index,
    ) -> Result<(), GitError> {
        let last = wanted.targets.len().saturating_sub(1);
        for (i, target) in wanted.targets.iter().enumerate() {
            if let Err(why) = destination(repo_dir, &target.rel) {
                tracing::warn!(path = %target.shown, why, "LFS object not put in place: the working-tree path is not a plain file");
                continue;
            }
            let src = if i == last {
                file.to_path_buf()
            } else {
                self.check_free(wanted.pointer.size)?;
                let copy = self.temp_name(tmp, "copy");
                std::fs::copy(file, &copy).map_err(|e| GitError::io("copying to", &copy, e))?;
                copy
            };
            set_executable(&src, target.executable)
                .map_err(|e| GitError::io("setting the mode of", &src, e))?;
            let dest = repo_dir.join(&target.rel);
            replace_file(&src, &dest)
                .map_err(|e| GitError::io("putting an LFS object in place at", &dest, e))?;
            record_stat(index, &target.rel, &dest)?;
            self.recorded += 1;
        }
        Ok(())
    }

    /// The error for an object the batch answer refused.
    fn object_error(&self, path: &str, error: &ObjectError) -> GitError {
        let detail: String = error.message.chars().take(200).collect();
        tracing::warn!(
            path,
            code = error.code,
            detail,
            "the LFS server reported an object error"
        );
        let why = match error.code {
            404 | 410 => "the LFS server does not have it (it was never pushed, or was deleted)",
            401 | 403 => {
                "the LFS server refused access to it; the token in the clone URL needs read access"
            }
            _ => "the LFS server reported an error for it (the detail is in the service log)",
        };
        fail(format!(
            "{}: cannot download the LFS object of {path}: {why}",
            self.action
        ))
    }

    /// A client for `url`'s host, pinned to the addresses the caller's
    /// check allows for it; `whom` says who named the URL (for a refusal).
    fn client_for(&mut self, url: &Url, whom: &str) -> Result<Client, GitError> {
        let host = host_of(url);
        let refuse = |why: &str| {
            fail(format!(
                "{}: refusing to connect to {host} ({whom}): {why}",
                self.action
            ))
        };
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refuse("only http and https are used"));
        }
        let addrs = (self.check)(url).map_err(|why| refuse(&why))?;
        if addrs.is_empty() {
            return Err(refuse("no address was allowed"));
        }
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(refuse("the URL has no host")),
        };
        if let Some(ip) = literal
            && !addrs.iter().any(|a| a.ip() == ip)
        {
            return Err(refuse("the address is not among those allowed"));
        }
        let key = (host, addrs);
        if let Some(client) = self.clients.get(&key) {
            return Ok(client.clone());
        }
        let mut builder = Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .referer(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.time_left())
            .user_agent(USER_AGENT);
        if let Some(url::Host::Domain(domain)) = url.host() {
            builder = builder.resolve_to_addrs(domain, &key.1);
        }
        let client = builder.build().map_err(|e| {
            tracing::warn!(error = %error_chain(&e.without_url()), "cannot build the LFS HTTP client");
            fail(format!(
                "{}: cannot set up an HTTP client (the detail is in the service log)",
                self.action
            ))
        })?;
        self.clients.insert(key, client.clone());
        Ok(client)
    }

    /// Send `request` to `host` on its own thread; the status and the body
    /// still to read.
    fn send(
        &self,
        request: RequestBuilder,
        host: &str,
    ) -> Result<(StatusCode, Receiver<Piece>), GitError> {
        let rx = spawn_request(request).map_err(|e| {
            fail(format!(
                "{}: cannot start a thread for the LFS request: {e}",
                self.action
            ))
        })?;
        match self.next_piece(&rx)? {
            Piece::Status(status) => Ok((status, rx)),
            Piece::Failed(detail) => Err(self.unreachable(host, &detail)),
            Piece::Data(_) | Piece::End => {
                Err(self.unreachable(host, "an answer without a status"))
            }
        }
    }

    /// The whole (small) body from `rx`, at most [`MAX_BATCH_ANSWER`] bytes.
    fn read_all(&self, rx: &Receiver<Piece>, host: &str) -> Result<Vec<u8>, GitError> {
        let mut body = Vec::new();
        loop {
            match self.next_piece(rx)? {
                Piece::Data(chunk) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > MAX_BATCH_ANSWER {
                        return Err(fail(format!(
                            "{}: the LFS server's batch answer passed {} MB; check the LFS server",
                            self.action,
                            MAX_BATCH_ANSWER >> 20
                        )));
                    }
                }
                Piece::End => return Ok(body),
                Piece::Failed(detail) => return Err(self.unreachable(host, &detail)),
                Piece::Status(_) => return Err(self.unreachable(host, "a second status")),
            }
        }
    }

    /// The next piece from the request thread, looking at cancellation and
    /// the deadline while none comes.
    fn next_piece(&self, rx: &Receiver<Piece>) -> Result<Piece, GitError> {
        loop {
            match rx.recv_timeout(POLL) {
                Ok(piece) => return Ok(piece),
                Err(RecvTimeoutError::Timeout) => {
                    self.check_stopped()?;
                    self.budget.check_time(&self.action)?;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Ok(Piece::Failed("the request thread ended early".into()));
                }
            }
        }
    }

    /// The error for a request to `host` that failed on the network:
    /// the deadline's or the guard's when they caused it, else a plain
    /// message (the detail goes to the log only).
    fn unreachable(&self, host: &str, detail: &str) -> GitError {
        if let Err(e) = self.budget.check_time(&self.action) {
            return e;
        }
        if let Some(stop) = self.remote.guard.as_ref().and_then(|g| g.stopped()) {
            return GitError::stopped(&self.action, stop);
        }
        tracing::warn!(host, detail, "LFS request failed");
        fail(format!(
            "{}: the LFS server could not be reached at {host}, or stopped answering (the \
             detail is in the service log); check the network, then retry",
            self.action
        ))
    }

    /// `Err` when the guard says stop (shutdown, workspace size, free space
    /// as it measures it).
    fn check_stopped(&self) -> Result<(), GitError> {
        match self.remote.guard.as_deref() {
            Some(guard) if guard.check(self.received).is_err() => Err(GitError::stopped(
                &self.action,
                guard.stopped().unwrap_or(Stop::Cancelled),
            )),
            _ => Ok(()),
        }
    }

    /// After each chunk: the guard, and free space every
    /// [`FREE_CHECK_EVERY`] bytes of this pull (the guard's own measure
    /// counts from where the clone left it).
    fn check_guard(&mut self) -> Result<(), GitError> {
        self.check_stopped()?;
        if self.received >= self.next_free_check {
            self.next_free_check = self.received.saturating_add(FREE_CHECK_EVERY);
            self.check_free(0)?;
        }
        Ok(())
    }

    /// `Err` when writing `more` bytes would leave less free space on the
    /// workspace disk than the guard's floor.
    fn check_free(&self, more: u64) -> Result<(), GitError> {
        let Some(guard) = self.remote.guard.as_deref() else {
            return Ok(());
        };
        match guard.free_space_stop(more) {
            Some(stop) => Err(GitError::stopped(&self.action, stop)),
            None => Ok(()),
        }
    }

    /// Time until the extras deadline, at least a second.
    fn time_left(&self) -> Duration {
        self.budget
            .deadline()
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1))
    }

    /// A new file name in `tmp`.
    fn temp_name(&mut self, tmp: &Path, suffix: &str) -> PathBuf {
        self.files += 1;
        tmp.join(format!("{}.{suffix}", self.files))
    }
}
