//! The shared object store (issue 15): a bare mirror per repository
//! network that workspaces borrow objects from, against `git
//! http-backend` behind Basic auth on loopback, counting the bytes the
//! server sends.

use crate::support::forge::git;
use crate::support::smart_http::SmartHttp;
use crate::support::{Upstream, builder, mirror_folders};
use fixsec_workspace::MirrorSharing;
use fixsec_workspace::{PrepareRequest, WorkspaceManager};
use std::path::Path;

/// An upstream whose history (about 1.5 MB packed: 40 revisions of random
/// text in one file) is far larger than its checkout, as old repositories' are.
fn history_heavy() -> Upstream {
    let up = Upstream::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..40 {
        let blob = random_letters(&mut seed, 60_000);
        up.commit("data.txt", &blob, &format!("revision {i}"));
    }
    up
}

/// `n` random letters (xorshift from `seed`): text that compresses
/// poorly, as an old repository's big blobs do.
fn random_letters(seed: &mut u64, n: usize) -> String {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            char::from(b'a' + (*seed % 26) as u8)
        })
        .collect()
}

/// Mirrors shared per network (forks borrow the root's), as a
/// single-tenant deployment sets them; the default, one per URL, is
/// `tenants.rs`'s.
fn manager(base: &Path) -> WorkspaceManager {
    builder(base)
        .configure(|c| c.mirror_sharing = MirrorSharing::Network)
        .build()
        .unwrap()
}

/// `up` published as `acme/app` on a Basic-auth smart-HTTP server, and a
/// manager on a fresh base directory.
struct Served {
    server: SmartHttp,
    up: Upstream,
    base: tempfile::TempDir,
    m: WorkspaceManager,
    /// `acme/app`'s URL with the credential.
    url: String,
}

fn served(up: Upstream) -> Served {
    let server = SmartHttp::start("fixsec", "s3cret");
    server.publish("acme/app", &up);
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url = server.url_with_credential("acme/app");
    Served {
        server,
        up,
        base,
        m,
        url,
    }
}

/// Bytes the server sends while `f` runs.
fn sent_during<T>(server: &SmartHttp, f: impl FnOnce() -> T) -> (T, u64) {
    let before = server.bytes_sent();
    let out = f();
    (out, server.bytes_sent() - before)
}

fn alternates(repo: &Path) -> String {
    std::fs::read_to_string(repo.join(".git/objects/info/alternates")).unwrap_or_default()
}

