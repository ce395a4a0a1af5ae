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
use super::remote::{GitError, Remote, Stop};
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
/// How often (in downloaded bytes) free space is measured.
const FREE_CHECK_EVERY: u64 = 8 << 20;
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

/// What a pointer file says: the object's SHA-256 (lowercase hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pointer {
    /// 64 lowercase hex digits.
    oid: String,
    /// Bytes of the object.
    size: u64,
}

/// `data` as a Git LFS pointer (spec v1): a `version` line, then `oid
/// sha256:<64 hex>` and `size <n>`, each once, nothing else. `None` for
/// anything else, including pointers with extensions.
fn parse_pointer(data: &[u8]) -> Option<Pointer> {
    if data.len() > POINTER_MAX {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n');
    if lines.next()? != POINTER_VERSION_LINE {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        match key {
            "oid" if oid.is_none() => {
                let hex = value.strip_prefix("sha256:")?;
                let valid = hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return None;
                }
                oid = Some(hex.to_string());
            }
            "size" if size.is_none() => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                size = Some(value.parse::<u64>().ok()?);
            }
            _ => return None,
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

/// The LFS endpoint git-lfs derives from a clone URL by default:
/// `<url>/info/lfs` when it ends in `.git`, else `<url>.git/info/lfs`
/// (after dropping a trailing `/`).
fn lfs_endpoint(url: &str) -> String {
    let base = url.strip_suffix('/').unwrap_or(url);
    if base.ends_with(".git") {
        format!("{base}/info/lfs")
    } else {
        format!("{base}.git/info/lfs")
    }
}

/// Whether the caller's credential may go with a request to `href`: only
/// to the clone URL's own scheme, host and port, and only when the LFS
/// server did not supply an `Authorization` of its own (in the action's
/// headers, or as user information in `href`).
fn credential_goes_to(
    href: &Url,
    clone: &Url,
    header: &BTreeMap<String, serde_json::Value>,
) -> bool {
    href.scheme() == clone.scheme()
        && href.host() == clone.host()
        && href.port_or_known_default() == clone.port_or_known_default()
        && href.username().is_empty()
        && href.password().is_none()
        && !header
            .keys()
            .any(|k| k.trim().eq_ignore_ascii_case("authorization"))
}

/// A header from an LFS action, as it may be sent: `None` for the ones
/// never taken from a server (see [`DROPPED_HEADERS`], `Proxy-*`) and for
/// names or values HTTP does not accept. Values are marked sensitive (they
/// are often tokens), so they never show in a debug print.
fn action_header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let lower = name.trim().to_ascii_lowercase();
    if DROPPED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return None;
    }
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// `url` as it may be shown: no user information, query or fragment.
fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The host (and explicit port) of `url`, to name it in a message.
fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("an unnamed host");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// An index path as a relative path to write to: `None` unless every
/// component is a plain name (no `.`, `..`, `.git`, empty part, and off
/// Unix no drive or `\`), so joining it to the working tree stays inside.
fn index_path(bytes: &[u8]) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for part in bytes.split(|b| *b == b'/') {
        if part.is_empty()
            || part == &b"."[..]
            || part == &b".."[..]
            || part.eq_ignore_ascii_case(b".git")
        {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            path.push(std::ffi::OsStr::from_bytes(part));
        }
        #[cfg(not(unix))]
        {
            let part = std::str::from_utf8(part).ok()?;
            if part.contains(['\\', ':']) {
                return None;
            }
            path.push(part);
        }
    }
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(path)
}

/// A failure with no special class.
fn fail(message: String) -> GitError {
    GitError {
        message,
        not_found: false,
        stopped: None,
        rejected: false,
    }
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of the file at `path`, read in chunks.
fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The stat data the index keeps for a file, as git compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Status change time.
    ctime: IndexTime,
    /// Modification time.
    mtime: IndexTime,
    /// Device.
    dev: u32,
    /// Inode.
    ino: u32,
    /// Owner.
    uid: u32,
    /// Group.
    gid: u32,
    /// Size, truncated to 32 bits as git stores it.
    size: u32,
}

impl Stat {
    /// What the index entry records.
    fn of_entry(entry: &IndexEntry) -> Stat {
        Stat {
            ctime: entry.ctime,
            mtime: entry.mtime,
            dev: entry.dev,
            ino: entry.ino,
            uid: entry.uid,
            gid: entry.gid,
            size: entry.file_size,
        }
    }

