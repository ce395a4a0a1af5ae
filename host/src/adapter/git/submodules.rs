//! Submodules, recursively, when a prepare asks for them.
//!
//! `.gitmodules` is the repository's content, so the caller does not
//! control it: each URL is resolved (relative ones against the
//! superproject's URL, as git does), then checked as a clone URL is
//! (transport, allow-list, network rules) by the caller of
//! [`update_submodules`], and any credential written in it is dropped. The
//! caller's own credential goes only to the superproject's host (the
//! credential callback in `remote.rs` refuses every other host). Each
//! submodule gets the same hygiene and clean as the superproject.

use super::budget::ExtrasBudget;
use super::error::GitError;
use super::hygiene::reset_git_dir;
use super::remote::{Remote, fetch_options};
use git2::build::CheckoutBuilder;
use git2::{Repository, SubmoduleUpdateOptions};
use std::path::Path;
use std::sync::Arc;

/// Submodules of submodules go this deep at most.
const MAX_NESTING: usize = 8;

/// Checks a submodule's resolved URL; the URL to fetch from (without
/// credentials), or why not.
pub type UrlCheck<'a> = dyn Fn(&str) -> Result<String, String> + 'a;

/// `url` from `.gitmodules`, resolved against the superproject's `base`
/// URL when it is relative (`./x`, `../x`): `base` is taken as a folder,
/// each `../` drops one of its components.
pub fn resolve_url(base: &str, url: &str) -> String {
    if !(url.starts_with("./") || url.starts_with("../")) {
        return url.to_string();
    }
    let mut base = base.trim_end_matches('/').to_string();
    // Never climb into the scheme and host (`https://host`), nor past an
    // scp-like `host:`.
    let floor = base
        .find("://")
        .map(|i| base[i + 3..].find('/').map_or(base.len(), |j| i + 3 + j))
        .or_else(|| base.find(':').map(|i| i + 1))
        .unwrap_or(0);
    let mut rest = url;
    loop {
        if let Some(r) = rest.strip_prefix("./") {
            rest = r;
        } else if let Some(r) = rest.strip_prefix("../") {
            let cut = base[floor..].rfind('/').map_or(floor, |i| floor + i);
            base.truncate(cut);
            rest = r;
        } else {
            break;
        }
    }
    if base.ends_with(':') {
        format!("{base}{rest}")
    } else {
        format!("{base}/{rest}")
    }
}

/// Initialize, fetch and check out every submodule of the repository at
/// `repo_dir` (whose own URL is `base_url`), recursively, each reset and
/// cleaned, within `budget` (count, bytes, time: the repository decides
/// how many there are). Returns how many were checked out.
pub fn update_submodules(
    repo_dir: &Path,
    base_url: &str,
    remote: &Remote,
    check: &UrlCheck<'_>,
    budget: &ExtrasBudget,
) -> Result<u32, GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    update_in(&repo, base_url, remote, check, budget, 0)
}

/// Take the submodules of the checkout at `repo_dir` out again: each
/// submodule's folder emptied and `.git/modules` removed, so a prepare
/// that stopped half-way leaves the superproject as a clone without
/// submodules has it.
pub fn remove_submodules(repo_dir: &Path) -> Result<(), GitError> {
    let repo = Repository::open(repo_dir).map_err(|e| GitError::new("opening repository", e))?;
    let index = repo
        .index()
        .map_err(|e| GitError::new("reading the index", e))?;
    for entry in index.iter().filter(|e| e.mode & 0o170000 == 0o160000) {
        let path = repo_dir.join(String::from_utf8_lossy(&entry.path).as_ref());
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            for child in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                let p = child.path();
                let gone = if child.file_type().is_ok_and(|t| t.is_dir()) {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                gone.map_err(|e| GitError::io("removing a submodule's files", &p, e))?;
            }
        }
    }
    let modules = repo.path().join("modules");
    if modules.exists() {
        std::fs::remove_dir_all(&modules).map_err(|e| GitError::io("removing", &modules, e))?;
    }
    Ok(())
}

