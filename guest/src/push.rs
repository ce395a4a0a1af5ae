//! Which pushes the default policy allows.
//!
//! - never the remote's default branch, nor a branch listed in the setting
//!   `push_protected_branches` (comma-separated);
//! - when `push_branch_prefixes` is set (comma-separated, e.g.
//!   `fixsec/,bot/`), only branches that start with one of them;
//! - force only while `push_allow_force` is not `false`.
//!
//! With no settings this is the host's default rule for 0.1.x policies
//! (any branch but the default one, force allowed), so swapping a 0.1.x
//! policy for this one changes nothing until a deployment asks.

/// What a push asks for.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    /// The branch to push.
    pub branch: &'a str,
    /// Overwrite the remote branch when the push is not a fast-forward.
    pub force: bool,
    /// The remote's default branch, if known.
    pub default_branch: Option<&'a str>,
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Allow or refuse `push`, reading settings through `get`. `Err` holds the
/// reason, worded for the caller.
pub fn authorize(push: Push<'_>, get: impl Fn(&str) -> Option<String>) -> Result<(), String> {
    let branch = push.branch;
    if push.default_branch == Some(branch) {
        return Err(format!(
            "{branch} is the remote's default branch; push a topic branch and open a pull request"
        ));
    }
    if list(get("push_protected_branches"))
        .iter()
        .any(|p| p == branch)
    {
        return Err(format!(
            "{branch} is protected (push_protected_branches); push another branch"
        ));
    }
    let prefixes = list(get("push_branch_prefixes"));
    if !prefixes.is_empty() && !prefixes.iter().any(|p| branch.starts_with(p.as_str())) {
        return Err(format!(
            "{branch} does not start with one of {} (push_branch_prefixes); name the branch so",
            prefixes.join(", ")
        ));
    }
    if push.force && get("push_allow_force").is_some_and(|v| v.trim() == "false") {
        return Err(format!(
            "force pushes are not allowed here (push_allow_force=false); push {branch} without force"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_settings::settings;

    fn push(branch: &str, force: bool) -> Push<'_> {
        Push {
            branch,
            force,
            default_branch: Some("main"),
        }
    }

    #[test]
    fn without_settings_any_branch_but_the_default_with_force() {
        let none = settings(&[]);
        assert!(authorize(push("fixsec/fix-1", true), &none).is_ok());
        let err = authorize(push("main", false), &none).unwrap_err();
        assert!(err.contains("default branch"), "{err}");
    }

    #[test]
    fn settings_protect_prefix_and_forbid_force() {
        let s = settings(&[
            ("push_protected_branches", "release, stable"),
            ("push_branch_prefixes", "fixsec/,bot/"),
            ("push_allow_force", "false"),
        ]);
        assert!(authorize(push("fixsec/a", false), &s).is_ok());
        assert!(authorize(push("bot/b", false), &s).is_ok());
        for (branch, force, why) in [
            ("stable", false, "protected"),
            ("feature/x", false, "does not start with"),
            ("fixsec/a", true, "force pushes are not allowed"),
        ] {
            let err = authorize(push(branch, force), &s).unwrap_err();
            assert!(err.contains(why), "{branch}: {err}");
        }
    }
}
