//! Validation of workspace names returned by a policy (invariant 1).
//!
//! A name becomes a path component only through [`WorkspaceName`], so every
//! path the host builds from a policy's answer lies inside the base directory.

use crate::error::{Error, Result};
use std::fmt;

/// Longest name accepted, in bytes (well under every filesystem's 255).
pub const MAX_NAME_LEN: usize = 200;

/// A workspace folder name that is safe on Linux, macOS and Windows.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkspaceName(String);

/// As its string.
impl serde::Serialize for WorkspaceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Validated as [`WorkspaceName::parse`] does: a name read from a file is
/// as untrusted as one from a caller.
impl<'de> serde::Deserialize<'de> for WorkspaceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        WorkspaceName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl WorkspaceName {
    /// Check `name` and wrap it. Refuses separators, `..`, NUL and control
    /// characters, characters Windows forbids, trailing dots and spaces,
    /// reserved device names (`CON`, `COM1.txt`, ...), a leading `.` (kept for
    /// the host's own folders) and names over 200 bytes.
    pub fn parse(name: &str) -> Result<Self> {
        let refuse = |why: &str| {
            Err(Error::refused(format!(
                "unsafe workspace name {:?}: {why}",
                truncate_for_message(name)
            )))
        };
        if name.is_empty() {
            return refuse("it is empty");
        }
        if name.len() > MAX_NAME_LEN {
            return refuse(&format!("it is longer than {MAX_NAME_LEN} bytes"));
        }
        if name.starts_with('.') {
            return refuse("it starts with '.' (reserved for the host's own folders)");
        }
        if let Some(c) = name.chars().find(|c| {
            c.is_control() || matches!(c, '/' | '\\' | '<' | '>' | ':' | '"' | '|' | '?' | '*')
        }) {
            return refuse(&format!("it contains {c:?}"));
        }
        if name.ends_with('.') || name.ends_with(' ') {
            return refuse("it ends with a dot or a space, which Windows drops");
        }
        if is_windows_reserved(name) {
            return refuse("it is a reserved device name on Windows");
        }
        Ok(WorkspaceName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `CON`, `PRN`, `AUX`, `NUL`, `COM0-9`, `LPT0-9` (and their superscript
/// digit forms), alone or before an extension, in any case.
fn is_windows_reserved(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    if matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) {
        return true;
    }
    let mut chars = upper.chars();
    let prefix: String = chars.by_ref().take(3).collect();
    let rest: String = chars.collect();
    (prefix == "COM" || prefix == "LPT")
        && rest.chars().count() == 1
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '¹' | '²' | '³'))
}

fn truncate_for_message(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let cut = (0..=80).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &s[..cut])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_policy_names() {
        for ok in ["facebook_react_4f32b4cf", "a", "x.y-z", "ünï"] {
            assert_eq!(WorkspaceName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_unsafe() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in [
            "",
            ".",
            "..",
            "../escape",
            "/abs",
            "a/b",
            "a\\b",
            "C:",
            "nul\0",
            "tab\t",
            "CON",
            "con",
            "Nul.txt",
            "COM1",
            "lpt9.tar.gz",
            "COM¹",
            "trail.",
            "trail ",
            ".trash",
            long.as_str(),
        ] {
            let err = WorkspaceName::parse(bad).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Refused, "{bad:?}");
        }
    }

    #[test]
    fn reserved_words_inside_names_are_fine() {
        for ok in ["CONSOLE", "COM10", "nul_1234abcd", "LPT"] {
            WorkspaceName::parse(ok).unwrap();
        }
    }
}
