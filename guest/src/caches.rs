//! Which ignored paths (dependency caches) the default policy keeps
//! through a reuse's clean.
//!
//! None unless the deployment asks: a cache that survives is a cache the
//! previous job wrote, and a job on an untrusted branch can poison it for
//! the next one (docs/POLICIES.md). Settings:
//!
//! - `keep_ignored`: paths kept for every repository, separated by spaces
//!   or commas (`node_modules .venv **/target`);
//! - `keep_ignored.<owner/repo>`: the paths for that repository instead
//!   (empty: none for it).
//!
//! The host checks each path and keeps it only where git ignores it.

/// The setting for every repository.
pub const SETTING: &str = "keep_ignored";

/// The paths to keep for `repo_full_name`, reading settings through `get`.
pub fn keep_for(repo_full_name: &str, get: impl Fn(&str) -> Option<String>) -> Vec<String> {
    get(&format!("{SETTING}.{repo_full_name}"))
        .or_else(|| get(SETTING))
        .unwrap_or_default()
        .split([',', ' ', '\t'])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_settings::settings;

    #[test]
    fn nothing_is_kept_unless_asked() {
        assert!(keep_for("acme/app", settings(&[])).is_empty());
    }

    #[test]
    fn a_repository_setting_replaces_the_global_one() {
        let get = settings(&[
            ("keep_ignored", "node_modules, .venv  **/target"),
            ("keep_ignored.acme/web", "web/node_modules"),
            ("keep_ignored.acme/none", ""),
        ]);
        assert_eq!(
            keep_for("acme/app", &get),
            ["node_modules", ".venv", "**/target"]
        );
        assert_eq!(keep_for("acme/web", &get), ["web/node_modules"]);
        assert!(keep_for("acme/none", &get).is_empty());
    }
}