fn update_in(
    repo: &Repository,
    base_url: &str,
    remote: &Remote,
    check: &UrlCheck<'_>,
    budget: &ExtrasBudget,
    nesting: usize,
) -> Result<u32, GitError> {
    let submodules = repo
        .submodules()
        .map_err(|e| GitError::new("reading .gitmodules", e))?;
    if !submodules.is_empty() && nesting >= MAX_NESTING {
        return Err(GitError::not_found(format!(
            "submodules nest deeper than {MAX_NESTING} levels; not followed"
        )));
    }
    let mut count = 0;
    for sm in submodules {
        let name = sm.name().unwrap_or("(unnamed)").to_string();
        let raw = sm.url().ok().flatten().unwrap_or_default().to_string();
        let fail = |why: String| GitError::other(format!("submodule {name} ({raw}): {why}"));
        budget.count_submodule(&format!("submodule {name}"))?;
        let url = check(&resolve_url(base_url, &raw)).map_err(fail)?;
        // A submodule cloned by an earlier prepare: back to a clean git dir.
        if let Ok(existing) = sm.open() {
            reset_git_dir(&existing, None)?;
        }
        let mut sm = sm;
        sm.init(true)
            .map_err(|e| GitError::new(&format!("initializing submodule {name}"), e))?;
        repo.config()
            .and_then(|mut c| c.set_str(&format!("submodule.{name}.url"), &url))
            .map_err(|e| GitError::new(&format!("setting the URL of submodule {name}"), e))?;
        let mut sm = repo
            .find_submodule(&name)
            .map_err(|e| GitError::new(&format!("reloading submodule {name}"), e))?;
        let action = format!("fetching submodule {name} from {url}");
        GitError::check_start(remote, &action)?;
        // The fetch is held to what is left of the extras' bytes and time
        // while it arrives, not only counted after.
        let fetching = Remote {
            guard: remote
                .guard
                .as_ref()
                .map(|g| Arc::new(g.for_extras(budget.remaining_bytes(), budget.deadline()))),
            ..remote.clone()
        };
        let mut checkout = CheckoutBuilder::new();
        checkout.force();
        let mut options = SubmoduleUpdateOptions::new();
        options
            .fetch(fetch_options(&fetching, None))
            .checkout(checkout)
            .allow_fetch(true);
        sm.update(true, Some(&mut options))
            .map_err(|e| GitError::transfer(&action, e, &fetching, false))?;
        let sub = sm
            .open()
            .map_err(|e| GitError::new(&format!("opening submodule {name}"), e))?;
        let workdir = sub.workdir().unwrap_or(sm.path()).to_path_buf();
        // Its git directory and its working tree (a small pack can check
        // out large files).
        let cleaned = super::clean(&sub, &workdir, &super::KeepIgnored::none())?;
        budget.spend_bytes(
            crate::adapter::fs::dir_size(sub.path()) + cleaned.tracked_bytes,
            &format!("submodule {name}"),
        )?;
        count += 1 + update_in(&sub, &url, remote, check, budget, nesting + 1)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::resolve_url;

    #[test]
    fn relative_urls_resolve_as_git_resolves_them() {
        let base = "https://git.example/acme/app.git";
        for (url, want) in [
            ("../lib.git", "https://git.example/acme/lib.git"),
            ("../../other/lib.git", "https://git.example/other/lib.git"),
            ("./sub.git", "https://git.example/acme/app.git/sub.git"),
            ("../../../../up.git", "https://git.example/up.git"),
            (
                "https://elsewhere.example/x.git",
                "https://elsewhere.example/x.git",
            ),
        ] {
            assert_eq!(resolve_url(base, url), want, "{url}");
        }
        assert_eq!(
            resolve_url("git@git.example:acme/app.git", "../lib.git"),
            "git@git.example:acme/lib.git"
        );
        assert_eq!(
            resolve_url("/srv/git/acme/app", "../lib"),
            "/srv/git/acme/lib"
        );
    }
}
