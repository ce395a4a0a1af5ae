//! A git smart-HTTP server with Basic auth on 127.0.0.1: `git
//! http-backend` (the real one, from git) run as CGI behind a small HTTP/1.1
//! front that checks the credential, as a forge would. Pushes are enabled
//! (the backend allows receive-pack once `REMOTE_USER` is set).
//!
//! Several accounts can be added, each allowed some repositories only (a
//! forge with two tenants): a known credential asking for another's
//! repository gets 404, as GitHub answers for a private repository.

use super::Upstream;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET /acme/app.git/info/refs?service=git-upload-pack`, say.
    pub line: String,
    /// It carried a known credential allowed this repository.
    pub authorized: bool,
    /// The account whose credential it carried, if any.
    pub user: Option<String>,
    /// The request body (`want` and `have` lines of a fetch).
    pub body: Vec<u8>,
}

/// A credential the server accepts, and what it may read.
#[derive(Clone)]
struct Account {
    user: String,
    header: String,
    /// None: every repository.
    repos: Option<Vec<String>>,
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The server; stops when dropped.
pub struct SmartHttp {
    ip: String,
    port: u16,
    user: String,
    password: String,
    root: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Request>>>,
    sent: Arc<AtomicU64>,
    accounts: Arc<Mutex<Vec<Account>>>,
    lfs_redirect: Arc<Mutex<Option<String>>>,
}

impl SmartHttp {
    /// Serve an empty root on an ephemeral port of 127.0.0.1, accepting
    /// `user:password`.
    pub fn start(user: &str, password: &str) -> Self {
        Self::start_on("127.0.0.1", user, password)
    }

    /// [`start`](Self::start) on another loopback address (another "host").
    pub fn start_on(ip: &str, user: &str, password: &str) -> Self {
        let root = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind(format!("{ip}:0")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sent = Arc::new(AtomicU64::new(0));
        let accounts = Arc::new(Mutex::new(vec![Account {
            user: user.into(),
            header: basic(user, password),
            repos: None,
        }]));
        let (stop2, seen2, sent2) = (stop.clone(), seen.clone(), sent.clone());
        let accounts2 = accounts.clone();
        let lfs_redirect = Arc::new(Mutex::new(None::<String>));
        let redirect2 = lfs_redirect.clone();
        let dir = root.path().to_path_buf();
        let origin = format!("http://{ip}:{port}");
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (seen, dir) = (seen2.clone(), dir.clone());
                        let accounts = accounts2.lock().unwrap().clone();
                        let href_base = redirect2
                            .lock()
                            .unwrap()
                            .clone()
                            .unwrap_or_else(|| format!("{origin}/lfs-objects/"));
                        let sent = sent2.clone();
                        std::thread::spawn(move || {
                            let _ = handle(stream, &dir, &href_base, &accounts, &seen, &sent);
                        });
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        SmartHttp {
            ip: ip.into(),
            port,
            user: user.into(),
            password: password.into(),
            root,
            stop,
            seen,
            sent,
            accounts,
            lfs_redirect,
        }
    }

    /// Make the LFS batch answer send downloads to `base` + oid, with a
    /// cloud-metadata header (a hostile LFS server); none: to this server.
    pub fn set_lfs_redirect(&self, base: Option<String>) {
        *self.lfs_redirect.lock().unwrap() = base;
    }

    /// Accept `user:password` too, for `repos` only (names as published).
    pub fn add_account(&self, user: &str, password: &str, repos: &[&str]) {
        self.accounts.lock().unwrap().push(Account {
            user: user.into(),
            header: basic(user, password),
            repos: Some(repos.iter().map(|r| r.to_string()).collect()),
        });
    }

    /// Let the account `user` (added by [`add_account`](Self::add_account))
    /// read `repo` too.
    pub fn grant(&self, user: &str, repo: &str) {
        let mut accounts = self.accounts.lock().unwrap();
        let account = accounts.iter_mut().find(|a| a.user == user).unwrap();
        account.repos.get_or_insert_with(Vec::new).push(repo.into());
    }

    /// The URL of `name` with `user:password` in it.
    pub fn url_as(&self, user: &str, password: &str, name: &str) -> String {
        format!(
            "http://{user}:{password}@{}:{}/{name}.git",
            self.ip, self.port
        )
    }

    /// Publish `up` as `<name>.git` (a bare copy with every ref).
    pub fn publish(&self, name: &str, up: &Upstream) -> PathBuf {
        self.publish_dir(name, &up.path)
    }

    /// Publish the repository at `dir` as `<name>.git`.
    pub fn publish_dir(&self, name: &str, dir: &Path) -> PathBuf {
        let bare = self.bare(name);
        let out = Command::new("git")
            .args(["clone", "--quiet", "--mirror"])
            .arg(dir)
            .arg(&bare)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        bare
    }

    /// The bare repository behind `<name>.git`.
    pub fn bare(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    /// `git` run in the bare repository `name`; its trimmed stdout.
    pub fn git(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(self.bare(name))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// The URL of `name`, without a credential.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}:{}/{name}.git", self.ip, self.port)
    }

    /// The URL of `name` with the right credential in it.
    pub fn url_with_credential(&self, name: &str) -> String {
        format!(
            "http://{}:{}@{}:{}/{name}.git",
            self.user, self.password, self.ip, self.port
        )
    }

    /// Store `content` as a Git LFS object; the pointer file for it.
    pub fn add_lfs_object(&self, content: &[u8]) -> String {
        use sha2::Digest;
        let oid: String = sha2::Sha256::digest(content)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let store = self.root.path().join("lfs-objects");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join(&oid), content).unwrap();
        format!(
            "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {}\n",
            content.len()
        )
    }

    /// Bytes of git's answers sent so far (response bodies of
    /// `git http-backend`): what clones and fetches transferred.
    pub fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for SmartHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(
    stream: TcpStream,
    root: &Path,
    href_base: &str,
    accounts: &[Account],
    seen: &Mutex<Vec<Request>>,
    sent: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let body = read_body(&mut reader, &header)?;
    let account = accounts
        .iter()
        .find(|a| header("authorization").as_deref() == Some(a.header.as_str()));
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    // LFS objects are stored once for the whole server: any account.
    let allowed = account.is_some_and(|a| {
        path.starts_with("/lfs-objects/")
            || a.repos.as_ref().is_none_or(|repos| {
                repos
                    .iter()
                    .any(|r| path.starts_with(&format!("/{r}.git/")))
            })
    });
    seen.lock().unwrap().push(Request {
        line: line.clone(),
        authorized: allowed,
        user: account.map(|a| a.user.clone()),
        body: body.clone(),
    });
    let mut stream = stream;
    if account.is_none() {
        return stream.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if !allowed {
        return stream.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
    }
    if let Some(answer) = lfs(method, path, &body, root, href_base) {
        return stream.write_all(&answer);
    }
    let mut child = Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env(
            "HTTP_CONTENT_ENCODING",
            header("content-encoding").unwrap_or_default(),
        )
        .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
        .env("REMOTE_USER", "fixsec-test")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&body));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let split = out
        .stdout
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| {
            out.stdout
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, 2))
        });
    let (head, body) = match split {
        Some((i, n)) => (&out.stdout[..i], &out.stdout[i + n..]),
        None => (&out.stdout[..], &[][..]),
    };
    let head = String::from_utf8_lossy(head);
    let mut status = "200 OK".to_string();
    let mut response = Vec::new();
    for h in head.lines().filter(|l| !l.is_empty()) {
        match h.split_once(':') {
            Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
            _ => response.extend_from_slice(format!("{h}\r\n").as_bytes()),
        }
    }
    stream.write_all(format!("HTTP/1.1 {status}\r\n").as_bytes())?;
    stream.write_all(&response)?;
    stream.write_all(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )?;
    stream.write_all(body)?;
    sent.fetch_add(body.len() as u64, Ordering::SeqCst);
    Ok(())
}

/// The Git LFS API: the batch endpoint (downloads only) and the objects.
fn lfs(method: &str, path: &str, body: &[u8], root: &Path, href_base: &str) -> Option<Vec<u8>> {
    let store = root.join("lfs-objects");
    let respond = |status: &str, kind: &str, body: Vec<u8>| {
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend(body);
        out
    };
    if method == "POST" && path.ends_with("/info/lfs/objects/batch") {
        let request: serde_json::Value = serde_json::from_slice(body).ok()?;
        let objects: Vec<serde_json::Value> = request["objects"]
            .as_array()?
            .iter()
            .map(|o| {
                let oid = o["oid"].as_str().unwrap_or_default();
                if store.join(oid).is_file() {
                    serde_json::json!({"oid": oid, "size": o["size"], "actions": {
                        "download": {"href": format!("{href_base}{oid}"),
                                     "header": {"Metadata-Flavor": "Google"}}}})
                } else {
                    serde_json::json!({"oid": oid, "size": o["size"],
                        "error": {"code": 404, "message": "no such object"}})
                }
            })
            .collect();
        let answer = serde_json::json!({"transfer": "basic", "objects": objects});
        return Some(respond(
            "200 OK",
            "application/vnd.git-lfs+json",
            answer.to_string().into_bytes(),
        ));
    }
    let oid = path.strip_prefix("/lfs-objects/")?;
    Some(match std::fs::read(store.join(oid)) {
        Ok(data) if method == "GET" => respond("200 OK", "application/octet-stream", data),
        _ => respond("404 Not Found", "text/plain", b"no such object".to_vec()),
    })
}

/// The request body: `Content-Length` bytes, or chunked.
fn read_body(
    reader: &mut BufReader<TcpStream>,
    header: &dyn Fn(&str) -> Option<String>,
) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(body)
}