    /// What the file with metadata `meta` would be recorded as (`old`
    /// fills what the platform does not report).
    #[cfg(unix)]
    fn of_file(meta: &std::fs::Metadata, _old: Stat) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ctime: IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32),
            mtime: IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32),
            dev: meta.dev() as u32,
            ino: meta.ino() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len() as u32,
        }
    }

    /// What the file with metadata `meta` would be recorded as: its
    /// modification time and size; the rest as `old` had it.
    #[cfg(not(unix))]
    fn of_file(meta: &std::fs::Metadata, old: Stat) -> Stat {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(old.mtime, |d| {
                IndexTime::new(d.as_secs() as i32, d.subsec_nanos())
            });
        Stat {
            mtime,
            size: meta.len() as u32,
            ..old
        }
    }

    /// Write this stat data into `entry` (its id and mode stay).
    fn apply(self, entry: &mut IndexEntry) {
        entry.ctime = self.ctime;
        entry.mtime = self.mtime;
        entry.dev = self.dev;
        entry.ino = self.ino;
        entry.uid = self.uid;
        entry.gid = self.gid;
        entry.file_size = self.size;
    }
}

/// Record the stat data of the working file `file` in the index entry of
/// `rel` (stage 0), keeping the entry's blob id: git then sees the file as
/// unmodified. Written to disk by the caller.
fn record_stat(index: &mut Index, rel: &Path, file: &Path) -> Result<(), GitError> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| GitError::io("reading", file, e))?;
    let Some(mut entry) = index.get_path(rel, 0) else {
        return Ok(());
    };
    Stat::of_file(&meta, Stat::of_entry(&entry)).apply(&mut entry);
    index
        .add(&entry)
        .map_err(|e| GitError::new("recording an LFS file in the index", e))
}

/// The metadata of the working file at `rel` when it may be replaced (a
/// regular file, every folder above it a real folder); else why not. The
/// repository's content chose what is there: a link is never written through.
fn destination(repo_dir: &Path, rel: &Path) -> Result<std::fs::Metadata, &'static str> {
    for folder in rel.ancestors().skip(1) {
        if folder.as_os_str().is_empty() {
            break;
        }
        match std::fs::symlink_metadata(repo_dir.join(folder)) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return Err("under a symbolic link or a missing folder"),
        }
    }
    let meta = std::fs::symlink_metadata(repo_dir.join(rel))
        .map_err(|_| "missing from the working tree")?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err("a symbolic link")
    } else if kind.is_dir() {
        Err("a folder")
    } else if !kind.is_file() {
        Err("not a regular file")
    } else {
        Ok(meta)
    }
}

/// Create the temporary file `path` (never an existing one), readable as a
/// checkout's files are (the umask applies).
fn create_temp(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o666);
    }
    options.open(path)
}

/// Give `path` the executable bits (where it has read bits) or take them away.
#[cfg(unix)]
fn set_executable(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let wanted = if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    };
    if wanted != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Executable bits do not exist here.
#[cfg(not(unix))]
fn set_executable(_path: &Path, _executable: bool) -> std::io::Result<()> {
    Ok(())
}

/// Move `src` over `dest` (a regular file): a rename, or where the system
/// does not replace on rename, a removal then a rename.
fn replace_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if std::fs::rename(src, dest).is_ok() {
        return Ok(());
    }
    if let Err(e) = std::fs::remove_file(dest)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e);
    }
    std::fs::rename(src, dest)
}

/// One working file to receive an object.
struct Target {
    /// Relative to the working tree.
    rel: PathBuf,
    /// The index path, for messages.
    shown: String,
    /// The index entry's mode is 100755.
    executable: bool,
}

/// One object to download, and the working files that get it.
struct Wanted {
    /// What the pointer files say.
    pointer: Pointer,
    /// Never empty.
    targets: Vec<Target>,
}

/// What the index holds by way of LFS pointers.
struct Found {
    /// Objects to download (each once), by oid.
    wanted: Vec<Wanted>,
    /// Files that already hold their object but whose index entry does not
    /// say so (replaced by a run that stopped before writing the index).
    present: Vec<PathBuf>,
}

/// An index entry that may be a pointer file (regular, stage 0, a blob of
/// at most [`POINTER_MAX`] bytes).
struct Candidate {
    /// Relative to the working tree.
    rel: PathBuf,
    /// The index path, for messages.
    shown: String,
    /// The blob.
    id: Oid,
    /// Mode 100755.
    executable: bool,
    /// The stat data the index has.
    stat: Stat,
}

