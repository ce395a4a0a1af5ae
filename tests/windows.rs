//! Windows semantics, proven on the Windows build of the host under Wine
//! (`scripts/test-windows`): a file held open by another process without
//! `FILE_SHARE_DELETE`, git's read-only files, paths over 260 characters.
//! Elsewhere only the path-budget check runs; the same faults are injected
//! through the removal seam in `tests/it/cleanup.rs`.
//!
//! The harness is libtest-mimic rather than libtest so that this executable
//! can also be the other process: started with `FIXSEC_HOLD_FILE` set, it
//! opens that file the way an editor, a virus scanner or a running program
//! does, says `holding`, and keeps it open until its stdin closes.
//!
//! One file of about 500 lines on purpose: a second binary would link the
//! host again under Wine (minutes per CI run), and a module tree here would
//! split one harness's registry from the tests it lists.

#[path = "it/support/mod.rs"]
mod support;

use fixsec_policy_default::naming::MAX_NAME_LEN;
use libtest_mimic::{Arguments, Failed, Trial};

/// Windows' `MAX_PATH` (260) less the terminating NUL: the longest path a
/// program that is not long-path aware can open, and Git for Windows'
/// limit unless `core.longpaths` is set.
const MAX_PATH_CHARS: usize = 259;

/// A base directory a Windows deployment would plausibly use.
const TYPICAL_WINDOWS_BASE: &str = r"C:\ProgramData\fixsec\ws";

/// Room a deep repository needs inside its work tree: deep Java and
/// Angular trees reach 150 and more characters.
const DEEP_REPOSITORY_PATH: usize = 150;

fn main() {
    #[cfg(windows)]
    if let Some(path) = std::env::var_os(windows::HOLD_ENV) {
        windows::hold(path.into());
    }
    let args = Arguments::from_args();
    #[cfg_attr(not(windows), allow(unused_mut))]
    let mut trials = vec![Trial::test(
        "default_names_leave_a_deep_repository_room_under_max_path",
        default_names_leave_a_deep_repository_room_under_max_path,
    )];
    #[cfg(windows)]
    trials.extend(windows::trials());
    libtest_mimic::run(&args, trials).exit();
}

/// The longest names the default policy makes, in a typical Windows base,
/// leave a deep repository's paths under `MAX_PATH`; the original tool's
/// names (up to 149 characters for GitHub's longest) did not.
fn default_names_leave_a_deep_repository_room_under_max_path() -> Result<(), Failed> {
    let base = tempfile::tempdir()?;
    let m = support::manager(base.path());
    let longest_github = format!("{}/{}", "o".repeat(39), "r".repeat(100));
    let inputs = [
        "facebook/react",
        longest_github.as_str(),
        "a-fairly-long-organisation-name/an-even-longer-repository-name-for-tests",
        "gitlab.example.com/group/subgroup/project",
        "ünïcödé/répö",
    ];
    for input in inputs {
        let name = m.workspace_name(input)?;
        if name.len() > MAX_NAME_LEN {
            return Err(format!("{input} -> {name}: over {MAX_NAME_LEN} characters").into());
        }
        // <base>\<name>\repo\<path inside the repository>
        let prefix = TYPICAL_WINDOWS_BASE.len() + 1 + name.len() + r"\repo\".len();
        let room = MAX_PATH_CHARS - prefix;
        if room < DEEP_REPOSITORY_PATH {
            return Err(format!("{input} -> {name} leaves {room} characters").into());
        }
    }
    let original = longest_github.len() + 1 + 8;
    let original_room =
        MAX_PATH_CHARS.saturating_sub(TYPICAL_WINDOWS_BASE.len() + 1 + original + 6);
    assert!(
        original_room < DEEP_REPOSITORY_PATH,
        "the original's name left {original_room}"
    );
    Ok(())
}