/// Done-when of the issue: after a cleanup, a re-prepare transfers far
/// fewer bytes than the first, and the checkout is whole.
#[test]
fn after_cleanup_a_re_prepare_transfers_far_fewer_bytes() {
    let Served {
        server,
        up,
        base,
        m,
        url,
    } = served(history_heavy());
    let request = PrepareRequest::new("acme/app", url);

    let (first, first_bytes) = sent_during(&server, || m.prepare(&request).unwrap());
    assert!(!first.reused);
    assert!(
        alternates(&first.path).contains(".mirrors"),
        "the clone borrows from the mirror: {:?}",
        alternates(&first.path)
    );
    let stats = m.stats().unwrap();
    assert_eq!(stats.mirrors.count, 1);
    assert_eq!(stats.mirrors.unreferenced, 0);
    assert!(
        stats.mirrors.size_bytes > 1_000_000,
        "the mirror holds the history: {:?}",
        stats.mirrors
    );
    assert!(
        stats.total_size_bytes < stats.mirrors.size_bytes / 4,
        "the workspace does not hold a second copy: {} vs {}",
        stats.total_size_bytes,
        stats.mirrors.size_bytes
    );

    // Upstream moves on while the workspace is gone.
    let new_head = up.commit("NEWS.md", "one more\n", "news");
    std::fs::remove_dir_all(server.bare("acme/app")).unwrap();
    server.publish("acme/app", &up);
    let report = m.cleanup(Some(0.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 1);
    assert!(report.mirrors_removed.is_empty(), "just unreferenced: kept");
    assert!(!first.path.exists());

    let (again, again_bytes) = sent_during(&server, || m.prepare(&request).unwrap());
    assert!(!again.reused, "cloned anew");
    assert_eq!(again.head, new_head);
    assert!(
        again_bytes * 20 < first_bytes,
        "re-prepare sent {again_bytes} bytes, the first {first_bytes}"
    );
    // Whole: every object reachable, nothing left over, the news is there.
    git(
        &again.path,
        &["fsck", "--connectivity-only", "--no-progress"],
    );
    assert_eq!(git(&again.path, &["status", "--porcelain"]), "");
    assert_eq!(
        git(&again.path, &["rev-list", "--count", "HEAD"]),
        "44",
        "3 + 40 + 1 commits on main"
    );
    assert_eq!(
        std::fs::read_to_string(again.path.join("NEWS.md")).unwrap(),
        "one more\n"
    );
    // The credential is nowhere on disk, the mirror included.
    assert!(crate::support::files_containing(base.path(), "s3cret").is_empty());
}

/// A fork names its network's root: it borrows the root's mirror and
/// fetches only its own commits.
#[test]
fn a_fork_fetches_only_what_its_network_lacks() {
    let Served {
        server,
        up,
        base: _base,
        m,
        url,
    } = served(history_heavy());
    let fork_head = up.commit("FORK.md", "fork work\n", "fork commit");
    server.publish("someone/app", &up);

    let (root, root_bytes) = sent_during(&server, || {
        m.prepare(&PrepareRequest::new("acme/app", url)).unwrap()
    });
    let mut fork_request =
        PrepareRequest::new("someone/app", server.url_with_credential("someone/app"));
    fork_request.network = Some("acme/app".into());
    let (fork, fork_bytes) = sent_during(&server, || m.prepare(&fork_request).unwrap());
    assert_eq!(fork.head, fork_head);
    assert_ne!(fork.name, root.name);
    assert!(
        fork_bytes * 20 < root_bytes,
        "the fork sent {fork_bytes} bytes, its root {root_bytes}"
    );
    assert_eq!(alternates(&fork.path), alternates(&root.path), "one mirror");
    assert_eq!(m.stats().unwrap().mirrors.count, 1);
    git(
        &fork.path,
        &["fsck", "--connectivity-only", "--no-progress"],
    );
    // Each keeps its own origin and branches.
    assert_eq!(
        git(&fork.path, &["remote", "get-url", "origin"]),
        server.url("someone/app")
    );
    assert_eq!(git(&root.path, &["rev-parse", "HEAD"]), root.head);
}

/// Two prepares of one network at once update its mirror once: the
/// second waits for the first's fetch and uses it.
#[test]
fn concurrent_prepares_update_the_mirror_once() {
    let Served {
        server,
        up: _up,
        base: _base,
        m,
        url,
    } = served(history_heavy());
    let barrier = std::sync::Barrier::new(2);
    let heads: Vec<String> = std::thread::scope(|s| {
        let jobs: Vec<_> = ["acme/app", "acme/app-scan"]
            .into_iter()
            .map(|name| {
                let (m, url, barrier) = (&m, url.clone(), &barrier);
                s.spawn(move || {
                    let mut r = PrepareRequest::new(name, url);
                    r.network = Some("acme/app".into());
                    barrier.wait();
                    m.prepare(&r).unwrap().head
                })
            })
            .collect();
        jobs.into_iter().map(|j| j.join().unwrap()).collect()
    });
    assert_eq!(heads[0], heads[1]);
    let packs = server
        .seen()
        .iter()
        .filter(|r| r.line.starts_with("POST") && r.line.contains("git-upload-pack"))
        .count();
    assert_eq!(packs, 1, "one pack for both: {:#?}", server.seen());
    let metrics = m.encode_metrics().unwrap();
    for line in [
        "fixsec_workspace_mirror_fetches_total{outcome=\"fetched\"} 1",
        "fixsec_workspace_mirror_fetches_total{outcome=\"shared\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

/// A mirror is kept while any workspace borrows from it, and its objects
/// are never pruned under one (a force push upstream included); it goes
/// once no workspace has borrowed from it for the cleanup age.
#[test]
fn a_mirror_lives_while_borrowed_and_goes_once_unreferenced_for_the_cleanup_age() {
    let Served {
        server,
        up,
        base,
        m,
        url,
    } = served(Upstream::new());
    let old = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();

    // A force push; a second workspace of the network is cloned after it.
    up.rewrite_history();
    std::fs::remove_dir_all(server.bare("acme/app")).unwrap();
    server.publish("acme/app", &up);
    let mut second = PrepareRequest::new("acme/app-scan", &url);
    second.network = Some("acme/app".into());
    let scan = m.prepare(&second).unwrap();
    assert_ne!(scan.head, old.head);
    // The first workspace's old history is still whole.
    git(&old.path, &["fsck", "--connectivity-only", "--no-progress"]);
    assert_eq!(git(&old.path, &["rev-parse", "HEAD"]), old.head);

    let mirror_count = || mirror_folders(base.path()).len();
    // The scan's workspace is leased: the cleanup takes only the other.
    let lease = m.lease(&scan.name).unwrap();
    let report = m.cleanup(Some(0.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 1);
    assert!(report.mirrors_removed.is_empty(), "still borrowed");
    assert_eq!(m.stats().unwrap().mirrors.unreferenced, 0);
    drop(lease);

    // Unreferenced from now: kept by a cleanup at 24 hours, and the first
    // cleanup at age 0 only notes it.
    let report = m.cleanup(Some(24.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 0);
    let report = m.cleanup(Some(0.0)).unwrap();
    assert_eq!(report.cleaned_workspaces, 1);
    assert!(report.mirrors_removed.is_empty());
    assert_eq!(m.stats().unwrap().mirrors.unreferenced, 1);
    let report = m.cleanup(Some(24.0)).unwrap();
    assert!(
        report.mirrors_removed.is_empty(),
        "not unreferenced 24 h yet"
    );
    assert_eq!(mirror_count(), 1);

    let report = m.cleanup(Some(0.0)).unwrap();
    assert_eq!(report.mirrors_removed.len(), 1, "{report:?}");
    assert_eq!(mirror_count(), 0);
    let stats = m.stats().unwrap();
    assert_eq!((stats.mirrors.count, stats.mirrors.size_bytes), (0, 0));
}

/// Issue 21, item 5: a process that spells the base path another way (a
/// symbolic link here; another mount of the same file system alike) still
/// sees a leased workspace's borrowing, so its cleanups never remove the
/// mirror under it.
#[test]
fn a_mirror_borrowed_through_another_spelling_of_the_base_is_kept() {
    let Served {
        server: _server,
        up: _up,
        base,
        m,
        url,
    } = served(Upstream::new());
    let leased = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    let _lease = m.lease(&leased.name).unwrap();
    let link_dir = tempfile::tempdir().unwrap();
    let link = link_dir.path().join("base");
    std::os::unix::fs::symlink(base.path(), &link).unwrap();
    let other = manager(&link);
    for _ in 0..2 {
        let report = other.cleanup(Some(0.0)).unwrap();
        assert!(report.mirrors_removed.is_empty(), "{report:?}");
    }
    assert_eq!(mirror_folders(base.path()).len(), 1);
    assert_eq!(other.stats().unwrap().mirrors.unreferenced, 0);
    git(&leased.path, &["fsck", "--no-progress"]);
}

/// A broken mirror does not fail a prepare: the clone is made directly.
/// Shallow clones and local paths do not use mirrors at all.
#[test]
fn a_broken_mirror_falls_back_to_a_direct_clone_and_shallow_clones_skip_it() {
    let Served {
        server: _server,
        up,
        base: _base,
        m,
        url,
    } = served(Upstream::new());

    let shallow = m
        .prepare(&PrepareRequest::new("acme/shallow", &url).depth(1))
        .unwrap();
    let local = m
        .prepare(&PrepareRequest::new("acme/local", up.url()))
        .unwrap();
    assert_eq!(alternates(&shallow.path), "");
    assert!(!alternates(&local.path).contains(".mirrors"));
    assert_eq!(m.stats().unwrap().mirrors.count, 0);

    // Something not a repository where the mirror would be.
    let first = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    let mirror_dir = alternates(&first.path)
        .trim()
        .trim_end_matches("/objects")
        .to_string();
    m.remove(&first.name).unwrap();
    std::fs::remove_dir_all(&mirror_dir).unwrap();
    std::fs::create_dir_all(&mirror_dir).unwrap();
    std::fs::write(Path::new(&mirror_dir).join("HEAD"), "garbage").unwrap();
    let healed = m.prepare(&PrepareRequest::new("acme/app", &url)).unwrap();
    assert_eq!(healed.head, up.head_of("main"));
    assert_eq!(alternates(&healed.path), "", "a direct clone");
    git(
        &healed.path,
        &["fsck", "--connectivity-only", "--no-progress"],
    );

    // A bad network name is the caller's to fix, and nothing is lost.
    let mut bad = PrepareRequest::new("acme/app", &url);
    bad.network = Some(" ".into());
    let err = m.prepare(&bad).unwrap_err();
    assert_eq!(
        err.kind(),
        fixsec_workspace::ErrorKind::InvalidInput,
        "{err}"
    );
    assert!(err.to_string().contains("network"), "{err}");
    assert!(healed.path.join("README.md").exists());
}

/// Cleanups at age 0 in a loop while prepares of one network run, each
/// under a lease as a caller works: no prepare fails, and every checkout
/// is whole while leased (every object readable through the mirror), so
/// no mirror was removed from under a clone or a workspace borrowing it.
#[test]
fn cleanups_racing_prepares_never_remove_a_borrowed_mirror() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let Served {
        server: _server,
        up: _up,
        base,
        m,
        url,
    } = served(Upstream::new());
    let done = AtomicBool::new(false);
    let barrier = std::sync::Barrier::new(2);
    let (results, cleaner) = std::thread::scope(|s| {
        let cleaner = s.spawn(|| {
            let mut removed = 0;
            while !done.load(Ordering::SeqCst) {
                let report = m.cleanup(Some(0.0)).map_err(|e| e.to_string())?;
                if !report.failed.is_empty() {
                    return Err(format!("{report:?}"));
                }
                removed += report.mirrors_removed.len();
            }
            Ok::<usize, String>(removed)
        });
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (m, url, barrier, base) = (&m, &url, &barrier, &base);
                s.spawn(move || -> Result<(), String> {
                    for _round in 0..4 {
                        // Between rounds, once both workspaces are released,
                        // the cleanups remove the unborrowed mirror: each
                        // round's prepares race the cleanups that do it.
                        barrier.wait();
                        if i == 0 {
                            let deadline =
                                std::time::Instant::now() + std::time::Duration::from_secs(30);
                            while !mirror_folders(base.path()).is_empty() {
                                if std::time::Instant::now() > deadline {
                                    return Err("an unborrowed mirror was never removed".into());
                                }
                                std::thread::sleep(std::time::Duration::from_millis(5));
                            }
                        }
                        barrier.wait();
                        let mut r = PrepareRequest::new(format!("acme/app-{i}"), url.as_str());
                        r.network = Some("acme/app".into());
                        r.lease_seconds = Some(60);
                        let out = m.prepare(&r).map_err(|e| format!("prepare: {e}"))?;
                        let fsck = std::process::Command::new("git")
                            .arg("-C")
                            .arg(&out.path)
                            .args(["fsck", "--connectivity-only", "--no-progress"])
                            .output()
                            .map_err(|e| e.to_string())?;
                        if !fsck.status.success() {
                            return Err(format!("broken while leased: {fsck:?}"));
                        }
                        let lease = out.lease.ok_or("no lease")?;
                        m.release_lease(lease.id).map_err(|e| e.to_string())?;
                    }
                    Ok(())
                })
            })
            .collect();
        let results: Vec<Result<(), String>> = workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("worker panicked".into())))
            .collect();
        done.store(true, Ordering::SeqCst);
        (results, cleaner.join().expect("the cleaner does not panic"))
    });
    for r in results {
        r.unwrap();
    }
    let removed = cleaner.unwrap();
    // The race was real: the mirror went between rounds and came back.
    assert!(removed >= 3, "mirrors removed: {removed}");
}

