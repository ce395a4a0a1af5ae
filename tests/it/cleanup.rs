//! Removal, cleanup, stats and health against real workspaces, with faults
//! injected through the removal seam.

use crate::support;

use crate::support::{Fixture, Upstream, age_workspace, builder, manager};
use fixsec_workspace::testing::FaultInjector;
use fixsec_workspace::{ErrorKind, HealthStatus, PrepareRequest, WorkspaceManager};
use std::path::Path;
use std::sync::Arc;

fn prepare(m: &WorkspaceManager, up: &Upstream, repo: &str) -> String {
    m.prepare(&PrepareRequest::new(repo, up.url()).branch("main"))
        .unwrap()
        .name
}

/// The workspace's README.md "in use" (see [`FaultInjector`]).
fn readme_in_use() -> FaultInjector {
    FaultInjector::named("README.md")
}

#[test]
fn cleanup_removes_old_keeps_young_and_never_touches_leased() {
    let Fixture { up, base, m } = Fixture::new();
    let old = prepare(&m, &up, "acme/old");
    let young = prepare(&m, &up, "acme/young");
    let leased = prepare(&m, &up, "acme/leased");
    age_workspace(base.path(), &old, 48);
    age_workspace(base.path(), &leased, 48);
    let lease = m.lease(&leased).unwrap();

    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 1);
    assert_eq!(report.removed[0].name, old);
    assert!(report.removed[0].bytes_freed > 0);
    assert_eq!(report.kept, 1);
    assert!(report.failed.is_empty());
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.name == leased && s.reason.contains("in use")),
        "{report:?}"
    );
    assert!(!base.path().join(&old).exists());
    assert!(base.path().join(&young).join("repo/README.md").exists());
    assert!(base.path().join(&leased).join("repo/README.md").exists());

    // Released, the lease records the use: the workspace is young again.
    drop(lease);
    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 0);
    assert_eq!(report.kept, 2);
}

#[test]
fn cleanup_ages_by_metadata_not_folder_mtime() {
    let Fixture { up, base, m } = Fixture::new();
    let name = prepare(&m, &up, "acme/demo");
    // Touch the folder recently but record an old use: it is old.
    age_workspace(base.path(), &name, 30);
    std::fs::write(base.path().join(&name).join("repo/touched"), "now").unwrap();
    assert_eq!(m.cleanup(Some(24.0)).unwrap().cleaned_workspaces, 1);
}

#[test]
fn folders_from_the_original_tool_are_adopted_not_deleted() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    // What the original made: <name>/repo, a clone, and no workspace.json.
    let name = "facebook_react_4f32b4cf";
    git2::Repository::clone(&up.url(), base.path().join(name).join("repo")).unwrap();
    let m = manager(base.path());
    let listed = m.get(name).unwrap().unwrap();
    assert!(!listed.has_metadata);
    assert!(listed.size_bytes > 0, "sized by a walk when no metadata");

    let report = m.cleanup(Some(0.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 0);
    assert!(
        report
            .skipped
            .iter()
            .any(|s| s.name == name && s.reason.contains("age unknown"))
    );

    let out = m
        .prepare(&PrepareRequest::new("facebook/react", up.url()).branch("main"))
        .unwrap();
    assert_eq!(out.name, name);
    assert!(out.reused, "the original's clone is reused as it is");
    assert!(m.get(name).unwrap().unwrap().has_metadata);
}

#[test]
fn removal_retries_through_a_file_in_use() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let ops = Arc::new(readme_in_use());
    let m = builder(base.path())
        .removal(support::fast_removal(5))
        .fs_ops(ops.clone())
        .build()
        .unwrap();
    let name = prepare(&m, &up, "acme/demo");
    ops.fail_next(3);
    let report = m.remove(&name).unwrap();
    assert!(report.removed, "{report:?}");
    assert_eq!(report.attempts, 4);
    assert!(report.bytes_freed > 0);
    assert!(!base.path().join(&name).exists());
    assert!(m.get(&name).unwrap().is_none());
}

