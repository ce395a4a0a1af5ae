"""The guide's backend: a FastAPI app whose scan and auto-fix routes use the
package in-process, against git http-backend behind Basic auth."""

from __future__ import annotations

from pathlib import Path

import git as gitpython
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from conftest import SECRET
from fixsec_workspace import InUse, Refused, WorkspaceManager
from forge import files_containing


def make_app(manager: WorkspaceManager) -> FastAPI:
    app = FastAPI()

    @app.post("/scan")
    def scan(body: dict):
        repo_dir = manager.prepare_repo_workspace(body["full_name"], body["auth_url"], None)
        findings = [str(p.relative_to(repo_dir)) for p in repo_dir.rglob("*.py")]
        return {"repo_dir": str(repo_dir), "findings": findings}

    @app.post("/autofix")
    def autofix(body: dict):
        try:
            ws = manager.prepare(body["full_name"], body["auth_url"], holder="autofix")
        except InUse as e:
            raise HTTPException(409, str(e))
        repo = gitpython.Repo(ws.path)
        branch = body["branch"]
        repo.git.checkout("-B", branch)
        target = Path(ws.path) / "src" / "app.py"
        target.write_text("print('fixed')\n")
        repo.index.add([str(target)])
        repo.index.commit("fix: security finding", author=gitpython.Actor("bot", "bot@x.invalid"))
        try:
            pushed = manager.push(ws.name, branch, body["auth_url"], force=True)
        except Refused as e:
            raise HTTPException(422, str(e))
        return {"branch": pushed.branch, "commit": pushed.commit, "url": pushed.url}

    return app


def test_scan_and_autofix_routes_end_to_end(manager, forge, tmp_path):
    client = TestClient(make_app(manager))
    auth_url = forge.url_with_credential("acme/app")

    scanned = client.post("/scan", json={"full_name": "acme/app", "auth_url": auth_url})
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["findings"] == ["src/app.py"]

    fixed = client.post(
        "/autofix",
        json={"full_name": "acme/app", "auth_url": auth_url, "branch": "fixsec/fix-1"},
    )
    assert fixed.status_code == 200, fixed.text
    assert forge.branch("acme/app", "fixsec/fix-1") == fixed.json()["commit"]
    assert fixed.json()["url"] == forge.url("acme/app")

    # The default branch is the policy's to refuse.
    refused = client.post(
        "/autofix", json={"full_name": "acme/app", "auth_url": auth_url, "branch": "main"}
    )
    assert refused.status_code == 422 and "default branch" in refused.text

    # The next scan finds a clean default branch.
    again = client.post("/scan", json={"full_name": "acme/app", "auth_url": auth_url})
    repo = gitpython.Repo(again.json()["repo_dir"])
    assert repo.active_branch.name == "main"
    assert not repo.is_dirty(untracked_files=True)
    assert (Path(again.json()["repo_dir"]) / "src" / "app.py").read_text() == "print('hi')\n"
    # The credential is nowhere on disk.
    assert files_containing(tmp_path / "ws", SECRET) == []
    assert any(authorized for line, authorized in forge.seen if "receive-pack" in line)
