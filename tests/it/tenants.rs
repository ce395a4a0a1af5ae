//! Tenant isolation (issue 21): two tenants on one forge, each with a
//! credential for its own repositories only. Tenant A (`alice`) reads
//! `acme/secret`; tenant B (`bob`) reads `bob/app` and tries, through every
//! field a backend passes through from its users (`network`, `ref`,
//! `repo_full_name`) and through what its own repository and server say,
//! to get A's objects, A's ref tips, A's credential, or a request to an
//! address the rules refuse. The forge is `git http-backend` behind Basic
//! auth on 127.0.0.1 that answers 404 to a known credential asking for
//! another tenant's repository, as GitHub does.

use crate::support::HttpStub;
use crate::support::Upstream;
use crate::support::forge::git;
use crate::support::smart_http::SmartHttp;
use crate::support::{builder, files_containing};
use fixsec_workspace::MirrorSharing;
use fixsec_workspace::{ErrorKind, PrepareRequest, PushRequest, WorkspaceManager};
use std::path::{Path, PathBuf};

const A_TOKEN: &str = "alice-token-7d1e0c";
const B_TOKEN: &str = "bob-token-93ab51";
const SECRET_TEXT: &str = "tenant A's private code\n";

/// The forge with both tenants' repositories, and what A's holds.
struct Forge {
    server: SmartHttp,
    /// A's repository: `main` with `secret.py`, and `plan`, a branch A
    /// never checks out.
    secret: Upstream,
    /// The commit on `main` that added `secret.py`.
    secret_commit: String,
    /// `plan`'s tip.
    plan_tip: String,
    /// B's own repository.
    _bob: Upstream,
}

impl Forge {
    fn new() -> Self {
        let server = SmartHttp::start("forge-admin", "admin-only-7f");
        server.add_account("alice", A_TOKEN, &["acme/secret"]);
        server.add_account("bob", B_TOKEN, &["bob/app"]);
        let secret = Upstream::new();
        let secret_commit = secret.commit("secret.py", SECRET_TEXT, "private code");
        git(&secret.path, &["checkout", "-q", "-b", "plan"]);
        let plan_tip = secret.commit("plan.md", "acquisition plan\n", "plan");
        git(&secret.path, &["checkout", "-q", "main"]);
        server.publish("acme/secret", &secret);
        let bob = Upstream::new();
        bob.commit("bob.txt", "bob's app\n", "bob");
        server.publish("bob/app", &bob);
        Forge {
            server,
            secret,
            secret_commit,
            plan_tip,
            _bob: bob,
        }
    }

    fn a_url(&self) -> String {
        self.server.url_as("alice", A_TOKEN, "acme/secret")
    }

    fn b_url(&self, repo: &str) -> String {
        self.server.url_as("bob", B_TOKEN, repo)
    }

    /// Replace `acme/secret` on the forge with the repository at `dir`.
    fn republish_secret(&self, dir: &Path) {
        std::fs::remove_dir_all(self.server.bare("acme/secret")).unwrap();
        self.server.publish_dir("acme/secret", dir);
    }

    /// Every request made with B's credential, bodies included.
    fn bobs_requests(&self) -> Vec<crate::support::smart_http::Request> {
        self.server
            .seen()
            .into_iter()
            .filter(|r| r.user.as_deref() == Some("bob"))
            .collect()
    }
}

fn manager(base: &Path, sharing: MirrorSharing) -> WorkspaceManager {
    builder(base)
        .configure(|c| c.mirror_sharing = sharing)
        .build()
        .unwrap()
}

/// A prepares its repository (the mirror and the workspace then hold A's
/// objects, `plan` included, since a mirror takes every branch).
fn a_prepares(m: &WorkspaceManager, forge: &Forge) -> PathBuf {
    m.prepare(&PrepareRequest::new("acme/secret", forge.a_url()))
        .unwrap()
        .path
}

fn has_object(repo: &Path, oid: &str) -> bool {
    std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["cat-file", "-e", oid])
        .status()
        .unwrap()
        .success()
}

