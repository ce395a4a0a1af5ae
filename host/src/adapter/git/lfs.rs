//! Git LFS objects in place of their pointer files, when a prepare asks.
//!
//! libgit2 has no LFS, so this runs Debian's `git-lfs` (`git lfs pull`)
//! in the checkout. The caller's credential reaches it through a
//! credential helper given on the command line that reads it from this
//! child's environment: nothing is written to disk, the command line
//! carries no secret, and the helper answers only for the clone URL's own
//! host. The child runs with an empty `HOME` and no system config (no
//! other credential helper, no user hooks), with hooks off, and is killed
//! when the service shuts down.

use super::remote::{GitError, Remote};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The credential helper: answers `get` for the allowed host only (ports
/// aside), from the environment.
const HELPER: &str = "!f() { test \"$1\" = get || exit 0; h=; \
    while IFS= read -r l && [ -n \"$l\" ]; do case \"$l\" in host=*) h=${l#host=};; esac; done; \
    h=${h%:*}; \
    if [ -n \"$FIXSEC_LFS_SECRET\" ] && [ \"$h\" = \"$FIXSEC_LFS_HOST\" ]; then \
    printf 'username=%s\\npassword=%s\\n' \"$FIXSEC_LFS_USER\" \"$FIXSEC_LFS_SECRET\"; fi; }; f";

/// Whether any `.gitattributes` in the checkout routes files through LFS.
fn uses_lfs(repo_dir: &Path) -> bool {
    walkdir::WalkDir::new(repo_dir)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| e.file_name() != ".git")
        .flatten()
        .filter(|e| e.file_name() == ".gitattributes" && e.file_type().is_file())
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|text| text.contains("filter=lfs")))
}

/// Replace the LFS pointer files of the checkout at `repo_dir` with their
/// objects, fetched from `url`'s LFS endpoint with `remote`'s credential.
pub fn pull(repo_dir: &Path, url: &str, remote: &Remote) -> Result<(), GitError> {
    if !uses_lfs(repo_dir) {
        return Ok(());
    }
    let action = format!("fetching Git LFS objects from {url}");
    GitError::check_start(remote, &action)?;
    let home = tempfile::tempdir()
        .map_err(|e| GitError::io("creating", Path::new("a temporary HOME"), e))?;
    let mut cmd = Command::new("git");
    cmd.current_dir(repo_dir)
        .env("HOME", home.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .env(
            "FIXSEC_LFS_HOST",
            remote.host.as_deref().unwrap_or_default(),
        );
    if let Some(c) = &remote.credentials {
        cmd.env("FIXSEC_LFS_USER", &c.username)
            .env("FIXSEC_LFS_SECRET", &c.secret);
    }
    cmd.args(["-c", "core.hooksPath=/dev/null", "-c", "credential.helper="])
        .args(["-c", &format!("credential.helper={HELPER}")])
        .args(["-c", "filter.lfs.clean=git-lfs clean -- %f"])
        .args(["-c", "filter.lfs.smudge=git-lfs smudge -- %f"])
        .args(["-c", "filter.lfs.process=git-lfs filter-process"])
        .args(["-c", "filter.lfs.required=true"])
        .args(["lfs", "pull", "origin"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| GitError {
        message: format!("{action}: cannot run git ({e}); install git and git-lfs on this host"),
        not_found: false,
        stopped: None,
        rejected: false,
    })?;
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().ok().flatten() {
            break status;
        }
        if let Some(stop) = remote.guard.as_ref().and_then(|g| {
            g.cancel
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some(super::Stop::Cancelled)
        }) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(GitError::stopped(&action, stop));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    let detail = stderr
        .trim()
        .lines()
        .last()
        .unwrap_or("no detail")
        .to_string();
    let hint = if stderr.contains("'lfs' is not a git command") {
        "git-lfs is not installed on this host (Debian: apt-get install git-lfs)"
    } else if stderr.contains("401") || stderr.to_lowercase().contains("credentials") {
        "the LFS server wants a credential with read access in the clone URL"
    } else {
        "check the repository's LFS server"
    };
    Err(GitError {
        message: format!("{action}: {detail}; {hint}"),
        not_found: false,
        stopped: None,
        rejected: false,
    })
}
