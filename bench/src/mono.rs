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
