"""fixsec_workspace: persistent, named git workspaces, one per repository.

The fixsec-workspace host (Rust) embedded in-process, with its default policy.
Two ways in:

- the original module's API, unchanged (a one-line import change)::

      from fixsec_workspace import get_workspace_manager
      repo_dir = get_workspace_manager().prepare_repo_workspace(full_name, auth_url, "main")

- the full API: :meth:`WorkspaceManager.prepare` (any ref, leases, submodules,
  LFS) returning a :class:`PreparedWorkspace`, :meth:`WorkspaceManager.push`
  (the credential never on disk), :meth:`WorkspaceManager.lease` as a context
  manager, ``list``, ``health``, ``remove``, ``cleanup``.

git and disk work runs without the GIL: other threads, and ``asyncio.to_thread``,
keep running meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union
from contextlib import contextmanager

from . import _native, errors, types
from .types import CleanupReport, HealthReport, RemovalReport, Stats, WorkspaceSummary
from .errors import (
    Busy,
    ConfigError,
    FilesystemError,
    GitError,
    InsufficientStorage,
    InUse,
    InvalidInput,
    NotFound,
    PolicyError,
    Refused,
    Rejected,
    ServiceUnreachable,
    Unauthorized,
    WorkspaceError,
)

CONTRACT: str = _native.CONTRACT

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class PreparedWorkspace:
    """What a prepare did."""

    name: str
    """The workspace's folder name, e.g. ``facebook_react_4f32b4cf``."""
    path: Path
    """The checkout (the workspace's ``repo/`` folder)."""
    head: str
    """The commit checked out."""
    reused: bool
    """An existing clone was updated rather than cloned afresh."""
    duration_ms: int
    notes: List[str] = field(default_factory=list)
    lease_id: Optional[int] = None
    """The lease taken with ``lease_seconds``; release it with ``release_lease``."""
    served_by: Optional[str] = None
    """The node that prepared it (through :class:`WorkspaceClient` only)."""

    @classmethod
    def from_json(cls, out: Dict[str, Any], served_by: Optional[str] = None) -> "PreparedWorkspace":
        """From the host's JSON outcome."""
        lease = out.get("lease") or {}
        return cls(
            name=out["name"],
            path=Path(out["path"]),
            head=out["head"],
            reused=out["reused"],
            duration_ms=out["duration_ms"],
            notes=list(out.get("notes") or []),
            lease_id=lease.get("id"),
            served_by=served_by,
        )


@dataclass(frozen=True)
class PushResult:
    """What a push did."""

    name: str
    branch: str
    commit: str
    """The commit the remote branch points at now."""
    url: str
    """Where it went, without the credential."""
    forced: bool
    duration_ms: int

    @classmethod
    def from_json(cls, out: Dict[str, Any]) -> "PushResult":
        """From the host's JSON outcome; keys a newer host adds are ignored."""
        return cls(**{f.name: out[f.name] for f in fields(cls)})