/// Item 1: B names A's repository as its network and A's commit as its
/// ref. The commit is resolved against B's own server with B's
/// credential, which does not serve it: not found, and B's checkout
/// neither holds nor borrows A's objects.
#[test]
fn b_cannot_check_out_a_commit_of_as_repository_through_the_network_field() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    a_prepares(&m, &forge);

    let mut request = PrepareRequest::new("bob/app", forge.b_url("bob/app"))
        .git_ref(format!("{}:refs/heads/loot", forge.secret_commit));
    request.network = Some("acme/secret".into());
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    // B's own prepare works and sees nothing of A's.
    let mut plain = PrepareRequest::new("bob/app", forge.b_url("bob/app"));
    plain.network = Some("acme/secret".into());
    let repo = m.prepare(&plain).unwrap().path;
    assert!(!repo.join("secret.py").exists());
    assert!(!has_object(&repo, &forge.secret_commit));
    assert!(!has_object(&repo, &forge.plan_tip));
    // A commit id alone, and as a plain ref, fare no better.
    for git_ref in [forge.secret_commit.clone(), forge.plan_tip.clone()] {
        let err = m
            .prepare(&PrepareRequest::new("bob/app", forge.b_url("bob/app")).git_ref(&git_ref))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{git_ref}: {err}");
    }
    assert!(!has_object(&repo, &forge.secret_commit));
}

/// Item 1, the other way in: B gives A's repository name (so A's
/// workspace) with its own URL, or with A's URL and its own credential.
/// Objects already in the workspace never stand in for the check, and A's
/// checkout is left as it was.
#[test]
fn b_cannot_check_out_a_commit_left_in_a_workspace_by_another_url_or_credential() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let a_repo = a_prepares(&m, &forge);

    for url in [
        forge.b_url("bob/app"),
        forge.b_url("acme/secret"),
        // No credential at all.
        forge.server.url("acme/secret"),
    ] {
        for git_ref in [
            forge.secret_commit.clone(),
            format!("{}:refs/heads/loot", forge.secret_commit),
        ] {
            let err = m
                .prepare(&PrepareRequest::new("acme/secret", url.clone()).git_ref(&git_ref))
                .unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::NotFound | ErrorKind::Git),
                "{url} {git_ref}: {err}"
            );
        }
    }
    // A's checkout is intact and still A's.
    assert_eq!(
        std::fs::read_to_string(a_repo.join("secret.py")).unwrap(),
        SECRET_TEXT
    );
    assert_eq!(
        git(&a_repo, &["rev-parse", "HEAD"]),
        forge.secret.head_of("main")
    );
    // Nothing B did reached B's server with a want for A's commit.
    for r in forge.bobs_requests() {
        let body = String::from_utf8_lossy(&r.body);
        assert!(!body.contains(&forge.secret_commit), "{}", r.line);
    }
}

/// Item 1 at the engine: an update of a checkout to another URL is
/// refused, whatever the policy asks (a swapped-in policy could call
/// `update` where the default one re-clones).
#[test]
fn the_host_refuses_to_update_a_checkout_to_another_url() {
    use fixsec_workspace::testing::{GitRef, KeepIgnored, Remote, git};
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let a_repo = a_prepares(&m, &forge);
    let oid = git2::Oid::from_str(&forge.secret_commit).unwrap();
    let err = git::update(
        &a_repo,
        &forge.server.url("bob/app"),
        Some(&GitRef::Commit(oid)),
        None,
        &KeepIgnored::none(),
        &Remote::default(),
    )
    .unwrap_err();
    assert!(err.message.contains("cloned afresh"), "{err}");
    assert_eq!(
        git(&a_repo, &["remote", "get-url", "origin"]),
        forge.server.url("acme/secret")
    );
}

/// Items 2 and 3: B names A's network. By default a mirror is per clone
/// URL, so B's server is never told A's branch tips as `have` lines, and
/// B's checkout borrows no mirror holding A's objects.
#[test]
fn a_server_never_learns_another_tenants_ref_tips() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    a_prepares(&m, &forge);
    // (`develop` is left out: both upstreams are made alike, so its tip
    // may be B's own commit too.)
    let a_tips = [forge.secret.head_of("main"), forge.plan_tip.clone()];

    let mut request = PrepareRequest::new("bob/app", forge.b_url("bob/app"));
    request.network = Some("acme/secret".into());
    let repo = m.prepare(&request).unwrap().path;
    // Again after a cleanup: the re-clone goes through B's mirror.
    m.remove(&m.workspace_name("bob/app").unwrap()).unwrap();
    m.prepare(&request).unwrap();

    let bobs = forge.bobs_requests();
    assert!(bobs.iter().any(|r| r.line.starts_with("POST")), "{bobs:?}");
    for r in &bobs {
        let body = String::from_utf8_lossy(&r.body);
        for tip in &a_tips {
            assert!(
                !body.contains(tip.as_str()),
                "B's server saw {tip} in {}",
                r.line
            );
        }
    }
    // Two mirrors, one per URL; B's checkout reaches none of A's objects.
    assert_eq!(crate::support::mirror_folders(base.path()).len(), 2);
    assert!(!has_object(&repo, &forge.plan_tip));
    assert!(!has_object(&repo, &forge.secret_commit));
    // No credential anywhere on disk.
    assert_eq!(
        files_containing(base.path(), A_TOKEN),
        Vec::<PathBuf>::new()
    );
    assert_eq!(
        files_containing(base.path(), B_TOKEN),
        Vec::<PathBuf>::new()
    );
}

