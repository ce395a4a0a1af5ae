"""The shapes of the dictionaries the API returns, as ``TypedDict``s, so an
editor and a type checker know the keys. They describe the host's JSON
(``host/src/model.rs``); a newer host may add keys, never remove these."""

from __future__ import annotations

from typing import List, Literal, Optional, TypedDict


class WorkspaceSummary(TypedDict):
    """One workspace as listed (:meth:`WorkspaceManager.list`)."""

    name: str
    repo_full_name: Optional[str]
    clone_url: Optional[str]
    branch: Optional[str]
    head: Optional[str]
    size_bytes: int
    size_mb: float
    created: Optional[str]
    last_prepared: Optional[str]
    last_used: Optional[str]
    in_use: bool
    leased_by: Optional[str]
    leased_until: Optional[str]
    has_metadata: bool


class WorkspaceSize(TypedDict):
    """One workspace's size in :class:`Stats`."""

    name: str
    size_bytes: int
    size_mb: float


class MirrorStats(TypedDict):
    """The object mirrors on a node."""

    count: int
    size_bytes: int
    size_mb: float
    unreferenced: int


class Stats(TypedDict):
    """Totals and sizes, with the guide's keys (:meth:`get_workspace_stats`)."""

    total_workspaces: int
    total_size_mb: float
    total_size_bytes: int
    base_path: str
    in_use: int
    pending_deletions: int
    free_space_bytes: Optional[int]
    workspaces: List[WorkspaceSize]
    mirrors: MirrorStats


class PolicyInfo(TypedDict):
    """The policy in force."""

    source: str
    digest: str
    contract: str


class Thresholds(TypedDict):
    """What the health verdict was judged against."""

    workspace_size_warning_mb: int
    total_size_warning_mb: int
    max_workspaces: int
    max_age_hours: float


class HealthReport(TypedDict):
    """The full health report, with the guide's four keys first."""

    status: Literal["healthy", "warning", "critical"]
    workspace_stats: Stats
    warnings: List[str]
    recommendations: List[str]
    policy: PolicyInfo
    thresholds: Thresholds


class RemovalReport(TypedDict):
    """What a removal did; ``removed`` is the truth, checked on disk."""

    name: str
    removed: bool
    skipped_in_use: bool
    attempts: int
    bytes_freed: int
    remaining: List[str]
    error: Optional[str]
    pending_deletion: bool


class SkippedWorkspace(TypedDict):
    """A workspace a cleanup left, and why."""

    name: str
    reason: str


class CleanupReport(TypedDict):
    """What a cleanup did (:meth:`WorkspaceManager.cleanup`)."""

    cleaned_workspaces: int
    max_age_hours: float
    bytes_freed: int
    removed: List[RemovalReport]
    failed: List[RemovalReport]
    skipped: List[SkippedWorkspace]
    kept: int
    pending_deletions_finished: int
    mirrors_removed: List[str]
    mirrors_maintained: List["MirrorMaintenance"]


class MirrorMaintenance(TypedDict):
    """One object mirror repacked and pruned by a cleanup."""

    name: str
    bytes_before: int
    bytes_after: int
    kept_for_borrowers: int
    error: Optional[str]


__all__ = [
    "MirrorMaintenance",
    "WorkspaceSummary",
    "WorkspaceSize",
    "MirrorStats",
    "Stats",
    "PolicyInfo",
    "Thresholds",
    "HealthReport",
    "RemovalReport",
    "SkippedWorkspace",
    "CleanupReport",
]
