//! Prefetch (issue 24, part 3): the prepare that follows an upstream push,
//! with and without the push's prefetch, on the history fixture served
//! by a loopback `git daemon`. Repetitions interleave the two.

use crate::*;

/// A push: `commits` commits upstream, each rewriting `files` files.
fn push(work: &Path, round: usize, commits: usize, files: usize) {
    for c in 0..commits {
        for f in 0..files {
            let n = (round * 7919 + c * 131 + f * 17) % 400;
            let path = work.join(format!("src/f{n:03}.rs"));
            let mut body = std::fs::read(&path).unwrap();
            body.extend_from_slice(
                format!("// round {round} commit {c} file {f}\n")
                    .repeat(80)
                    .as_bytes(),
            );
            std::fs::write(&path, body).unwrap();
        }
        sh(
            work,
            &format!("git commit -q -a -m 'round {round} commit {c}'"),
        );
    }
    sh(work, "git push -q origin main");
}

pub(crate) fn prefetch(b: &mut Bench) {
    let upstream = crate::git::served_history(b, "prefetch");
    let (work, url) = (&upstream.work, &upstream.url);
    let m = b.manager(&b.fresh("prefetch-base"));
    let request = PrepareRequest::new("bench/history", url.as_str());
    m.prepare(&request).unwrap();
    let prefetch = fixsec_workspace::PrefetchRequest {
        repo_full_name: "bench/history".into(),
        clone_url: url.to_string(),
        git_ref: Some("main".into()),
    };
    let (commits, files) = (20, 20);
    let (mut cold, mut warm, mut background) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b.runs {
        push(work, 2 * i, commits, files);
        cold.push(timed(|| {
            let out = m.prepare(&request).unwrap();
            assert!(out.reused);
        }));
        push(work, 2 * i + 1, commits, files);
        background.push(timed(|| {
            let out = m.prefetch(&prefetch).unwrap();
            assert!(out.updated, "{:?}", out.skipped);
        }));
        warm.push(timed(|| {
            let out = m.prepare(&request).unwrap();
            assert!(out.reused);
        }));
    }
    b.report(format!(
        "{:<46} {commits} commits rewriting {files} files each ({} KB of new text)",
        "push",
        commits * files * 80 * 40 / 1024
    ));
    b.compare(
        "prepare after a push, prefetched",
        median(warm),
        "not prefetched",
        median(cold),
        0.2,
    );
    b.report(format!(
        "{:<46} {:>10} (in the background, before the job asks)",
        "the prefetch itself",
        ms(median(background))
    ));
}