/// Item 3: sharing a mirror across a network is a deployment's choice,
/// spelt out; an unknown value is refused with the two choices named.
#[test]
fn sharing_mirrors_across_a_network_is_opt_in() {
    use fixsec_workspace::Config;
    let lookup =
        |v: &'static str| move |k: &str| (k == "WORKSPACE_MIRROR_SHARING").then(|| v.to_string());
    assert_eq!(
        Config::from_lookup(|_| None).unwrap().mirror_sharing,
        MirrorSharing::Repository
    );
    assert_eq!(
        Config::from_lookup(lookup("network"))
            .unwrap()
            .mirror_sharing,
        MirrorSharing::Network
    );
    let err = Config::from_lookup(lookup("tenant")).unwrap_err();
    assert!(err.to_string().contains("repository"), "{err}");
}

/// Item 8: a refspec may not write the host's own references (moving
/// `origin/HEAD` would unlock a push to the default branch), and the push
/// rule reads the default branch from the push target itself.
#[test]
fn the_default_branch_cannot_be_unlocked_for_a_push() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    for bad in [
        "refs/heads/main:refs/remotes/origin/HEAD",
        "+refs/heads/develop:refs/remotes/origin/main",
        "refs/heads/main:refs/fixsec/commit",
    ] {
        let err = m
            .prepare(&PrepareRequest::new("acme/secret", forge.a_url()).git_ref(bad))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}: {err}");
    }
    let repo = a_prepares(&m, &forge);
    let name = m.workspace_name("acme/secret").unwrap();
    // A job moves origin/HEAD to another branch, then commits on main.
    git(
        &repo,
        &[
            "symbolic-ref",
            "refs/remotes/origin/HEAD",
            "refs/remotes/origin/develop",
        ],
    );
    std::fs::write(repo.join("x.txt"), "x\n").unwrap();
    git(&repo, &["add", "x.txt"]);
    git(&repo, &["commit", "-qm", "x"]);
    let before = forge.server.git("acme/secret", &["rev-parse", "main"]);
    let err = m
        .push(&name, &PushRequest::new("main", forge.a_url()).force(true))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("default branch"), "{err}");
    assert_eq!(
        forge.server.git("acme/secret", &["rev-parse", "main"]),
        before
    );
}

/// Item 9: code run in the workspace redirects pushes with `insteadOf`;
/// the push still goes to the URL the caller named, and the other server
/// hears nothing.
#[test]
fn a_push_ignores_the_workspaces_own_config() {
    let forge = Forge::new();
    let elsewhere = SmartHttp::start("alice", A_TOKEN);
    elsewhere.publish("acme/secret", &forge.secret);
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let repo = a_prepares(&m, &forge);
    let name = m.workspace_name("acme/secret").unwrap();
    let public = forge.server.url("acme/secret");
    let internal = elsewhere.url("acme/secret");
    git(
        &repo,
        &["config", &format!("url.{internal}.insteadOf"), &public],
    );
    git(
        &repo,
        &["config", &format!("url.{internal}.pushInsteadOf"), &public],
    );
    git(&repo, &["checkout", "-q", "-b", "fix-1"]);
    std::fs::write(repo.join("fix.txt"), "fix\n").unwrap();
    git(&repo, &["add", "fix.txt"]);
    git(&repo, &["commit", "-qm", "fix"]);
    let pushed = m
        .push(&name, &PushRequest::new("fix-1", forge.a_url()))
        .unwrap();
    assert_eq!(pushed.url, public);
    assert_eq!(
        forge.server.git("acme/secret", &["rev-parse", "fix-1"]),
        pushed.commit
    );
    assert!(elsewhere.seen().is_empty(), "{:?}", elsewhere.seen());
}

/// Item 10: the caller's credential goes to the clone URL's scheme, host
/// and port only: a submodule on another port of the same host gets none.
#[test]
fn a_credential_never_goes_to_another_port_of_the_same_host() {
    let forge = Forge::new();
    let other_port = SmartHttp::start("alice", A_TOKEN);
    let lib = Upstream::new();
    other_port.publish("acme/lib", &lib);
    let app = tempfile::tempdir().unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        app.path().join(".gitmodules"),
        format!(
            "[submodule \"lib\"]\n\tpath = lib\n\turl = {}\n",
            other_port.url("acme/lib")
        ),
    )
    .unwrap();
    let info = format!("160000,{},lib", lib.head_of("main"));
    git(app.path(), &["update-index", "--add", "--cacheinfo", &info]);
    git(app.path(), &["add", ".gitmodules"]);
    git(app.path(), &["commit", "-qm", "app"]);
    forge.republish_secret(app.path());

    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let mut request = PrepareRequest::new("acme/secret", forge.a_url());
    request.submodules = true;
    let err = m.prepare(&request).unwrap_err();
    assert!(err.to_string().contains("submodule lib"), "{err}");
    let asked = other_port.seen();
    assert!(!asked.is_empty(), "the submodule was not even tried");
    assert!(asked.iter().all(|r| r.user.is_none()), "{asked:?}");
}

