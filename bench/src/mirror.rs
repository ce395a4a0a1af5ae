//! The shared object store: a re-prepare after cleanup, and the clone of a
//! fork, through the network's mirror, against `git clone` from the same
//! loopback `git daemon`.

use crate::git::git_daemon;
use crate::*;

pub(crate) fn mirror(b: &mut Bench, large: &Path) {
    let (src, fork) = fixtures::ensure_history(&b.root);
    let (mut daemon, port) = git_daemon(src.parent().unwrap());
    let url = |repo: &Path| {
        format!(
            "git://127.0.0.1:{port}/{}",
            repo.file_name().unwrap().to_string_lossy()
        )
    };
    let (src_url, fork_url) = (url(&src), url(&fork));
    let (mut git_clone, mut git_fork) = (Vec::new(), Vec::new());
    let (mut first, mut again, mut forked) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b.runs {
        for (times, from) in [(&mut git_clone, &src_url), (&mut git_fork, &fork_url)] {
            let dst = b.fresh(&format!("mirror-git-{i}"));
            times.push(timed(|| {
                sh(
                    &b.scratch,
                    &format!("git clone -q {from} {}", dst.display()),
                )
            }));
        }
        // A fresh base each run: the first prepare builds the mirror.
        // Mirrors shared per network (a single-tenant deployment), so the
        // fork borrows its root's; the default, per URL, gives the
        // re-prepare the same figure and the fork none.
        let m = WorkspaceManager::builder()
            .base_path(b.fresh(&format!("mirror-base-{i}")))
            .allow_local_urls(true)
            .allow_private_networks(true)
            .configure(|c| {
                c.mirror_sharing = fixsec_workspace::MirrorSharing::Network;
            })
            .build()
            .unwrap();
        let root = PrepareRequest::new("bench/history", src_url.as_str());
        first.push(timed(|| {
            m.prepare(&root).unwrap();
        }));
        let report = m.cleanup(Some(0.0)).unwrap();
        assert_eq!(
            report.cleaned_workspaces, 1,
            "the cleanup removed the workspace"
        );
        again.push(timed(|| {
            let outcome = m.prepare(&root).unwrap();
            assert!(!outcome.reused, "cloned anew, through the mirror");
        }));
        let mut fork_request = PrepareRequest::new("someone/history", fork_url.as_str());
        fork_request.network = Some("bench/history".into());
        forked.push(timed(|| {
            m.prepare(&fork_request).unwrap();
        }));
        let stats = m.stats().unwrap();
        if i == 0 {
            b.report(format!(
                "{:<46} mirror {:>7.1} MB  workspaces {:>7.1} MB (2 checkouts)",
                "disk: one mirror, two borrowing workspaces",
                stats.mirrors.size_mb,
                stats.total_size_mb
            ));
        }
    }
    let git_clone = median(git_clone);
    b.compare(
        "first prepare (builds the mirror)",
        median(first),
        "git clone git://",
        git_clone,
        1.3,
    );
    b.compare(
        "re-prepare after cleanup (mirror)",
        median(again),
        "git clone git://",
        git_clone,
        0.1,
    );
    b.compare(
        "prepare of a fork (root's mirror, network sharing)",
        median(forked),
        "git clone fork",
        median(git_fork),
        0.2,
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
    checkout_dominated(b, large);
}

/// The same re-prepare on the main fixture, whose checkout (250 MB, 16,000
/// files) outweighs its history: the mirror saves the transfer and the
/// indexing, not the checkout.
fn checkout_dominated(b: &mut Bench, src: &Path) {
    let (mut daemon, port) = git_daemon(src.parent().unwrap());
    let url = format!("git://127.0.0.1:{port}/src");
    let (mut git_clone, mut again) = (Vec::new(), Vec::new());
    for i in 0..3 {
        let dst = b.fresh(&format!("mirror-large-git-{i}"));
        git_clone.push(timed(|| {
            sh(&b.scratch, &format!("git clone -q {url} {}", dst.display()))
        }));
        let m = b.manager(&b.fresh(&format!("mirror-large-{i}")));
        let request = PrepareRequest::new("bench/large", url.as_str());
        m.prepare(&request).unwrap();
        m.cleanup(Some(0.0)).unwrap();
        again.push(timed(|| {
            m.prepare(&request).unwrap();
        }));
    }
    let (again, git_clone) = (median(again), median(git_clone));
    b.report(format!(
        "{:<46} ours {:>10}  git clone git:// {:>10}  ratio {:>6.2}  (measured)",
        "re-prepare after cleanup, 250 MB checkout",
        ms(again),
        ms(git_clone),
        again.as_secs_f64() / git_clone.as_secs_f64()
    ));
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Mirror maintenance (issue 24, part 3): the history fixture's mirror
/// after upstream rewrote its last 600 commits (a force push), once the
/// workspace of the old history is gone: its size before and after the
/// maintenance, against a fresh `git clone --bare` of the rewritten
/// upstream (the least a mirror can hold), and its time against `git gc
/// --prune=now` on a copy of the same mirror.
pub(crate) fn maintenance(b: &mut Bench) {
    let upstream = crate::git::served_history(b, "maint");
    let (work, url) = (&upstream.work, &upstream.url);
    let base = b.fresh("maint-base");
    let m = WorkspaceManager::builder()
        .base_path(&base)
        .allow_local_urls(true)
        .allow_private_networks(true)
        .configure(|c| {
            c.mirror_sharing = fixsec_workspace::MirrorSharing::Network;
            c.mirror_maintenance = Duration::ZERO;
        })
        .build()
        .unwrap();
    let request = |repo: &str| {
        let mut r = PrepareRequest::new(repo, url.as_str());
        r.network = Some("bench/history".into());
        r
    };
    let old = m.prepare(&request("bench/old")).unwrap();
    // The force push: the last 600 commits rewritten (20 new ones instead).
    sh(work, "git reset -q --hard HEAD~600");
    for c in 0..20 {
        sh(
            work,
            &format!(
                "for f in 0 1 2 3 4; do echo 'rewrite {c} '$f >> src/f00$f.rs; done && git commit -q -am 'rewrite {c}'"
            ),
        );
    }
    sh(work, "git push -q --force origin main");
    m.prepare(&request("bench/new")).unwrap();
    m.remove(&old.name).unwrap();
    let mirror = std::fs::read_dir(base.join(".mirrors"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let copy = b.fresh("maint-gc-copy");
    sh(
        &b.scratch,
        &format!("cp -a {} {}", mirror.display(), copy.display()),
    );
    let gc = timed(|| {
        sh(
            &copy,
            "git -c gc.reflogExpire=now -c gc.reflogExpireUnreachable=now gc -q --prune=now",
        )
    });
    let (report, ours) = {
        let mut report = None;
        let t = timed(|| report = Some(m.cleanup(Some(1000.0)).unwrap()));
        (report.unwrap(), t)
    };
    let done = &report.mirrors_maintained[0];
    assert_eq!(done.error, None);
    let fresh = b.fresh("maint-fresh");
    sh(
        &b.scratch,
        &format!("git clone -q --bare {url} {}", fresh.display()),
    );
    let size = |p: &Path| fixsec_workspace::testing::dir_size_of(p);
    let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
    b.report(format!(
        "{:<46} before {:>7.1} MB  after {:>7.1} MB  saved {:.0}%  (fresh bare clone {:.1} MB, git gc {:.1} MB)",
        "mirror after a force push of 600 commits",
        mb(done.bytes_before),
        mb(done.bytes_after),
        100.0 * (1.0 - done.bytes_after as f64 / done.bytes_before as f64),
        mb(size(&fresh)),
        mb(size(&copy)),
    ));
    // One run each (a maintenance changes what it measures): a figure,
    // not a target.
    b.report(format!(
        "{:<46} ours {:>10}  git gc --prune=now {:>10}  ratio {:>6.2}",
        "maintenance (the cleanup that runs it)",
        ms(ours),
        ms(gc),
        ours.as_secs_f64() / gc.as_secs_f64()
    ));
}
