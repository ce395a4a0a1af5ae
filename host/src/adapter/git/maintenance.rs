//! Mirror maintenance: a mirror only grows (every fetch adds a pack; a
//! force push or a deleted branch leaves objects nothing names), so it is
//! repacked and pruned on a schedule, without ever dropping an object a
//! borrowing checkout still reaches.
//!
//! A borrower (a workspace, a copy, a clone in progress) reads the
//! mirror's objects through its alternates, and may reach mirror objects
//! the mirror's own references no longer do (a workspace still at a commit
//! upstream force-pushed away). So before git repacks, each borrower is
//! walked from everything that names objects in it (its references and
//! their reflogs, `HEAD`, its index) down to the first objects the mirror
//! holds (the mirror's objects are closed under reachability: whatever
//! such an object reaches is in the mirror too), and each of those gets a
//! temporary reference in the mirror (`refs/fixsec-keep/`). Then git's
//! command line does what libgit2 cannot: `repack -a -d` (one pack of
//! everything reachable, a multi-pack-index), `prune` of loose objects
//! nothing reaches, a commit-graph of the mirror's history. The temporary
//! references go afterwards. A borrower that cannot be walked (unreadable,
//! a link in its git directory) stops the maintenance: nothing is dropped.

use super::cli::{Run, git_cli, needed};
use super::error::GitError;
use git2::{ObjectType, Oid, Repository};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the temporary references live in the mirror.
const KEEP_REFS: &str = "refs/fixsec-keep";

/// What one maintenance did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintained {
    /// Objects the borrowers reach that the mirror's own references do not
    /// necessarily: the temporary references made.
    pub kept_for_borrowers: usize,
}

/// Repack and prune the mirror at `mirror_dir`, keeping every object the
/// checkouts at `borrowers` reach. The caller holds the mirror's lock.
pub fn maintain(mirror_dir: &Path, borrowers: &[PathBuf]) -> Result<Maintained, GitError> {
    let git = git_cli().ok_or_else(|| needed("mirror maintenance"))?;
    let mirror =
        Repository::open_bare(mirror_dir).map_err(|e| GitError::new("opening the mirror", e))?;
    drop_keep_refs(&mirror)?;
    let odb = mirror
        .odb()
        .map_err(|e| GitError::new("opening the mirror's objects", e))?;
    let mut frontier: HashSet<Oid> = HashSet::new();
    for borrower in borrowers {
        if let Some(link) = super::hygiene::link_or_special_in_git_dir(&borrower.join(".git")) {
            return Err(GitError::other(format!(
                "{} has a symbolic link or a special file in its git directory ({link}); the mirror is not \
                 maintained (nothing is dropped) until it is cloned afresh",
                borrower.display()
            )));
        }
        let repo = Repository::open(borrower).map_err(|e| {
            GitError::new(
                &format!("opening {} to see what it borrows", borrower.display()),
                e,
            )
        })?;
        frontier.extend(
            reached_in_mirror(&repo, &|oid| odb.exists(oid))
                .map_err(|e| GitError::new(&format!("walking {}", borrower.display()), e))?,
        );
    }
    let kept_for_borrowers = frontier.len();
    let result = (|| {
        for (i, oid) in frontier.iter().enumerate() {
            mirror
                .reference(
                    &format!("{KEEP_REFS}/{i}"),
                    *oid,
                    true,
                    "fixsec-workspace: kept for a borrower",
                )
                .map_err(|e| GitError::new("marking an object a borrower reaches", e))?;
        }
        let run = Run {
            action: "maintaining the mirror".into(),
            dir: mirror_dir,
            remote: None,
            watch: None,
        };
        git.run(&run, &["repack", "-a", "-d", "-q", "--write-midx"])?;
        git.run(&run, &["prune", "--expire=now"])?;
        // Our commands read no commit-graph (a checkout's could be a job's
        // forgery); the mirror's is written here, by us, for git to read.
        git.run(
            &run,
            &[
                "-c",
                "core.commitGraph=true",
                "commit-graph",
                "write",
                "--reachable",
                "--no-progress",
            ],
        )?;
        Ok(Maintained { kept_for_borrowers })
    })();
    drop_keep_refs(&mirror)?;
    result
}