/// Item 11: what a job leaves in the git directory that makes git show
/// other content than the commit (replace refs, grafts, attributes,
/// foreign alternates) is gone after the next prepare.
#[test]
fn reuse_removes_what_changes_what_git_shows() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let repo = a_prepares(&m, &forge);
    let fake = {
        std::fs::write(repo.join("fake.py"), "import os; os.system('curl evil')\n").unwrap();
        let blob = git(&repo, &["hash-object", "-w", "fake.py"]);
        std::fs::remove_file(repo.join("fake.py")).unwrap();
        blob
    };
    let real = git(&repo, &["rev-parse", "HEAD:secret.py"]);
    git(&repo, &["replace", &real, &fake]);
    assert_ne!(
        git(&repo, &["show", "HEAD:secret.py"]),
        SECRET_TEXT.trim_end()
    );
    let info = repo.join(".git/info");
    std::fs::create_dir_all(&info).unwrap();
    std::fs::write(info.join("attributes"), "*.py filter=evil\n").unwrap();
    std::fs::write(info.join("grafts"), format!("{}\n", forge.secret_commit)).unwrap();
    std::fs::write(info.join("exclude"), "secret.py\n").unwrap();
    let foreign = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(foreign.path().join("objects")).unwrap();
    let alternates = repo.join(".git/objects/info/alternates");
    let mut lines = std::fs::read_to_string(&alternates).unwrap_or_default();
    let ours = lines.clone();
    lines.push_str(&format!("{}\n", foreign.path().join("objects").display()));
    std::fs::write(&alternates, lines).unwrap();

    let again = m
        .prepare(&PrepareRequest::new("acme/secret", forge.a_url()))
        .unwrap();
    assert!(again.reused);
    assert_eq!(
        git(&repo, &["show", "HEAD:secret.py"]),
        SECRET_TEXT.trim_end()
    );
    assert_eq!(git(&repo, &["for-each-ref", "refs/replace"]), "");
    for gone in ["attributes", "grafts", "exclude"] {
        assert!(!info.join(gone).exists(), "info/{gone} survived");
    }
    assert_eq!(
        std::fs::read_to_string(&alternates).unwrap_or_default(),
        ours,
        "only the mirror's line stays"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

/// Item 6: a repository whose submodules fan out is stopped at the
/// configured count with a clear error, and the failed prepare leaves no
/// workspace behind.
#[test]
fn submodule_fan_out_is_bounded_and_leaves_nothing_half_done() {
    let forge = Forge::new();
    let lib = Upstream::new();
    forge.server.publish("acme/lib", &lib);
    forge
        .server
        .add_account("carol", "carol-token", &["acme/lib", "acme/fan"]);
    let app = tempfile::tempdir().unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    let mut gitmodules = String::new();
    for i in 0..4 {
        gitmodules.push_str(&format!(
            "[submodule \"lib{i}\"]\n\tpath = lib{i}\n\turl = ../lib.git\n"
        ));
        let info = format!("160000,{},lib{i}", lib.head_of("main"));
        git(app.path(), &["update-index", "--add", "--cacheinfo", &info]);
    }
    std::fs::write(app.path().join(".gitmodules"), gitmodules).unwrap();
    git(app.path(), &["add", ".gitmodules"]);
    git(app.path(), &["commit", "-qm", "fan"]);
    forge.server.publish_dir("acme/fan", app.path());

    let base = tempfile::tempdir().unwrap();
    let m = builder(base.path())
        .configure(|c| c.extras.max_submodules = 3)
        .build()
        .unwrap();
    let url = forge.server.url_as("carol", "carol-token", "acme/fan");
    let mut request = PrepareRequest::new("acme/fan", url.clone());
    request.submodules = true;
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert!(
        err.to_string().contains("WORKSPACE_MAX_SUBMODULES"),
        "{err}"
    );
    let name = m.workspace_name("acme/fan").unwrap();
    assert!(!base.path().join(&name).join("repo").exists());

    // Reused: prepared without submodules, then asked with them, the
    // checkout is left without any of them rather than with three.
    let repo = m
        .prepare(&PrepareRequest::new("acme/fan", url))
        .unwrap()
        .path;
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    for i in 0..4 {
        let dir = repo.join(format!("lib{i}"));
        let empty = std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none());
        assert!(empty, "lib{i} was left checked out");
    }
    assert!(!repo.join(".git/modules").exists());
}

