//! Servers on loopback for the tests: a `git daemon`, an HTTP stub that
//! answers what it is told, and a tarpit that accepts and never answers.

use super::wait_for_port;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `git daemon` serving `base_path` on a loopback port, killed on drop.
///
/// Under Wine (the Windows build of the tests) a Windows process cannot start
/// Linux's `git`, so `scripts/test-windows` starts one daemon for the whole
/// run, serving the Wine drive `FIXSEC_TEST_GIT_DAEMON_ROOT` (e.g. `C:\`) on
/// port `FIXSEC_TEST_GIT_DAEMON_PORT`; repositories are then addressed by
/// their path under that drive.
pub struct GitDaemon {
    child: Option<Child>,
    pub port: u16,
    /// URL path of `base_path` on the daemon, ending in `/`.
    prefix: String,
}

impl GitDaemon {
    /// Start it (or, under Wine, find the shared one) and wait until it
    /// accepts connections.
    pub fn start(base_path: &Path) -> Self {
        if cfg!(windows) {
            return Self::shared(base_path);
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // git-daemon itself: killing `git daemon` (a wrapper) would leave
        // the daemon running after the test.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .unwrap()
            .stdout;
        let exec_path = String::from_utf8(exec_path).unwrap();
        let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
            .args([
                "--export-all",
                "--reuseaddr",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base_path.display()),
            ])
            .arg(base_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon must be installed (apt-get install git)");
        wait_for_port(port);
        GitDaemon {
            child: Some(child),
            port,
            prefix: String::new(),
        }
    }

    /// The daemon `scripts/test-windows` started for a Wine run.
    fn shared(base_path: &Path) -> Self {
        let (Ok(port), Ok(root)) = (
            std::env::var("FIXSEC_TEST_GIT_DAEMON_PORT"),
            std::env::var("FIXSEC_TEST_GIT_DAEMON_ROOT"),
        ) else {
            panic!(
                "the Windows tests need the git daemon scripts/test-windows starts: run them through it"
            );
        };
        let port: u16 = port.parse().expect("FIXSEC_TEST_GIT_DAEMON_PORT is a port");
        let under = base_path
            .strip_prefix(&root)
            .unwrap_or_else(|_| panic!("{} is not under {root}", base_path.display()));
        let mut prefix: String = under
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        prefix.push('/');
        wait_for_port(port);
        GitDaemon {
            child: None,
            port,
            prefix,
        }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{}{name}", self.port, self.prefix)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A tiny HTTP server on a loopback address: answers every request with
/// `answer(request_head)` and records the heads it received. For tests of
/// what a client sends where (redirects, credentials). Stops on drop.
pub struct HttpStub {
    pub addr: std::net::SocketAddr,
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpStub {
    pub fn start(ip: &str, answer: impl Fn(&str) -> String + Send + 'static) -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (seen, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).is_ok_and(|n| n == 1) {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let reply = answer(&head);
                seen.lock().unwrap().push(head);
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        HttpStub {
            addr,
            requests,
            stop,
        }
    }

    /// Every request head received so far.
    pub fn seen(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A TCP server on loopback that accepts connections and never answers:
/// a tarpit. Its accepted connections stay open until it is dropped.
pub struct Tarpit {
    pub port: u16,
    pub accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    held: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Tarpit {
    pub fn start() -> Self {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (count, keep, stopped) = (accepted.clone(), held.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        keep.lock().unwrap().push(conn);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Tarpit {
            port,
            accepted,
            held,
            stop,
        }
    }

    /// `git://127.0.0.1:<port>/<name>`.
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }

    /// Wait until `n` connections were accepted.
    pub fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.accepted.load(std::sync::atomic::Ordering::SeqCst) < n {
            assert!(Instant::now() < deadline, "the tarpit saw no connection");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop listening (new connections are refused) and hang up on every
    /// held connection.
    pub fn release(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100));
        self.held.lock().unwrap().clear();
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.release();
    }
}
