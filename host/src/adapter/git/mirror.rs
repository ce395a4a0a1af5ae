//! A bare mirror per repository network, whose objects workspaces borrow
//! (git's alternates), so a clone after a cleanup, a healing re-clone, or
//! the clone of a fork fetches only what the mirror does not have.
//!
//! Each URL fetched into a mirror keeps its branches and tags in its own
//! namespace, `refs/fixsec-mirror/<md5 of the URL>/{heads,tags}/`, so forks
//! sharing one mirror never overwrite each other's references, and every
//! reference in the mirror counts as a "have" when the next fetch
//! negotiates. That is why a mirror holds one URL unless the deployment
//! declares a whole network one tenant's (`MirrorSharing`): a server then
//! hears only of tips it advertised itself. Nothing here deletes an
//! object; the maintenance (`maintenance.rs`) repacks and prunes a mirror
//! without dropping any object a borrowing checkout still reaches.

use super::error::GitError;
use super::hygiene::enable_long_paths;
use super::remote::{Remote, fetch_options};
use git2::{AutotagOption, Repository};
use md5::{Digest, Md5};
use std::path::Path;

/// Where a URL's references live in a mirror.
fn namespace(url: &str) -> String {
    format!("refs/fixsec-mirror/{:x}", Md5::digest(url.as_bytes()))
}

/// What one fetch into a mirror did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorFetch {
    /// Bytes received from the remote (the pack).
    pub received_bytes: u64,
    /// The remote's default branch, from its advertisement.
    pub default_branch: Option<String>,
}

/// Open the bare repository at `dir`, creating it if absent.
pub fn open_or_init(dir: &Path) -> Result<Repository, GitError> {
    match Repository::open_bare(dir) {
        Ok(r) => Ok(r),
        Err(_) if !dir.exists() => {
            Repository::init_bare(dir).map_err(|e| GitError::new("creating the mirror", e))
        }
        Err(e) => Err(GitError::new("opening the mirror", e)),
    }
}

/// Fetch every branch and tag of `url` (clean, no credentials) into the
/// mirror `repo` (from [`open_or_init`]), under `url`'s own namespace.
/// Objects the mirror has already (from this URL or from any other in its
/// network) are not sent.
pub fn fetch(repo: &Repository, url: &str, remote: &Remote) -> Result<MirrorFetch, GitError> {
    let ns = namespace(url);
    let action = format!("updating the mirror from {url}");
    GitError::check_start(remote, &action)?;
    let mut anonymous = repo
        .remote_anonymous(url)
        .map_err(|e| GitError::new(&action, e))?;
    let mut fo = fetch_options(remote, None);
    fo.download_tags(AutotagOption::None);
    // Pruned with the remote's branches, so a deleted branch does not come
    // back in a workspace; the objects stay (nothing is garbage-collected).
    fo.prune(git2::FetchPrune::On);
    let specs = [
        format!("+refs/heads/*:{ns}/heads/*"),
        format!("+refs/tags/*:{ns}/tags/*"),
    ];
    anonymous
        .fetch(&specs, Some(&mut fo), None)
        .map_err(|e| GitError::transfer(&action, e, remote, false))?;
    let received_bytes = anonymous.stats().received_bytes() as u64;
    let default_branch = anonymous.list().ok().and_then(|heads| {
        heads
            .iter()
            .find(|h| h.name() == "HEAD")
            .and_then(|h| h.symref_target().map(str::to_string))
            .and_then(|t| t.strip_prefix("refs/heads/").map(str::to_string))
    });
    if let Some(b) = &default_branch {
        repo.reference_symbolic(
            &format!("{ns}/HEAD"),
            &format!("{ns}/heads/{b}"),
            true,
            "fixsec-workspace: default branch",
        )
        .map_err(|e| GitError::new("recording the default branch in the mirror", e))?;
    }
    Ok(MirrorFetch {
        received_bytes,
        default_branch,
    })
}

/// Make `dest` (which must not exist) a repository that borrows the
/// mirror's objects, with `url` as `origin` and the references the mirror
/// holds for `url` as a fresh clone would have them: branches as
/// `origin/*`, tags, and `origin/HEAD`. No working tree is checked out yet:
/// an update (fetch, check out, reset, clean) follows, and fetches only
/// what the mirror lacks.
pub fn borrow(mirror_dir: &Path, url: &str, dest: &Path) -> Result<(), GitError> {
    let mirror =
        Repository::open_bare(mirror_dir).map_err(|e| GitError::new("opening the mirror", e))?;
    let repo = Repository::init(dest).map_err(|e| GitError::new("creating the checkout", e))?;
    enable_long_paths(&repo).map_err(|e| GitError::new("setting core.longpaths", e))?;
    let info = repo.path().join("objects").join("info");
    std::fs::create_dir_all(&info)
        .map_err(|e| GitError::io("creating the objects folder", &info, e))?;
    let alternates = info.join("alternates");
    std::fs::write(&alternates, format!("{}\n", borrow_line(mirror_dir)))
        .map_err(|e| GitError::io("writing", &alternates, e))?;
    // The object database read the (empty) alternates when it opened.
    let repo = Repository::open(dest).map_err(|e| GitError::new("reopening the checkout", e))?;
    repo.remote("origin", url)
        .map_err(|e| GitError::new("adding origin", e))?;
    let ns = namespace(url);
    let refs = mirror
        .references_glob(&format!("{ns}/*"))
        .map_err(|e| GitError::new("reading the mirror's references", e))?;
    for reference in refs.flatten() {
        let (Ok(name), Some(target)) = (reference.name(), reference.target()) else {
            continue; // the symbolic HEAD, set below
        };
        let local = if let Some(b) = name.strip_prefix(&format!("{ns}/heads/")) {
            format!("refs/remotes/origin/{b}")
        } else if let Some(t) = name.strip_prefix(&format!("{ns}/tags/")) {
            format!("refs/tags/{t}")
        } else {
            continue;
        };
        repo.reference(&local, target, true, "fixsec-workspace: from the mirror")
            .map_err(|e| GitError::new("copying a reference from the mirror", e))?;
    }
    let default = mirror
        .find_reference(&format!("{ns}/HEAD"))
        .ok()
        .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string))
        .and_then(|t| t.strip_prefix(&format!("{ns}/heads/")).map(str::to_string));
    if let Some(b) = default {
        repo.reference_symbolic(
            "refs/remotes/origin/HEAD",
            &format!("refs/remotes/origin/{b}"),
            true,
            "fixsec-workspace: default branch",
        )
        .map_err(|e| GitError::new("recording origin/HEAD", e))?;
        // HEAD on the default branch, unborn until the update checks it out.
        repo.set_head(&format!("refs/heads/{b}"))
            .map_err(|e| GitError::new("pointing HEAD at the default branch", e))?;
    }
    Ok(())
}

