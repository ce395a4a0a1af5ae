//! What a prepare may check out (a branch, a tag, a commit, any reference
//! such as `refs/pull/7/head`, or a refspec) and how each is fetched.
//!
//! Branches are checked out as local branches; everything else detached,
//! so the next prepare of a branch returns to a branch.

use super::error::GitError;
use super::remote::{Remote, fetch_options};
use git2::{AutotagOption, Oid, Repository};

/// Where fetched references land that are neither branches nor tags.
const PRIVATE_NAMESPACE: &str = "refs/fixsec";

/// Where a commit check puts the remote's pull requests when it looks
/// for the commit among them.
const PULL_NAMESPACE: &str = "refs/fixsec/pull";

/// References the host writes itself: the remote's branches and default
/// branch (`origin/HEAD`, which the push rule reads), and its private
/// namespaces. A refspec's destination may not be in them.
const HOST_NAMESPACES: &[&str] = &["refs/remotes/", "refs/fixsec"];

/// A ref a caller asked for, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A short name: the branch of that name if the remote has one, else
    /// the tag.
    Name(String),
    /// `refs/heads/<name>`: a branch and nothing else.
    Branch(String),
    /// `refs/tags/<name>`: a tag and nothing else.
    Tag(String),
    /// Any other full reference (`refs/pull/7/head`, `refs/pull/7/merge`).
    Other(String),
    /// A full commit id (40 or 64 hex digits).
    Commit(Oid),
    /// `src:dst` (a leading `+` is allowed): fetch `src` (a reference or a
    /// commit id), record it as `dst`, check it out.
    Refspec {
        /// A full reference or a commit id on the remote.
        src: String,
        /// A full reference here.
        dst: String,
    },
}

fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn full_ref(s: &str) -> Result<&str, String> {
    if s.starts_with("refs/") && git2::Reference::is_valid_name(s) {
        Ok(s)
    } else {
        Err(format!(
            "{s:?} is not a valid full reference name (refs/...)"
        ))
    }
}

impl GitRef {
    /// Parse what a caller passed as `ref`: a branch or tag name, a full
    /// reference, a full commit id, or `src:dst`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some((src, dst)) = s.strip_prefix('+').unwrap_or(s).split_once(':') {
            let src = if is_commit_id(src) {
                src
            } else {
                full_ref(src)?
            };
            let dst = full_ref(dst)?;
            if HOST_NAMESPACES.iter().any(|ns| dst.starts_with(ns)) {
                return Err(format!(
                    "{dst:?} is in a namespace the host keeps for itself ({}); record the \
                     refspec under refs/heads/ or another refs/ folder",
                    HOST_NAMESPACES.join(", ")
                ));
            }
            return Ok(GitRef::Refspec {
                src: src.to_string(),
                dst: dst.to_string(),
            });
        }
        if is_commit_id(s) {
            return Oid::from_str(s)
                .map(GitRef::Commit)
                .map_err(|e| format!("{s:?} is not a commit id: {}", e.message()));
        }
        if s.starts_with("refs/") {
            let s = full_ref(s)?;
            return Ok(if let Some(b) = s.strip_prefix("refs/heads/") {
                GitRef::Branch(b.to_string())
            } else if let Some(t) = s.strip_prefix("refs/tags/") {
                GitRef::Tag(t.to_string())
            } else {
                GitRef::Other(s.to_string())
            });
        }
        if git2::Reference::is_valid_name(&format!("refs/heads/{s}")) && !s.starts_with('-') {
            return Ok(GitRef::Name(s.to_string()));
        }
        Err(format!(
            "{s:?} is not a branch, tag, full reference, commit id or refspec"
        ))
    }

    /// The branch a clone can check out directly, if this names one.
    pub(super) fn branch_name(&self) -> Option<&str> {
        match self {
            GitRef::Name(b) | GitRef::Branch(b) => Some(b),
            _ => None,
        }
    }
}

