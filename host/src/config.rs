//! Configuration, from the environment variables the guide names.
//!
//! | variable | default |
//! |---|---|
//! | `WORKSPACE_BASE_PATH` | `backend/workspace` |
//! | `WORKSPACE_MAX_AGE_HOURS` | `24` |
//! | `WORKSPACE_SIZE_WARNING_MB` | `1000` (per workspace) |
//! | `WORKSPACE_TOTAL_SIZE_WARNING_MB` | `5120` (all together, the guide's 5 GB) |
//! | `WORKSPACE_MAX_WORKSPACES` | `100` |
//! | `WORKSPACE_POLICY` | the embedded default policy |
//! | `WORKSPACE_ALLOW_LOCAL_URLS` | `0` |
//! | `WORKSPACE_ALLOWED_HOSTS` | any host |
//! | `WORKSPACE_REMOVE_RETRIES` | `5` |
//! | `WORKSPACE_POLICY_SETTINGS` | none (`key=value,key=value`) |
//! | `WORKSPACE_POLICY_SETTINGS_FILE` | none (`key=value` lines) |

use crate::adapter::removal::RemovalConfig;
use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// Where the policy component comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// The default policy built into the binary.
    Embedded,
    /// A `.wasm` component file.
    File(PathBuf),
}

/// Resource limits for each policy call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PolicyLimits {
    /// Wasm instructions (fuel) per call; host work does not count.
    pub fuel: u64,
    /// Linear memory per instance, in bytes.
    pub memory_bytes: usize,
}

impl Default for PolicyLimits {
    fn default() -> Self {
        PolicyLimits {
            fuel: 2_000_000_000,
            memory_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Everything the manager is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where workspaces live.
    pub base_path: PathBuf,
    /// Default cleanup age.
    pub max_age_hours: f64,
    /// Per-workspace size warning.
    pub size_warning_mb: u64,
    /// Total size warning.
    pub total_size_warning_mb: u64,
    /// Workspace count warning.
    pub max_workspaces: u32,
    /// The policy component.
    pub policy: PolicySource,
    /// Accept local paths and `file://` clone URLs.
    pub allow_local_urls: bool,
    /// Hosts clone URLs may name (`WORKSPACE_ALLOWED_HOSTS`, comma-separated;
    /// `.example.com` allows subdomains); empty allows every host.
    pub allowed_hosts: Vec<String>,
    /// Deletion retries.
    pub removal: RemovalConfig,
    /// Per-call policy limits.
    pub policy_limits: PolicyLimits,
    /// `key=value` settings the policy reads through the `settings` import.
    pub policy_settings: std::collections::BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base_path: PathBuf::from("backend/workspace"),
            max_age_hours: 24.0,
            size_warning_mb: 1000,
            total_size_warning_mb: 5120,
            max_workspaces: 100,
            policy: PolicySource::Embedded,
            allow_local_urls: false,
            allowed_hosts: Vec::new(),
            removal: RemovalConfig::default(),
            policy_limits: PolicyLimits::default(),
            policy_settings: Default::default(),
        }
    }
}

impl Config {
    /// Defaults overridden by the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup` (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = Config::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("WORKSPACE_BASE_PATH") {
            c.base_path = PathBuf::from(v);
        }
        if let Some(v) = get("WORKSPACE_MAX_AGE_HOURS") {
            c.max_age_hours = parse_hours("WORKSPACE_MAX_AGE_HOURS", &v)?;
        }
        if let Some(v) = get("WORKSPACE_SIZE_WARNING_MB") {
            c.size_warning_mb = parse("WORKSPACE_SIZE_WARNING_MB", &v)?;
        }
        if let Some(v) = get("WORKSPACE_TOTAL_SIZE_WARNING_MB") {
            c.total_size_warning_mb = parse("WORKSPACE_TOTAL_SIZE_WARNING_MB", &v)?;
        }
        if let Some(v) = get("WORKSPACE_MAX_WORKSPACES") {
            c.max_workspaces = parse("WORKSPACE_MAX_WORKSPACES", &v)?;
        }
        if let Some(v) = get("WORKSPACE_POLICY") {
            c.policy = PolicySource::File(PathBuf::from(v));
        }
        if let Some(v) = get("WORKSPACE_ALLOW_LOCAL_URLS") {
            c.allow_local_urls = parse_bool("WORKSPACE_ALLOW_LOCAL_URLS", &v)?;
        }
        if let Some(v) = get("WORKSPACE_ALLOWED_HOSTS") {
            c.allowed_hosts = v
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
        }
        if let Some(path) = get("WORKSPACE_POLICY_SETTINGS_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::Config(format!(
                    "cannot read WORKSPACE_POLICY_SETTINGS_FILE={path}: {e}"
                ))
            })?;
            c.policy_settings
                .extend(parse_settings(&text, '\n', &path)?);
        }
        if let Some(v) = get("WORKSPACE_POLICY_SETTINGS") {
            c.policy_settings
                .extend(parse_settings(&v, ',', "WORKSPACE_POLICY_SETTINGS")?);
        }
        if let Some(v) = get("WORKSPACE_REMOVE_RETRIES") {
            let n: u32 = parse("WORKSPACE_REMOVE_RETRIES", &v)?;
            if n == 0 {
                return Err(Error::Config(
                    "WORKSPACE_REMOVE_RETRIES must be at least 1".into(),
                ));
            }
            c.removal.max_retries = n;
        }
        if let Some(v) = get("WORKSPACE_REMOVE_RETRY_DELAY_MS") {
            c.removal.initial_delay =
                Duration::from_millis(parse("WORKSPACE_REMOVE_RETRY_DELAY_MS", &v)?);
        }
        Ok(c)
    }
}