/// Item 4: an LFS server, and the repository's `.lfsconfig`, send the
/// client elsewhere (another host, with a cloud-metadata header); nothing
/// reaches it, and an object over the extras limit is refused while it
/// downloads, leaving the pointer in place.
#[test]
fn lfs_requests_are_held_to_the_clone_urls_rules_and_limits() {
    let forge = Forge::new();
    // "Elsewhere": another loopback address, off the allow-list.
    let metadata = HttpStub::start("127.0.0.2", |_| {
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string()
    });
    let content = b"model weights\n".repeat(100_000); // 1.4 MB
    let pointer = forge.server.add_lfs_object(&content);
    let app = tempfile::tempdir().unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        app.path().join(".gitattributes"),
        "*.bin filter=lfs diff=lfs merge=lfs -text\n",
    )
    .unwrap();
    std::fs::write(app.path().join("model.bin"), &pointer).unwrap();
    std::fs::write(
        app.path().join(".lfsconfig"),
        format!(
            "[lfs]\n\turl = http://127.0.0.2:{}/lfs\n",
            metadata.addr.port()
        ),
    )
    .unwrap();
    git(app.path(), &["add", "."]);
    git(app.path(), &["commit", "-qm", "lfs"]);
    forge.republish_secret(app.path());

    let base = tempfile::tempdir().unwrap();
    let prepare = |max_extras_mb: u64, redirect: bool| {
        let m = builder(base.path())
            .configure(|c| {
                c.allowed_hosts = vec!["127.0.0.1".into()];
                c.extras.max_bytes = max_extras_mb << 20;
            })
            .build()
            .unwrap();
        forge.server.set_lfs_redirect(redirect.then(|| {
            format!(
                "http://127.0.0.2:{}/computeMetadata/v1/",
                metadata.addr.port()
            )
        }));
        let mut request = PrepareRequest::new("acme/secret", forge.a_url());
        request.lfs = true;
        m.prepare(&request)
    };
    // The batch answer points at the metadata endpoint: refused.
    let err = prepare(64, true).unwrap_err();
    assert!(err.to_string().contains("127.0.0.2"), "{err}");
    // Over the limit: stopped while downloading, the pointer stays.
    let err = prepare(1, false).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    // Within the limits, from the clone URL's own endpoint.
    let repo = prepare(64, false).unwrap().path;
    assert_eq!(std::fs::read(repo.join("model.bin")).unwrap(), content);
    // Clean to a job's git with the LFS filter, as `git lfs install` sets it.
    let lfs_status = [
        "-c",
        "filter.lfs.clean=git-lfs clean -- %f",
        "-c",
        "filter.lfs.process=git-lfs filter-process",
        "-c",
        "filter.lfs.required=true",
        "status",
        "--porcelain",
    ];
    assert_eq!(git(&repo, &lfs_status), "");
    assert!(metadata.seen().is_empty(), "{:?}", metadata.seen());
    assert_eq!(
        files_containing(base.path(), A_TOKEN),
        Vec::<PathBuf>::new()
    );
}

/// `acme/app`, which A and B may both read, with A's private repository
/// as its submodule `secret` (`../secret.git`, so on the same forge).
fn publish_app_with_secret_submodule(forge: &Forge) -> String {
    forge.server.grant("alice", "acme/app");
    forge.server.grant("bob", "acme/app");
    let app = tempfile::tempdir().unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        app.path().join(".gitmodules"),
        "[submodule \"secret\"]\n\tpath = secret\n\turl = ../secret.git\n",
    )
    .unwrap();
    let info = format!("160000,{},secret", forge.secret.head_of("main"));
    git(app.path(), &["update-index", "--add", "--cacheinfo", &info]);
    git(app.path(), &["add", ".gitmodules"]);
    git(app.path(), &["commit", "-qm", "app"]);
    forge.server.publish_dir("acme/app", app.path());
    forge.server.url_as("alice", A_TOKEN, "acme/app")
}

