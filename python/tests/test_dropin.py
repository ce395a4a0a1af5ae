"""The original module's API, against real repositories."""

from __future__ import annotations

from pathlib import Path

import fixsec_workspace
from fixsec_workspace import WorkspaceManager, get_workspace_manager
from forge import git


def test_the_original_calls_with_their_names_and_types(tmp_path, upstream, monkeypatch):
    monkeypatch.setenv("WORKSPACE_BASE_PATH", str(tmp_path / "backend" / "workspace"))
    monkeypatch.setenv("WORKSPACE_ALLOW_LOCAL_URLS", "1")
    monkeypatch.setattr(fixsec_workspace, "_manager", None)
    manager = get_workspace_manager()
    assert manager is get_workspace_manager()

    repo_dir = manager.prepare_repo_workspace("facebook/react", str(upstream), "main")
    assert isinstance(repo_dir, Path)
    assert repo_dir == tmp_path / "backend" / "workspace" / "facebook_react_4f32b4cf" / "repo"
    assert (repo_dir / "README.md").read_text() == "# demo\n"
    assert manager.get_repo_workspace("facebook/react") == repo_dir.parent

    # Reused: what a scan left behind goes, the checkout is the branch's.
    (repo_dir / "scan.log").write_text("x")
    (repo_dir / "README.md").write_text("edited")
    again = manager.prepare_repo_workspace("facebook/react", str(upstream), "develop")
    assert again == repo_dir
    assert not (repo_dir / "scan.log").exists()
    assert (repo_dir / "dev.txt").exists()
    assert git(repo_dir, "rev-parse", "HEAD") == git(upstream, "rev-parse", "develop")

    stats = manager.get_workspace_stats()
    assert stats["total_workspaces"] == 1
    assert stats["total_size_mb"] >= 0 and stats["workspaces"][0]["size_bytes"] > 0
    assert stats["base_path"] == str(tmp_path / "backend" / "workspace")

    assert manager.cleanup_old_workspaces(max_age_hours=24) == 0
    assert manager.cleanup_old_workspaces(max_age_hours=0) == 1
    assert manager.get_workspace_stats()["total_workspaces"] == 0


def test_the_full_api(manager: WorkspaceManager, upstream):
    ws = manager.prepare("acme/app", str(upstream), ref="develop", lease_seconds=60, holder="scan-1")
    assert ws.name == manager.workspace_name("acme/app")
    assert ws.path.is_dir() and ws.reused is False
    assert ws.head == git(upstream, "rev-parse", "develop")
    assert ws.lease_id is not None
    listed = manager.list()
    assert [w["name"] for w in listed] == [ws.name] and listed[0]["in_use"] is True
    assert manager.release_lease(ws.lease_id) == ws.name

    with manager.lease(ws.name):
        report = manager.cleanup(0)
        assert report["cleaned_workspaces"] == 0
        assert ws.path.exists()
    assert manager.health()["status"] in {"healthy", "warning", "critical"}
    assert manager.policy_info()["contract"] == fixsec_workspace.CONTRACT
    assert manager.remove(ws.name)["removed"] is True
    assert not ws.path.exists()
