from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from forge import SmartHttp, make_repository  # noqa: E402

SECRET = "py-forge-secret-7c0ffee"


@pytest.fixture(autouse=True)
def quick_waits(monkeypatch):
    """Lease waits of 0 s: a leased workspace answers InUse at once."""
    monkeypatch.setenv("WORKSPACE_LEASE_WAIT_SECONDS", "0")
    monkeypatch.delenv("WORKSPACE_POLICY", raising=False)


@pytest.fixture
def upstream(tmp_path) -> Path:
    return make_repository(
        tmp_path / "upstream",
        {"README.md": "# demo\n", ".gitignore": "*.log\n", "src/app.py": "print('hi')\n"},
    )


@pytest.fixture
def forge(tmp_path, upstream):
    server = SmartHttp(tmp_path / "forge", "x-access-token", SECRET)
    (tmp_path / "forge").mkdir(exist_ok=True)
    server.publish("acme/app", upstream)
    yield server
    server.close()


@pytest.fixture
def manager(tmp_path):
    from fixsec_workspace import WorkspaceManager

    return WorkspaceManager(
        tmp_path / "ws", allow_local_urls=True, allow_private_networks=True
    )