#[test]
fn removal_that_never_succeeds_is_reported_and_finished_later() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let ops = Arc::new(readme_in_use());
    let m = builder(base.path()).fs_ops(ops.clone()).build().unwrap();
    let doomed = prepare(&m, &up, "acme/doomed");
    let bystander = prepare(&m, &up, "acme/bystander");
    // The bystander is young; only `doomed` is old.
    age_workspace(base.path(), &doomed, 48);
    ops.hold(true);

    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 0);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    let failed = &report.failed[0];
    assert_eq!(failed.name, doomed);
    assert!(!failed.removed);
    assert_eq!(failed.attempts, 3);
    let error = failed.error.as_deref().unwrap();
    assert!(error.contains("README.md"), "names the file: {error}");
    assert!(
        error.contains("every cleanup retries it"),
        "says what next: {error}"
    );
    assert!(failed.remaining.iter().any(|p| p.ends_with("README.md")));
    // Its name is free (moved to .trash), the bystander is whole.
    assert!(!base.path().join(&doomed).exists());
    assert!(
        base.path()
            .join(&bystander)
            .join("repo/README.md")
            .is_file()
    );
    let stats = m.stats().unwrap();
    assert_eq!(stats.total_workspaces, 1);
    assert_eq!(stats.pending_deletions, 1);
    let health = m.health().unwrap();
    assert_eq!(health.status, HealthStatus::Warning);
    assert!(
        health
            .warnings
            .iter()
            .any(|w| w.contains("could not be deleted"))
    );

    // The handle goes away: the next cleanup finishes the job.
    ops.hold(false);
    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.pending_deletions_finished, 1);
    assert!(report.bytes_freed > 0);
    assert_eq!(m.stats().unwrap().pending_deletions, 0);
    assert_eq!(m.health().unwrap().status, HealthStatus::Healthy);
}

#[test]
fn remove_answers_not_found_in_use_and_refused() {
    let Fixture { up, base: _base, m } = Fixture::new();
    let name = prepare(&m, &up, "acme/demo");
    assert_eq!(
        m.remove("nope_12345678").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    for unsafe_name in ["../escape", "/etc", ".trash", "a/b", ""] {
        assert_eq!(
            m.remove(unsafe_name).unwrap_err().kind(),
            ErrorKind::Refused,
            "{unsafe_name}"
        );
    }
    let lease = m.lease(&name).unwrap();
    assert_eq!(m.remove(&name).unwrap_err().kind(), ErrorKind::InUse);
    assert!(m.get(&name).unwrap().unwrap().in_use);
    drop(lease);
    assert!(!m.get(&name).unwrap().unwrap().in_use);
    assert!(m.remove(&name).unwrap().removed);
}

#[test]
fn stats_report_the_guides_keys_and_ignore_links_out() {
    let Fixture { up, base, m } = Fixture::new();
    #[cfg_attr(not(unix), allow(unused_variables))]
    let a = prepare(&m, &up, "acme/a");
    prepare(&m, &up, "acme/b");
    let stats = m.stats().unwrap();
    assert_eq!(stats.total_workspaces, 2);
    assert_eq!(stats.base_path, base.path().display().to_string());
    // The total (from sizes recorded at prepare time) equals what is on
    // disk, measured here independently of the product's own walk.
    let on_disk: u64 = walkdir::WalkDir::new(base.path())
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file() && e.path().components().any(|c| c.as_os_str() == "repo")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(on_disk > 0);
    assert_eq!(stats.total_size_bytes, on_disk);
    let json = serde_json::to_value(&stats).unwrap();
    for key in ["total_workspaces", "total_size_mb", "base_path"] {
        assert!(json.get(key).is_some(), "{key}");
    }

    #[cfg(unix)]
    {
        // Links committed upstream pointing outside the base (to a folder and
        // to a file): never counted, never followed when deleting.
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("big"), vec![0u8; 1_000_000]).unwrap();
        std::os::unix::fs::symlink(outside.path(), up.path.join("out_dir")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("big"), up.path.join("out_file")).unwrap();
        up.commit_existing(&["out_dir", "out_file"], "links out");
        let out = m
            .prepare(&PrepareRequest::new("acme/a", up.url()).branch("main"))
            .unwrap();
        assert!(
            out.path
                .join("out_dir")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
        let size = m.get(&a).unwrap().unwrap().size_bytes;
        assert!(size < 1_000_000, "{size}");
        assert!(m.remove(&a).unwrap().removed);
        assert_eq!(
            std::fs::read(outside.path().join("big")).unwrap().len(),
            1_000_000
        );
    }
}

#[test]
fn health_follows_the_thresholds() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let config = fixsec_workspace::Config {
        base_path: base.path().to_path_buf(),
        allow_local_urls: true,
        size_warning_mb: 0, // every workspace is "too big"
        max_workspaces: 1,
        ..Default::default()
    };
    let m = WorkspaceManager::from_config(config).unwrap();
    let healthy = m.health().unwrap();
    assert_eq!(healthy.status, HealthStatus::Healthy);
    assert!(healthy.warnings.is_empty());
    prepare(&m, &up, "acme/a");
    prepare(&m, &up, "acme/b");
    let h = m.health().unwrap();
    assert_eq!(h.status, HealthStatus::Warning);
    assert!(
        h.warnings.iter().any(|w| w.contains("Too many workspaces")),
        "{h:?}"
    );
    assert!(
        h.warnings
            .iter()
            .any(|w| w.contains("per-workspace threshold"))
    );
    assert!(!h.recommendations.is_empty());
    assert_eq!(h.workspace_stats.total_workspaces, 2);
}

