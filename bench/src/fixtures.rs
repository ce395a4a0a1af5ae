//! Deterministic fixture repositories, generated once and kept under
//! `target/bench-fixtures/` (a `.complete` marker says a fixture is whole).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The shape of a fixture.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub name: &'static str,
    pub files: usize,
    pub total_bytes: u64,
    pub commits: usize,
}

/// About 16,000 files, 250 MB of working tree, 300 commits.
pub const LARGE: Spec = Spec {
    name: "large",
    files: 16_000,
    total_bytes: 250 * 1024 * 1024,
    commits: 300,
};

/// A small one for quick runs.
pub const SMALL: Spec = Spec {
    name: "small",
    files: 1_000,
    total_bytes: 10 * 1024 * 1024,
    commits: 50,
};

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

const WORDS: &[&str] = &[
    "fn",
    "let",
    "mut",
    "return",
    "match",
    "struct",
    "impl",
    "pub",
    "use",
    "self",
    "workspace",
    "repository",
    "clone",
    "fetch",
    "reset",
    "clean",
    "policy",
    "error",
    "result",
    "string",
    "vector",
    "option",
    "some",
    "none",
    "async",
    "await",
    "lock",
    "guard",
    "path",
    "buffer",
];

/// Source-like text of about `len` bytes.
pub fn text(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let w = WORDS[(rng.next() % WORDS.len() as u64) as usize];
        out.extend_from_slice(w.as_bytes());
        // Some entropy so the pack is not trivially small.
        out.extend_from_slice(format!("_{:x}", rng.next() % 4096).as_bytes());
        out.push(if rng.next().is_multiple_of(8) {
            b'\n'
        } else {
            b' '
        });
    }
    out.truncate(len);
    out
}

pub fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .status()
        .expect("git must be installed");
    assert!(status.success(), "git {args:?} in {}", dir.display());
}

