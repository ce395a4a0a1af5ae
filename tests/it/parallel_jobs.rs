//! Issue 23, item 6: a second job on a leased workspace gets a copy of its
//! own at once where the file system shares blocks, tested on a real XFS
//! file system (Debian's xfsprogs, a file mounted through a loop device);
//! elsewhere it waits as before.

use crate::support::builder;
use crate::support::forge::git;
use fixsec_workspace::{ErrorKind, PrepareRequest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// An XFS file system with reflinks, made in a file and mounted through a
/// loop device; unmounted and removed when dropped.
struct Xfs {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl Xfs {
    /// None, with the reason printed, where loop devices are missing (a
    /// container without them); a missing `mkfs.xfs` is a failure.
    fn mount() -> Option<Xfs> {
        if !Path::new("/dev/loop-control").exists() {
            eprintln!(
                "SKIPPED: no loop devices here (/dev/loop-control), so no XFS to test reflinks on"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("xfs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let run = |program: &str, args: &[&str]| {
            let out = Command::new(program)
                .args(args)
                .output()
                .unwrap_or_else(|e| {
                    panic!("{program}: {e}; install Debian's xfsprogs (scripts/setup --test does)")
                });
            assert!(out.status.success(), "{program} {args:?}: {out:?}");
        };
        run("truncate", &["-s", "512M", image.to_str().unwrap()]);
        run(
            "mkfs.xfs",
            &["-q", "-m", "reflink=1", image.to_str().unwrap()],
        );
        run(
            "mount",
            &[
                "-o",
                "loop",
                image.to_str().unwrap(),
                mount.to_str().unwrap(),
            ],
        );
        Some(Xfs { _dir: dir, mount })
    }

    /// Bytes in use on the file system.
    fn used(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&self.mount)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// A repository of 160 files of 64 KB (10 MB), committed on `main`.
fn repository(at: &Path) -> PathBuf {
    let repo = at.join("upstream");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for d in 0..4 {
        std::fs::create_dir_all(repo.join(format!("pkg{d}"))).unwrap();
        for f in 0..40 {
            let line = format!("pkg {d} file {f} ");
            let body = line.repeat(64 * 1024 / line.len());
            std::fs::write(repo.join(format!("pkg{d}/f{f}.txt")), body).unwrap();
        }
    }
    std::fs::write(repo.join(".gitignore"), "*.log\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "tree"]);
    repo
}

fn leased(url: &str, holder: &str) -> PrepareRequest {
    let mut r = PrepareRequest::new("acme/big", url);
    r.lease_seconds = Some(600);
    r.holder = Some(holder.into());
    r
}

#[test]
fn a_second_job_gets_its_own_copy_sharing_blocks_on_xfs() {
    let Some(xfs) = Xfs::mount() else { return };
    let upstream = repository(&xfs.mount);
    let url = upstream.display().to_string();
    let m = builder(&xfs.mount.join("base"))
        .configure(|c| c.lease_wait = std::time::Duration::ZERO)
        .build()
        .unwrap();
    let first = m.prepare(&leased(&url, "job-a")).unwrap();
    // Job A at work: a changed tracked file, a new file, a log.
    std::fs::write(first.path.join("pkg1/f3.txt"), "A's change\n").unwrap();
    std::fs::write(first.path.join("pkg2/new.rs"), "A's new file\n").unwrap();
    std::fs::write(first.path.join("build.log"), "A's log\n").unwrap();
    // ...and a changed file A hid from git (the copy resets it all the same).
    git(
        &first.path,
        &["update-index", "--skip-worktree", "pkg0/f1.txt"],
    );
    std::fs::write(first.path.join("pkg0/f1.txt"), "A's hidden change\n").unwrap();

    let before = xfs.used();
    let mut request = leased(&url, "job-b");
    request.parallel = true;
    let second = m.prepare(&request).unwrap();
    let extra = xfs.used().saturating_sub(before);
    assert_eq!(second.name, format!("{}--p1", first.name));
    assert_ne!(second.path, first.path);
    assert_eq!(second.head, first.head);
    let lease = second.lease.as_ref().expect("the copy is leased to job B");
    // A clean state of the prepared commit, not A's work.
    assert_eq!(
        std::fs::read_to_string(second.path.join("pkg1/f3.txt")).unwrap(),
        std::fs::read_to_string(upstream.join("pkg1/f3.txt")).unwrap()
    );
    assert!(!second.path.join("pkg2/new.rs").exists());
    assert_eq!(
        std::fs::read_to_string(second.path.join("pkg0/f1.txt")).unwrap(),
        std::fs::read_to_string(upstream.join("pkg0/f1.txt")).unwrap()
    );
    assert!(second.path.join("pkg0/f2.txt").exists());
    assert!(!second.path.join("build.log").exists());
    assert_eq!(git(&second.path, &["status", "--porcelain"]), "");
    // Sharing blocks: far less than the 10 MB checkout and its history.
    let size = first
        .path
        .parent()
        .map(fixsec_workspace::testing::dir_size_of)
        .unwrap();
    assert!(
        (extra as f64) < 0.05 * size as f64,
        "the copy took {extra} bytes of a {size}-byte workspace"
    );
    // A's workspace is untouched; both are listed as in use.
    assert_eq!(
        std::fs::read_to_string(first.path.join("pkg1/f3.txt")).unwrap(),
        "A's change\n"
    );
    let list = m.list().unwrap();
    assert!(list.iter().all(|w| w.in_use), "{list:?}");
    assert_eq!(list.len(), 2);

    // Released, the copy goes with its lease; A's stays.
    m.release_lease(lease.id).unwrap();
    m.wait_for_background_deletions();
    assert!(!second.path.exists(), "the copy outlived its lease");
    assert!(first.path.join("pkg2/new.rs").exists());
    assert_eq!(m.list().unwrap().len(), 1);
}

/// Without block sharing (ext4, tmpfs) a `parallel` prepare of a leased
/// workspace waits as before; and `parallel` without a lease is refused.
#[test]
fn without_reflinks_a_parallel_prepare_waits_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    std::fs::write(&probe, "x").unwrap();
    let shares = fixsec_workspace::testing::reflink_file(&probe, &dir.path().join("copy")).is_ok();
    if shares {
        eprintln!(
            "SKIPPED: the temporary directory's file system shares blocks; nothing to fall back from"
        );
        return;
    }
    let upstream = repository(dir.path());
    let url = upstream.display().to_string();
    let m = builder(&dir.path().join("base"))
        .configure(|c| c.lease_wait = std::time::Duration::ZERO)
        .build()
        .unwrap();
    m.prepare(&leased(&url, "job-a")).unwrap();
    let mut request = leased(&url, "job-b");
    request.parallel = true;
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
    assert_eq!(m.list().unwrap().len(), 1);
    let mut unleased = PrepareRequest::new("acme/big", &url);
    unleased.parallel = true;
    let err = m.prepare(&unleased).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("lease_seconds"), "{err}");
}

/// Two tenants on one forge: A (`alice`) holds a lease on her private
/// repository; B (`bob`, no access to it) asks for the same repository
/// with `parallel`. B must not get a copy of A's checkout (it would hand
/// him A's code without the forge ever checking his credential): he
/// waits, as any caller does for a leased workspace. A's own second job
/// gets its copy, so the file system here does share blocks.
#[test]
fn parallel_never_copies_another_tenants_checkout() {
    use crate::support::Upstream;
    use crate::support::smart_http::SmartHttp;
    let Some(xfs) = Xfs::mount() else { return };
    let server = SmartHttp::start("forge-admin", "admin-only-3c");
    server.add_account("alice", "alice-token-51f0", &["acme/secret"]);
    server.add_account("bob", "bob-token-0a7e", &["bob/app"]);
    let secret = Upstream::new();
    secret.commit("secret.py", "tenant A's private code\n", "private code");
    server.publish("acme/secret", &secret);
    let m = builder(&xfs.mount.join("base"))
        .allow_private_networks(true)
        .configure(|c| c.lease_wait = std::time::Duration::ZERO)
        .build()
        .unwrap();
    let as_alice = server.url_as("alice", "alice-token-51f0", "acme/secret");
    let as_bob = server.url_as("bob", "bob-token-0a7e", "acme/secret");
    let mut a = leased(&as_alice, "alice-job-1");
    a.repo_full_name = "acme/secret".into();
    let first = m.prepare(&a).unwrap();

    let mut b = leased(&as_bob, "bob-job");
    b.repo_full_name = "acme/secret".into();
    b.parallel = true;
    let err = m.prepare(&b).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InUse, "{err}");
    let names: Vec<_> = m.list().unwrap().into_iter().map(|w| w.name).collect();
    assert_eq!(
        names,
        std::slice::from_ref(&first.name),
        "B was given a workspace"
    );
    let copies = crate::support::files_containing(&xfs.mount, "tenant A's private code");
    assert_eq!(copies.len(), 1, "A's code was copied for B: {copies:?}");

    // A's second job: the same credential, so a copy.
    let mut a2 = leased(&as_alice, "alice-job-2");
    a2.repo_full_name = "acme/secret".into();
    a2.parallel = true;
    let second = m.prepare(&a2).unwrap();
    assert_eq!(second.name, format!("{}--p1", first.name));
    assert_eq!(
        std::fs::read_to_string(second.path.join("secret.py")).unwrap(),
        "tenant A's private code\n"
    );
}
