"""Test servers and repositories: a git smart-HTTP server with Basic auth
(git's own ``http-backend`` as CGI behind a small threaded HTTP server on
127.0.0.1), and repositories made with git's command line."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Tuple

GIT_IDENTITY = ["-c", "user.name=fixsec-bot", "-c", "user.email=bot@example.invalid"]


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd``; its stdout, stripped."""
    out = subprocess.run(
        ["git", *GIT_IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def make_repository(path: Path, files: dict) -> Path:
    """A repository at ``path`` with ``files`` on ``main`` and a ``develop``
    branch one commit ahead."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, content in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    git(path, "checkout", "-q", "-b", "develop")
    (path / "dev.txt").write_text("dev\n")
    git(path, "add", "dev.txt")
    git(path, "commit", "-q", "-m", "develop work")
    git(path, "checkout", "-q", "main")
    return path


class SmartHttp:
    """``git http-backend`` behind Basic auth on 127.0.0.1, pushes enabled."""

    def __init__(self, root: Path, user: str, password: str) -> None:
        self.root = root
        self.user = user
        self.password = password
        self.seen: List[Tuple[str, bool]] = []
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _serve(self) -> None:
                authorized = self.headers.get("Authorization") == expected
                server.seen.append((f"{self.command} {self.path}", authorized))
                if not authorized:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                length = int(self.headers.get("Content-Length") or 0)
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    body = b""
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        chunk = self.rfile.read(size + 2)
                        if size == 0:
                            break
                        body += chunk[:size]
                else:
                    body = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                    "REMOTE_USER": "fixsec-test",
                    "REMOTE_ADDR": "127.0.0.1",
                }
                out = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = out.partition(b"\n\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = _serve
            do_POST = _serve

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, name: str, repo: Path) -> None:
        """Serve ``repo`` (a bare mirror of it) as ``<name>.git``."""
        subprocess.run(
            ["git", "clone", "-q", "--mirror", str(repo), str(self.bare(name))], check=True
        )

    def bare(self, name: str) -> Path:
        return self.root / f"{name}.git"

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def url_with_credential(self, name: str) -> str:
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.port}/{name}.git"

    def branch(self, name: str, branch: str) -> str:
        """The commit ``branch`` points at on the server, or '' if absent."""
        out = subprocess.run(
            ["git", "--git-dir", str(self.bare(name)), "rev-parse", "--verify", "--quiet",
             f"refs/heads/{branch}"],
            capture_output=True, text=True,
        )
        return out.stdout.strip()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def files_containing(root: Path, needle: str) -> List[Path]:
    """Every file under ``root`` whose bytes contain ``needle``."""
    found = []
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            try:
                if needle.encode() in p.read_bytes():
                    found.append(p)
            except OSError:
                pass
    return found
