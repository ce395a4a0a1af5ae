//! The working-tree side of the LFS client: which index entries are
//! pointer files, where their objects may be written (never through a
//! link), how a file is replaced and its stat data recorded so git sees
//! it unmodified.

use super::*;

/// What a pointer file says: the object's SHA-256 (lowercase hex) and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pointer {
    /// 64 lowercase hex digits.
    pub(super) oid: String,
    /// Bytes of the object.
    pub(super) size: u64,
}

/// `data` as a Git LFS pointer (spec v1): a `version` line, then `oid
/// sha256:<64 hex>` and `size <n>`, each once, nothing else. `None` for
/// anything else, including pointers with extensions.
pub(super) fn parse_pointer(data: &[u8]) -> Option<Pointer> {
    if data.len() > POINTER_MAX {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut lines = text.split('\n');
    if lines.next()? != POINTER_VERSION_LINE {
        return None;
    }
    let (mut oid, mut size) = (None, None);
    for line in lines {
        let (key, value) = line.split_once(' ')?;
        match key {
            "oid" if oid.is_none() => {
                let hex = value.strip_prefix("sha256:")?;
                let valid = hex.len() == 64
                    && hex
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return None;
                }
                oid = Some(hex.to_string());
            }
            "size" if size.is_none() => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                size = Some(value.parse::<u64>().ok()?);
            }
            _ => return None,
        }
    }
    Some(Pointer {
        oid: oid?,
        size: size?,
    })
}

/// An index path as a relative path to write to: `None` unless every
/// component is a plain name (no `.`, `..`, `.git`, empty part, and off
/// Unix no drive or `\`), so joining it to the working tree stays inside.
pub(super) fn index_path(bytes: &[u8]) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for part in bytes.split(|b| *b == b'/') {
        if part.is_empty()
            || part == &b"."[..]
            || part == &b".."[..]
            || part.eq_ignore_ascii_case(b".git")
        {
            return None;
        }
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            path.push(std::ffi::OsStr::from_bytes(part));
        }
        #[cfg(not(unix))]
        {
            let part = std::str::from_utf8(part).ok()?;
            if part.contains(['\\', ':']) {
                return None;
            }
            path.push(part);
        }
    }
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then_some(path)
}

/// A failure with no special class.
pub(super) fn fail(message: String) -> GitError {
    GitError::other(message)
}

/// Lowercase hex of `bytes`.
pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (hex) of the file at `path`, read in chunks.
pub(super) fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The stat data the index keeps for a file, as git compares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stat {
    /// Status change time.
    pub(super) ctime: IndexTime,
    /// Modification time.
    pub(super) mtime: IndexTime,
    /// Device.
    pub(super) dev: u32,
    /// Inode.
    pub(super) ino: u32,
    /// Owner.
    pub(super) uid: u32,
    /// Group.
    pub(super) gid: u32,
    /// Size, truncated to 32 bits as git stores it.
    pub(super) size: u32,
}

impl Stat {
    /// What the index entry records.
    pub(super) fn of_entry(entry: &IndexEntry) -> Stat {
        Stat {
            ctime: entry.ctime,
            mtime: entry.mtime,
            dev: entry.dev,
            ino: entry.ino,
            uid: entry.uid,
            gid: entry.gid,
            size: entry.file_size,
        }
    }

    /// What the file with metadata `meta` would be recorded as (`old`
    /// fills what the platform does not report).
    #[cfg(unix)]
    pub(super) fn of_file(meta: &std::fs::Metadata, _old: Stat) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat {
            ctime: IndexTime::new(meta.ctime() as i32, meta.ctime_nsec() as u32),
            mtime: IndexTime::new(meta.mtime() as i32, meta.mtime_nsec() as u32),
            dev: meta.dev() as u32,
            ino: meta.ino() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            size: meta.len() as u32,
        }
    }

    /// What the file with metadata `meta` would be recorded as: its
    /// modification time and size; the rest as `old` had it.
    #[cfg(not(unix))]
    pub(super) fn of_file(meta: &std::fs::Metadata, old: Stat) -> Stat {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(old.mtime, |d| {
                IndexTime::new(d.as_secs() as i32, d.subsec_nanos())
            });
        Stat {
            mtime,
            size: meta.len() as u32,
            ..old
        }
    }

    /// Write this stat data into `entry` (its id and mode stay).
    pub(super) fn apply(self, entry: &mut IndexEntry) {
        entry.ctime = self.ctime;
        entry.mtime = self.mtime;
        entry.dev = self.dev;
        entry.ino = self.ino;
        entry.uid = self.uid;
        entry.gid = self.gid;
        entry.file_size = self.size;
    }
}

/// Record the stat data of the working file `file` in the index entry of
/// `rel` (stage 0), keeping the entry's blob id: git then sees the file as
/// unmodified. Written to disk by the caller.
pub(super) fn record_stat(index: &mut Index, rel: &Path, file: &Path) -> Result<(), GitError> {
    let meta = std::fs::symlink_metadata(file).map_err(|e| GitError::io("reading", file, e))?;
    let Some(mut entry) = index.get_path(rel, 0) else {
        return Ok(());
    };
    Stat::of_file(&meta, Stat::of_entry(&entry)).apply(&mut entry);
    index
        .add(&entry)
        .map_err(|e| GitError::new("recording an LFS file in the index", e))
}

