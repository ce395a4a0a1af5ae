//! Locks and leases: across processes (a second registry stands in for
//! another process), dead owners, and hostile files in `.leases`.

use super::*;

const WAIT: Duration = Duration::from_secs(5);

fn registry() -> (tempfile::TempDir, Layout) {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path()).unwrap();
    layout.ensure().unwrap();
    (dir, layout)
}

#[test]
fn a_held_or_leased_workspace_is_busy() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout);
    let name = WorkspaceName::parse("a_1").unwrap();
    assert!(!locks.is_busy(&name));
    let guard = locks.lock(&name, WAIT).unwrap();
    assert!(locks.is_busy(&name));
    assert!(locks.try_lock_idle(&name).unwrap().is_none());
    drop(guard);
    assert!(!locks.is_busy(&name));
    let (id, _) = locks.add_lease(&name, "tester", None);
    assert!(locks.is_busy(&name));
    assert_eq!(
        locks.lease_holder(&name).unwrap().to_string(),
        "leased by tester until it is released"
    );
    assert_eq!(locks.release_lease(id), Some(name.clone()));
    assert!(!locks.is_busy(&name));
    assert_eq!(locks.release_lease(id), None);
    // A timed lease lapses by itself.
    locks.add_lease(&name, "tester", Some(Duration::from_millis(30)));
    assert!(locks.is_busy(&name));
    assert!(locks.lease_holder(&name).unwrap().until.is_some());
    std::thread::sleep(Duration::from_millis(50));
    assert!(!locks.is_busy(&name));
    assert!(locks.lease_holder(&name).is_none());
}

#[test]
fn lease_ids_are_not_guessable_from_each_other() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout);
    let name = WorkspaceName::parse("a_1").unwrap();
    let ids: Vec<u64> = (0..32)
        .map(|_| locks.add_lease(&name, "t", None).0)
        .collect();
    let sequential = ids.windows(2).filter(|w| w[1] == w[0] + 1).count();
    assert_eq!(sequential, 0, "{ids:?}");
    assert!(ids.iter().any(|id| *id > 1 << 40), "{ids:?}");
    assert!(ids.iter().all(|id| *id < 1 << 53));
}

/// Another process's lock (a second registry opens the file afresh,
/// as a process does) makes a bounded wait end busy, not hang.
#[test]
fn waiting_for_a_lock_held_elsewhere_ends_busy() {
    let (_dir, layout) = registry();
    let here = WorkspaceLocks::new(layout.clone());
    let elsewhere = WorkspaceLocks::new(layout);
    let name = WorkspaceName::parse("a_1").unwrap();
    let _held = elsewhere.lock(&name, WAIT).unwrap();
    let started = Instant::now();
    let err = here.lock(&name, Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Busy, "{err}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A lock file replaced between a locker's open and its lock: the lock
/// on the orphaned file is not kept (it would be held beside whoever
/// locks the new file).
#[cfg(unix)]
#[test]
fn a_lock_on_a_replaced_file_is_not_kept() {
    let (_dir, layout) = registry();
    let name = WorkspaceName::parse("a_1").unwrap();
    let path = layout.locks_dir().join(format!("{name}.lock"));
    let locks = WorkspaceLocks::new(layout);
    let opened = locks.open_lock_file(&name).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"").unwrap();
    assert!(matches!(
        lock_if_current(opened, &path).unwrap(),
        Attempt::Stale
    ));
    // The registry itself ends on the file now at the path.
    let guard = locks.try_lock_idle(&name).unwrap().unwrap();
    assert!(same_file(&guard.file, &path));
}

/// A lease file written as another process would (`owner`: its token).
fn write_lease(layout: &Layout, id: u64, pid: u32, owner: Option<&str>) -> PathBuf {
    let entry = LeaseEntry {
        name: WorkspaceName::parse("a_1").unwrap(),
        holder: format!("pid {pid}"),
        expires_at: None,
        pid,
        created: chrono::Utc::now(),
        owner: owner.map(str::to_string),
    };
    std::fs::create_dir_all(layout.leases_dir()).unwrap();
    let path = layout.leases_dir().join(format!("{id}.json"));
    std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
    path
}

/// An owner file locked as another process would hold it.
fn hold_owner(layout: &Layout, token: &str) -> (PathBuf, File) {
    std::fs::create_dir_all(layout.lease_owners_dir()).unwrap();
    let path = owner_path(&layout.lease_owners_dir(), token);
    let file = File::create(&path).unwrap();
    file.try_lock().unwrap();
    (path, file)
}

/// Run `f` in a thread; panics if it has not answered within `WAIT`.
#[cfg(unix)]
fn within_wait<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(WAIT).expect("the call hung")
}