/// The fixture's repository (non-bare, branch `main`), generating it if needed.
pub fn ensure(root: &Path, spec: Spec) -> PathBuf {
    let dir = root.join(spec.name).join("src");
    let marker = root.join(spec.name).join(".complete");
    if marker.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(root.join(spec.name));
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!(
        "generating fixture {}: {} files, {} MB, {} commits",
        spec.name,
        spec.files,
        spec.total_bytes / (1024 * 1024),
        spec.commits
    );
    git(&dir, &["init", "-q", "-b", "main"]);
    let mut rng = Rng::new(42);
    let avg = (spec.total_bytes / spec.files as u64) as usize;
    for i in 0..spec.files {
        let path = dir.join(format!("src/m{:03}/f{:05}.rs", i / 100, i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let len = avg / 2 + (rng.next() % avg as u64) as usize;
        std::fs::write(path, text(&mut rng, len)).unwrap();
    }
    std::fs::write(dir.join(".gitignore"), "target/\n*.log\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    for c in 1..spec.commits {
        advance(&dir, &mut rng, spec.files, c);
    }
    git(&dir, &["repack", "-adq"]);
    std::fs::write(marker, "").unwrap();
    dir
}

/// One more commit changing three files.
pub fn advance(dir: &Path, rng: &mut Rng, files: usize, n: usize) {
    for _ in 0..3 {
        let i = (rng.next() % files as u64) as usize;
        let path = dir.join(format!("src/m{:03}/f{:05}.rs", i / 100, i));
        let mut body = std::fs::read(&path).unwrap_or_default();
        body.extend_from_slice(&text(rng, 200));
        std::fs::write(path, body).unwrap();
    }
    git(dir, &["commit", "-q", "-a", "-m", &format!("change {n}")]);
}

/// A repository whose history dwarfs its checkout, as a mature project's
/// does: 400 files (about 2.4 MB checked out) and 1,200 commits, each
/// rewriting 20 files (about 140 MB of blobs over the history). Bare, at
/// `<root>/history/src.git`; `<root>/history/fork.git` is a fork of it
/// with 3 commits of its own.
pub fn ensure_history(root: &Path) -> (PathBuf, PathBuf) {
    let dir = root.join("history");
    let (src, fork) = (dir.join("src.git"), dir.join("fork.git"));
    let marker = dir.join(".complete");
    if marker.exists() {
        return (src, fork);
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("generating fixture history: 400 files, 1,200 commits");
    git(&dir, &["init", "-q", "--bare", "-b", "main", "src.git"]);
    let mut rng = Rng::new(7);
    let mut stream = Vec::new();
    let commit = |stream: &mut Vec<u8>,
                  rng: &mut Rng,
                  n: usize,
                  files: &[usize],
                  from: Option<&str>| {
        let mut blobs = Vec::new();
        for &f in files {
            let body = text(rng, 6_000);
            let m = n * 1000 + f + 1;
            stream.extend_from_slice(format!("blob\nmark :{m}\ndata {}\n", body.len()).as_bytes());
            stream.extend_from_slice(&body);
            stream.push(b'\n');
            blobs.push((f, m));
        }
        let message = format!("change {n}");
        stream.extend_from_slice(
            format!(
                "commit refs/heads/main\ncommitter bench <bench@example.invalid> {} +0000\ndata {}\n{message}\n",
                1_700_000_000 + n,
                message.len()
            )
            .as_bytes(),
        );
        if let Some(from) = from {
            stream.extend_from_slice(format!("from {from}\n").as_bytes());
        }
        for (f, m) in blobs {
            stream.extend_from_slice(format!("M 100644 :{m} src/f{f:03}.rs\n").as_bytes());
        }
        stream.push(b'\n');
    };
    let all: Vec<usize> = (0..400).collect();
    commit(&mut stream, &mut rng, 0, &all, None);
    for n in 1..1_200 {
        let mut files: Vec<usize> = (0..20).map(|_| (rng.next() % 400) as usize).collect();
        files.sort_unstable();
        files.dedup();
        commit(&mut stream, &mut rng, n, &files, None);
    }
    fast_import(&src, &stream);
    git(&dir, &["clone", "-q", "--bare", "src.git", "fork.git"]);
    let head = String::from_utf8(
        Command::new("git")
            .args(["--git-dir", "src.git", "rev-parse", "main"])
            .current_dir(&dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mut stream = Vec::new();
    for n in 0..3 {
        let files = [n, n + 100];
        commit(
            &mut stream,
            &mut rng,
            5_000 + n,
            &files,
            (n == 0).then_some(head.trim()),
        );
    }
    fast_import(&fork, &stream);
    std::fs::write(marker, "").unwrap();
    (src, fork)
}

fn fast_import(git_dir: &Path, stream: &[u8]) {
    use std::io::Write;
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stream).unwrap();
    assert!(child.wait().unwrap().success(), "git fast-import");
}

/// The monorepo of issue 23: 30,000 files (about 1.2 KB each) in 300
/// directories `pkg000`..`pkg299`, and 30 more commits each rewriting 100
/// files (3,000 blobs). Bare, at `<root>/mono/mono.git`, with
/// `uploadpack.allowFilter` so a `git daemon` serves partial clones.
pub fn ensure_monorepo(root: &Path) -> PathBuf {
    const DIRS: usize = 300;
    const PER_DIR: usize = 100;
    let dir = root.join("mono");
    let repo = dir.join("mono.git");
    let marker = dir.join(".complete");
    if marker.exists() {
        return repo;
    }
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    eprintln!("generating fixture mono: 30,000 files in 300 directories, 31 commits");
    git(&dir, &["init", "-q", "--bare", "-b", "main", "mono.git"]);
    let mut rng = Rng::new(23);
    let mut stream = Vec::new();
    let mut mark = 0usize;
    let mut commit = |stream: &mut Vec<u8>, rng: &mut Rng, n: usize, files: &[usize]| {
        let mut blobs = Vec::new();
        for &f in files {
            let len = 600 + (rng.next() % 1_200) as usize;
            let body = text(rng, len);
            mark += 1;
            stream
                .extend_from_slice(format!("blob\nmark :{mark}\ndata {}\n", body.len()).as_bytes());
            stream.extend_from_slice(&body);
            stream.push(b'\n');
            blobs.push((f, mark));
        }
        let message = format!("change {n}");
        stream.extend_from_slice(
            format!(
                "commit refs/heads/main\ncommitter bench <bench@example.invalid> {} +0000\ndata {}\n{message}\n",
                1_700_000_000 + n,
                message.len()
            )
            .as_bytes(),
        );
        for (f, m) in blobs {
            stream.extend_from_slice(
                format!(
                    "M 100644 :{m} pkg{:03}/src/f{:03}.txt\n",
                    f / PER_DIR,
                    f % PER_DIR
                )
                .as_bytes(),
            );
        }
        stream.push(b'\n');
    };
    let all: Vec<usize> = (0..DIRS * PER_DIR).collect();
    commit(&mut stream, &mut rng, 0, &all);
    for n in 1..=30 {
        let mut files: Vec<usize> = (0..100)
            .map(|_| (rng.next() % (DIRS * PER_DIR) as u64) as usize)
            .collect();
        files.sort_unstable();
        files.dedup();
        commit(&mut stream, &mut rng, n, &files);
    }
    fast_import(&repo, &stream);
    git(&repo, &["repack", "-adq"]);
    git(&repo, &["config", "uploadpack.allowFilter", "true"]);
    git(&repo, &["config", "uploadpack.allowAnySHA1InWant", "true"]);
    std::fs::write(marker, "").unwrap();
    repo
}