/// Review finding: a workspace is named by `repo_full_name` and reused
/// whoever asks for the same URL. A's prepare of a shared superproject
/// checked out A's private submodule with A's credential; B's prepare of
/// the same superproject keeps neither that checkout nor its git
/// directory, whether B asks for submodules or not (libgit2 would not
/// fetch a submodule commit it already has, so B's credential would never
/// be checked).
#[test]
fn a_reused_workspace_keeps_no_submodule_another_credential_fetched() {
    let forge = Forge::new();
    let a_url = publish_app_with_secret_submodule(&forge);
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let mut a = PrepareRequest::new("acme/app", a_url);
    a.submodules = true;
    let repo = m.prepare(&a).unwrap().path;
    let secret_file = repo.join("secret").join("secret.py");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), SECRET_TEXT);

    let b_url = forge.b_url("acme/app");
    let b = m
        .prepare(&PrepareRequest::new("acme/app", b_url.clone()))
        .unwrap();
    assert!(!b.reused, "another credential's checkout is cloned afresh");
    assert!(
        b.notes.iter().any(|n| n.contains("another credential")),
        "{:?}",
        b.notes
    );
    assert!(
        !secret_file.exists(),
        "A's submodule checkout was left for B"
    );
    assert!(!repo.join(".git/modules").exists());
    assert_eq!(files_containing(&repo, SECRET_TEXT), Vec::<PathBuf>::new());

    // Asked for, the submodule is fetched with B's credential: refused.
    let again = m.prepare(&a).unwrap();
    assert!(!again.reused, "B prepared it last");
    assert!(secret_file.exists());
    let mut b_sub = PrepareRequest::new("acme/app", b_url);
    b_sub.submodules = true;
    let err = m.prepare(&b_sub).unwrap_err();
    assert!(err.to_string().contains("submodule secret"), "{err}");
    // B got no checkout; the next one B gets is its own again.
    let b_again = m
        .prepare(&PrepareRequest::new("acme/app", forge.b_url("acme/app")))
        .unwrap();
    assert!(!b_again.reused);
    assert!(
        !secret_file.exists(),
        "A's submodule checkout was left for B"
    );
    assert_eq!(
        files_containing(base.path(), SECRET_TEXT),
        Vec::<PathBuf>::new()
    );

    // A's own reuse keeps its submodule (no refetch needed, same credential).
    let a_again = m.prepare(&a).unwrap();
    m.prepare(&a).unwrap();
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), SECRET_TEXT);
    let before = forge.server.seen().len();
    m.prepare(&a).unwrap();
    let fetched_secret = forge.server.seen()[before..]
        .iter()
        .any(|r| r.line.contains("/acme/secret.git/"));
    assert!(
        !fetched_secret,
        "the same credential's reuse refetched the submodule"
    );
    drop(a_again);
}

/// Review finding: a push sends the workspace's content, which came from
/// its clone URL with the credential that prepared it. B names A's
/// workspace (A's repository name, passed through) in a push to B's own
/// repository: refused, nothing is pushed. A may push the same branch to
/// another repository of hers with her own credential.
#[test]
fn a_push_carries_a_workspace_only_where_the_pusher_can_read_its_source() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let repo = a_prepares(&m, &forge);
    let name = m.workspace_name("acme/secret").unwrap();
    git(&repo, &["checkout", "-q", "-b", "fix-1"]);
    std::fs::write(repo.join("fix.txt"), "fix\n").unwrap();
    git(&repo, &["add", "fix.txt"]);
    git(&repo, &["commit", "-qm", "fix"]);

    let err = m
        .push(&name, &PushRequest::new("fix-1", forge.b_url("bob/app")))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert!(err.to_string().contains("another credential"), "{err}");
    assert_eq!(
        forge.server.git("bob/app", &["branch", "--list", "fix-1"]),
        ""
    );

    forge.server.publish("acme/fork", &forge._bob);
    forge.server.grant("alice", "acme/fork");
    let fork = forge.server.url_as("alice", A_TOKEN, "acme/fork");
    let pushed = m.push(&name, &PushRequest::new("fix-1", fork)).unwrap();
    assert_eq!(
        forge.server.git("acme/fork", &["rev-parse", "fix-1"]),
        pushed.commit
    );
}

