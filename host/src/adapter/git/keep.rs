//! Which ignored paths an update's clean leaves in place: the policy's
//! `keep-ignored` (contract 0.3), held to the host's rules.
//!
//! A dependency cache (`node_modules`, `.venv`, `target`) that survives a
//! reuse saves a job its install or build. The policy names the paths; the
//! host decides what a name may reach:
//!
//! - an entry is a path relative to the checkout's root (`web/.venv`) or
//!   `**/` and one name (`**/node_modules`, that name at any depth);
//! - no `.`, `..`, empty or `.git` component, no wildcard beyond the
//!   leading `**/`, no backslash or control character, at most
//!   [`MAX_ENTRIES`] entries: anything else is the policy's mistake,
//!   refused before the update touches the checkout;
//! - the clean keeps a named path only when git ignores it (tracked files
//!   are reset by then; untracked files that are not ignored always go)
//!   and when it is not a symbolic link (a kept link would point a later
//!   job's writes wherever the earlier job chose).

/// Entries a policy may ask to keep, at most.
pub const MAX_ENTRIES: usize = 64;

/// Bytes in one entry, at most.
const MAX_ENTRY_BYTES: usize = 1024;

/// The checked `keep-ignored` list of one update. Empty: keep nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeepIgnored {
    /// Paths from the root, as index paths are spelt (`web/.venv`).
    anchored: Vec<Vec<u8>>,
    /// Names kept at any depth (`node_modules` from `**/node_modules`).
    anywhere: Vec<Vec<u8>>,
}

impl KeepIgnored {
    /// Keep nothing: the clean removes every untracked and ignored path.
    pub fn none() -> Self {
        Self::default()
    }

    /// Check a policy's list. `Err` says which entry breaks which rule.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        if entries.len() > MAX_ENTRIES {
            return Err(format!(
                "keep-ignored names {} paths; at most {MAX_ENTRIES} are kept",
                entries.len()
            ));
        }
        let mut keep = Self::none();
        for entry in entries {
            let refuse = |why: &str| {
                format!(
                    "keep-ignored entry {entry:?} {why}; the policy must name a path inside the checkout, such as node_modules or **/target"
                )
            };
            if entry.len() > MAX_ENTRY_BYTES {
                return Err(refuse(&format!("is longer than {MAX_ENTRY_BYTES} bytes")));
            }
            if entry.chars().any(|c| c.is_control() || c == '\\') {
                return Err(refuse("holds a backslash or a control character"));
            }
            let (anywhere, path) = match entry.strip_prefix("**/") {
                Some(name) => (true, name),
                None => (false, entry.as_str()),
            };
            let path = path.strip_suffix('/').unwrap_or(path);
            if path.starts_with('/') {
                return Err(refuse("is absolute"));
            }
            if path.contains(['*', '?', '[', ']']) {
                return Err(refuse("has a wildcard (only a leading **/ is understood)"));
            }
            if anywhere && path.contains('/') {
                return Err(refuse(
                    "puts a path after **/ (one name is understood there)",
                ));
            }
            for part in path.split('/') {
                match part {
                    "" => return Err(refuse("has an empty component")),
                    "." | ".." => return Err(refuse("leaves or names the checkout's root")),
                    p if p.eq_ignore_ascii_case(".git") => {
                        return Err(refuse("names the git directory"));
                    }
                    _ => {}
                }
            }
            let bytes = path.as_bytes().to_vec();
            let list = if anywhere {
                &mut keep.anywhere
            } else {
                &mut keep.anchored
            };
            if !list.contains(&bytes) {
                list.push(bytes);
            }
        }
        Ok(keep)
    }

    /// Nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.anchored.is_empty() && self.anywhere.is_empty()
    }

    /// Whether `rel` (slash-separated, from the root) is a named path or
    /// lies inside one.
    pub(super) fn covers(&self, rel: &[u8]) -> bool {
        let inside = |root: &[u8]| {
            rel.starts_with(root) && (rel.len() == root.len() || rel[root.len()] == b'/')
        };
        self.anchored.iter().any(|a| inside(a))
            || rel
                .split(|b| *b == b'/')
                .any(|part| self.anywhere.iter().any(|n| n == part))
    }
}

impl KeepIgnored {
    /// Whether `rel` is a folder on the way to a named path (`web` for
    /// `web/.venv`): the clean looks inside rather than deleting it whole.
    pub(super) fn leads_to(&self, rel: &[u8]) -> bool {
        self.anchored
            .iter()
            .any(|a| a.len() > rel.len() && a.starts_with(rel) && a[rel.len()] == b'/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entries: &[&str]) -> Result<KeepIgnored, String> {
        KeepIgnored::parse(&entries.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn anchored_and_anywhere_paths_cover_themselves_and_what_is_inside() {
        let keep = parse(&["node_modules", "web/.venv/", "**/target"]).unwrap();
        for covered in [
            "node_modules",
            "node_modules/left-pad/index.js",
            "web/.venv",
            "web/.venv/bin/python",
            "target",
            "crates/a/target",
            "crates/a/target/debug/a",
        ] {
            assert!(keep.covers(covered.as_bytes()), "{covered}");
        }
        for not in [
            "node_modules2",
            "src/node_modules",
            "web/.venv2",
            ".venv",
            "targets",
            "crates/a/my-target",
        ] {
            assert!(!keep.covers(not.as_bytes()), "{not}");
        }
        assert!(keep.leads_to(b"web"));
        for not in ["web/.venv", "we", "node_modules", "crates"] {
            assert!(!keep.leads_to(not.as_bytes()), "{not}");
        }
        assert!(KeepIgnored::none().is_empty());
        assert!(!KeepIgnored::none().covers(b"node_modules"));
    }

    #[test]
    fn entries_that_leave_or_widen_are_refused_with_the_rule() {
        for (entry, why) in [
            ("../other", "leaves"),
            ("a/../../b", "leaves"),
            (".", "leaves"),
            ("/etc", "absolute"),
            (".git", "git directory"),
            ("sub/.GIT/hooks", "git directory"),
            ("**/.git", "git directory"),
            ("*", "wildcard"),
            ("node_*", "wildcard"),
            ("**/a/b", "after **/"),
            ("a//b", "empty component"),
            ("", "empty component"),
            ("a\\b", "backslash"),
            ("a\nb", "control"),
        ] {
            let err = parse(&[entry]).unwrap_err();
            assert!(err.contains(why), "{entry:?}: {err}");
            assert!(err.contains("inside the checkout"), "{err}");
        }
        let many: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("c{i}")).collect();
        assert!(
            KeepIgnored::parse(&many)
                .unwrap_err()
                .contains("at most 64")
        );
        let long = "a".repeat(MAX_ENTRY_BYTES + 1);
        assert!(parse(&[&long]).unwrap_err().contains("longer than"));
    }
}