#[test]
fn an_open_ended_lease_lives_while_its_owner_lock_is_held_whatever_its_pid() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout.clone());
    let name = WorkspaceName::parse("a_1").unwrap();
    // PID 1 (a container's init, alive here too) and a PID that exists
    // in no namespace here: only the owner lock decides.
    for (pid, token) in [(1, "00000000000000a1"), (u32::MAX - 1, "00000000000000a2")] {
        let lease = write_lease(&layout, 7, pid, Some(token));
        let (owner, held) = hold_owner(&layout, token);
        assert!(locks.is_leased(&name), "pid {pid}");
        assert_eq!(
            locks.lease_holder(&name).unwrap().holder,
            format!("pid {pid}")
        );
        assert!(lease.exists() && owner.exists());
        drop(held);
        assert!(!locks.is_leased(&name), "pid {pid}");
        assert!(!lease.exists(), "pid {pid}");
        assert!(!owner.exists(), "pid {pid}");
    }
}

#[test]
fn an_open_ended_lease_names_a_locked_owner_and_outlives_its_registry() {
    let (_dir, layout) = registry();
    let name = WorkspaceName::parse("a_1").unwrap();
    let taker = WorkspaceLocks::new(layout.clone());
    let (id, _) = taker.add_lease(&name, "tester", None);
    let (timed, _) = taker.add_lease(&name, "tester", Some(Duration::from_secs(600)));
    let read = |id: u64| -> LeaseEntry {
        serde_json::from_slice(&std::fs::read(taker.lease_file(id)).unwrap()).unwrap()
    };
    assert!(read(timed).owner.is_none());
    let token = read(id).owner.expect("an open-ended lease names its owner");
    assert!(valid_token(&token), "{token}");
    let owner = owner_path(&layout.lease_owners_dir(), &token);
    // Locked: another handle cannot take it.
    let probe = File::open(&owner).unwrap();
    assert!(matches!(probe.try_lock(), Err(TryLockError::WouldBlock)));
    drop(probe);
    // A second registry of the base shares the owner.
    let other = WorkspaceLocks::new(layout.clone());
    let (id2, _) = other.add_lease(&name, "other", None);
    let read2: LeaseEntry =
        serde_json::from_slice(&std::fs::read(other.lease_file(id2)).unwrap()).unwrap();
    assert_eq!(read2.owner.as_deref(), Some(token.as_str()));
    assert_eq!(other.release_lease(id2), Some(name.clone()));
    drop(other);
    // Still held by `taker`.
    let watcher = WorkspaceLocks::for_mirrors(layout.clone());
    assert!(owner.exists());
    assert!(watcher.is_leased(&name));
    assert_eq!(watcher.release_lease(timed), Some(name.clone()));
    // Review finding 8: the registry that took the lease is dropped (a
    // manager built per request), the process goes on: the lease lives
    // until it is released.
    drop(taker);
    assert!(owner.exists());
    assert!(watcher.is_leased(&name));
    assert_eq!(watcher.release_lease(id), Some(name.clone()));
    assert!(!owner.exists());
    assert!(!watcher.is_leased(&name));
    assert!(!layout.leases_dir().join(format!("{id}.json")).exists());
}

#[test]
fn dead_owner_files_are_swept_and_live_ones_kept() {
    let (_dir, layout) = registry();
    let dir = layout.lease_owners_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let dead = owner_path(&dir, "aaaaaaaaaaaaaaaa");
    std::fs::write(&dead, b"").unwrap();
    let (live, _held) = hold_owner(&layout, "bbbbbbbbbbbbbbbb");
    let other = dir.join("notes.txt");
    std::fs::write(&other, b"").unwrap();
    let locks = WorkspaceLocks::new(layout.clone());
    let name = WorkspaceName::parse("a_1").unwrap();
    let (id, _) = locks.add_lease(&name, "tester", None);
    assert!(!dead.exists());
    assert!(live.exists());
    assert!(other.exists());
    let token = locks.own.lock()[&id].owner.clone().unwrap();
    assert!(owner_path(&dir, &token).exists());
    // The sweep left this process's own file alone: its lease lives.
    assert!(locks.is_leased(&name));
}

#[cfg(target_os = "linux")]
#[test]
fn a_lease_without_an_owner_keeps_the_pid_rule() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout.clone());
    let name = WorkspaceName::parse("a_1").unwrap();
    // No process has this PID here (pid_max is at most 2^22).
    let gone = write_lease(&layout, 2, u32::MAX - 1, None);
    assert!(!locks.is_leased(&name));
    assert!(!gone.exists());
    let mine = write_lease(&layout, 3, std::process::id(), None);
    assert!(locks.is_leased(&name));
    assert!(mine.exists());
}

