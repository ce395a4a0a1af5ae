//! Issue 23: the monorepo fixture (30,000 files in 300 directories) over a
//! loopback `git daemon`, each figure against git doing the same work, in
//! interleaved repetitions.

use crate::git::git_daemon;
use crate::*;

pub(crate) fn monorepo(b: &mut Bench) {
    let repo = fixtures::ensure_monorepo(&b.root);
    let (mut daemon, port) = git_daemon(repo.parent().unwrap());
    let url = format!("git://127.0.0.1:{port}/mono.git");
    let runs = b.runs;
    let mut t: std::collections::BTreeMap<&str, Vec<Duration>> = Default::default();
    let mut push = |k: &'static str, d: Duration| t.entry(k).or_default().push(d);
    for i in 0..runs {
        let dst = b.fresh(&format!("mono-git-{i}"));
        push(
            "git clone",
            timed(|| sh(&b.scratch, &format!("git clone -q {url} {}", dst.display()))),
        );
        let m = b.manager(&b.fresh(&format!("mono-ours-{i}")));
        let req = PrepareRequest::new("bench/mono", url.as_str()).branch("main");
        let mut path = PathBuf::new();
        push("ours full", timed(|| path = m.prepare(&req).unwrap().path));
        assert!(complete(&path), "the checkout is not whole");
        let reuse = "git fetch -q origin && git reset -q --hard origin/main && git clean -ffdxq";
        push("git reuse", timed(|| sh(&dst, reuse)));
        push(
            "ours warm",
            timed(|| assert!(m.prepare(&req).unwrap().reused)),
        );

        let dst = b.fresh(&format!("mono-git-d1-{i}"));
        push(
            "git clone --depth 1",
            timed(|| {
                sh(
                    &b.scratch,
                    &format!("git clone -q --depth 1 {url} {}", dst.display()),
                )
            }),
        );
        let m = b.manager(&b.fresh(&format!("mono-ours-d1-{i}")));
        let req = PrepareRequest::new("bench/mono", url.as_str())
            .branch("main")
            .depth(1);
        push(
            "ours depth 1",
            timed(|| path = m.prepare(&req).unwrap().path),
        );
        assert!(complete(&path), "the depth-1 checkout is not whole");

        let dst = b.fresh(&format!("mono-git-blobless-{i}"));
        push(
            "git blobless",
            timed(|| {
                sh(
                    &b.scratch,
                    &format!("git clone -q --filter=blob:none {url} {}", dst.display()),
                )
            }),
        );
        let m = b.manager(&b.fresh(&format!("mono-ours-blobless-{i}")));
        let req = PrepareRequest::new("bench/mono", url.as_str())
            .branch("main")
            .filter("blob:none");
        push(
            "ours blobless",
            timed(|| path = m.prepare(&req).unwrap().path),
        );
        assert!(complete(&path), "the blobless checkout is not whole");

        let dst = b.fresh(&format!("mono-git-sparse-{i}"));
        push(
            "git sparse",
            timed(|| {
                sh(
                    &b.scratch,
                    &format!(
                        "git clone -q --filter=blob:none --sparse {url} {d} && \
                         git -C {d} sparse-checkout set pkg007",
                        d = dst.display()
                    ),
                )
            }),
        );
        let m = b.manager(&b.fresh(&format!("mono-ours-sparse-{i}")));
        let req = PrepareRequest::new("bench/mono", url.as_str())
            .branch("main")
            .filter("blob:none")
            .sparse(["pkg007"]);
        push(
            "ours sparse",
            timed(|| path = m.prepare(&req).unwrap().path),
        );
        assert!(path.join("pkg007/src/f099.txt").is_file() && !path.join("pkg008").exists());
    }
    let med = |k: &str| median(t[k].clone());
    b.compare(
        "monorepo: fresh prepare",
        med("ours full"),
        "git clone",
        med("git clone"),
        0.8,
    );
    b.compare(
        "monorepo: fresh prepare, depth 1",
        med("ours depth 1"),
        "git clone --depth 1",
        med("git clone --depth 1"),
        1.0,
    );
    b.compare(
        "monorepo: blobless prepare (filter blob:none)",
        med("ours blobless"),
        "git clone --filter=blob:none",
        med("git blobless"),
        1.1,
    );
    let sparse = med("ours sparse");
    b.compare(
        "monorepo: one directory (blob:none + sparse)",
        sparse,
        "clone --sparse + sparse-checkout set",
        med("git sparse"),
        1.2,
    );
    b.threshold(
        "monorepo: one directory, absolute",
        ms(sparse),
        "< 2 s",
        sparse < Duration::from_secs(2),
    );
    b.compare(
        "monorepo: warm prepare, unchanged upstream",
        med("ours warm"),
        "git fetch+reset+clean",
        med("git reuse"),
        1.5,
    );
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Whether a checkout of the fixture has its first and last files.
fn complete(repo: &Path) -> bool {
    repo.join("pkg000/src/f000.txt").is_file() && repo.join("pkg299/src/f099.txt").is_file()
}

/// Item 6: a second job's lease of the monorepo on XFS (reflinks), against
/// git's fastest second checkout of the same repository (`git clone
/// --local`, which hard-links the objects and writes the files). Needs
/// root and loop devices; says so and skips otherwise.
pub(crate) fn parallel_lease(b: &mut Bench) {
    if !Path::new("/dev/loop-control").exists()
        || Command::new("mkfs.xfs").arg("-V").output().is_err()
    {
        println!("parallel lease on XFS: skipped (needs loop devices and xfsprogs)");
        return;
    }
    let repo = fixtures::ensure_monorepo(&b.root);
    let (mut daemon, port) = git_daemon(repo.parent().unwrap());
    let url = format!("git://127.0.0.1:{port}/mono.git");
    let dir = b.fresh("xfs");
    std::fs::create_dir_all(dir.join("mnt")).unwrap();
    let image = dir.join("xfs.img");
    sh(
        &dir,
        &format!(
            "truncate -s 4G {} && mkfs.xfs -q -m reflink=1 {}",
            image.display(),
            image.display()
        ),
    );
    sh(
        &dir,
        &format!(
            "mount -o loop {} {}",
            image.display(),
            dir.join("mnt").display()
        ),
    );
    let mnt = dir.join("mnt");
    let used = || -> u64 {
        let _ = Command::new("sync").status();
        let out = Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(&mnt)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let empty = used();
    let m = b.manager(&mnt.join("base"));
    let mut first = PrepareRequest::new("bench/mono", url.as_str()).branch("main");
    first.lease_seconds = Some(3600);
    let a = m.prepare(&first).unwrap();
    let workspace = used() - empty;
    let mut ours = Vec::new();
    let mut git = Vec::new();
    let mut extra = Vec::new();
    let mut git_extra = Vec::new();
    for i in 0..b.runs {
        let mut second = first.clone();
        second.parallel = true;
        let before = used();
        let mut copy = None;
        ours.push(timed(|| copy = Some(m.prepare(&second).unwrap())));
        extra.push(used().saturating_sub(before));
        let copy = copy.unwrap();
        assert!(copy.name.ends_with("--p1") && complete(&copy.path));
        m.release_lease(copy.lease.unwrap().id).unwrap();
        m.wait_for_background_deletions();
        let dst = mnt.join(format!("git-local-{i}"));
        let before = used();
        git.push(timed(|| {
            sh(
                &mnt,
                &format!(
                    "git clone -q --local {} {}",
                    a.path.display(),
                    dst.display()
                ),
            )
        }));
        git_extra.push(used().saturating_sub(before));
        sh(&mnt, &format!("rm -rf {}", dst.display()));
    }
    let (ours, git) = (median(ours), median(git));
    b.compare(
        "XFS: a second lease (reflinked copy)",
        ours,
        "git clone --local",
        git,
        1.0,
    );
    b.threshold(
        "XFS: a second lease, absolute",
        ms(ours),
        "< 1 s",
        ours < Duration::from_secs(1),
    );
    let extra = *extra.iter().max().unwrap();
    let share = extra as f64 / workspace as f64;
    b.threshold(
        "XFS: a second lease's extra disk",
        format!("{:.1}%", share * 100.0),
        "< 5%",
        share < 0.05,
    );
    b.report(format!(
        "{:<46} ours {:>6.1} MB  git clone --local {:>6.1} MB  (the workspace: {:.1} MB)",
        "XFS: disk a second checkout takes",
        extra as f64 / 1048576.0,
        median(git_extra.iter().map(|b| Duration::from_nanos(*b)).collect()).as_nanos() as f64
            / 1048576.0,
        workspace as f64 / 1048576.0
    ));
    drop(m);
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = daemon.kill();
    let _ = daemon.wait();
}