/// The metadata of the working file at `rel` when it may be replaced (a
/// regular file, every folder above it a real folder); else why not. The
/// repository's content chose what is there: a link is never written through.
pub(super) fn destination(repo_dir: &Path, rel: &Path) -> Result<std::fs::Metadata, &'static str> {
    for folder in rel.ancestors().skip(1) {
        if folder.as_os_str().is_empty() {
            break;
        }
        match std::fs::symlink_metadata(repo_dir.join(folder)) {
            Ok(m) if m.file_type().is_dir() => {}
            _ => return Err("under a symbolic link or a missing folder"),
        }
    }
    let meta = std::fs::symlink_metadata(repo_dir.join(rel))
        .map_err(|_| "missing from the working tree")?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        Err("a symbolic link")
    } else if kind.is_dir() {
        Err("a folder")
    } else if !kind.is_file() {
        Err("not a regular file")
    } else {
        Ok(meta)
    }
}

/// Create the temporary file `path` (never an existing one), readable as a
/// checkout's files are (the umask applies).
pub(super) fn create_temp(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o666);
    }
    options.open(path)
}

/// Give `path` the executable bits (where it has read bits) or take them away.
#[cfg(unix)]
pub(super) fn set_executable(path: &Path, executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    let wanted = if executable {
        mode | ((mode & 0o444) >> 2)
    } else {
        mode & !0o111
    };
    if wanted != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted))?;
    }
    Ok(())
}

/// Executable bits do not exist here.
#[cfg(not(unix))]
pub(super) fn set_executable(_path: &Path, _executable: bool) -> std::io::Result<()> {
    Ok(())
}

/// Move `src` over `dest` (a regular file): a rename, or where the system
/// does not replace on rename, a removal then a rename.
pub(super) fn replace_file(src: &Path, dest: &Path) -> std::io::Result<()> {
    if std::fs::rename(src, dest).is_ok() {
        return Ok(());
    }
    if let Err(e) = std::fs::remove_file(dest)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        return Err(e);
    }
    std::fs::rename(src, dest)
}

/// One working file to receive an object.
pub(super) struct Target {
    /// Relative to the working tree.
    pub(super) rel: PathBuf,
    /// The index path, for messages.
    pub(super) shown: String,
    /// The index entry's mode is 100755.
    pub(super) executable: bool,
}

/// One object to download, and the working files that get it.
pub(super) struct Wanted {
    /// What the pointer files say.
    pub(super) pointer: Pointer,
    /// Never empty.
    pub(super) targets: Vec<Target>,
}

/// What the index holds by way of LFS pointers.
pub(super) struct Found {
    /// Objects to download (each once), by oid.
    pub(super) wanted: Vec<Wanted>,
    /// Files that already hold their object but whose index entry does not
    /// say so (replaced by a run that stopped before writing the index).
    pub(super) present: Vec<PathBuf>,
}

/// An index entry that may be a pointer file (regular, stage 0, a blob of
/// at most [`POINTER_MAX`] bytes).
pub(super) struct Candidate {
    /// Relative to the working tree.
    pub(super) rel: PathBuf,
    /// The index path, for messages.
    pub(super) shown: String,
    /// The blob.
    pub(super) id: Oid,
    /// Mode 100755.
    pub(super) executable: bool,
    /// The stat data the index has.
    pub(super) stat: Stat,
}

/// The pointer files of the checkout at `repo_dir`, from its index, that
/// the `filter=lfs` attribute covers and whose working file does not hold
/// the object yet.
pub(super) fn find_pointers(
    repo: &Repository,
    index: &Index,
    repo_dir: &Path,
) -> Result<Found, GitError> {
    let odb = repo
        .odb()
        .map_err(|e| GitError::new("opening the object database", e))?;
    let mut candidates = Vec::new();
    for entry in index.iter() {
        if entry.mode & 0o170000 != 0o100000 || entry.flags & STAGE_MASK != 0 {
            continue;
        }
        // The header only: a large file's blob is never loaded.
        if !matches!(odb.read_header(entry.id), Ok((size, ObjectType::Blob)) if size <= POINTER_MAX)
        {
            continue;
        }
        let Some(rel) = index_path(&entry.path) else {
            continue;
        };
        candidates.push(Candidate {
            shown: String::from_utf8_lossy(&entry.path).into_owned(),
            rel,
            id: entry.id,
            executable: entry.mode == 0o100755,
            stat: Stat::of_entry(&entry),
        });
    }
    let flags = AttrCheckFlags::FILE_THEN_INDEX | AttrCheckFlags::NO_SYSTEM;
    let mut by_oid: BTreeMap<String, Wanted> = BTreeMap::new();
    let mut present = Vec::new();
    for c in candidates {
        if repo.get_attr(&c.rel, "filter", flags).ok().flatten() != Some("lfs") {
            continue;
        }
        let Some(pointer) = repo
            .find_blob(c.id)
            .ok()
            .and_then(|blob| parse_pointer(blob.content()))
        else {
            continue;
        };
        let meta = match destination(repo_dir, &c.rel) {
            Ok(meta) => meta,
            Err(why) => {
                tracing::warn!(path = %c.shown, why, "LFS object not put in place: the working-tree path is not a plain file");
                continue;
            }
        };
        if meta.len() == pointer.size {
            if Stat::of_file(&meta, c.stat) == c.stat {
                // Replaced on an earlier prepare, and recorded.
                continue;
            }
            if file_sha256(&repo_dir.join(&c.rel)).is_ok_and(|h| h == pointer.oid) {
                present.push(c.rel);
                continue;
            }
        }
        let key = pointer.oid.clone();
        by_oid
            .entry(key)
            .or_insert_with(|| Wanted {
                pointer,
                targets: Vec::new(),
            })
            .targets
            .push(Target {
                rel: c.rel,
                shown: c.shown,
                executable: c.executable,
            });
    }
    Ok(Found {
        wanted: by_oid.into_values().collect(),
        present,
    })
}