#[cfg(windows)]
mod windows {
    use super::support::{self, Upstream};
    use fixsec_workspace::RemovalConfig;
    use fixsec_workspace::{PrepareRequest, WorkspaceManager};
    use libtest_mimic::{Failed, Trial};
    use std::io::{BufRead, BufReader, Read, Write};
    use std::os::windows::fs::OpenOptionsExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, ChildStdin, Command, Stdio};
    use std::time::{Duration, Instant};

    /// Set to a path: this process holds that file open and nothing else.
    pub const HOLD_ENV: &str = "FIXSEC_HOLD_FILE";
    /// Set: the holder also shares deletion (`FILE_SHARE_DELETE`), as Rust's
    /// std and many runtimes open files.
    const HOLD_SHARING_DELETE_ENV: &str = "FIXSEC_HOLD_SHARING_DELETE";
    /// `ERROR_SHARING_VIOLATION`: "The process cannot access the file
    /// because it is being used by another process" (Python's WinError 32).
    const ERROR_SHARING_VIOLATION: i32 = 32;
    /// `ERROR_ACCESS_DENIED` (WinError 5), as for a read-only file.
    const ERROR_ACCESS_DENIED: i32 = 5;
    /// `ERROR_DIR_NOT_EMPTY` (145), as for a folder holding a delete-pending file.
    const ERROR_DIR_NOT_EMPTY: i32 = 145;
    const FILE_SHARE_READ: u32 = 0x1;
    const FILE_SHARE_DELETE: u32 = 0x4;

    pub fn trials() -> Vec<Trial> {
        vec![
            Trial::test(
                "a_file_held_open_blocks_plain_deletion_with_error_32",
                a_file_held_open_blocks_plain_deletion_with_error_32,
            ),
            Trial::test(
                "removal_waits_out_a_handle_released_inside_the_retry_window",
                removal_waits_out_a_handle_released_inside_the_retry_window,
            ),
            Trial::test(
                "a_handle_never_released_fails_honestly_and_cleanup_finishes_later",
                a_handle_never_released_fails_honestly_and_cleanup_finishes_later,
            ),
            Trial::test(
                "background_removal_frees_the_name_while_a_file_is_held",
                background_removal_frees_the_name_while_a_file_is_held,
            ),
            Trial::test(
                "a_delete_pending_file_is_waited_out",
                a_delete_pending_file_is_waited_out,
            ),
            Trial::test(
                "a_prepare_while_a_checked_out_file_is_held_tells_the_truth",
                a_prepare_while_a_checked_out_file_is_held_tells_the_truth,
            ),
            Trial::test("read_only_files_are_removed", read_only_files_are_removed),
            Trial::test(
                "paths_over_260_characters_are_prepared_reused_and_removed",
                paths_over_260_characters_are_prepared_reused_and_removed,
            ),
        ]
    }

    /// The holder's side: open `path` sharing only reads, as editors and
    /// scanners do, and keep it open until stdin closes.
    pub fn hold(path: PathBuf) -> ! {
        let share = if std::env::var_os(HOLD_SHARING_DELETE_ENV).is_some() {
            FILE_SHARE_READ | FILE_SHARE_DELETE
        } else {
            FILE_SHARE_READ
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .share_mode(share)
            .open(&path)
            .unwrap_or_else(|e| panic!("holder: opening {}: {e}", path.display()));
        println!("holding");
        std::io::stdout().flush().unwrap();
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        drop(file);
        std::process::exit(0);
    }

    /// Another process holding a file open without `FILE_SHARE_DELETE`.
    struct Holder {
        child: Child,
        stdin: Option<ChildStdin>,
    }

    impl Holder {
        /// Start the holder on `path` and wait until it has the file open.
        fn hold(path: &Path) -> Holder {
            Self::start(path, false)
        }

        /// The same, sharing deletion: deleting the file then succeeds but
        /// (on Windows) its name stays until the handle closes.
        fn hold_sharing_delete(path: &Path) -> Holder {
            Self::start(path, true)
        }

        fn start(path: &Path, sharing_delete: bool) -> Holder {
            let mut command = Command::new(std::env::current_exe().unwrap());
            if sharing_delete {
                command.env(HOLD_SHARING_DELETE_ENV, "1");
            }
            let mut child = command
                .env(HOLD_ENV, path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("starting the holder process");
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert_eq!(line.trim(), "holding", "the holder did not open the file");
            let stdin = child.stdin.take();
            Holder { child, stdin }
        }

        /// Close the handle (the holder exits) and wait until it is closed.
        fn release(mut self) -> Instant {
            drop(self.stdin.take());
            let status = self.child.wait().unwrap();
            assert!(status.success(), "holder exited with {status}");
            Instant::now()
        }

        /// Release after `delay`, on another thread.
        fn release_after(self, delay: Duration) -> std::thread::JoinHandle<Instant> {
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                self.release()
            })
        }
    }

    impl Drop for Holder {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// A manager whose removals wait about 2.75 s in all (waits of 50, 100,
    /// 200, then 400 ms): room for a handle released after 600 ms.
    fn patient_manager(base: &Path) -> Result<WorkspaceManager, fixsec_workspace::Error> {
        support::builder(base)
            .removal(RemovalConfig {
                max_retries: 10,
                initial_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(400),
            })
            .build()
    }

    fn prepare(m: &WorkspaceManager, up: &Upstream, repo: &str) -> (String, PathBuf) {
        let out = m
            .prepare(&PrepareRequest::new(repo, up.url()).branch("main"))
            .unwrap();
        (out.name, out.path)
    }

    /// The product's reason to exist, reproduced: what a naive clean-up
    /// does fails here with WinError 32 and WinError 5.
    fn a_file_held_open_blocks_plain_deletion_with_error_32() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = support::manager(base.path());
        let (_, repo) = prepare(&m, &up, "acme/plain");
        let held = repo.join("src").join("lib.rs");
        let holder = Holder::hold(&held);
        let err = std::fs::remove_file(&held).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ERROR_SHARING_VIOLATION), "{err}");
        holder.release();
        std::fs::remove_file(&held)?;

        // git writes its objects read-only; a plain recursive delete stops there.
        let err = std::fs::remove_dir_all(repo.join(".git")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ERROR_ACCESS_DENIED), "{err}");
        Ok(())
    }

    fn removal_waits_out_a_handle_released_inside_the_retry_window() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = patient_manager(base.path())?;
        let (name, repo) = prepare(&m, &up, "acme/held");
        let holder = Holder::hold(&repo.join("src").join("lib.rs"));
        let released = holder.release_after(Duration::from_millis(600));
        let started = Instant::now();
        let report = m.remove(&name)?;
        let finished = Instant::now();
        let released = released.join().unwrap();
        assert!(report.removed, "{report:?}");
        assert!(
            report.attempts > 1,
            "the first attempts met the open file: {report:?}"
        );
        assert!(report.error.is_none(), "{report:?}");
        assert!(report.remaining.is_empty(), "{report:?}");
        assert!(
            released > started && finished >= released,
            "removal finished only after the handle closed"
        );
        assert!(!base.path().join(&name).exists());
        assert!(m.get(&name)?.is_none());
        assert_eq!(m.stats()?.pending_deletions, 0);
        eprintln!(
            "removed after {} attempts, {:?} after the handle closed",
            report.attempts,
            finished - released
        );
        Ok(())
    }

    fn a_handle_never_released_fails_honestly_and_cleanup_finishes_later() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = support::builder(base.path())
            .removal(support::fast_removal(4))
            .build()?;
        let (name, repo) = prepare(&m, &up, "acme/stuck");
        let (bystander, bystander_repo) = prepare(&m, &up, "acme/bystander");
        let held = repo.join("src").join("lib.rs");
        let holder = Holder::hold(&held);

        let report = m.remove(&name)?;
        assert!(!report.removed, "{report:?}");
        assert_eq!(report.attempts, 4, "{report:?}");
        let error = report.error.as_deref().unwrap_or_default();
        assert!(error.contains("lib.rs"), "names the locked file: {error}");
        assert!(error.contains("os error 32"), "and why: {error}");
        assert!(
            error.contains("every cleanup retries it"),
            "and what next: {error}"
        );
        assert!(
            report
                .remaining
                .iter()
                .any(|p| Path::new(p).ends_with("src/lib.rs")),
            "{report:?}"
        );
        assert_eq!(m.stats()?.pending_deletions, 1);
        assert!(
            bystander_repo.join("src").join("lib.rs").is_file(),
            "{bystander} untouched"
        );

        // Wine lets the folder be renamed into .trash/ with the file open
        // inside; NTFS does not, and the folder is deleted in place with a
        // note in .trash/ (that path: tests/it/cleanup.rs, injected faults).
        let trash: Vec<PathBuf> = base
            .path()
            .join(".trash")
            .read_dir()?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        assert_eq!(trash.len(), 1, "{trash:?}");
        let left = if base.path().join(&name).exists() {
            held.clone()
        } else {
            trash[0].join("repo").join("src").join("lib.rs")
        };
        assert!(left.is_file(), "only the held file is left: {left:?}");

        // Still held: cleanup tries again and cannot finish.
        let report = m.cleanup(Some(1000.0))?;
        assert_eq!(report.pending_deletions_finished, 0, "{report:?}");
        assert!(left.is_file());

        holder.release();
        let report = m.cleanup(Some(1000.0))?;
        assert_eq!(report.pending_deletions_finished, 1, "{report:?}");
        assert!(!base.path().join(&name).exists());
        assert_eq!(base.path().join(".trash").read_dir()?.count(), 0);
        assert_eq!(m.stats()?.pending_deletions, 0);
        assert_eq!(m.stats()?.total_workspaces, 1);
        Ok(())
    }

    /// `DELETE /workspace/{name}?background=true`: the name is free at once
    /// (Wine allows the rename; on NTFS the deletion would run in place,
    /// before the answer), the deletion waits out the handle behind it.
    fn background_removal_frees_the_name_while_a_file_is_held() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = patient_manager(base.path())?;
        let (name, repo) = prepare(&m, &up, "acme/background");
        let holder = Holder::hold(&repo.join(".git").join("HEAD"));
        let report = m.remove_in_background(&name)?;
        assert!(report.pending_deletion, "{report:?}");
        assert!(m.get(&name)?.is_none(), "the name is free at once");
        assert_eq!(m.stats()?.pending_deletions, 1);
        holder
            .release_after(Duration::from_millis(300))
            .join()
            .unwrap();
        m.wait_for_background_deletions();
        assert_eq!(m.stats()?.pending_deletions, 0);
        assert_eq!(base.path().join(".trash").read_dir()?.count(), 0);
        Ok(())
    }

    /// A holder that shares deletion: the file's deletion "succeeds" but
    /// its name stays until the handle closes, so its folder cannot go
    /// (error 145) and the name cannot be reused (error 32 here; Windows
    /// says 5). The retries wait that out too.
    fn a_delete_pending_file_is_waited_out() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = patient_manager(base.path())?;
        let (name, repo) = prepare(&m, &up, "acme/pending");
        let held = repo.join("src").join("lib.rs");
        let holder = Holder::hold_sharing_delete(&held);
        // Baseline: what a naive delete meets.
        std::fs::remove_file(&held)?;
        assert!(held.exists(), "the name stays while the handle is open");
        let err = std::fs::remove_dir(repo.join("src")).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(ERROR_DIR_NOT_EMPTY), "{err}");

        let released = holder.release_after(Duration::from_millis(600));
        let report = m.remove(&name)?;
        released.join().unwrap();
        assert!(report.removed, "{report:?}");
        assert!(report.attempts > 1, "{report:?}");
        assert!(!base.path().join(&name).exists());
        assert_eq!(m.stats()?.pending_deletions, 0);
        Ok(())
    }

    /// An editor holds a file the next prepare must change: the reset fails
    /// (error 32), the default policy clones afresh, and the old tree waits
    /// in `.trash/` for the handle. (On NTFS the old tree cannot be renamed
    /// away either; the prepare then fails naming the file, and the next
    /// one heals the workspace.)
    fn a_prepare_while_a_checked_out_file_is_held_tells_the_truth() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = support::manager(base.path());
        let (_, repo) = prepare(&m, &up, "acme/busy");
        let new_head = up.commit("src/lib.rs", "pub fn g() {}\n", "change the held file");
        let holder = Holder::hold(&repo.join("src").join("lib.rs"));
        let request = PrepareRequest::new("acme/busy", up.url()).branch("main");
        let out = m.prepare(&request)?;
        assert!(!out.reused, "{out:?}");
        assert_eq!(out.head, new_head);
        assert_eq!(
            std::fs::read_to_string(out.path.join("src").join("lib.rs"))?,
            "pub fn g() {}\n"
        );
        let note = out.notes.join(" ");
        assert!(
            note.contains("lib.rs") && note.contains("cloned afresh") && !note.contains('\r'),
            "says why: {note:?}"
        );
        assert_eq!(m.stats()?.pending_deletions, 1, "the old tree waits");

        holder.release();
        let report = m.cleanup(Some(1000.0))?;
        assert_eq!(report.pending_deletions_finished, 1, "{report:?}");
        assert!(m.prepare(&request)?.reused);
        Ok(())
    }

    fn read_only_files_are_removed() -> Result<(), Failed> {
        let up = Upstream::new();
        let base = tempfile::tempdir()?;
        let m = support::manager(base.path());
        let (name, repo) = prepare(&m, &up, "acme/readonly");
        let pinned = repo.join("README.md");
        let mut perms = std::fs::metadata(&pinned)?.permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&pinned, perms)?;
        let read_only = walkdir::WalkDir::new(&repo)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file())
            .filter(|e| e.metadata().is_ok_and(|m| m.permissions().readonly()))
            .count();
        assert!(
            read_only > 1,
            "git's objects and README.md are read-only: {read_only}"
        );
        let report = m.remove(&name)?;
        assert!(report.removed, "{report:?}");
        assert!(report.error.is_none(), "{report:?}");
        assert!(!base.path().join(&name).exists());
        Ok(())
    }

    fn paths_over_260_characters_are_prepared_reused_and_removed() -> Result<(), Failed> {
        let up = Upstream::new();
        let mut config = up.repo.config()?;
        config.set_bool("core.longpaths", true)?;
        // Six folders of 40 characters: 240 characters inside the repository.
        let deep: PathBuf = (0..6).map(|i| format!("{i}{}", "d".repeat(39))).collect();
        let deep_file = deep.join("Deep.java");
        let rel = deep_file.to_string_lossy().replace('\\', "/");
        up.commit(&rel, "class Deep {}\n", "deep tree");

        let base = tempfile::tempdir()?;
        // Baseline: libgit2 without core.longpaths refuses the checkout.
        let err = git2::build::RepoBuilder::new()
            .clone(&up.url(), &base.path().join("plain"))
            .err()
            .expect("a plain clone of a 300-character path fails on Windows");
        assert!(err.message().contains("path too long"), "{err}");
        let m = support::manager(base.path());
        let (name, repo) = prepare(&m, &up, "acme/deep");
        let checked_out = repo.join(&deep_file);
        let len = checked_out.as_os_str().len();
        assert!(len > 260, "{len} characters");
        assert_eq!(std::fs::read_to_string(&checked_out)?, "class Deep {}\n");
        let config = git2::Repository::open(&repo)?.config()?;
        assert!(config.get_bool("core.longpaths")?);

        // Reuse: fetch, reset and clean at that depth.
        std::fs::write(repo.join(&deep).join("untracked.txt"), "x")?;
        std::fs::write(&checked_out, "changed")?;
        let new_head = up.commit(&rel, "class Deeper {}\n", "deeper");
        let again = m.prepare(&PrepareRequest::new("acme/deep", up.url()).branch("main"))?;
        assert!(again.reused, "{again:?}");
        assert_eq!(again.head, new_head);
        assert_eq!(std::fs::read_to_string(&checked_out)?, "class Deeper {}\n");
        assert!(!repo.join(&deep).join("untracked.txt").exists());

        let report = m.remove(&name)?;
        assert!(report.removed, "{report:?}");
        assert!(!base.path().join(&name).exists());
        eprintln!("prepared, reused and removed a {len}-character path");
        Ok(())
    }
}