/// A folder's identity on disk, whatever path spells it: through a
/// symbolic link, another mount of the same file system, or `..`. Two
/// processes on one base directory may spell it differently (the CLI
/// beside the server), so borrowing is recognised by identity, never by
/// comparing alternates lines as strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FolderId(
    #[cfg(unix)] (u64, u64),
    #[cfg(not(unix))] std::path::PathBuf,
);

/// The identity of the folder at `path` (links followed), if it exists.
pub fn folder_id(path: &Path) -> Option<FolderId> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok().filter(|m| m.is_dir())?;
        Some(FolderId((m.dev(), m.ino())))
    }
    #[cfg(not(unix))]
    {
        let p = std::fs::canonicalize(path).ok()?;
        Some(FolderId(std::path::PathBuf::from(
            p.to_string_lossy().to_lowercase(),
        )))
    }
}

/// The lines of the alternates file of the git directory `git_dir`, as
/// written (relative lines are relative to its `objects` folder).
pub(super) fn alternates_lines(git_dir: &Path) -> Vec<String> {
    let file = git_dir.join("objects").join("info").join("alternates");
    std::fs::read_to_string(file)
        .map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The folder an alternates line of `git_dir` names.
pub(super) fn alternate_path(git_dir: &Path, line: &str) -> std::path::PathBuf {
    git_dir.join("objects").join(line)
}

/// The object folders the checkout at `repo_dir` borrows from (its
/// alternates), by identity; compare with [`borrow_id`].
pub fn borrowed(repo_dir: &Path) -> Vec<FolderId> {
    let git_dir = repo_dir.join(".git");
    alternates_lines(&git_dir)
        .iter()
        .filter_map(|l| folder_id(&alternate_path(&git_dir, l)))
        .collect()
}

/// The identity of the object folder a checkout borrowing from the mirror
/// at `mirror_dir` names; none if the mirror has no object folder.
pub fn borrow_id(mirror_dir: &Path) -> Option<FolderId> {
    folder_id(&mirror_dir.join("objects"))
}

/// The alternates line of a workspace borrowing from the mirror at
/// `mirror_dir`.
pub fn borrow_line(mirror_dir: &Path) -> String {
    alternate_line(&mirror_dir.join("objects"))
}

/// An absolute path as an alternates line (forward slashes, as Git for
/// Windows writes them).
fn alternate_line(path: &Path) -> String {
    let s = path.to_string_lossy();
    if cfg!(windows) {
        s.replace('\\', "/")
    } else {
        s.into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_url_has_its_own_namespace() {
        let a = namespace("https://git.example/acme/app.git");
        let b = namespace("https://git.example/fork/app.git");
        assert_ne!(a, b);
        assert!(a.starts_with("refs/fixsec-mirror/") && a.len() == 19 + 32);
        assert!(git2::Reference::is_valid_name(&format!("{a}/heads/main")));
    }

    #[test]
    fn borrowing_is_recognised_whatever_the_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let info = dir.path().join("w/.git/objects/info");
        std::fs::create_dir_all(&info).unwrap();
        let workspace = dir.path().join("w");
        assert!(borrowed(&workspace).is_empty());
        let mirror = dir.path().join("m");
        std::fs::create_dir_all(mirror.join("objects")).unwrap();
        // Spelt through `..`, the way another process might.
        let line = borrow_line(&dir.path().join("w").join("..").join("m"));
        std::fs::write(info.join("alternates"), format!("# note\n{line}\n\n")).unwrap();
        assert_eq!(borrowed(&workspace), vec![borrow_id(&mirror).unwrap()]);
        #[cfg(unix)]
        {
            // Through a symbolic link to the base directory.
            let link = dir.path().join("link");
            std::os::unix::fs::symlink(dir.path(), &link).unwrap();
            let line = borrow_line(&link.join("m"));
            std::fs::write(info.join("alternates"), format!("{line}\n")).unwrap();
            assert_eq!(borrowed(&workspace), vec![borrow_id(&mirror).unwrap()]);
        }
    }
}