/// One fetch from origin: refspecs, depth, what it is for (messages).
/// Returns what origin advertised in that fetch (each reference's object,
/// and for an annotated tag what it peels to).
type Fetch<'a> = dyn Fn(&[String], Option<u32>, &str) -> Result<Vec<Oid>, GitError> + 'a;

/// What to check out after a fetch: a commit, on a local branch or detached.
pub(super) struct Checkout {
    pub commit: Oid,
    pub branch: Option<String>,
}

/// The branch `origin/HEAD` names: what the remote called its default
/// branch when the workspace was cloned.
pub(super) fn remote_default_branch(repo: &Repository) -> Option<String> {
    repo.find_reference("refs/remotes/origin/HEAD")
        .ok()
        .and_then(|r| r.symbolic_target().ok().flatten().map(str::to_string))
        .and_then(|t| t.strip_prefix("refs/remotes/origin/").map(str::to_string))
}

/// The remote's default branch ([`remote_default_branch`]); else the
/// branch checked out now.
pub(super) fn default_branch(repo: &Repository) -> Result<GitRef, GitError> {
    let from_origin = remote_default_branch(repo);
    let current = || {
        repo.head()
            .ok()
            .filter(git2::Reference::is_branch)
            .and_then(|h| h.shorthand().ok().map(str::to_string))
    };
    from_origin
        .or_else(current)
        .map(GitRef::Branch)
        .ok_or_else(|| {
            GitError::not_found(
                "no ref given, and neither origin/HEAD nor HEAD names a branch; pass a ref",
            )
        })
}

fn drop_ref(repo: &Repository, name: &str) -> Result<(), GitError> {
    match repo.find_reference(name) {
        Ok(mut r) => r
            .delete()
            .map_err(|e| GitError::new("dropping an old reference", e)),
        Err(_) => Ok(()),
    }
}

fn peeled(repo: &Repository, name: &str) -> Option<Oid> {
    repo.find_reference(name)
        .and_then(|r| r.peel_to_commit())
        .map(|c| c.id())
        .ok()
}

/// Fetch what `wanted` names from `origin` and say what to check out.
///
/// Old copies of the references are dropped first: a fetch of a reference
/// deleted upstream succeeds without updating it, and a stale one would
/// be checked out.
pub(super) fn fetch(
    repo: &Repository,
    wanted: &GitRef,
    url: &str,
    depth: Option<u32>,
    remote: &Remote,
) -> Result<Checkout, GitError> {
    let run = |specs: &[String], depth: Option<u32>, what: &str| -> Result<Vec<Oid>, GitError> {
        let action = format!("fetching {what} from {url}");
        GitError::check_start(remote, &action)?;
        let mut fo = fetch_options(remote, depth);
        fo.download_tags(AutotagOption::None);
        let mut origin = repo
            .find_remote("origin")
            .map_err(|e| GitError::new(&action, e))?;
        origin
            .fetch(specs, Some(&mut fo), None)
            .map_err(|e| GitError::transfer(&action, e, remote, false))?;
        // The advertisement stays readable after the fetch disconnects.
        Ok(origin
            .list()
            .map(|heads| heads.iter().map(|h| h.oid()).collect())
            .unwrap_or_default())
    };
    let missing =
        |what: String| GitError::not_found(format!("{what} not found at {url}; check the ref"));
    match wanted {
        GitRef::Name(n) | GitRef::Branch(n) => {
            let tracking = format!("refs/remotes/origin/{n}");
            let tag = format!("refs/tags/{n}");
            drop_ref(repo, &tracking)?;
            let mut specs = vec![format!("+refs/heads/{n}:{tracking}")];
            if matches!(wanted, GitRef::Name(_)) {
                drop_ref(repo, &tag)?;
                specs.push(format!("+{tag}:{tag}"));
            }
            run(&specs, depth, n)?;
            if let Some(commit) = peeled(repo, &tracking) {
                return Ok(Checkout {
                    commit,
                    branch: Some(n.clone()),
                });
            }
            peeled(repo, &tag)
                .map(|commit| Checkout {
                    commit,
                    branch: None,
                })
                .ok_or_else(|| {
                    missing(if matches!(wanted, GitRef::Name(_)) {
                        format!("branch or tag {n}")
                    } else {
                        format!("branch {n}")
                    })
                })
        }
        GitRef::Tag(t) => {
            let tag = format!("refs/tags/{t}");
            drop_ref(repo, &tag)?;
            run(&[format!("+{tag}:{tag}")], depth, &tag)?;
            detached(peeled(repo, &tag)).ok_or_else(|| missing(format!("tag {t}")))
        }
        GitRef::Other(r) | GitRef::Refspec { src: r, .. } => {
            let local = private_ref(r);
            drop_ref(repo, &local)?;
            if is_commit_id(r) {
                let oid =
                    Oid::from_str(r).map_err(|e| GitError::new("reading the commit id", e))?;
                return fetch_commit(repo, oid, &run, depth)
                    .map(|commit| record(repo, wanted, commit))?;
            }
            run(&[format!("+{r}:{local}")], depth, r)?;
            let commit = peeled(repo, &local).ok_or_else(|| missing(r.clone()))?;
            record(repo, wanted, commit)
        }
        GitRef::Commit(oid) => fetch_commit(repo, *oid, &run, depth).map(|c| Checkout {
            commit: c,
            branch: None,
        }),
    }
}