class WorkspaceManager:
    """The workspaces under ``base_path``.

    Settings not given here come from the environment, as the service reads
    them (``WORKSPACE_BASE_PATH``, ``WORKSPACE_MAX_AGE_HOURS``, ...).
    """

    def __init__(
        self,
        base_path: Optional[PathLike] = "workspace",
        *,
        policy: Optional[PathLike] = None,
        settings: Optional[Mapping[str, str]] = None,
        allow_local_urls: Optional[bool] = None,
        allow_private_networks: Optional[bool] = None,
    ) -> None:
        # Leases prepare_repo_workspace(serve_credential=True) took, by workspace.
        self._served: Dict[str, List[int]] = {}
        self._native = _native.Manager(
            base_path=None if base_path is None else os.fspath(base_path),
            policy=None if policy is None else os.fspath(policy),
            settings=dict(settings) if settings else None,
            allow_local_urls=allow_local_urls,
            allow_private_networks=allow_private_networks,
        )

    @property
    def base_path(self) -> Path:
        """The base directory."""
        return Path(self._native.base_path())

    # The original module's API.

    def get_repo_workspace(self, repo_full_name: str) -> Path:
        """The workspace folder of a repository (created if missing)."""
        folder = self.base_path / self._native.workspace_name(repo_full_name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def prepare_repo_workspace(
        self,
        repo_full_name: str,
        clone_url: str,
        default_branch: Optional[str] = "main",
        *,
        serve_credential: bool = False,
        lease_seconds: int = 3600,
    ) -> Path:
        """Reuse (fetch, hard reset, clean) or clone; the ``repo/`` folder.

        With ``serve_credential=True`` the workspace is leased for
        ``lease_seconds`` and the credential in ``clone_url`` is served to
        stock git run in it (GitPython's ``push`` included) until
        :meth:`release_repo_workspace` or the lease's end: from memory,
        for the clone URL's scheme, host and port only, never on disk.
        """
        if not serve_credential:
            return self.prepare(repo_full_name, clone_url, ref=default_branch).path
        ws = self.prepare(
            repo_full_name,
            clone_url,
            ref=default_branch,
            lease_seconds=lease_seconds,
            holder="prepare_repo_workspace(serve_credential=True)",
            serve_credential=True,
        )
        if ws.lease_id is not None:
            self._served.setdefault(ws.name, []).append(ws.lease_id)
        return ws.path

    def release_repo_workspace(self, repo_full_name: str) -> int:
        """Release the leases ``prepare_repo_workspace(serve_credential=True)``
        took on a repository's workspace through this manager; the credential
        they served stops answering. How many were released."""
        name = self._native.workspace_name(repo_full_name)
        released = 0
        for lease_id in self._served.pop(name, []):
            try:
                self._native.release_lease(lease_id)
                released += 1
            except NotFound:
                pass  # lapsed already
        return released

    def cleanup_old_workspaces(self, max_age_hours: float = 24) -> int:
        """Remove workspaces unused for longer than ``max_age_hours``; how many went."""
        return int(self.cleanup(max_age_hours)["cleaned_workspaces"])

    def get_workspace_stats(self) -> Stats:
        """``total_workspaces``, ``total_size_mb``, ``base_path``, ``workspaces``."""
        return json.loads(self._native.stats())

    # The full API.

    def workspace_name(self, repo_full_name: str) -> str:
        """The folder name the policy gives a repository."""
        return self._native.workspace_name(repo_full_name)

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
        """Prepare the workspace at ``ref`` (branch, tag, commit id,
        ``refs/pull/N/head``, ``src:dst``; none: the default branch).

        A token in ``clone_url`` is used for this transfer only and never
        reaches the disk or the logs. ``network`` names the fork network's
        root (``owner/repo``) when the repository is a fork: forks share
        one object mirror. ``filter`` (``"blob:none"``, ``"tree:0"``) makes
        a partial clone and ``sparse`` (directories) a sparse workspace,
        both through git's command line (2.39.4+ on the PATH). With
        ``parallel=True`` (and ``lease_seconds``), a workspace another job
        holds gives this one a copy of its own at once where the file
        system shares blocks (XFS, btrfs), instead of waiting.
        """
        out = json.loads(
            self._native.prepare(
                repo_full_name,
                clone_url,
                git_ref=ref,
                depth=depth,
                lease_seconds=lease_seconds,
                holder=holder,
                submodules=submodules,
                lfs=lfs,
                network=network,
                serve_credential=serve_credential,
                filter=filter,
                sparse=sparse,
                parallel=parallel,
            )
        )
        return PreparedWorkspace.from_json(out)

    def push(self, name: str, branch: str, url: str, *, force: bool = False) -> PushResult:
        """Push ``branch`` of workspace ``name`` to ``url`` (with the
        credential in it, which reaches git through its callback only), if
        the policy allows it."""
        out = json.loads(self._native.push(name, branch, url, force))
        return PushResult.from_json(out)

    @contextmanager
    def lease(self, name: str) -> Iterator[str]:
        """Hold a workspace while working in it: cleanup and remove skip it::

            with manager.lease(ws.name):
                ...  # scan, fix
        """
        handle = self._native.lease(name)
        try:
            yield name
        finally:
            handle.release()

    def release_lease(self, lease_id: int) -> str:
        """Release a lease taken by ``prepare(lease_seconds=...)``; the workspace's name."""
        return self._native.release_lease(lease_id)

    def list(self) -> List[WorkspaceSummary]:
        """Every workspace with its size, last use, head and whether it is in use."""
        return json.loads(self._native.list())

    def health(self) -> HealthReport:
        """``status``, ``warnings``, ``recommendations``, ``workspace_stats``, ``policy``."""
        return json.loads(self._native.health())

    def cleanup(self, max_age_hours: Optional[float] = None) -> CleanupReport:
        """Remove old workspaces (never one in use); the whole report."""
        return json.loads(self._native.cleanup(max_age_hours))

    def remove(self, name: str) -> RemovalReport:
        """Remove one workspace, retrying through file locks; the report."""
        return json.loads(self._native.remove(name))

    def policy_info(self) -> Dict[str, str]:
        """The policy in force: ``source``, ``digest``, ``contract``."""
        return json.loads(self._native.policy_info())

    def reload_policy(self) -> Dict[str, str]:
        """Load the policy file again and swap it in (the old one stays if it is broken)."""
        return json.loads(self._native.reload_policy())


class AsyncWorkspaceManager:
    """:class:`WorkspaceManager` for asyncio code (FastAPI, aiohttp): each
    call runs in a worker thread (the host releases the GIL while it works),
    so a clone never blocks the event loop::

        manager = AsyncWorkspaceManager("workspace")
        ws = await manager.prepare("acme/app", url)
    """

    def __init__(
        self, *args: Any, manager: Optional[WorkspaceManager] = None, **kwargs: Any
    ) -> None:
        # ``manager``: wrap one the application already has; else the
        # arguments are WorkspaceManager's.
        self.sync = manager if manager is not None else WorkspaceManager(*args, **kwargs)
        """The blocking manager underneath (for the calls not wrapped here)."""

    @property
    def base_path(self) -> Path:
        """The base directory."""
        return self.sync.base_path

    async def prepare(self, repo_full_name: str, clone_url: str, **options: Any) -> PreparedWorkspace:
        """:meth:`WorkspaceManager.prepare`."""
        return await asyncio.to_thread(self.sync.prepare, repo_full_name, clone_url, **options)

    async def prepare_repo_workspace(self, repo_full_name: str, clone_url: str, default_branch: Optional[str] = "main", **options: Any) -> Path:
        """:meth:`WorkspaceManager.prepare_repo_workspace`."""
        return await asyncio.to_thread(
            self.sync.prepare_repo_workspace, repo_full_name, clone_url, default_branch, **options
        )

    async def push(self, name: str, branch: str, url: str, *, force: bool = False) -> PushResult:
        """:meth:`WorkspaceManager.push`."""
        return await asyncio.to_thread(self.sync.push, name, branch, url, force=force)

    async def release_lease(self, lease_id: int) -> str:
        """:meth:`WorkspaceManager.release_lease`."""
        return await asyncio.to_thread(self.sync.release_lease, lease_id)

    async def list(self) -> List[WorkspaceSummary]:
        """:meth:`WorkspaceManager.list`."""
        return await asyncio.to_thread(self.sync.list)

    async def stats(self) -> Stats:
        """:meth:`WorkspaceManager.get_workspace_stats`."""
        return await asyncio.to_thread(self.sync.get_workspace_stats)

    async def health(self) -> HealthReport:
        """:meth:`WorkspaceManager.health`."""
        return await asyncio.to_thread(self.sync.health)

    async def cleanup(self, max_age_hours: Optional[float] = None) -> CleanupReport:
        """:meth:`WorkspaceManager.cleanup`."""
        return await asyncio.to_thread(self.sync.cleanup, max_age_hours)

    async def remove(self, name: str) -> RemovalReport:
        """:meth:`WorkspaceManager.remove`."""
        return await asyncio.to_thread(self.sync.remove, name)


_manager: Optional[WorkspaceManager] = None
_manager_lock = threading.Lock()


def get_workspace_manager() -> WorkspaceManager:
    """The process's manager, on ``WORKSPACE_BASE_PATH`` (default ``backend/workspace``)."""
    global _manager
    with _manager_lock:
        if _manager is None:
            _manager = WorkspaceManager(base_path=None)
        return _manager


from .client import SHARD_HEADER, WorkspaceClient  # noqa: E402  (uses the classes above)

__all__ = [
    "CONTRACT",
    "WorkspaceManager",
    "AsyncWorkspaceManager",
    "WorkspaceClient",
    "SHARD_HEADER",
    "PreparedWorkspace",
    "PushResult",
    "get_workspace_manager",
    *errors.__all__,
]