#[test]
fn an_invalid_owner_token_is_ignored() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout.clone());
    let name = WorkspaceName::parse("a_1").unwrap();
    std::fs::create_dir_all(layout.lease_owners_dir()).unwrap();
    // A lock-able file where the bad token would point.
    std::fs::write(layout.leases_dir().join("x.lock"), b"").unwrap();
    let bad = [
        "../x",
        "00000000000000A1",
        "00000000000000a",
        "00000000000000a1f",
        "",
    ];
    let files: Vec<PathBuf> = bad
        .iter()
        .enumerate()
        .map(|(i, token)| write_lease(&layout, 10 + i as u64, std::process::id(), Some(token)))
        .collect();
    assert!(!locks.is_leased(&name));
    assert!(!locks.is_leased(&name));
    for file in &files {
        assert!(file.exists(), "{}", file.display());
    }
    assert!(layout.leases_dir().join("x.lock").exists());
    assert_eq!(locks.ignored.lock().len(), bad.len());
}

#[cfg(unix)]
#[test]
fn a_fifo_or_a_link_to_a_device_in_leases_neither_hangs_nor_goes() {
    let (_dir, layout) = registry();
    std::fs::create_dir_all(layout.leases_dir()).unwrap();
    let fifo = layout.leases_dir().join("111.json");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let link = layout.leases_dir().join("222.json");
    std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
    let locks = Arc::new(WorkspaceLocks::new(layout.clone()));
    let name = WorkspaceName::parse("a_1").unwrap();
    let (leased, released) = within_wait({
        let locks = locks.clone();
        let name = name.clone();
        move || {
            let leased = locks.is_leased(&name) || locks.is_leased(&name);
            let released = [locks.release_lease(111), locks.release_lease(222)];
            (leased, released)
        }
    });
    assert!(!leased);
    assert_eq!(released, [None, None]);
    assert_eq!(locks.ignored.lock().len(), 2);
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[cfg(unix)]
#[test]
fn an_owner_fifo_does_not_hang_a_listing() {
    let (_dir, layout) = registry();
    std::fs::create_dir_all(layout.lease_owners_dir()).unwrap();
    let token = "cccccccccccccccc";
    let fifo = owner_path(&layout.lease_owners_dir(), token);
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let lease = write_lease(&layout, 5, 1, Some(token));
    let locks = Arc::new(WorkspaceLocks::new(layout.clone()));
    let name = WorkspaceName::parse("b_1").unwrap();
    let leased = within_wait({
        let locks = locks.clone();
        move || {
            // Creating this process's owner sweeps the folder too.
            let (id, _) = locks.add_lease(&name, "tester", None);
            let leased = locks.is_leased(&WorkspaceName::parse("a_1").unwrap());
            locks.release_lease(id);
            leased
        }
    });
    // It cannot be checked: counted live, on the safe side.
    assert!(leased);
    assert!(lease.exists());
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

#[test]
fn an_oversized_lease_file_is_ignored() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout.clone());
    let name = WorkspaceName::parse("a_1").unwrap();
    let entry = LeaseEntry {
        name: name.clone(),
        holder: "x".repeat(100 * 1024),
        expires_at: Some(chrono::Utc::now() + chrono::Duration::hours(1)),
        pid: std::process::id(),
        created: chrono::Utc::now(),
        owner: None,
    };
    std::fs::create_dir_all(layout.leases_dir()).unwrap();
    let path = locks.lease_file(9);
    std::fs::write(&path, serde_json::to_vec(&entry).unwrap()).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > LEASE_FILE_MAX);
    assert!(!locks.is_leased(&name));
    assert!(path.exists());
    // Releasing its id removes it, a regular file, unread.
    assert_eq!(locks.release_lease(9), None);
    assert!(!path.exists());
}

/// A child process another thread is starting holds a copy of the lock's
/// descriptor until it runs its program: a released lock is free at once
/// all the same (the copy stands in for that child).
#[test]
fn a_released_lock_is_free_while_a_copy_of_its_descriptor_lives() {
    let (_dir, layout) = registry();
    let locks = WorkspaceLocks::new(layout.clone());
    let other = WorkspaceLocks::new(layout);
    let name = WorkspaceName::parse("a_1").unwrap();
    let guard = locks.try_lock_idle(&name).unwrap().unwrap();
    let copy = guard.file.try_clone().unwrap();
    drop(guard);
    assert!(!other.is_locked(&name));
    assert!(other.try_lock_idle(&name).unwrap().is_some());
    drop(copy);
}
