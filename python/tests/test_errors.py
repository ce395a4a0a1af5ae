"""Bad input raises the right exception, and loses nothing."""

from __future__ import annotations

import pytest

from fixsec_workspace import (
    GitError,
    InUse,
    InvalidInput,
    NotFound,
    Refused,
    WorkspaceError,
)


def test_each_kind_of_failure_is_its_own_exception(manager, upstream):
    ws = manager.prepare("acme/app", str(upstream))
    (ws.path / "work-in-progress.txt").write_text("keep me")
    with manager.lease(ws.name):
        with pytest.raises(InUse) as held:
            manager.prepare("acme/app", str(upstream))
        assert "library lease" in str(held.value) and held.value.kind == "in_use"
    cases = [
        (lambda: manager.prepare("", str(upstream)), InvalidInput),
        # The name is checked before the clone host is looked up.
        (lambda: manager.prepare("", "https://unresolvable.invalid/x.git"), InvalidInput),
        (lambda: manager.prepare("acme/app", str(upstream), ref="a..b"), InvalidInput),
        (lambda: manager.prepare("acme/app", "ext::sh -c touch% /tmp/x"), Refused),
        (lambda: manager.prepare("acme/other", str(upstream), ref="no-such-branch"), NotFound),
        (lambda: manager.remove("no_such_workspace_12345678"), NotFound),
        # The default branch, as the push target itself says it.
        (lambda: manager.push(ws.name, "main", str(upstream)), Refused),
        # A target that does not answer cannot say which branch is its default.
        (lambda: manager.push(ws.name, "fix-1", "http://127.0.0.1:9/none.git"), GitError),
    ]
    for call, kind in cases:
        with pytest.raises(kind) as raised:
            call()
        assert isinstance(raised.value, WorkspaceError)
        assert raised.value.message, kind
    # Nothing was lost along the way.
    assert (ws.path / "work-in-progress.txt").read_text() == "keep me"
    assert issubclass(InvalidInput, ValueError) and issubclass(NotFound, LookupError)
    assert not issubclass(Refused, GitError)
