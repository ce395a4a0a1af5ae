//! Unit tests of [`super`] (configuration from the environment).

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
    assert!(!c.allow_private_networks);
    assert!(c.service_credential_hosts.is_empty());
    assert_eq!(c.git, GitLimits::default());
}

#[test]
fn reads_the_limits() {
    let c = from(&[
        ("WORKSPACE_ALLOW_PRIVATE_NETWORKS", "TRUE"),
        ("WORKSPACE_SERVICE_CREDENTIAL_HOSTS", "GitHub.com, git.corp"),
        ("WORKSPACE_GIT_IO_TIMEOUT_SECONDS", "7"),
        ("WORKSPACE_GIT_MAX_QUEUED", "0"),
        ("WORKSPACE_LEASE_WAIT_SECONDS", "0"),
        ("WORKSPACE_MAX_WORKSPACE_MB", "2"),
    ])
    .unwrap();
    assert!(c.allow_private_networks);
    assert_eq!(c.service_credential_hosts, ["github.com", "git.corp"]);
    assert_eq!(c.git.io_timeout, Duration::from_secs(7));
    assert_eq!(c.git.max_queued, 0);
    assert_eq!(c.lease_wait, Duration::ZERO);
    assert_eq!(c.max_workspace_bytes, Some(2 << 20));
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
        ("WORKSPACE_ALLOW_PRIVATE_NETWORKS", "sometimes"),
        ("WORKSPACE_GIT_MAX_RUNNING", "0"),
        ("WORKSPACE_GIT_IO_TIMEOUT_SECONDS", "1m"),
        ("WORKSPACE_MIN_FREE_MB", "-5"),
    ] {
        let err = from(&[(k, v)]).unwrap_err().to_string();
        assert!(err.contains(k), "{err}");
    }
}