/// The pointer files of the checkout at `repo_dir`, from its index, that
/// the `filter=lfs` attribute covers and whose working file does not hold
/// the object yet.
fn find_pointers(repo: &Repository, index: &Index, repo_dir: &Path) -> Result<Found, GitError> {
    let odb = repo
        .odb()
        .map_err(|e| GitError::new("opening the object database", e))?;
    let mut candidates = Vec::new();
    for entry in index.iter() {
        if entry.mode & 0o170000 != 0o100000 || entry.flags & STAGE_MASK != 0 {
            continue;
        }
        // The header only: a large file's blob is never loaded.
        if !matches!(odb.read_header(entry.id), Ok((size, ObjectType::Blob)) if size <= POINTER_MAX)
        {
            continue;
        }
        let Some(rel) = index_path(&entry.path) else {
            continue;
        };
        candidates.push(Candidate {
            shown: String::from_utf8_lossy(&entry.path).into_owned(),
            rel,
            id: entry.id,
            executable: entry.mode == 0o100755,
            stat: Stat::of_entry(&entry),
        });
    }
    let flags = AttrCheckFlags::FILE_THEN_INDEX | AttrCheckFlags::NO_SYSTEM;
    let mut by_oid: BTreeMap<String, Wanted> = BTreeMap::new();
    let mut present = Vec::new();
    for c in candidates {
        if repo.get_attr(&c.rel, "filter", flags).ok().flatten() != Some("lfs") {
            continue;
        }
        let Some(pointer) = repo
            .find_blob(c.id)
            .ok()
            .and_then(|blob| parse_pointer(blob.content()))
        else {
            continue;
        };
        let meta = match destination(repo_dir, &c.rel) {
            Ok(meta) => meta,
            Err(why) => {
                tracing::warn!(path = %c.shown, why, "LFS object not put in place: the working-tree path is not a plain file");
                continue;
            }
        };
        if meta.len() == pointer.size {
            if Stat::of_file(&meta, c.stat) == c.stat {
                // Replaced on an earlier prepare, and recorded.
                continue;
            }
            if file_sha256(&repo_dir.join(&c.rel)).is_ok_and(|h| h == pointer.oid) {
                present.push(c.rel);
                continue;
            }
        }
        let key = pointer.oid.clone();
        by_oid
            .entry(key)
            .or_insert_with(|| Wanted {
                pointer,
                targets: Vec::new(),
            })
            .targets
            .push(Target {
                rel: c.rel,
                shown: c.shown,
                executable: c.executable,
            });
    }
    Ok(Found {
        wanted: by_oid.into_values().collect(),
        present,
    })
}

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
        let Some(free) = crate::adapter::fs::free_space(&guard.disk) else {
            return Ok(());
        };
        let left = free.saturating_sub(more);
        if left >= guard.min_free_bytes {
            return Ok(());
        }
        Err(GitError::stopped(
            &self.action,
            Stop::Storage(format!(
                "only {} MB would be left free on the workspace disk, under the {} MB floor \
                 (WORKSPACE_MIN_FREE_MB); free space or run a cleanup",
                left >> 20,
                guard.min_free_bytes >> 20
            )),
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn oid() -> String {
        "0123456789abcdef".repeat(4)
    }

    fn pointer_text(oid: &str, size: &str) -> String {
        format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
    }

    #[test]
    fn pointers_parse_only_when_well_formed() {
        let good = Pointer {
            oid: oid(),
            size: 12345,
        };
        assert_eq!(
            parse_pointer(pointer_text(&oid(), "12345").as_bytes()),
            Some(good.clone())
        );
        // No final newline; keys in either order.
        let text = pointer_text(&oid(), "12345");
        assert_eq!(
            parse_pointer(text.trim_end().as_bytes()),
            Some(good.clone())
        );
        let swapped = format!(
            "version https://git-lfs.github.com/spec/v1\nsize 12345\noid sha256:{}\n",
            oid()
        );
        assert_eq!(parse_pointer(swapped.as_bytes()), Some(good));

        // Another version.
        let v2 = pointer_text(&oid(), "1").replace("spec/v1", "spec/v2");
        assert_eq!(parse_pointer(v2.as_bytes()), None);
        assert_eq!(parse_pointer(b"version x\n"), None);
        // Bad oids: short, long, upper case, not hex, another hash.
        for bad in [
            oid()[..63].to_string(),
            format!("{}0", oid()),
            oid().to_ascii_uppercase(),
            format!("{}g", &oid()[..63]),
        ] {
            assert_eq!(
                parse_pointer(pointer_text(&bad, "1").as_bytes()),
                None,
                "{bad}"
            );
        }
        let sha1 = pointer_text(&oid(), "1").replace("sha256:", "sha1:");
        assert_eq!(parse_pointer(sha1.as_bytes()), None);
        // Sizes that are not a plain number.
        for bad in [
            "12a",
            "-1",
            "",
            "+5",
            " 5",
            "1.5",
            "99999999999999999999999",
        ] {
            assert_eq!(
                parse_pointer(pointer_text(&oid(), bad).as_bytes()),
                None,
                "{bad:?}"
            );
        }
        // Missing, repeated or unknown keys.
        let no_size = format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{}\n",
            oid()
        );
        assert_eq!(parse_pointer(no_size.as_bytes()), None);
        let twice = format!("{}size 2\n", pointer_text(&oid(), "1"));
        assert_eq!(parse_pointer(twice.as_bytes()), None);
        let extension = format!("{}ext-0-foo sha256:{}\n", pointer_text(&oid(), "1"), oid());
        assert_eq!(parse_pointer(extension.as_bytes()), None);
        // Too long, whatever it holds.
        let long = format!("{}{}", pointer_text(&oid(), "1"), "x".repeat(POINTER_MAX));
        assert!(long.len() > POINTER_MAX);
        assert_eq!(parse_pointer(long.as_bytes()), None);
        assert_eq!(parse_pointer(&[0xff, 0xfe]), None);
    }

    #[test]
    fn the_endpoint_is_the_clone_urls_own() {
        for (url, endpoint) in [
            (
                "https://git.example/o/r.git",
                "https://git.example/o/r.git/info/lfs",
            ),
            (
                "https://git.example/o/r",
                "https://git.example/o/r.git/info/lfs",
            ),
            (
                "https://git.example/o/r/",
                "https://git.example/o/r.git/info/lfs",
            ),
            (
                "https://git.example/o/r.git/",
                "https://git.example/o/r.git/info/lfs",
            ),
            ("http://h:8080/r", "http://h:8080/r.git/info/lfs"),
        ] {
            assert_eq!(lfs_endpoint(url), endpoint, "{url}");
        }
    }

    #[test]
    fn the_credential_goes_only_to_the_clone_origin() {
        let clone = Url::parse("https://git.example/o/r.git").unwrap();
        let none = BTreeMap::new();
        let yes = |href: &str| credential_goes_to(&Url::parse(href).unwrap(), &clone, &none);
        assert!(yes("https://git.example/o/r.git/info/lfs/objects/batch"));
        assert!(yes("https://GIT.example:443/lfs/objects/abc?sig=1"));
        assert!(!yes("https://git.example:8443/lfs/objects/abc"));
        assert!(!yes("http://git.example/lfs/objects/abc"));
        assert!(!yes("https://other.example/lfs/objects/abc"));
        assert!(!yes("https://git.example.evil/lfs/objects/abc"));
        assert!(!yes("https://user:pw@git.example/lfs/objects/abc"));
        let href = Url::parse("https://git.example/lfs/objects/abc").unwrap();
        for name in ["Authorization", "authorization", "AUTHORIZATION"] {
            let mut own = BTreeMap::new();
            own.insert(
                name.to_string(),
                serde_json::Value::from("RemoteAuth token"),
            );
            assert!(!credential_goes_to(&href, &clone, &own), "{name}");
        }
        let mut other = BTreeMap::new();
        other.insert("X-Trace".to_string(), serde_json::Value::from("1"));
        assert!(credential_goes_to(&href, &clone, &other));
    }

    #[test]
    fn server_headers_are_filtered() {
        for name in [
            "Host",
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "Cookie",
            "Proxy-Authorization",
            "proxy-connection",
            "Keep-Alive",
        ] {
            assert!(action_header(name, "x").is_none(), "{name}");
        }
        // Names and values HTTP refuses are skipped, not errors.
        assert!(action_header("bad name", "x").is_none());
        assert!(action_header("", "x").is_none());
        assert!(action_header("X-Ok", "line\nbreak").is_none());
        let (name, value) = action_header("Authorization", "RemoteAuth abc").unwrap();
        assert_eq!(name.as_str(), "authorization");
        assert_eq!(value.to_str().unwrap(), "RemoteAuth abc");
        assert!(value.is_sensitive());
        let (name, _) = action_header("Metadata-Flavor", "Google").unwrap();
        assert_eq!(name.as_str(), "metadata-flavor");
    }

    #[test]
    fn index_paths_stay_inside_the_working_tree() {
        assert_eq!(
            index_path(b"a/b.bin"),
            Some(PathBuf::from("a").join("b.bin"))
        );
        assert_eq!(
            index_path(b".gitattributes"),
            Some(PathBuf::from(".gitattributes"))
        );
        let bad: [&[u8]; 8] = [
            b"",
            b"/abs",
            b"a//b",
            b"../x",
            b"a/../x",
            b"./x",
            b".git/config",
            b"a/.GIT/x",
        ];
        for bad in bad {
            assert_eq!(index_path(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn shown_urls_carry_no_secret() {
        let url = Url::parse("https://u:p@git.example/o/r.git?token=t#f").unwrap();
        assert_eq!(shown_url(&url), "https://git.example/o/r.git");
        assert_eq!(host_of(&url), "git.example");
        let url = Url::parse("http://127.0.0.2:8080/x?sig=1").unwrap();
        assert_eq!(host_of(&url), "127.0.0.2:8080");
    }
}
