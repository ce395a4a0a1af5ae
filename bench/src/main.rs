//! fixsec-bench: fixsec-workspace measured side by side with what git's own
//! command line, `rm -rf` and `du -sb` do, in one run on one machine.
//!
//! ```sh
//! cargo run --release -p fixsec-bench            # the 250 MB fixture
//! cargo run --release -p fixsec-bench -- --quick # a 10 MB fixture, fewer runs
//! ```
//!
//! Each figure is the median of several runs; each ratio compares two
//! medians measured in this same run; each line says whether the issue's
//! target is met.

mod fixtures;
mod git;
mod mirror;
mod mono;
mod prefetch;
mod service;

use git::{clone_and_reuse, removal, shallow};
use mirror::mirror;
use service::{policy_calls, python, router, server, stats};

use fixsec_workspace::{PrepareRequest, WorkspaceManager};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct Bench {
    pub(crate) quick: bool,
    pub(crate) runs: usize,
    pub(crate) root: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) results: Vec<String>,
}

pub(crate) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

pub(crate) fn sh(dir: &Path, cmd: &str) {
    let status = Command::new("bash")
        .args(["-c", cmd])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{cmd}");
}

pub(crate) fn timed(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

impl Bench {
    fn report(&mut self, line: String) {
        println!("{line}");
        self.results.push(line);
    }

    /// `ours` against `base`: medians, ratio, and the target `ratio <= max`.
    fn compare(&mut self, what: &str, ours: Duration, base_name: &str, base: Duration, max: f64) {
        let ratio = ours.as_secs_f64() / base.as_secs_f64();
        let verdict = if ratio <= max { "met" } else { "MISSED" };
        self.report(format!(
            "{what:<46} ours {:>10}  {base_name} {:>10}  ratio {ratio:>6.2}  (target <= {max}: {verdict})",
            ms(ours),
            ms(base)
        ));
    }

    /// A figure against an absolute target.
    fn threshold(&mut self, what: &str, figure: String, target: &str, met: bool) {
        let verdict = if met { "met" } else { "MISSED" };
        self.report(format!(
            "{what:<46} {figure:>10}  (target {target}: {verdict})"
        ));
    }

    fn fresh(&self, name: &str) -> PathBuf {
        let p = self.scratch.join(name);
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    fn manager(&self, base: &Path) -> WorkspaceManager {
        WorkspaceManager::builder()
            .base_path(base)
            .allow_local_urls(true)
            .allow_private_networks(true)
            .build()
            .unwrap()
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-fixtures");
    let scratch = root.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut b = Bench {
        quick,
        runs: if quick { 3 } else { 5 },
        root,
        scratch,
        results: Vec::new(),
    };
    let spec = if quick {
        fixtures::SMALL
    } else {
        fixtures::LARGE
    };
    let src = fixtures::ensure(&b.root, spec);
    println!(
        "fixture {}: {} files, {} MB, {} commits; {} runs each; {}",
        spec.name,
        spec.files,
        spec.total_bytes / (1024 * 1024),
        spec.commits,
        b.runs,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    // `--only clone,daemon,mirror,removal,stats,policy,server,router,mono,parallel,maintenance,prefetch,python` runs a subset.
    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let wanted = |name: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == name));
    if wanted("clone") {
        clone_and_reuse(&mut b, &src, spec);
    }
    if wanted("daemon") {
        shallow(&mut b, &src);
    }
    if wanted("mirror") {
        mirror(&mut b, &src);
    }
    if wanted("removal") {
        removal(&mut b, &src);
    }
    if wanted("stats") {
        stats(&mut b);
    }
    if wanted("policy") {
        policy_calls(&mut b);
    }
    if wanted("server") {
        server(&mut b, &src);
    }
    if wanted("router") {
        router(&mut b, &src);
    }
    if wanted("mono") {
        mono::monorepo(&mut b);
    }
    if wanted("parallel") {
        mono::parallel_lease(&mut b);
    }
    if wanted("maintenance") {
        mirror::maintenance(&mut b);
    }
    if wanted("prefetch") {
        prefetch::prefetch(&mut b);
    }
    if wanted("python") {
        python(&mut b, &src);
    }
    println!("\n{} figures", b.results.len());
}