/// `key=value` pairs separated by `sep`; blank entries and `#` comments skipped.
pub fn parse_settings(text: &str, sep: char, origin: &str) -> Result<Vec<(String, String)>> {
    text.split(sep)
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .map(|entry| {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "{origin}: {entry:?} is not key=value (e.g. quota_mb=500)"
                ))
            })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::Config(format!(
            "{key}={value:?} is not a valid whole number; unset it or give e.g. {key}=100"
        ))
    })
}

/// Hours: a finite number >= 0.
pub fn parse_hours(key: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h >= 0.0 => Ok(h),
        _ => Err(Error::Config(format!(
            "{key}={value:?} is not a number of hours >= 0; e.g. {key}=24"
        ))),
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!("{key}={value:?}: use 1 or 0"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_guide() {
        let c = from(&[]).unwrap();
        assert_eq!(c.base_path, PathBuf::from("backend/workspace"));
        assert_eq!(c.max_age_hours, 24.0);
        assert_eq!(c.size_warning_mb, 1000);
        assert_eq!(c.policy, PolicySource::Embedded);
        assert!(!c.allow_local_urls);
    }

    #[test]
    fn reads_the_environment() {
        let c = from(&[
            ("WORKSPACE_BASE_PATH", "/srv/ws"),
            ("WORKSPACE_MAX_AGE_HOURS", "1.5"),
            ("WORKSPACE_SIZE_WARNING_MB", "10"),
            ("WORKSPACE_POLICY", "/p.wasm"),
            ("WORKSPACE_ALLOW_LOCAL_URLS", "1"),
        ])
        .unwrap();
        assert_eq!(c.base_path, PathBuf::from("/srv/ws"));
        assert_eq!(c.max_age_hours, 1.5);
        assert_eq!(c.size_warning_mb, 10);
        assert_eq!(c.policy, PolicySource::File("/p.wasm".into()));
        assert!(c.allow_local_urls);
    }

    #[test]
    fn policy_settings_from_a_file_and_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("policy.env");
        std::fs::write(&file, "# quota\nquota_mb = 500\nkeep_recent=2\n").unwrap();
        let c = from(&[
            ("WORKSPACE_POLICY_SETTINGS_FILE", file.to_str().unwrap()),
            ("WORKSPACE_POLICY_SETTINGS", "keep_recent=3, extra=x"),
        ])
        .unwrap();
        let pairs: Vec<_> = c
            .policy_settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [("extra", "x"), ("keep_recent", "3"), ("quota_mb", "500")]
        );
        let err = from(&[("WORKSPACE_POLICY_SETTINGS", "novalue")]).unwrap_err();
        assert!(err.to_string().contains("key=value"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("WORKSPACE_MAX_AGE_HOURS", "-1"),
            ("WORKSPACE_MAX_AGE_HOURS", "soon"),
            ("WORKSPACE_SIZE_WARNING_MB", "1e3x"),
            ("WORKSPACE_ALLOW_LOCAL_URLS", "maybe"),
            ("WORKSPACE_REMOVE_RETRIES", "0"),
        ] {
            let err = from(&[(k, v)]).unwrap_err().to_string();
            assert!(err.contains(k), "{err}");
        }
    }
}