#[test]
fn cleanup_refuses_a_negative_age() {
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    for bad in [-1.0, f64::NAN, f64::INFINITY] {
        assert_eq!(
            m.cleanup(Some(bad)).unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    }
}

#[test]
fn background_removal_frees_the_name_at_once_and_finishes() {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let ops = Arc::new(readme_in_use());
    let m = builder(base.path()).fs_ops(ops.clone()).build().unwrap();
    let name = prepare(&m, &up, "acme/demo");
    let report = m.remove_in_background(&name).unwrap();
    assert!(report.pending_deletion && !report.removed);
    assert!(
        !base.path().join(&name).exists(),
        "the name is free at once"
    );
    assert!(m.get(&name).unwrap().is_none());
    m.wait_for_background_deletions();
    assert_eq!(m.stats().unwrap().pending_deletions, 0);
    assert_eq!(
        std::fs::read_dir(base.path().join(".trash"))
            .unwrap()
            .count(),
        0
    );

    // A deletion that keeps failing stays pending until a cleanup finishes it.
    let name = prepare(&m, &up, "acme/locked");
    ops.hold(true);
    m.remove_in_background(&name).unwrap();
    m.wait_for_background_deletions();
    assert_eq!(m.stats().unwrap().pending_deletions, 1);
    ops.hold(false);
    assert_eq!(m.cleanup(Some(24.0)).unwrap().pending_deletions_finished, 1);

    assert_eq!(
        m.remove_in_background("nope_1").unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let leased = prepare(&m, &up, "acme/leased");
    let lease = m.lease(&leased).unwrap();
    assert_eq!(
        m.remove_in_background(&leased).unwrap_err().kind(),
        ErrorKind::InUse
    );
    drop(lease);
}

#[test]
fn rescan_picks_up_what_others_wrote_and_the_fast_path_reports_the_recorded_size() {
    let Fixture { up, base, m } = Fixture::new();
    let name = prepare(&m, &up, "acme/demo");
    let recorded = m.get(&name).unwrap().unwrap().size_bytes;
    std::fs::write(
        base.path().join(&name).join("repo/big.bin"),
        vec![7u8; 100_000],
    )
    .unwrap();
    assert_eq!(
        m.stats().unwrap().total_size_bytes,
        recorded,
        "stats use recorded sizes"
    );
    let stats = m.rescan_sizes().unwrap();
    assert_eq!(stats.total_size_bytes, recorded + 100_000);
    assert_eq!(
        m.get(&name).unwrap().unwrap().size_bytes,
        recorded + 100_000
    );
    let report = m.remove(&name).unwrap();
    assert!(report.removed);
    assert_eq!(report.attempts, 1);
    assert_eq!(report.bytes_freed, recorded + 100_000);
}

/// A workspace whose README.md is in use for ever, in a folder that (as on
/// NTFS) cannot be renamed while it is.
struct Held {
    up: Upstream,
    base: tempfile::TempDir,
    ops: Arc<FaultInjector>,
    m: WorkspaceManager,
    name: String,
}

fn held_in_a_folder_that_cannot_be_renamed() -> Held {
    let up = Upstream::new();
    let base = tempfile::tempdir().unwrap();
    let ops = Arc::new(readme_in_use().blocking_renames());
    let m = builder(base.path()).fs_ops(ops.clone()).build().unwrap();
    let name = prepare(&m, &up, "acme/held");
    ops.hold(true);
    Held {
        up,
        base,
        ops,
        m,
        name,
    }
}

#[test]
fn a_folder_that_cannot_be_renamed_is_deleted_in_place_and_finished_by_cleanup() {
    // Bound, not `_`: the fixtures' folders must live to the end.
    let Held {
        up: _up,
        base,
        ops,
        m,
        name,
    } = held_in_a_folder_that_cannot_be_renamed();

    // Background removal cannot free the name at once: it deletes in place
    // while holding the lock, and answers with what happened.
    let report = m.remove_in_background(&name).unwrap();
    assert!(!report.pending_deletion && !report.removed, "{report:?}");
    assert_eq!(report.attempts, 3);
    assert!(
        report.error.as_deref().unwrap().contains("README.md"),
        "{report:?}"
    );
    let remaining: Vec<std::path::PathBuf> = report.remaining.iter().map(Into::into).collect();
    let ws = Path::new(&name);
    assert_eq!(
        remaining,
        [
            ws.join("repo").join("README.md"),
            ws.join("repo"),
            ws.to_path_buf()
        ]
    );
    // Everything else is gone; a note in .trash/ remembers the rest.
    assert!(!base.path().join(&name).join("workspace.json").exists());
    assert!(!base.path().join(&name).join("repo/src").exists());
    assert_eq!(m.stats().unwrap().pending_deletions, 1);
    assert_eq!(m.health().unwrap().status, HealthStatus::Warning);

    // Still held: cleanup tries again, keeps the note, removes nothing else.
    let report = m.cleanup(Some(1000.0)).unwrap();
    assert_eq!(report.pending_deletions_finished, 0);
    assert!(base.path().join(&name).join("repo/README.md").exists());

    // Released: the next cleanup finishes the job and drops the note.
    ops.hold(false);
    let report = m.cleanup(Some(1000.0)).unwrap();
    assert_eq!(report.pending_deletions_finished, 1, "{report:?}");
    assert!(report.bytes_freed > 0);
    assert!(!base.path().join(&name).exists());
    assert_eq!(m.stats().unwrap().pending_deletions, 0);
    assert_eq!(m.health().unwrap().status, HealthStatus::Healthy);
}

#[test]
fn an_in_place_leftover_prepared_again_is_healed_not_deleted() {
    let Held {
        up,
        base: _base,
        ops,
        m,
        name,
    } = held_in_a_folder_that_cannot_be_renamed();
    assert!(!m.remove(&name).unwrap().removed);
    ops.hold(false);

    // A prepare replaces the leftovers with a fresh clone...
    let again = m
        .prepare(&PrepareRequest::new("acme/held", up.url()).branch("main"))
        .unwrap();
    assert!(!again.reused);
    assert!(again.path.join("src/lib.rs").is_file());
    // ...and the cleanup that follows forgets the note, not the workspace.
    let report = m.cleanup(Some(1000.0)).unwrap();
    assert_eq!(report.pending_deletions_finished, 1);
    assert!(again.path.join("src/lib.rs").is_file());
    assert_eq!(m.stats().unwrap().pending_deletions, 0);
}

#[test]
fn a_clone_that_cannot_replace_a_held_tree_fails_clearly_and_the_next_prepare_heals() {
    let Held {
        up,
        base,
        ops,
        m,
        name,
    } = held_in_a_folder_that_cannot_be_renamed();
    // Break the clone so the policy must clone afresh and replace repo/.
    let repo = base.path().join(&name).join("repo");
    std::fs::remove_file(repo.join(".git/HEAD")).unwrap();
    let request = PrepareRequest::new("acme/held", up.url()).branch("main");
    let message = m.prepare(&request).unwrap_err().to_string();
    assert!(
        message.contains("cannot replace") && message.contains("README.md"),
        "names what failed: {message}"
    );
    assert!(
        message.contains("prepare again"),
        "says what to do: {message}"
    );

    // (The injector holds every README.md, the new clone's too, so its
    // staging folder could not go either; the next prepare clears it.)
    ops.hold(false);
    let healed = m.prepare(&request).unwrap();
    assert!(!healed.reused);
    assert_eq!(healed.head, up.head_of("main"));
    assert!(healed.path.join("src/lib.rs").is_file());
    let staging = std::fs::read_dir(base.path().join(".staging")).unwrap();
    assert_eq!(staging.count(), 0, "no staging leftovers");
}
