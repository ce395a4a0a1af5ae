"""An age-based fixsec-workspace policy written in Python.

It behaves like the default (Rust) policy: the same workspace names input
for input (the original FixSec scheme where it fits in 64 characters, a
47-character stem and 16 hex digits otherwise; `policy check
--same-names-as-default` holds it to that), reuse-or-reclone prepare, age-based cleanup that never selects a
workspace in use, and a threshold health verdict. Built into a component by
componentize-py (see scripts/build-python-policy); the host loads it
unchanged with WORKSPACE_POLICY.
"""

import hashlib

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import policy
from wit_world.imports import git, log, removal, workspace_fs
from wit_world.imports.types import Error, ErrorKind

MAX_NAME_LEN = 64
MAX_EXTENDED_STEM = MAX_NAME_LEN - 17
MB = 1024 * 1024
GITHUB_ALPHABET = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_/")


def sanitize(name: str, limit: int) -> str:
    out = []
    for ch in name:
        if len(out) >= limit:
            break
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif not out or out[-1] != "_":
            out.append("_")
    return "".join(out).strip("_")


def folder_name(repo_full_name: str) -> str:
    if not repo_full_name.strip():
        raise Err(Error(ErrorKind.INVALID_INPUT,
                        "the repository name is empty: pass the full name, e.g. `owner/repo`"))
    digest = hashlib.md5(repo_full_name.encode("utf-8")).hexdigest()
    if len(repo_full_name) <= 201 and set(repo_full_name) <= GITHUB_ALPHABET:
        name = f"{sanitize(repo_full_name, 10**9) or 'repo'}_{digest[:8]}"
        if len(name) <= MAX_NAME_LEN:
            return name
    # Outside the original's domain, or too long for it (Windows paths).
    stem = sanitize(repo_full_name, MAX_EXTENDED_STEM)
    return f"{stem or 'repo'}_{digest[:16]}"


def same_remote(a: str, b: str) -> bool:
    def norm(u: str) -> str:
        u = u.rstrip("/")
        return u[:-4] if u.endswith(".git") else u
    return norm(a) == norm(b)


class Policy(exports.Policy):
    def workspace_name(self, repo_full_name: str) -> str:
        return folder_name(repo_full_name)

    def prepare(self, request: policy.PrepareRequest) -> policy.PrepareOutcome:
        name, url = request.name, request.clone_url
        options = git.FetchOptions(depth=request.depth)
        state = git.inspect(name)
        notes = []
        if state.exists and state.is_repository and state.healthy and \
                state.remote_url is not None and same_remote(state.remote_url, url):
            if state.stale_locks:
                cleared = git.clear_stale_locks(name)
                notes.append(f"cleared {cleared} stale lock file(s): {', '.join(state.stale_locks)}")
            try:
                head = git.update(name, url, request.branch, options)
                return policy.PrepareOutcome(reused=True, head=head, notes=notes)
            except Err as e:
                log.log(log.Level.WARN, f"{name}: update failed, cloning afresh: {e.value.message}")
                notes.append(f"update failed ({e.value.message}), cloned afresh")
        elif state.exists:
            notes.append(f"re-cloned: {state.problem or 'not a healthy clone of ' + url}")
        head = git.clone(name, url, request.branch, options)
        return policy.PrepareOutcome(reused=False, head=head, notes=notes)

    def cleanup(self, request: policy.CleanupRequest) -> policy.CleanupOutcome:
        if not (request.max_age_hours >= 0) or request.max_age_hours == float("inf"):
            raise Err(Error(ErrorKind.INVALID_INPUT,
                            f"max_age_hours must be a finite number >= 0, got {request.max_age_hours}"))
        now = workspace_fs.now()
        skipped, kept = [], 0
        for ws in workspace_fs.list_workspaces():
            last = ws.last_used if ws.last_used is not None else ws.last_prepared
            if ws.in_use:
                skipped.append(policy.SkippedWorkspace(ws.name, "in use (being prepared or leased)"))
            elif last is None:
                skipped.append(policy.SkippedWorkspace(ws.name, "age unknown: no workspace.json"))
            elif now - last >= request.max_age_hours * 3600:
                removal.remove_workspace(ws.name)
            else:
                kept += 1
        return policy.CleanupOutcome(skipped=skipped, kept=kept)

    def assess_health(self, stats: policy.HealthStats, thresholds: policy.Thresholds) -> policy.HealthReport:
        warnings, recommendations = [], []
        critical = False
        if stats.total_size_bytes > thresholds.total_size_warning_mb * MB:
            warnings.append(f"High disk usage: {stats.total_size_bytes / MB:.1f} MB in workspaces")
            recommendations.append("Run cleanup with a lower max_age_hours")
            critical = stats.total_size_bytes > 2 * thresholds.total_size_warning_mb * MB
        if stats.total_workspaces > thresholds.max_workspaces:
            warnings.append(f"Too many workspaces: {stats.total_workspaces}")
            recommendations.append("Run cleanup more often")
            critical = critical or stats.total_workspaces > 2 * thresholds.max_workspaces
        for name, size in stats.largest:
            warnings.append(f"Workspace {name} takes {size / MB:.1f} MB")
        if stats.pending_deletions:
            warnings.append(f"{stats.pending_deletions} removed workspace(s) could not be deleted yet")
        if stats.free_space_bytes is not None and stats.free_space_bytes < 1024 * MB:
            warnings.append("Low disk space")
            critical = True
        status = policy.HealthStatus.CRITICAL if critical else (
            policy.HealthStatus.WARNING if warnings else policy.HealthStatus.HEALTHY)
        return policy.HealthReport(status=status, warnings=warnings, recommendations=recommendations)
