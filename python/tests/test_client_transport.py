"""WorkspaceClient's transport guards, against stdlib HTTP servers on
loopback: a redirect is never followed (urllib's default would send the
bearer token to wherever it points), and plain http:// to a host that is not
loopback is refused unless ``allow_insecure_http=True``.

Needs no service binary. Without the compiled extension (a checkout where
maturin has not run) the package's own ``__init__``, ``errors`` and
``client`` modules are loaded from their files over a stub ``_native``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

TOKEN = "py-transport-token-5eb1d0c4"


def _package() -> types.ModuleType:
    try:
        import fixsec_workspace

        return fixsec_workspace
    except ImportError as e:
        if e.name not in ("fixsec_workspace", "fixsec_workspace._native"):
            raise
    name = "_fixsec_workspace_without_native"
    if name in sys.modules:
        return sys.modules[name]
    folder = Path(__file__).resolve().parents[1] / "fixsec_workspace"
    native = types.ModuleType(f"{name}._native")
    native.CONTRACT = "stub"  # type: ignore[attr-defined]
    sys.modules[native.__name__] = native
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


fw = _package()


class Recorder:
    """An HTTP server on 127.0.0.1 that records every request (method, path,
    headers) and answers each with ``status``; ``location`` (a function of
    the request path) makes it a redirect."""

    def __init__(self, status: int = 200, location=None) -> None:
        self.requests: List[Dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                # A body that every client call accepts: a followed redirect
                # makes the call succeed, so the test sees it.
                answer = json.dumps(
                    {
                        "workspaces": [],
                        "stats": {},
                        "status": "healthy",
                        "name": "acme_app_00000000",
                        "path": "/elsewhere",
                        "head": "0" * 40,
                        "reused": False,
                        "duration_ms": 1,
                    }
                ).encode()
                self.send_response(status)
                if location is not None:
                    self.send_header("Location", location(self.path))
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """Loopback requests go straight to the servers, whatever the environment."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def elsewhere() -> Iterator[Recorder]:
    """The second server, on another port, a redirect points at."""
    server = Recorder(200)
    yield server
    server.close()


CALLS = {
    "list": lambda c: c.list(),
    "stats": lambda c: c.stats(),
    "health": lambda c: c.health(shard="acme/app"),
    "prepare": lambda c: c.prepare("acme/app", "https://example.invalid/acme/app.git"),
    "push": lambda c: c.push("acme_app_00000000", "fix", "https://example.invalid/a.git", shard="acme/app"),
}


@pytest.mark.parametrize(
    "status, call",
    [
        (301, "stats"),  # GET: urllib's default follows it
        (302, "list"),  # GET: followed by default, Authorization copied
        (302, "prepare"),  # POST: followed by default as a GET
        (303, "push"),  # POST: followed by default as a GET
        (307, "health"),  # GET: followed by default
        (308, "list"),  # GET: followed by default (Python 3.11+)
    ],
)
def test_a_redirect_is_refused_and_the_token_stays_home(elsewhere, status, call):
    service = Recorder(status, location=lambda path: elsewhere.url + path)
    try:
        client = fw.WorkspaceClient(service.url, TOKEN)
        outcome: Optional[BaseException] = None
        try:
            CALLS[call](client)
        except Exception as e:  # judged below, after what the servers saw
            outcome = e
    finally:
        service.close()

    # The service itself got the request, with the token: the guard is the
    # redirect, not a missing token.
    assert len(service.requests) == 1, service.requests
    assert service.requests[0]["headers"].get("authorization") == f"Bearer {TOKEN}"
    # The second server got nothing at all (so certainly not the token).
    leaked = [r for r in elsewhere.requests if "authorization" in r["headers"]]
    assert not leaked, f"the {status} redirect carried the token: {leaked}"
    assert elsewhere.requests == [], f"the {status} redirect was followed: {elsewhere.requests}"

    assert isinstance(outcome, fw.Refused), f"expected Refused, got {outcome!r}"
    assert isinstance(outcome, fw.WorkspaceError) and outcome.kind == "refused"
    message = str(outcome)
    assert "redirect" in message and service.url in message
    assert f"127.0.0.1:{elsewhere.port}" in message, message
    assert TOKEN not in message


def test_a_redirect_to_another_scheme_is_refused_too(elsewhere):
    """An http service pointing at https (or the reverse) is no exception."""
    service = Recorder(302, location=lambda path: f"https://127.0.0.1:{elsewhere.port}{path}")
    try:
        with pytest.raises(fw.Refused) as caught:
            fw.WorkspaceClient(service.url, TOKEN).list()
    finally:
        service.close()
    assert elsewhere.requests == []
    assert f"127.0.0.1:{elsewhere.port}" in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_a_relative_redirect_is_refused(elsewhere):
    """Even a redirect to the same service is not followed (the client is
    simply pointed at the wrong URL)."""
    service = Recorder(302, location=lambda path: "/elsewhere" + path)
    try:
        with pytest.raises(fw.Refused):
            fw.WorkspaceClient(service.url, TOKEN).list()
    finally:
        service.close()
    assert len(service.requests) == 1


def test_a_plain_answer_still_works(elsewhere):
    """The guards change nothing for a service that answers directly."""
    client = fw.WorkspaceClient(elsewhere.url, TOKEN)
    assert client.list() == []
    assert elsewhere.requests[0]["headers"].get("authorization") == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "server",
    [
        "http://example.invalid:8080",
        "http://example.invalid",
        "http://10.0.0.1:8080",
        "http://192.168.1.10",
        "http://[2001:db8::1]:8080",
        "http://localhost.example.invalid:1",
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused(server):
    with pytest.raises(ValueError) as caught:
        fw.WorkspaceClient(server, TOKEN)
    assert isinstance(caught.value, fw.InvalidInput)
    message = str(caught.value)
    assert "clear text" in message and "allow_insecure_http=True" in message
    assert TOKEN not in message
    # Asked for, it constructs.
    client = fw.WorkspaceClient(server, TOKEN, allow_insecure_http=True)
    assert client.server == server.rstrip("/")


@pytest.mark.parametrize(
    "server",
    [
        "http://127.0.0.1:1",
        "http://127.8.9.10:1",
        "http://localhost:1",
        "http://LOCALHOST:1/",
        "http://[::1]:1",
        "https://example.invalid",
        "https://example.invalid:8443/",
        "HTTPS://10.0.0.1",
    ],
)
def test_loopback_http_and_any_https_construct(server):
    client = fw.WorkspaceClient(server, TOKEN)
    assert client.server == server.rstrip("/")


@pytest.mark.parametrize(
    "server", ["ftp://x", "file:///tmp/x", "x", "127.0.0.1:8080", "http://", "https:///path"]
)
def test_other_schemes_are_refused(server):
    for allow in (False, True):
        with pytest.raises(ValueError):
            fw.WorkspaceClient(server, TOKEN, allow_insecure_http=allow)