fn detached(commit: Option<Oid>) -> Option<Checkout> {
    commit.map(|commit| Checkout {
        commit,
        branch: None,
    })
}

/// `refs/fixsec/...` for a fetched reference that is not a branch or tag.
fn private_ref(r: &str) -> String {
    if is_commit_id(r) {
        format!("{PRIVATE_NAMESPACE}/commit")
    } else {
        format!(
            "{PRIVATE_NAMESPACE}/{}",
            r.strip_prefix("refs/").unwrap_or(r)
        )
    }
}

/// A refspec's `dst` gets the commit (a branch there is checked out as
/// that branch); any other ref is checked out detached.
fn record(repo: &Repository, wanted: &GitRef, commit: Oid) -> Result<Checkout, GitError> {
    let GitRef::Refspec { dst, .. } = wanted else {
        return Ok(Checkout {
            commit,
            branch: None,
        });
    };
    if let Some(b) = dst.strip_prefix("refs/heads/") {
        // The local branch is moved with HEAD by the caller.
        return Ok(Checkout {
            commit,
            branch: Some(b.to_string()),
        });
    }
    repo.reference(dst, commit, true, "fixsec-workspace: fetch refspec")
        .map_err(|e| GitError::new("recording the refspec's destination", e))?;
    Ok(Checkout {
        commit,
        branch: None,
    })
}

/// The commit `oid`, once origin has vouched for it in this fetch: sent
/// by id (a server that allows unadvertised wants checks reachability
/// itself), or reachable from a branch or tag origin advertises now to
/// this credential, or else from a pull request (fetched only then),
/// deepening a shallow clone since the commit may lie below the
/// shallow boundary.
///
/// A commit already on disk (an earlier prepare, a mirror) saves the
/// transfer, never the check: libgit2 does not even ask for an object it
/// has, so its presence says nothing about what this remote serves.
fn fetch_commit(
    repo: &Repository,
    oid: Oid,
    run: &Fetch<'_>,
    depth: Option<u32>,
) -> Result<Oid, GitError> {
    let have = || repo.find_commit(oid).is_ok();
    if !have() {
        match run(
            &[format!("{oid}:{PRIVATE_NAMESPACE}/commit")],
            depth,
            &oid.to_string(),
        ) {
            // Absent before, present now: this remote sent it.
            Ok(_) if have() => return Ok(oid),
            Ok(_) => {}
            Err(e) if e.is_stopped() => return Err(e),
            Err(e) => {
                tracing::info!(commit = %oid, error = %e.message, "fetch by id refused; fetching every ref")
            }
        }
    }
    let branches_and_tags = [
        "+refs/heads/*:refs/remotes/origin/*".to_string(),
        "+refs/tags/*:refs/tags/*".to_string(),
    ];
    let pull_requests = [format!("+refs/pull/*:{PULL_NAMESPACE}/*")];
    let mut found = false;
    for (specs, what) in [
        (&branches_and_tags[..], "every branch and tag"),
        (&pull_requests[..], "every pull request"),
    ] {
        found = vouched_by(repo, oid, run, specs, depth, what)?;
        if found {
            break;
        }
    }
    // The pull-request references stay (hidden under refs/fixsec): their
    // objects are on disk anyway, and the next check's fetch offers them
    // as `have`s instead of receiving every pull request again.
    if found {
        return Ok(oid);
    }
    Err(GitError::not_found(format!(
        "commit {oid} is not reachable from any branch, tag or pull request of the remote; \
         check the commit id"
    )))
}

