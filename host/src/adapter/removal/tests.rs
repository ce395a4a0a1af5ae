//! Removal against real trees, with faults from the shared [`FaultInjector`].

use super::*;

fn fast(max_retries: u32) -> RemovalConfig {
    RemovalConfig {
        max_retries,
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ws/a/b")).unwrap();
    std::fs::write(dir.path().join("ws/a/b/locked"), b"1234").unwrap();
    std::fs::write(dir.path().join("ws/a/other"), b"123456").unwrap();
    dir
}

#[test]
fn retries_through_a_file_in_use() {
    let dir = tree();
    let ops = Arc::new(FaultInjector::named("locked").failing(2));
    let out = Remover::new(ops, fast(5)).remove_tree(&dir.path().join("ws"));
    assert!(out.removed, "{out:?}");
    assert_eq!(out.attempts, 3);
    assert_eq!(out.bytes_freed, 10);
    assert!(!dir.path().join("ws").exists());
}

#[test]
fn gives_up_honestly_and_names_what_is_left() {
    let dir = tree();
    let ops = Arc::new(FaultInjector::named("locked").failing(u32::MAX));
    let out = Remover::new(ops, fast(3)).remove_tree(&dir.path().join("ws"));
    assert!(!out.removed);
    assert_eq!(out.attempts, 3);
    assert!(out.error.as_deref().unwrap().contains("locked"), "{out:?}");
    assert!(out.remaining.iter().any(|p| p.ends_with("locked")));
    // Everything else went: only the locked file and its folders remain.
    assert!(!dir.path().join("ws/a/other").exists());
    assert_eq!(out.bytes_freed, 6);
}

#[cfg(unix)]
#[test]
fn removes_links_not_their_targets() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), b"x").unwrap();
    let dir = tree();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("ws/to_dir")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("keep"), dir.path().join("ws/to_file")).unwrap();
    let out = Remover::new(Arc::new(RealFs), fast(1)).remove_tree(&dir.path().join("ws"));
    assert!(out.removed);
    assert!(outside.path().join("keep").exists());
}

#[cfg(unix)]
#[test]
fn a_link_at_the_root_is_removed_not_followed() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir(outside.path().join("precious")).unwrap();
    std::fs::write(outside.path().join("precious/data"), b"keep me").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("looks_like_a_workspace");
    // Both paths: the careful walk (no known size) and the fast one.
    // Removing the link fails once (in use): a walk from it would
    // delete through it in the meantime.
    for known in [None, Some(7)] {
        std::os::unix::fs::symlink(outside.path().join("precious"), &link).unwrap();
        let ops = Arc::new(FaultInjector::named("looks_like_a_workspace").failing(1));
        let out = Remover::new(ops, fast(3)).remove_tree_sized(&link, known);
        assert!(out.removed, "{out:?}");
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "the link itself goes"
        );
        assert_eq!(
            std::fs::read(outside.path().join("precious/data")).unwrap(),
            b"keep me",
            "the link's target is untouched (known size {known:?})"
        );
    }
}

#[cfg(unix)]
#[test]
fn read_only_files_and_folders_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tree();
    let f = dir.path().join("ws/a/other");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
    let d = dir.path().join("ws/a/b");
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = Remover::new(Arc::new(RealFs), fast(2)).remove_tree(&dir.path().join("ws"));
    assert!(out.removed, "{out:?}");
}

#[test]
fn missing_path_counts_as_removed() {
    let dir = tempfile::tempdir().unwrap();
    let out = Remover::new(Arc::new(RealFs), fast(1)).remove_tree(&dir.path().join("nope"));
    assert!(out.removed);
    assert_eq!(out.attempts, 1);
}
