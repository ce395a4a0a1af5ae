"""A client of a running fixsec-workspace service (a node, or the router in
front of several), for callers that do not run the host in-process.

Every request carries the bearer token and the shard key ``X-Fixsec-Shard``
the router places repositories by: for a prepare, the repository's network
(``network=``, else its full name), so forks land with their root; for the
calls that take a workspace name, the ``shard=`` given (the repository's
full name). Errors are the same classes :class:`WorkspaceManager` raises.

The token is guarded like the CLI's ``--server`` client guards it: a redirect
is never followed (urllib would copy ``Authorization`` to wherever it points,
another host or scheme included), so a 3xx answer is a :class:`Refused`
error; and plain ``http://`` is refused for a host that is not loopback
unless ``allow_insecure_http=True`` (the token would cross the network in
clear text).

Standard library only (``urllib``): nothing to install beside the package.
"""

from __future__ import annotations

import ipaddress
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional

from . import PreparedWorkspace, PushResult
from .types import CleanupReport, RemovalReport, Stats, WorkspaceSummary
from .errors import (
    BY_KIND,
    Busy,
    GitError,
    InvalidInput,
    Refused,
    ServiceUnreachable,
    WorkspaceError,
)

SHARD_HEADER = "X-Fixsec-Shard"
"""The header a router hashes to pick the node (deploy/haproxy/haproxy.cfg)."""


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """Follows no redirect: urllib's default handler would send the request,
    ``Authorization`` included, wherever ``Location`` points. Returning None
    leaves the 3xx answer to urllib's default error handler, which raises it
    as an ``HTTPError``; :meth:`WorkspaceClient._call` turns that into
    :class:`Refused`."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: D102
        return None


def _is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WorkspaceClient:
    """The workspaces of a service at ``server``: ``https://host[:port]``, or
    ``http://127.0.0.1:port`` (any loopback host: 127.0.0.0/8, ``[::1]``,
    ``localhost``).

    ``token`` defaults to ``WORKSPACE_API_TOKEN``. ``timeout`` bounds each
    request in seconds (none: a prepare lasts as long as its clone).

    Plain ``http://`` to a host that is not loopback raises
    :class:`InvalidInput` (a ``ValueError``): the bearer token would cross the
    network in clear text. Pass ``allow_insecure_http=True`` to accept that
    (a trusted private network, a TLS-terminating sidecar on another
    address). Any scheme other than ``http`` and ``https`` is refused too.

    Redirects are never followed, whatever the scheme (the token would go
    with them): a 3xx answer raises :class:`Refused` naming the host it
    pointed at; give the client the service's own URL.
    """

    def __init__(
        self,
        server: str,
        token: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
        allow_insecure_http: bool = False,
    ) -> None:
        parsed = urllib.parse.urlparse(server)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or not parsed.hostname:
            raise InvalidInput(
                f"server {server!r} is not an http(s) URL; e.g. http://127.0.0.1:8080",
                "invalid_input",
            )
        if (
            parsed.scheme == "http"
            and not allow_insecure_http
            and not _is_loopback(parsed.hostname)
        ):
            raise InvalidInput(
                f"server {server!r}: plain http:// to a host that is not loopback would "
                "send the API token in clear text; use https://, or pass "
                "allow_insecure_http=True to accept that",
                "invalid_input",
            )
        self.server = server.rstrip("/")
        self.token = token if token is not None else os.environ.get("WORKSPACE_API_TOKEN")
        self.timeout = timeout
        self.allow_insecure_http = allow_insecure_http
        self._opener = urllib.request.build_opener(_RefuseRedirects)
        self.last_served_by: Optional[str] = None
        """The node that answered the last request (``X-Served-By``)."""

    def _call(
        self,
        method: str,
        path: str,
        shard: Optional[str],
        body: Optional[Dict[str, Any]] = None,
        ok_statuses: tuple = (),
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.server + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if shard:
            request.add_header(SHARD_HEADER, shard)
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                self.last_served_by = response.headers.get("X-Served-By")
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            self.last_served_by = e.headers.get("X-Served-By")
            if 300 <= e.code < 400:
                e.close()
                raise self._redirect_refused(e, request.full_url) from None
            text = e.read()
            try:
                answer = json.loads(text or b"{}")
            except ValueError:
                answer = {}
            if e.code in ok_statuses and isinstance(answer, dict):
                return answer
            raise _error(e.code, answer, self.server, self.last_served_by) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
            reason = getattr(e, "reason", e)
            raise ServiceUnreachable(
                f"cannot reach the service at {self.server}: {reason}; "
                "check the URL and that it runs",
                "unreachable",
            ) from None

    def _redirect_refused(self, e: urllib.error.HTTPError, url: str) -> Refused:
        """The error for a 3xx answer: names where it pointed (the host, not
        the whole Location), never the token."""
        location = e.headers.get("Location") if e.headers is not None else None
        target = _host_of(urllib.parse.urljoin(url, location)) if location else None
        where = f" (node {self.last_served_by})" if self.last_served_by else ""
        to = f"a redirect ({e.code}) to {target}" if target else f"a redirect ({e.code})"
        return Refused(
            f"the service at {self.server}{where} answered with {to}; the client does not "
            "follow redirects (the bearer token would go with it): point it at the "
            "service's own URL",
            "refused",
        )

    def prepare(
        self,
        repo_full_name: str,
        clone_url: str,
        *,
        ref: Optional[str] = None,
        depth: Optional[int] = None,
        lease_seconds: Optional[int] = None,
        holder: Optional[str] = None,
        submodules: bool = False,
        lfs: bool = False,
        network: Optional[str] = None,
        serve_credential: bool = False,
        filter: Optional[str] = None,
        sparse: Optional[List[str]] = None,
        parallel: bool = False,
    ) -> PreparedWorkspace:
        """Prepare on the node that holds the repository (its network's)."""
        body: Dict[str, Any] = {"repo_full_name": repo_full_name, "clone_url": clone_url}
        for key, value in (
            ("ref", ref),
            ("depth", depth),
            ("lease_seconds", lease_seconds),
            ("holder", holder),
            ("network", network),
            ("filter", filter),
            ("sparse", sparse),
        ):
            if value is not None:
                body[key] = value
        if submodules:
            body["submodules"] = True
        if lfs:
            body["lfs"] = True
        if serve_credential:
            body["serve_credential"] = True
        if parallel:
            body["parallel"] = True
        out = self._call("POST", "/workspace/prepare", network or repo_full_name, body)
        return PreparedWorkspace.from_json(out, served_by=self.last_served_by)

    def push(
        self, name: str, branch: str, url: str, *, shard: str, force: bool = False
    ) -> PushResult:
        """Push ``branch`` of workspace ``name`` (on the node of ``shard``)."""
        out = self._call(
            "POST",
            f"/workspace/workspaces/{_segment(name)}/push",
            shard,
            {"branch": branch, "url": url, "force": force},
        )
        return PushResult.from_json(out)

    def remove(self, name: str, *, shard: str) -> RemovalReport:
        """Remove a workspace; the removal report (``removed`` says whether
        everything went)."""
        out = self._call(
            "DELETE", f"/workspace/workspaces/{_segment(name)}", shard, ok_statuses=(500,)
        )
        if "report" not in out:
            raise _error(500, out, self.server, self.last_served_by)
        return out["report"]

    def release_lease(self, lease_id: int, *, shard: str) -> str:
        """Release a lease a prepare took; the workspace's name."""
        return self._call("DELETE", f"/workspace/leases/{int(lease_id)}", shard)["name"]

    def reload_policy(self, *, shard: Optional[str] = None) -> Dict[str, str]:
        """Reload one node's policy file; its identity. A file that does not
        load is refused and the old policy stays."""
        return self._call("POST", "/workspace/policy/reload", shard)["policy"]

    def workspace_name(self, repo_full_name: str) -> str:
        """The folder name the service's policy gives ``repo_full_name``,
        as :meth:`WorkspaceManager.workspace_name` does in-process."""
        query = urllib.parse.urlencode({"repo": repo_full_name})
        return self._call("GET", f"/workspace/name?{query}", repo_full_name)["name"]

    def list(self, *, shard: Optional[str] = None) -> List[WorkspaceSummary]:
        """The workspaces of one node (the node of ``shard`` behind a router)."""
        return self._call("GET", "/workspace/workspaces", shard)["workspaces"]

    def stats(self, *, shard: Optional[str] = None) -> Stats:
        """One node's stats (the node of ``shard`` behind a router)."""
        return self._call("GET", "/workspace/stats", shard)["stats"]

    def health(self, *, shard: Optional[str] = None) -> Dict[str, Any]:
        """One node's health report (the open summary without a token)."""
        return self._call("GET", "/workspace/health", shard)

    def cleanup(
        self, max_age_hours: Optional[float] = None, *, shard: Optional[str] = None
    ) -> CleanupReport:
        """Remove one node's old workspaces (never one in use); the whole
        report, as :meth:`WorkspaceManager.cleanup` gives it."""
        body = {} if max_age_hours is None else {"max_age_hours": max_age_hours}
        return self._call("POST", "/workspace/cleanup", shard, body)["report"]

    # The fleet view: any node of a fleet (``WORKSPACE_FLEET``), or the
    # router in front of them, answers for every node. A node that does not
    # answer is in the answer (``reachable`` false or its ``error``, its id
    # in ``unreachable``, ``complete`` false), never left out.

    def fleet_health(self) -> Dict[str, Any]:
        """Every node's readiness and health report; ``status`` is the worst
        node's, ``critical`` while a node gives no answer."""
        return self._call("GET", "/fleet/health", None)

    def fleet_stats(self) -> Dict[str, Any]:
        """Every node's stats, and their ``totals``."""
        return self._call("GET", "/fleet/stats", None)

    def fleet_workspaces(self) -> Dict[str, Any]:
        """Every workspace of every node, each with the ``node`` holding it."""
        return self._call("GET", "/fleet/workspaces", None)

    def fleet_cleanup(self, max_age_hours: Optional[float] = None) -> Dict[str, Any]:
        """The cleanup on every node (none: each node's own age)."""
        body = {} if max_age_hours is None else {"max_age_hours": max_age_hours}
        return self._call("POST", "/fleet/cleanup", None, body)


def _host_of(url: str) -> Optional[str]:
    """``host[:port]`` of ``url`` (no user info, path or query), or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    host = host[:255]
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}" if port is not None else host


def _segment(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _error(
    status: int, answer: Any, server: str, served_by: Optional[str]
) -> WorkspaceError:
    answer = answer if isinstance(answer, dict) else {}
    label = str(answer.get("error") or "")
    detail = str(answer.get("detail") or f"HTTP {status}")
    where = f" (node {served_by})" if served_by else ""
    cls = BY_KIND.get(label)
    if cls is not None:
        return cls(detail + where, label)
    if 400 <= status < 500:
        return InvalidInput(f"{detail}{where}", label or "invalid_input")
    if status == 503:
        return Busy(f"{detail}{where}; retry later", label or "busy")
    return GitError(f"{server} answered {status}: {detail}{where}", label or "git")
