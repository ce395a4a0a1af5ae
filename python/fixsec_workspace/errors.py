"""Exceptions raised by fixsec_workspace: one class per kind of host error.

Every exception carries the host's message (what failed and what to do) and
``kind``, the stable label the HTTP API and the CLI's ``--json`` also use.
"""

from __future__ import annotations


class WorkspaceError(Exception):
    """Base class: anything the workspace host reports."""

    def __init__(self, message: str, kind: str = "internal") -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind


class InvalidInput(WorkspaceError, ValueError):
    """Malformed input: an empty name, a bad ref, a bad age."""


class Refused(WorkspaceError):
    """Well-formed but not allowed: an unsafe URL, a push the policy refuses."""


class NotFound(WorkspaceError, LookupError):
    """No such workspace, branch, ref or repository."""


class InUse(WorkspaceError):
    """The workspace is leased by another caller (the message says by whom)."""


class Busy(WorkspaceError):
    """The host is at one of its own limits (git queue, a lock wait): retry later."""


class InsufficientStorage(WorkspaceError):
    """The disk is too full, or the clone over the size limit; nothing was kept."""


class GitError(WorkspaceError):
    """git failed: network, authentication, corruption."""


class Rejected(GitError):
    """The remote rejected a push (not a fast-forward, a protected branch)."""


class FilesystemError(WorkspaceError, OSError):
    """The filesystem failed."""


class PolicyError(WorkspaceError):
    """The policy component failed (trap, limit, broken contract)."""


class ConfigError(WorkspaceError):
    """The configuration or the policy file is unusable."""


class Unauthorized(Refused):
    """The service refused the API token (:class:`WorkspaceClient` only)."""


class ServiceUnreachable(WorkspaceError, ConnectionError):
    """The service could not be reached at all (:class:`WorkspaceClient`
    only): a wrong URL, a service that is down, a network fault. Not
    :class:`Busy`, which the service itself says when it is at a limit."""


BY_KIND = {
    "invalid_input": InvalidInput,
    "refused": Refused,
    "not_found": NotFound,
    "in_use": InUse,
    "busy": Busy,
    "insufficient_storage": InsufficientStorage,
    "git": GitError,
    "rejected": Rejected,
    "io": FilesystemError,
    "policy": PolicyError,
    "config": ConfigError,
    "unauthorized": Unauthorized,
    "unreachable": ServiceUnreachable,
}
"""The exception class of each kind label (the HTTP API's ``error``)."""


__all__ = [
    "WorkspaceError",
    "InvalidInput",
    "Refused",
    "NotFound",
    "InUse",
    "Busy",
    "InsufficientStorage",
    "GitError",
    "Rejected",
    "FilesystemError",
    "PolicyError",
    "ConfigError",
    "Unauthorized",
    "ServiceUnreachable",
]
