//! What a checkout may bring besides the repository's own files (issue
//! 13): submodules, recursively, and Git LFS objects; both off unless asked,
//! both against real servers on loopback behind Basic auth.

use crate::support::forge::{SECRET, git};
use crate::support::smart_http::SmartHttp;
use crate::support::{builder, files_containing};
use fixsec_workspace::{PrepareRequest, WorkspaceManager};
use std::path::{Path, PathBuf};

/// A repository made with git's command line: `files`, then gitlinks
/// (`path`, `url`, `commit`) recorded in `.gitmodules`.
fn repository(files: &[(&str, &str)], submodules: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path();
    git(repo, &["init", "-q", "-b", "main"]);
    let mut gitmodules = String::new();
    for (path, url, commit) in submodules {
        gitmodules.push_str(&format!(
            "[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"
        ));
        let info = format!("160000,{commit},{path}");
        git(repo, &["update-index", "--add", "--cacheinfo", &info]);
    }
    if !gitmodules.is_empty() {
        std::fs::write(repo.join(".gitmodules"), gitmodules).unwrap();
        git(repo, &["add", ".gitmodules"]);
    }
    for (path, content) in files {
        let file = repo.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        git(repo, &["add", path]);
    }
    git(repo, &["commit", "-q", "-m", "content"]);
    dir
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"])
}

fn prepare(
    m: &WorkspaceManager,
    url: String,
    submodules: bool,
    lfs: bool,
) -> fixsec_workspace::Result<PathBuf> {
    let mut request = PrepareRequest::new("acme/app", url);
    request.submodules = submodules;
    request.lfs = lfs;
    m.prepare(&request).map(|o| o.path)
}

fn manager(base: &Path) -> WorkspaceManager {
    builder(base).allow_private_networks(true).build().unwrap()
}

#[test]
fn submodules_come_recursively_and_clean_with_the_credential_for_their_host_only() {
    let forge = SmartHttp::start("x-access-token", SECRET);
    let deep = repository(&[("deep.txt", "deep\n")], &[]);
    forge.publish_dir("acme/deep", deep.path());
    let lib = repository(
        &[("lib.txt", "lib\n")],
        &[("deep", "../deep.git", &head(deep.path()))],
    );
    forge.publish_dir("acme/lib", lib.path());
    let app = repository(
        &[("README.md", "app\n")],
        &[("lib", "../lib.git", &head(lib.path()))],
    );
    forge.publish_dir("acme/app", app.path());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url = forge.url_with_credential("acme/app");

    // Not asked: the gitlink's folder stays empty.
    let repo = prepare(&m, url.clone(), false, false).unwrap();
    assert!(!repo.join("lib/lib.txt").exists());

    // Asked: both levels, each at its recorded commit.
    let repo = prepare(&m, url.clone(), true, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.join("lib/lib.txt")).unwrap(),
        "lib\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("lib/deep/deep.txt")).unwrap(),
        "deep\n"
    );
    assert_eq!(
        git(&repo.join("lib"), &["rev-parse", "HEAD"]),
        head(lib.path())
    );
    for sub in ["acme/lib.git", "acme/deep.git"] {
        let asked: Vec<_> = forge
            .seen()
            .into_iter()
            .filter(|r| r.line.contains(sub))
            .collect();
        assert!(
            asked.iter().any(|r| r.authorized),
            "{sub} was never fetched with the credential"
        );
    }

    // Reused: what a job left inside a submodule goes too.
    std::fs::write(repo.join("lib/scan.log"), "x").unwrap();
    std::fs::write(repo.join("lib/lib.txt"), "edited\n").unwrap();
    prepare(&m, url, true, false).unwrap();
    assert!(!repo.join("lib/scan.log").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("lib/lib.txt")).unwrap(),
        "lib\n"
    );
    assert_eq!(files_containing(base.path(), SECRET), Vec::<PathBuf>::new());
}

#[test]
fn a_submodule_elsewhere_gets_no_credential_and_unsafe_ones_are_refused() {
    let forge = SmartHttp::start("x-access-token", SECRET);
    let other = SmartHttp::start_on("127.0.0.2", "x-access-token", SECRET);
    let theirs = repository(&[("x.txt", "x\n")], &[]);
    other.publish_dir("them/x", theirs.path());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let foreign = other.url("them/x");
    for (name, sub_url) in [
        ("foreign", foreign.as_str()),
        ("ext", "ext::sh -c touch% /tmp/fixsec-pwned"),
    ] {
        let app = repository(
            &[("README.md", "app\n")],
            &[("sub", sub_url, &head(theirs.path()))],
        );
        forge.publish_dir(&format!("acme/{name}"), app.path());
        let err = prepare(
            &m,
            forge.url_with_credential(&format!("acme/{name}")),
            true,
            false,
        )
        .unwrap_err();
        assert!(err.to_string().contains("submodule sub"), "{name}: {err}");
        if name == "ext" {
            assert!(err.to_string().contains("refused"), "{err}");
        }
    }
    // The other host was asked, and never with the caller's credential.
    let asked = other.seen();
    assert!(
        !asked.is_empty(),
        "the foreign submodule was not even tried"
    );
    assert!(asked.iter().all(|r| !r.authorized), "{asked:?}");
    assert!(!Path::new("/tmp/fixsec-pwned").exists());
}

#[test]
fn lfs_objects_replace_their_pointers_only_when_asked() {
    let forge = SmartHttp::start("x-access-token", SECRET);
    let content = b"a large binary fixture\n".repeat(1000);
    let pointer = forge.add_lfs_object(&content);
    let app = repository(
        &[
            (
                ".gitattributes",
                "*.bin filter=lfs diff=lfs merge=lfs -text\n",
            ),
            ("model.bin", pointer.as_str()),
            ("README.md", "app\n"),
        ],
        &[],
    );
    forge.publish_dir("acme/app", app.path());
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path());
    let url = forge.url_with_credential("acme/app");

    let repo = prepare(&m, url.clone(), false, false).unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.join("model.bin")).unwrap(),
        pointer
    );

    let repo = prepare(&m, url, false, true).unwrap();
    assert_eq!(std::fs::read(repo.join("model.bin")).unwrap(), content);
    let lfs: Vec<_> = forge
        .seen()
        .into_iter()
        .filter(|r| r.line.contains("lfs"))
        .collect();
    assert!(
        lfs.iter().any(|r| r.authorized && r.line.contains("batch")),
        "{lfs:?}"
    );
    assert_eq!(files_containing(base.path(), SECRET), Vec::<PathBuf>::new());

    // A wrong credential is a clear error.
    let wrong = forge
        .url("acme/app")
        .replace("http://", "http://x-access-token:wrong@");
    let err = prepare(&m, wrong, false, true).unwrap_err();
    assert!(err.to_string().contains("credential"), "{err}");
}