/// Review finding: a reused checkout keeps an alternates line only to its
/// own mirror (its URL's, by default). A line to another tenant's mirror
/// in the same `.mirrors` folder (left by a period of network sharing, or
/// by a job) is dropped, so B's checkout cannot read A's objects: a server
/// of B's that advertised A's commit id would otherwise get A's tree
/// checked out with no transfer at all (libgit2 asks for nothing it has).
#[test]
fn a_reused_checkout_borrows_from_its_own_mirror_only() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    a_prepares(&m, &forge);
    let b_request = PrepareRequest::new("bob/app", forge.b_url("bob/app"));
    let b_repo = m.prepare(&b_request).unwrap().path;
    let a_mirror = std::fs::read_dir(base.path().join(".mirrors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("acme_secret"))
        .expect("A's mirror");
    let alternates = b_repo.join(".git/objects/info/alternates");
    let own = std::fs::read_to_string(&alternates).unwrap();
    assert!(!own.is_empty(), "B's checkout borrows from its own mirror");
    std::fs::write(
        &alternates,
        format!("{own}{}\n", a_mirror.join("objects").display()),
    )
    .unwrap();
    assert!(has_object(&b_repo, &forge.secret_commit), "set-up");

    let again = m.prepare(&b_request).unwrap();
    assert!(again.reused);
    assert!(!has_object(&b_repo, &forge.secret_commit));
    assert_eq!(std::fs::read_to_string(&alternates).unwrap(), own);
}

/// Review finding: a mirror's folder name carries only 32 bits of its
/// key's digest. A mirror whose state names another key (as a URL crafted
/// to collide would find it) is never borrowed: the clone is made
/// directly, and is complete.
#[test]
fn a_mirror_of_another_key_is_never_borrowed() {
    let forge = Forge::new();
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    a_prepares(&m, &forge);
    let mirror = std::fs::read_dir(base.path().join(".mirrors"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("acme_secret"))
        .expect("A's mirror");
    let state_path = mirror.join("fixsec-mirror.json");
    let mut state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state_path).unwrap()).unwrap();
    state["network"] = "http://127.0.0.1:1/colliding/key.git".into();
    std::fs::write(&state_path, serde_json::to_vec(&state).unwrap()).unwrap();

    let copy = m
        .prepare(&PrepareRequest::new("acme/secret-copy", forge.a_url()))
        .unwrap()
        .path;
    let alternates = copy.join(".git/objects/info/alternates");
    assert_eq!(std::fs::read_to_string(alternates).unwrap_or_default(), "");
    assert_eq!(
        git(&copy, &["rev-parse", "HEAD"]),
        forge.secret.head_of("main")
    );
    assert_eq!(git(&copy, &["fsck", "--no-progress"]), "");
}

/// Review finding 4: checking a commit id fetches branches and tags
/// first, and pull requests only when the commit is on none of them.
#[test]
fn a_commit_check_fetches_pull_requests_only_when_needed() {
    let forge = Forge::new();
    let server_git = |args: &[&str]| {
        let mut all = vec!["-c", "user.name=pr", "-c", "user.email=pr@example.invalid"];
        all.extend_from_slice(args);
        forge.server.git("acme/secret", &all)
    };
    let tree = server_git(&["rev-parse", "main^{tree}"]);
    let pr = server_git(&["commit-tree", &tree, "-p", "main", "-m", "pull request"]);
    server_git(&["update-ref", "refs/pull/1/head", &pr]);
    let below_main = server_git(&["rev-parse", "main~1"]);

    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let on_main = PrepareRequest::new("acme/secret", forge.a_url()).git_ref(&below_main);
    // Without a mirror (depth 1), so only this prepare's fetches count.
    let repo = m.prepare(&on_main.depth(1)).unwrap().path;
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), below_main);
    assert!(!has_object(&repo, &pr), "pull requests were fetched");
    assert_eq!(git(&repo, &["for-each-ref", "refs/fixsec/pull"]), "");

    let on_pr = PrepareRequest::new("acme/secret", forge.a_url()).git_ref(&pr);
    m.prepare(&on_pr.depth(1)).unwrap();
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), pr);
    // Kept hidden, so the next check negotiates with them rather than
    // receiving every pull request again.
    assert_ne!(git(&repo, &["for-each-ref", "refs/fixsec/pull"]), "");
    assert_eq!(git(&repo, &["branch", "--list", "--all", "*pull*"]), "");
}