/// Remove the temporary references (also those a stopped maintenance
/// left).
fn drop_keep_refs(mirror: &Repository) -> Result<(), GitError> {
    let names: Vec<String> = mirror
        .references_glob(&format!("{KEEP_REFS}/*"))
        .map_err(|e| GitError::new("listing the mirror's temporary references", e))?
        .flatten()
        .filter_map(|r| r.name().ok().map(str::to_string))
        .collect();
    for name in names {
        if let Ok(mut r) = mirror.find_reference(&name) {
            r.delete()
                .map_err(|e| GitError::new("removing a temporary reference", e))?;
        }
    }
    Ok(())
}

/// The objects the mirror holds (`in_mirror`) that `repo` reaches first
/// on its way down from its references, reflogs, `HEAD` and index.
fn reached_in_mirror(
    repo: &Repository,
    in_mirror: &dyn Fn(Oid) -> bool,
) -> Result<HashSet<Oid>, git2::Error> {
    let mut tips: Vec<Oid> = Vec::new();
    for reference in repo.references()?.flatten() {
        if let Some(oid) = reference.target() {
            tips.push(oid);
        }
        if let Ok(name) = reference.name()
            && let Ok(log) = repo.reflog(name)
        {
            for entry in log.iter() {
                tips.extend(
                    [entry.id_old(), entry.id_new()]
                        .into_iter()
                        .filter(|o| !o.is_zero()),
                );
            }
        }
    }
    if let Ok(head) = repo.head()
        && let Some(oid) = head.target()
    {
        tips.push(oid);
    }
    if let Ok(log) = repo.reflog("HEAD") {
        for entry in log.iter() {
            tips.extend(
                [entry.id_old(), entry.id_new()]
                    .into_iter()
                    .filter(|o| !o.is_zero()),
            );
        }
    }
    // The index, when there is one: staged blobs count too. One that
    // cannot be read stops the walk (its blobs would go unseen). Blobs of
    // HEAD's own tree are reached through HEAD already.
    if repo.path().join("index").exists() {
        let index = repo.index()?;
        let head_blobs = head_tree_blobs(repo);
        tips.extend(
            index
                .iter()
                .filter(|e| e.mode & 0o170000 != 0o160000 && !head_blobs.contains(&e.id))
                .map(|e| e.id),
        );
    }
    let mut frontier = HashSet::new();
    let mut seen = HashSet::new();
    while let Some(oid) = tips.pop() {
        if !seen.insert(oid) {
            continue;
        }
        if in_mirror(oid) {
            frontier.insert(oid);
            continue;
        }
        // The borrower's own object: what it names is reached too.
        let Ok(object) = repo.find_object(oid, None) else {
            continue; // a reflog entry of an object long gone
        };
        match object.kind() {
            Some(ObjectType::Commit) => {
                let commit = object.peel_to_commit()?;
                tips.push(commit.tree_id());
                tips.extend(commit.parent_ids());
            }
            Some(ObjectType::Tree) => {
                let tree = object.peel_to_tree()?;
                tips.extend(
                    tree.iter()
                        .filter(|e| e.kind() != Some(ObjectType::Commit))
                        .map(|e| e.id()),
                );
            }
            Some(ObjectType::Tag) => {
                if let Some(tag) = object.as_tag() {
                    tips.push(tag.target_id());
                }
            }
            _ => {}
        }
    }
    Ok(frontier)
}

/// The blobs of HEAD's tree (empty when HEAD cannot be read).
fn head_tree_blobs(repo: &Repository) -> HashSet<Oid> {
    let mut blobs = HashSet::new();
    if let Ok(tree) = repo.head().and_then(|h| h.peel_to_tree()) {
        let _ = tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
            if entry.kind() == Some(ObjectType::Blob) {
                blobs.insert(entry.id());
            }
            git2::TreeWalkResult::Ok
        });
    }
    blobs
}
