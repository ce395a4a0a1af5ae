"""Issue 22: the original auto-fix route pushes with GitPython (stock git)
from a leased workspace, with the credential served from memory and never
written to disk; after release a stock push fails again."""

from __future__ import annotations

from pathlib import Path

import git as gitpython
import pytest

from conftest import SECRET
from forge import files_containing


@pytest.fixture
def job_env(tmp_path, monkeypatch):
    """A job's environment: a home of its own (no credential helper of the
    user's), no system config, no terminal to prompt on."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "fixsec bot")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "bot@example.invalid")
    return home


def push_fails(repo: gitpython.Repo, branch: str) -> str:
    """The error of a push that must fail (GitPython raises, or flags it)."""
    try:
        infos = repo.remote(name="origin").push(branch, force=True)
        infos.raise_if_error()
    except gitpython.GitCommandError as e:
        return str(e)
    raise AssertionError(f"the push of {branch} succeeded")


def test_the_autofix_flow_pushes_with_gitpython_and_stops_at_release(
    manager, forge, tmp_path, job_env, capfd
):
    full_name, auth_url, default_branch = "acme/app", forge.url_with_credential("acme/app"), "main"
    branch, msg = "fixsec/fix-1", "fix: security finding"

    # The original route, unchanged but for the keyword.
    repo_path = manager.prepare_repo_workspace(
        full_name, auth_url, default_branch, serve_credential=True
    )
    repo = gitpython.Repo(repo_path)
    repo.git.checkout("-b", branch)
    (Path(repo_path) / "src" / "app.py").write_text("print('fixed')\n")
    repo.git.add(A=True)
    repo.index.commit(msg)
    repo.remote(name="origin").push(branch, force=True)

    assert forge.branch("acme/app", branch) == repo.head.commit.hexsha
    for folder in (tmp_path / "ws", job_env):
        assert files_containing(folder, SECRET) == [], folder
    out, err = capfd.readouterr()
    assert SECRET not in out + err

    assert manager.release_repo_workspace(full_name) == 1
    repo.git.checkout("-b", "fixsec/fix-2")
    repo.index.commit("another fix")
    assert "could not read Username" in push_fails(repo, "fixsec/fix-2")
    assert forge.branch("acme/app", "fixsec/fix-2") == ""


def test_without_the_keyword_stock_git_has_no_credential(manager, forge, job_env):
    repo_path = manager.prepare_repo_workspace("acme/app", forge.url_with_credential("acme/app"))
    repo = gitpython.Repo(repo_path)
    repo.git.checkout("-b", "fixsec/fix-3")
    repo.index.commit("fix")
    assert "could not read Username" in push_fails(repo, "fixsec/fix-3")
    assert manager.release_repo_workspace("acme/app") == 0