/// Issue 24, part 3: a cleanup repacks and prunes a mirror. What nothing
/// reaches any more (a big file force-pushed away, its workspace gone)
/// is dropped; what an older workspace still borrows (its commit, also
/// force-pushed away) is kept, so that workspace passes `git fsck`. The
/// mirror gets a commit-graph and a multi-pack-index.
#[test]
fn maintenance_drops_what_nothing_reaches_and_keeps_what_a_workspace_borrows() {
    let Served {
        server,
        up: _up,
        base,
        m: _,
        url,
    } = served(Upstream::new());
    let m = builder(base.path())
        .configure(|c| {
            c.mirror_sharing = MirrorSharing::Network;
            c.mirror_maintenance = std::time::Duration::ZERO;
        })
        .build()
        .unwrap();
    // One network, so one mirror for all three workspaces.
    let request = |repo: &str| {
        let mut r = PrepareRequest::new(repo, &url);
        r.network = Some("acme/app".into());
        r
    };
    let old = m.prepare(&request("acme/old")).unwrap();
    assert!(!alternates(&old.path).is_empty(), "the workspace borrows");
    let bare = server.bare("acme/app");
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    git(
        scratch.path(),
        &["clone", "-q", bare.to_str().unwrap(), "work"],
    );
    let commit = |message: &str| {
        git(&work, &["add", "-A"]);
        git(
            &work,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@x",
                "commit",
                "-qm",
                message,
            ],
        );
    };
    // A 3 MB file of random letters arrives in the mirror with a clone...
    let big = random_letters(&mut 0x2545_f491_4f6c_dd1d_u64, 3_000_000);
    std::fs::write(work.join("big.bin"), &big).unwrap();
    commit("a big file");
    git(&work, &["push", "-q", "origin", "main"]);
    let big_blob = git(&work, &["rev-parse", "HEAD:big.bin"]);
    let tmp = m.prepare(&request("acme/tmp")).unwrap();
    m.remove(&tmp.name).unwrap();
    // ...then history is rewritten: main force-pushed back past the old
    // workspace's commit, develop deleted.
    git(&work, &["reset", "-q", "--hard", "HEAD~2"]);
    std::fs::write(work.join("rewritten.txt"), "new history\n").unwrap();
    commit("rewritten");
    git(&work, &["push", "-q", "--force", "origin", "main"]);
    git(&work, &["push", "-q", "origin", "--delete", "develop"]);
    let new = m.prepare(&request("acme/new")).unwrap();
    let mirror = &mirror_folders(base.path())[0];
    let in_mirror = |oid: &str| {
        std::process::Command::new("git")
            .args(["--git-dir", mirror.to_str().unwrap(), "cat-file", "-e", oid])
            .status()
            .unwrap()
            .success()
    };
    assert!(in_mirror(&big_blob) && in_mirror(&old.head));

    let report = m.cleanup(Some(1000.0)).unwrap();
    let done = &report.mirrors_maintained;
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].error, None);
    assert!(done[0].kept_for_borrowers >= 1, "{done:?}");
    assert!(
        done[0].bytes_after + 1_000_000 < done[0].bytes_before,
        "{done:?}"
    );
    assert!(!in_mirror(&big_blob), "the unreachable file was kept");
    assert!(
        in_mirror(&old.head),
        "the old workspace's commit was dropped"
    );
    for repo in [&old.path, &new.path] {
        git(repo, &["fsck", "--full", "--no-dangling"]);
    }
    assert!(mirror.join("objects/info/commit-graph").exists());
    assert!(mirror.join("objects/pack/multi-pack-index").exists());
    assert_eq!(
        git(mirror, &["for-each-ref", "refs/fixsec-keep"]),
        "",
        "the temporary references stayed"
    );
    // Not again until the interval has passed.
    let m24 = builder(base.path()).build().unwrap();
    assert!(
        m24.cleanup(Some(1000.0))
            .unwrap()
            .mirrors_maintained
            .is_empty()
    );
}