/// Fetch `specs` and say whether `oid` is reachable from what origin
/// advertises; a shallow clone is deepened once if not (the commit may lie
/// below the shallow boundary).
fn vouched_by(
    repo: &Repository,
    oid: Oid,
    run: &Fetch<'_>,
    specs: &[String],
    depth: Option<u32>,
    what: &str,
) -> Result<bool, GitError> {
    let tips = run(specs, depth, what)?;
    if reachable(repo, &tips, oid) {
        return Ok(true);
    }
    if !repo.is_shallow() {
        return Ok(false);
    }
    let tips = run(
        specs,
        Some(i32::MAX as u32),
        &format!("{what}, unshallowed"),
    )?;
    Ok(reachable(repo, &tips, oid))
}

/// Whether commit `oid` is here and is one of `tips` or an ancestor of one.
fn reachable(repo: &Repository, tips: &[Oid], oid: Oid) -> bool {
    if repo.find_commit(oid).is_err() {
        return false;
    }
    let Ok(mut walk) = repo.revwalk() else {
        return false;
    };
    let mut pushed = false;
    for tip in tips {
        let Ok(commit) = repo
            .find_object(*tip, None)
            .and_then(|o| o.peel_to_commit())
        else {
            continue;
        };
        if commit.id() == oid {
            return true;
        }
        pushed |= walk.push(commit.id()).is_ok();
    }
    pushed && walk.flatten().any(|c| c == oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_parse_by_shape() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(GitRef::parse("main"), Ok(GitRef::Name("main".into())));
        assert_eq!(
            GitRef::parse("feature/x"),
            Ok(GitRef::Name("feature/x".into()))
        );
        assert_eq!(
            GitRef::parse("refs/heads/dev"),
            Ok(GitRef::Branch("dev".into()))
        );
        assert_eq!(
            GitRef::parse("refs/tags/v1.0"),
            Ok(GitRef::Tag("v1.0".into()))
        );
        assert_eq!(
            GitRef::parse("refs/pull/7/head"),
            Ok(GitRef::Other("refs/pull/7/head".into()))
        );
        assert_eq!(
            GitRef::parse(sha),
            Ok(GitRef::Commit(Oid::from_str(sha).unwrap()))
        );
        assert_eq!(
            GitRef::parse("+refs/pull/7/merge:refs/heads/pr-7"),
            Ok(GitRef::Refspec {
                src: "refs/pull/7/merge".into(),
                dst: "refs/heads/pr-7".into()
            })
        );
        for bad in [
            "",
            "a..b",
            "-x",
            "bad name",
            "refs/",
            "main:dev",
            "refs/heads/a:b",
            "refs/heads/main:refs/remotes/origin/HEAD",
            "+refs/pull/1/head:refs/remotes/origin/main",
            "refs/heads/x:refs/fixsec/commit",
            "refs/heads/x:refs/fixsec-mirror/x",
            "x~1",
            "HEAD^",
        ] {
            assert!(GitRef::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
