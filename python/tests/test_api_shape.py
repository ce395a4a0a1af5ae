"""Issue 22: the Python surface an application builds on: results that do
not break on a key a newer host adds, an unreachable service that is not
called busy, the client's cleanup, and an asyncio manager."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fixsec_workspace import (
    AsyncWorkspaceManager,
    Busy,
    PushResult,
    ServiceUnreachable,
    WorkspaceClient,
)


def test_a_push_result_ignores_keys_a_newer_host_adds():
    out = {
        "name": "acme_app_1", "branch": "fix", "commit": "abc", "url": "https://h/r.git",
        "forced": False, "duration_ms": 3, "added_later": {"x": 1},
    }
    assert PushResult.from_json(out).commit == "abc"


def test_an_unreachable_service_is_not_reported_as_busy():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = WorkspaceClient(f"http://127.0.0.1:{port}", token="t", timeout=5)
    with pytest.raises(ServiceUnreachable) as e:
        client.list()
    assert not isinstance(e.value, Busy)
    assert isinstance(e.value, ConnectionError)
    assert e.value.kind == "unreachable"
    assert f"127.0.0.1:{port}" in str(e.value)


def test_the_asyncio_manager_prepares_and_reports(tmp_path, upstream):
    """(That it keeps the loop running: test_concurrency.py.)"""
    manager = AsyncWorkspaceManager(tmp_path / "ws", allow_local_urls=True)

    async def run():
        ws = await manager.prepare("acme/app", str(upstream))
        again = await manager.prepare("acme/app", str(upstream))
        return ws, again, await manager.stats()

    ws, again, stats = asyncio.run(run())
    assert not ws.reused and again.reused
    assert stats["total_workspaces"] == 1


def test_the_client_offers_the_in_process_calls_a_service_can_answer():
    """What WorkspaceManager does for its own base directory, the client
    does over HTTP; only what needs this machine's files stays local."""
    from fixsec_workspace import WorkspaceManager

    local_only = {
        "base_path", "get_repo_workspace", "prepare_repo_workspace",
        "release_repo_workspace", "cleanup_old_workspaces", "get_workspace_stats",
        "lease", "policy_info",
    }
    in_process = {n for n in dir(WorkspaceManager) if not n.startswith("_")}
    remote = {n for n in dir(WorkspaceClient) if not n.startswith("_")}
    missing = in_process - local_only - remote
    assert not missing, f"WorkspaceClient lacks {sorted(missing)}"


def test_a_sparse_prepare_keeps_only_its_directories_and_bad_ones_are_named(tmp_path):
    """Issue 23 from Python: ``sparse=`` (and ``filter=``) reach the host."""
    from forge import make_repository
    from fixsec_workspace import InvalidInput, WorkspaceManager

    upstream = make_repository(
        tmp_path / "mono",
        {"README.md": "top\n", "api/main.py": "api\n", "web/index.js": "web\n"},
    )
    manager = WorkspaceManager(tmp_path / "ws", allow_local_urls=True)
    ws = manager.prepare("acme/mono", str(upstream), sparse=["api"])
    on_disk = sorted(p.name for p in ws.path.iterdir() if p.name != ".git")
    assert on_disk == ["README.md", "api"]
    again = manager.prepare("acme/mono", str(upstream))
    assert again.reused
    assert (again.path / "web" / "index.js").read_text() == "web\n"
    with pytest.raises(InvalidInput, match="filter"):
        manager.prepare("acme/mono", str(upstream), filter="sparse:oid=HEAD")
