//! Repository name -> workspace folder name.
//!
//! For every name GitHub allows (`owner/repo` of ASCII letters, digits, `.`,
//! `-`, `_`) whose folder name fits in [`MAX_NAME_LEN`], the result equals the
//! original FixSec tool's byte for byte, so folders it made are adopted as
//! they are. Anything else (other alphabets, or names the original would have
//! made up to 210 characters long) gets a name that is still valid on Windows
//! and Linux, at most [`MAX_NAME_LEN`] characters, and unique per input.
//!
//! The bound is for Windows: tools that are not long-path aware stop at 259
//! characters for a whole path, and a folder name of at most 64 leaves a deep
//! repository most of that budget (see the README's "Windows" section).

use md5::{Digest, Md5};

/// Longest workspace folder name this policy makes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest stem kept when the name is shortened: `stem_` + 16 hex digits.
pub const MAX_EXTENDED_STEM: usize = MAX_NAME_LEN - 17;

/// Longest input taken in the compatible scheme (owner 100 + `/` + repo 100).
const MAX_COMPAT_INPUT: usize = 201;

/// Why a name could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The repository name is empty or only white space.
    Empty,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Empty => write!(
                f,
                "the repository name is empty: pass the full name, e.g. `owner/repo`"
            ),
        }
    }
}

/// The workspace folder name for `repo_full_name`.
///
/// ```
/// use fixsec_policy_default::naming::workspace_name;
/// assert_eq!(workspace_name("facebook/react").unwrap(), "facebook_react_4f32b4cf");
/// ```
pub fn workspace_name(repo_full_name: &str) -> Result<String, NameError> {
    if repo_full_name.trim().is_empty() {
        return Err(NameError::Empty);
    }
    let digest = hex(&Md5::digest(repo_full_name.as_bytes()));
    if is_compatible_alphabet(repo_full_name) {
        let name = join(&sanitize(repo_full_name, usize::MAX), &digest[..8]);
        if name.len() <= MAX_NAME_LEN {
            return Ok(name);
        }
    }
    // Outside the original's domain, or too long for it: a shorter stem and a
    // longer hash keep names unique, and the 16-hex suffix can never equal a
    // compatible name's `_` + 8 hex tail.
    let stem = sanitize(repo_full_name, MAX_EXTENDED_STEM);
    Ok(join(&stem, &digest[..16]))
}

/// Whether the original tool's scheme applies to this input unchanged.
fn is_compatible_alphabet(name: &str) -> bool {
    name.len() <= MAX_COMPAT_INPUT
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
}

/// Non-alphanumerics to `_`, runs collapsed, ends trimmed, at most `max` bytes.
fn sanitize(name: &str, max: usize) -> String {
    let mut out = String::with_capacity(name.len().min(max));
    for ch in name.chars() {
        if out.len() >= max {
            break;
        }
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_string()
}

fn join(stem: &str, suffix: &str) -> String {
    if stem.is_empty() {
        format!("repo_{suffix}")
    } else {
        format!("{stem}_{suffix}")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_original_for_github_names() {
        // md5("facebook/react") = 4f32b4cf...
        assert_eq!(
            workspace_name("facebook/react").unwrap(),
            "facebook_react_4f32b4cf"
        );
        let n = workspace_name("microsoft/vscode").unwrap();
        assert!(n.starts_with("microsoft_vscode_") && n.len() == "microsoft_vscode_".len() + 8);
    }

    #[test]
    fn collapses_runs_and_trims_like_the_original() {
        let n = workspace_name("-my--org/.dot.repo_").unwrap();
        assert!(n.starts_with("my_org_dot_repo_"), "{n}");
        assert_eq!(n.len(), "my_org_dot_repo_".len() + 8);
    }

    #[test]
    fn empty_is_an_error() {
        assert_eq!(workspace_name(""), Err(NameError::Empty));
        assert_eq!(workspace_name("  \t"), Err(NameError::Empty));
    }

    #[test]
    fn only_punctuation_still_gets_a_name() {
        let n = workspace_name("../..").unwrap();
        assert!(n.starts_with("repo_"), "{n}");
        assert!(!n.contains('.') && !n.contains('/'));
    }

    #[test]
    fn unicode_and_long_names_are_bounded_and_distinct() {
        let a = workspace_name("usér/répo").unwrap();
        let b = workspace_name("usèr/répo").unwrap();
        assert_ne!(a, b);
        assert!(a.is_ascii());
        let long = "a".repeat(10_000);
        let n = workspace_name(&long).unwrap();
        assert_eq!(n.len(), MAX_NAME_LEN);
        let long2 = format!("{long}b");
        assert_ne!(workspace_name(&long2).unwrap(), n);
    }

    #[test]
    fn github_names_too_long_for_windows_are_shortened_not_truncated_alike() {
        // GitHub allows 39-character owners and 100-character repositories;
        // the original made a 149-character folder name of this.
        let owner = "o".repeat(39);
        let a = workspace_name(&format!("{owner}/{}", "r".repeat(100))).unwrap();
        let b = workspace_name(&format!("{owner}/{}x", "r".repeat(99))).unwrap();
        assert_eq!(a.len(), MAX_NAME_LEN);
        assert_ne!(a, b, "same stem, different inputs");
        // The longest name that still fits keeps the original scheme.
        let fits = format!("{}/{}", "o".repeat(27), "r".repeat(27));
        let n = workspace_name(&fits).unwrap();
        assert_eq!(n.len(), MAX_NAME_LEN);
        assert_eq!(n.len() - n.rfind('_').unwrap(), 9, "_ + 8 hex: {n}");
    }

    #[test]
    fn windows_reserved_names_are_never_bare() {
        for reserved in ["CON", "nul", "COM1", "LPT1.txt", "aux/prn"] {
            let n = workspace_name(reserved).unwrap();
            assert!(n.contains('_'), "{n}");
        }
    }
}
