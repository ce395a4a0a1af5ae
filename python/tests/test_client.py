"""WorkspaceClient against three ``serve`` nodes behind Debian's haproxy with
the configuration we ship (deploy/haproxy/haproxy.cfg), on loopback: the
shard key it sends keeps a repository, and its forks, on one node; the PR
flow (prepare, commit, push) works through the router."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from conftest import SECRET
from fixsec_workspace import InvalidInput, NotFound, Unauthorized, WorkspaceClient
from forge import git

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "py-router-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def binary() -> str:
    path = os.environ.get("FIXSEC_WORKSPACE_BIN") or str(
        ROOT / "target" / "debug" / "fixsec-workspace"
    )
    assert Path(path).is_file(), f"{path} missing: scripts/test-python builds it"
    return path


@pytest.fixture
def cluster(tmp_path) -> Iterator[Dict]:
    """Three nodes (node1..node3, own base directories) behind the router."""
    processes: List[subprocess.Popen] = []
    bases = []
    ports = [free_port() for _ in range(3)]
    # The nodes know each other (the router's list), for the fleet view.
    fleet = ",".join(f"node{i + 1}=http://127.0.0.1:{p}" for i, p in enumerate(ports))
    try:
        for i, port in enumerate(ports):
            base = tmp_path / f"node{i + 1}"
            env = dict(
                os.environ,
                WORKSPACE_BASE_PATH=str(base),
                WORKSPACE_BIND=f"127.0.0.1:{port}",
                WORKSPACE_API_TOKEN=TOKEN,
                WORKSPACE_NODE_ID=f"node{i + 1}",
                WORKSPACE_FLEET=fleet,
                WORKSPACE_ALLOW_LOCAL_URLS="1",
                WORKSPACE_ALLOW_PRIVATE_NETWORKS="1",
                # One tenant: forks borrow their root's mirror.
                WORKSPACE_MIRROR_SHARING="network",
            )
            processes.append(
                subprocess.Popen([binary(), "serve"], env=env, stderr=subprocess.DEVNULL)
            )
            bases.append(base)
        for port in ports:
            wait_until(f"node on {port}", lambda: _answers(f"http://127.0.0.1:{port}/healthz"))
        listen = free_port()
        env = dict(os.environ, LISTEN=f"127.0.0.1:{listen}")
        for i, port in enumerate(ports):
            env[f"NODE{i + 1}"] = f"127.0.0.1:{port}"
        processes.append(
            subprocess.Popen(
                ["haproxy", "-db", "-f", str(ROOT / "deploy/haproxy/haproxy.cfg")],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        yield {"url": f"http://127.0.0.1:{listen}", "bases": bases, "nodes": processes[:3]}
    finally:
        for p in processes:
            p.kill()
            p.wait()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def node_of(client: WorkspaceClient, key: str) -> str:
    """The node the router sends ``key`` to: a prepare the node refuses as
    invalid (depth 0) costs nothing and names it."""

    def probe():
        try:
            client.prepare(key, "http://127.0.0.1:9/none.git", depth=0)
        except InvalidInput:
            return client.last_served_by
        except Exception:  # the router's 503 while its checks come up
            return None

    return wait_until(f"a node for {key}", probe)


def test_the_shard_key_keeps_forks_with_their_root_and_the_pr_flow_works(
    cluster, forge, upstream, tmp_path
):
    client = WorkspaceClient(cluster["url"], TOKEN)
    # Every node is up once all three have answered a probe.
    wait_until(
        "three nodes in the ring",
        lambda: len({node_of(client, f"acme/probe-{i}") for i in range(12)}) == 3,
    )
    root = "acme/app"
    root_node = node_of(client, root)
    fork = next(
        f"someone/app-{k}"
        for k in range(30)
        if node_of(client, f"someone/app-{k}") != root_node
    )
    forge.publish(fork, upstream)
    auth_url = forge.url_with_credential(root)

    ws = client.prepare(root, auth_url, lease_seconds=300, holder="autofix")
    assert ws.served_by == root_node
    # The name the service gives is the one the prepare used.
    assert client.workspace_name(root) == ws.name
    # A reload on the root's node keeps the embedded policy (no file).
    reloaded = client.reload_policy(shard=root)
    assert reloaded["contract"].startswith("fixsec:workspace@") and reloaded["digest"]
    base = cluster["bases"][int(root_node[-1]) - 1]
    assert ws.path.resolve().is_relative_to(base.resolve())
    # A fork names its root: same node, borrowing the root's mirror.
    forked = client.prepare(fork, forge.url_with_credential(fork), network=root)
    assert forked.served_by == root_node, "the fork went to its own key's node"
    stats = client.stats(shard=root)
    assert stats["mirrors"]["count"] == 1
    assert stats["total_workspaces"] == 2

    # The guide's PR route: branch, commit, push through the router.
    git(ws.path, "checkout", "-q", "-b", "fix-1")
    (ws.path / "src" / "app.py").write_text("print('fixed')\n")
    git(ws.path, "-c", "user.name=bot", "-c", "user.email=bot@x.invalid",
        "commit", "-qam", "fix")
    pushed = client.push(ws.name, "fix-1", auth_url, shard=root)
    assert forge.branch(root, "fix-1") == pushed.commit
    assert SECRET not in pushed.url
    assert client.release_lease(ws.lease_id, shard=root) == ws.name
    report = client.remove(forked.name, shard=root)
    assert report["removed"] is True
    # The same cleanup call as in-process, on the root's node.
    cleaned = client.cleanup(24, shard=root)
    assert cleaned["cleaned_workspaces"] == 0 and cleaned["max_age_hours"] == 24
    with pytest.raises(NotFound):
        client.remove(forked.name, shard=root)

    # Without a shard key the router answers for itself; without the
    # token the node refuses.
    with pytest.raises(InvalidInput, match="X-Fixsec-Shard"):
        client.list()
    with pytest.raises(Unauthorized):
        WorkspaceClient(cluster["url"], "wrong-token").list(shard=root)


def test_the_fleet_view_through_the_router_names_every_node(cluster, upstream):
    client = WorkspaceClient(cluster["url"], TOKEN)
    wait_until(
        "three nodes in the ring",
        lambda: len({node_of(client, f"acme/probe-{i}") for i in range(12)}) == 3,
    )
    served = {}
    for i in range(6):
        repo = f"acme/fleet-{i}"
        served[repo] = client.prepare(repo, str(upstream)).served_by
    listed = client.fleet_workspaces()
    assert listed["complete"] is True
    assert {w["repo_full_name"]: w["node"] for w in listed["workspaces"]} == served
    assert client.fleet_stats()["totals"]["total_workspaces"] == 6
    assert client.fleet_health()["status"] in ("healthy", "warning")

    cluster["nodes"][2].kill()
    cluster["nodes"][2].wait()
    health = client.fleet_health()
    assert health["status"] == "critical"
    assert health["unreachable"] == ["node3"]
    node3 = next(n for n in health["nodes"] if n["node"] == "node3")
    assert node3["answer"] is None and "did not answer" in node3["error"]
    cleaned = client.fleet_cleanup(1000)
    assert cleaned["unreachable"] == ["node3"] and cleaned["complete"] is False