/// `acme/big` on the forge (read by `carol`, as is `acme/blob`): one
/// submodule, `blob`, whose only file is `content`.
fn publish_with_submodule_holding(forge: &Forge, content: &[u8]) -> String {
    let blob = tempfile::tempdir().unwrap();
    git(blob.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(blob.path().join("data.bin"), content).unwrap();
    git(blob.path(), &["add", "data.bin"]);
    git(blob.path(), &["commit", "-qm", "data"]);
    let blob_head = git(blob.path(), &["rev-parse", "HEAD"]);
    forge.server.publish_dir("acme/blob", blob.path());
    let app = tempfile::tempdir().unwrap();
    git(app.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        app.path().join(".gitmodules"),
        "[submodule \"blob\"]\n\tpath = blob\n\turl = ../blob.git\n",
    )
    .unwrap();
    let info = format!("160000,{blob_head},blob");
    git(app.path(), &["update-index", "--add", "--cacheinfo", &info]);
    git(app.path(), &["add", ".gitmodules"]);
    git(app.path(), &["commit", "-qm", "big"]);
    forge.server.publish_dir("acme/big", app.path());
    forge
        .server
        .add_account("carol", "carol-token", &["acme/big", "acme/blob"]);
    forge.server.url_as("carol", "carol-token", "acme/big")
}

fn manager_with_extras_mb(base: &Path, mb: u64) -> WorkspaceManager {
    builder(base)
        .configure(|c| c.extras.max_bytes = mb << 20)
        .build()
        .unwrap()
}

/// Review finding 3: a submodule's fetch is held to the extras' bytes
/// while it arrives. A 48 MB submodule against a 4 MB limit is stopped
/// early: the server never gets to send most of it.
#[test]
fn a_submodule_fetch_is_stopped_at_the_extras_limit_while_it_arrives() {
    let forge = Forge::new();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..48 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let url = publish_with_submodule_holding(&forge, &noise);
    let base = tempfile::tempdir().unwrap();
    let m = manager_with_extras_mb(base.path(), 4);
    let mut request = PrepareRequest::new("acme/big", url);
    request.submodules = true;
    let sent_before = forge.server.bytes_sent();
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert!(err.to_string().contains("WORKSPACE_MAX_EXTRAS_MB"), "{err}");
    let sent = forge.server.bytes_sent() - sent_before;
    assert!(
        sent < 24 << 20,
        "{} MB were sent before the stop",
        sent >> 20
    );
}

/// Review finding 3: a submodule's working tree counts against the
/// extras' bytes, not only its git directory: a small pack that checks
/// out 8 MB is refused under a 4 MB limit, and nothing of it is left.
#[test]
fn a_submodules_working_tree_counts_against_the_extras_limit() {
    let forge = Forge::new();
    let url = publish_with_submodule_holding(&forge, &vec![0u8; 8 << 20]);
    let base = tempfile::tempdir().unwrap();
    let m = manager_with_extras_mb(base.path(), 4);
    let mut request = PrepareRequest::new("acme/big", url);
    request.submodules = true;
    let err = m.prepare(&request).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InsufficientStorage, "{err}");
    assert!(err.to_string().contains("WORKSPACE_MAX_EXTRAS_MB"), "{err}");
    let name = m.workspace_name("acme/big").unwrap();
    assert!(!base.path().join(name).join("repo").exists());
}

/// Second review: on a repository both tenants may read, A's job commits a
/// fix not yet disclosed. B can neither push A's branch to its own
/// repository, nor find A's commit in the checkout its own prepare of the
/// same repository gets (a reuse would have kept A's branches, reflogs and
/// objects): another credential's checkout is cloned afresh.
#[test]
fn a_tenants_undisclosed_work_on_a_shared_repository_stays_its_own() {
    let forge = Forge::new();
    forge.server.publish("acme/public", &forge._bob);
    forge.server.grant("alice", "acme/public");
    forge.server.grant("bob", "acme/public");
    let base = tempfile::tempdir().unwrap();
    let m = manager(base.path(), MirrorSharing::Repository);
    let a_url = forge.server.url_as("alice", A_TOKEN, "acme/public");
    let repo = m
        .prepare(&PrepareRequest::new("acme/public", a_url))
        .unwrap()
        .path;
    let name = m.workspace_name("acme/public").unwrap();
    git(&repo, &["checkout", "-q", "-b", "fix-1"]);
    std::fs::write(repo.join("fix.txt"), "undisclosed fix\n").unwrap();
    git(&repo, &["add", "fix.txt"]);
    git(&repo, &["commit", "-qm", "undisclosed fix"]);
    let fix = git(&repo, &["rev-parse", "HEAD"]);

    let err = m
        .push(&name, &PushRequest::new("fix-1", forge.b_url("bob/app")))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Refused, "{err}");
    assert_eq!(
        forge.server.git("bob/app", &["branch", "--list", "fix-1"]),
        ""
    );

    let b = m
        .prepare(&PrepareRequest::new(
            "acme/public",
            forge.b_url("acme/public"),
        ))
        .unwrap();
    assert!(!b.reused);
    assert!(!has_object(&b.path, &fix), "A's commit is in B's checkout");
    assert_eq!(git(&b.path, &["branch", "--list", "fix-1"]), "");
    // B's own work may go wherever B's credential pushes.
    git(&b.path, &["checkout", "-q", "-b", "b-fix"]);
    std::fs::write(b.path.join("b.txt"), "b\n").unwrap();
    git(&b.path, &["add", "b.txt"]);
    git(&b.path, &["commit", "-qm", "b"]);
    let pushed = m
        .push(&name, &PushRequest::new("b-fix", forge.b_url("bob/app")))
        .unwrap();
    assert_eq!(
        forge.server.git("bob/app", &["rev-parse", "b-fix"]),
        pushed.commit
    );
}
