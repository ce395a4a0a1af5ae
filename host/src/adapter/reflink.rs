//! Copies that share blocks with their source (reflinks): `FICLONE` on
//! Linux file systems that have it (XFS made with `reflink=1`, btrfs). A
//! copy takes no data blocks until one side writes.
//!
//! Written by hand (one `ioctl`) rather than with the `reflink-copy` crate,
//! which would bring the whole `windows` crate into the Windows build for a
//! feature this host offers on Linux only.

use std::io;
use std::path::Path;

/// Whether this build can reflink at all.
pub const SUPPORTED: bool = cfg!(target_os = "linux");

/// Make `to` (which must not exist) a reflink of the regular file `from`,
/// with its permissions. `Unsupported` where the file system (or the
/// system) cannot.
pub fn reflink_file(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        /// `_IOW(0x94, 9, int)` from linux/fs.h.
        const FICLONE: libc::c_ulong = 0x4004_9409;
        let source = std::fs::File::open(from)?;
        let meta = source.metadata()?;
        let mode = meta.permissions();
        let target = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)?;
        // SAFETY: both descriptors are open for the whole call; FICLONE
        // reads only the source descriptor number.
        let rc = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE, source.as_raw_fd()) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            drop(target);
            let _ = std::fs::remove_file(to);
            return Err(match e.raw_os_error() {
                Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY) => {
                    io::Error::new(io::ErrorKind::Unsupported, e)
                }
                _ => e,
            });
        }
        // The source's modification time too, so git's stat check finds
        // the copy unchanged without reading it.
        target.set_permissions(mode)?;
        target.set_modified(meta.modified()?)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (from, to);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "reflinks are offered on Linux only",
        ))
    }
}

/// Copy the tree `from` to `to` (which must not exist) with every regular
/// file a reflink, folders made afresh and symbolic links copied as links.
/// Folders are made first, then the files are cloned on every core. Stops
/// at the first file that cannot be reflinked (`Unsupported` when the file
/// system cannot); the caller removes what was made. Returns the number of
/// files.
pub fn reflink_tree(from: &Path, to: &Path) -> io::Result<u64> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(from).follow_links(false) {
        let entry = entry.map_err(io::Error::other)?;
        let rel = entry
            .path()
            .strip_prefix(from)
            .map_err(io::Error::other)?
            .to_path_buf();
        let kind = entry.file_type();
        if kind.is_dir() {
            std::fs::create_dir(to.join(&rel))?;
        } else if kind.is_symlink() {
            #[cfg(unix)]
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, to.join(&rel))?;
            #[cfg(not(unix))]
            return Err(io::Error::new(io::ErrorKind::Unsupported, "links"));
        } else if kind.is_file() {
            files.push(rel);
        }
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunk = files.len().div_ceil(workers).max(1);
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || -> io::Result<()> {
                    for rel in part {
                        reflink_file(&from.join(rel), &to.join(rel))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(io::Error::other("a copy thread panicked")))
        })
    })?;
    Ok(files.len() as u64)
}
