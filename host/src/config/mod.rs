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
//! | `WORKSPACE_ALLOW_PRIVATE_NETWORKS` | `0` (loopback, private and link-local addresses refused) |
//! | `WORKSPACE_SERVICE_CREDENTIAL_HOSTS` | none (the service's ssh-agent and Windows logon offered to no host) |
//! | `WORKSPACE_GIT_CONNECT_TIMEOUT_SECONDS` | `15` |
//! | `WORKSPACE_GIT_IO_TIMEOUT_SECONDS` | `120` (a remote silent this long fails the fetch) |
//! | `WORKSPACE_GIT_MAX_RUNNING` | `8` git network operations at once |
//! | `WORKSPACE_GIT_MAX_PER_HOST` | `4` at once per remote host |
//! | `WORKSPACE_GIT_MAX_QUEUED` | `64` waiting; past that a prepare is refused as busy |
//! | `WORKSPACE_GIT_QUEUE_WAIT_SECONDS` | `120` longest wait in the queue |
//! | `WORKSPACE_LOCK_WAIT_SECONDS` | `300` longest wait for another prepare of the same workspace |
//! | `WORKSPACE_LEASE_WAIT_SECONDS` | `10` longest wait for another caller's lease to end |
//! | `WORKSPACE_MIN_FREE_MB` | `256` free space a clone must leave |
//! | `WORKSPACE_MAX_WORKSPACE_MB` | none (no per-clone size limit) |
//! | `WORKSPACE_MIRRORS` | `1` (full-history clones borrow objects from a mirror) |
//! | `WORKSPACE_MIRROR_SHARING` | `repository` (one mirror per clone URL); `network` shares one across a fork network (single-tenant deployments only) |
//! | `WORKSPACE_MIRROR_MAINTENANCE_HOURS` | `24` between repacks of a mirror (0: every cleanup) |
//! | `WORKSPACE_MAX_SUBMODULES` | `64` submodules per prepare, at every depth together |
//! | `WORKSPACE_MAX_EXTRAS_MB` | `4096` MB of submodules and LFS objects per prepare |
//! | `WORKSPACE_EXTRAS_TIMEOUT_SECONDS` | `900` for submodules and LFS objects per prepare |
//!
//! The server's own settings (`WORKSPACE_BIND`, the token, body limit,
//! janitor, shutdown grace, connection cap, header timeout) are
//! [`ServerConfig`]'s, parsed here with the same rules.

use crate::adapter::git::ExtrasLimits;
use crate::adapter::removal::RemovalConfig;
use crate::error::{Error, Result};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod token;
pub use token::{ApiToken, WebhookSecret};

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

/// Bounds on git network work (issue: a tarpit must not hold the service).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GitLimits {
    /// Connecting to a remote (libgit2's server connect timeout).
    pub connect_timeout: Duration,
    /// A remote that sends nothing for this long fails the operation
    /// (libgit2's server timeout, per read and write).
    pub io_timeout: Duration,
    /// git network operations (clone, fetch) running at once.
    pub max_running: usize,
    /// ... of which against one remote host.
    pub max_per_host: usize,
    /// Operations waiting for a slot; past that a prepare is refused (busy).
    pub max_queued: usize,
    /// Longest wait for a slot before a prepare is refused (busy).
    pub queue_wait: Duration,
}

impl Default for GitLimits {
    fn default() -> Self {
        GitLimits {
            connect_timeout: Duration::from_secs(15),
            io_timeout: Duration::from_secs(120),
            max_running: 8,
            max_per_host: 4,
            max_queued: 64,
            queue_wait: Duration::from_secs(120),
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
    /// Clone hosts may resolve to loopback, private and link-local addresses
    /// (`WORKSPACE_ALLOW_PRIVATE_NETWORKS`; tests and on-premises hosts).
    pub allow_private_networks: bool,
    /// Hosts to which the service's own credentials (its ssh-agent keys,
    /// the Windows logon) may be offered; callers' credentials go only to
    /// the host of the URL they came in.
    pub service_credential_hosts: Vec<String>,
    /// Timeouts and the queue of git network operations.
    pub git: GitLimits,
    /// Longest wait for another prepare or removal of the same workspace.
    pub lock_wait: Duration,
    /// Longest wait for another caller's lease on the workspace to end.
    pub lease_wait: Duration,
    /// Free bytes a clone or fetch must leave on the base directory's disk.
    pub min_free_bytes: u64,
    /// Largest checkout a clone may make; none for no limit.
    pub max_workspace_bytes: Option<u64>,
    /// Full-history clones from a network URL go through a bare mirror per
    /// repository network and borrow its objects (`WORKSPACE_MIRRORS`).
    pub mirrors: bool,
    /// Who shares a mirror (`WORKSPACE_MIRROR_SHARING`).
    pub mirror_sharing: MirrorSharing,
    /// How often a cleanup repacks and prunes each mirror
    /// (`WORKSPACE_MIRROR_MAINTENANCE_HOURS`, 24; 0: every cleanup).
    pub mirror_maintenance: Duration,
    /// Bounds on submodules and LFS objects per prepare.
    pub extras: ExtrasLimits,
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
            allow_private_networks: false,
            service_credential_hosts: Vec::new(),
            git: GitLimits::default(),
            lock_wait: Duration::from_secs(300),
            lease_wait: Duration::from_secs(10),
            min_free_bytes: 256 * 1024 * 1024,
            max_workspace_bytes: None,
            mirrors: true,
            mirror_sharing: MirrorSharing::Repository,
            mirror_maintenance: Duration::from_secs(24 * 3600),
            extras: ExtrasLimits::default(),
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
            c.allowed_hosts = host_list(&v);
        }
        if let Some(v) = get("WORKSPACE_ALLOW_PRIVATE_NETWORKS") {
            c.allow_private_networks = parse_bool("WORKSPACE_ALLOW_PRIVATE_NETWORKS", &v)?;
        }
        if let Some(v) = get("WORKSPACE_MIRRORS") {
            c.mirrors = parse_bool("WORKSPACE_MIRRORS", &v)?;
        }
        if let Some(v) = get("WORKSPACE_MIRROR_MAINTENANCE_HOURS") {
            c.mirror_maintenance = Duration::from_secs_f64(
                parse_hours("WORKSPACE_MIRROR_MAINTENANCE_HOURS", &v)? * 3600.0,
            );
        }
        if let Some(v) = get("WORKSPACE_MIRROR_SHARING") {
            c.mirror_sharing = match v.trim().to_ascii_lowercase().as_str() {
                "repository" => MirrorSharing::Repository,
                "network" => MirrorSharing::Network,
                other => {
                    return Err(Error::config(format!(
                        "WORKSPACE_MIRROR_SHARING is {other:?}; use `repository` (one mirror per \
                         clone URL, safe for many tenants) or `network` (forks share one; only \
                         when every caller may read every repository of a network)"
                    )));
                }
            };
        }
        if let Some(v) = get("WORKSPACE_MAX_SUBMODULES") {
            c.extras.max_submodules = parse("WORKSPACE_MAX_SUBMODULES", &v)?;
        }
        if let Some(v) = get("WORKSPACE_MAX_EXTRAS_MB") {
            c.extras.max_bytes =
                parse::<u64>("WORKSPACE_MAX_EXTRAS_MB", &v)?.saturating_mul(1 << 20);
        }
        seconds_into(
            &get,
            "WORKSPACE_EXTRAS_TIMEOUT_SECONDS",
            &mut c.extras.timeout,
        )?;
        if let Some(v) = get("WORKSPACE_SERVICE_CREDENTIAL_HOSTS") {
            c.service_credential_hosts = host_list(&v);
        }
        let seconds = |key: &str, slot: &mut Duration| seconds_into(&get, key, slot);
        seconds(
            "WORKSPACE_GIT_CONNECT_TIMEOUT_SECONDS",
            &mut c.git.connect_timeout,
        )?;
        seconds("WORKSPACE_GIT_IO_TIMEOUT_SECONDS", &mut c.git.io_timeout)?;
        seconds("WORKSPACE_GIT_QUEUE_WAIT_SECONDS", &mut c.git.queue_wait)?;
        seconds("WORKSPACE_LOCK_WAIT_SECONDS", &mut c.lock_wait)?;
        seconds("WORKSPACE_LEASE_WAIT_SECONDS", &mut c.lease_wait)?;
        for (key, slot) in [
            ("WORKSPACE_GIT_MAX_RUNNING", &mut c.git.max_running),
            ("WORKSPACE_GIT_MAX_PER_HOST", &mut c.git.max_per_host),
        ] {
            if let Some(v) = get(key) {
                *slot = parse(key, &v)?;
                if *slot == 0 {
                    return Err(Error::config(format!("{key} must be at least 1")));
                }
            }
        }
        if let Some(v) = get("WORKSPACE_GIT_MAX_QUEUED") {
            c.git.max_queued = parse("WORKSPACE_GIT_MAX_QUEUED", &v)?;
        }
        if let Some(v) = get("WORKSPACE_MIN_FREE_MB") {
            c.min_free_bytes = parse::<u64>("WORKSPACE_MIN_FREE_MB", &v)?.saturating_mul(1 << 20);
        }
        if let Some(v) = get("WORKSPACE_MAX_WORKSPACE_MB") {
            let mb: u64 = parse("WORKSPACE_MAX_WORKSPACE_MB", &v)?;
            c.max_workspace_bytes = (mb > 0).then(|| mb.saturating_mul(1 << 20));
        }
        if let Some(path) = get("WORKSPACE_POLICY_SETTINGS_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::config(format!(
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
                return Err(Error::config("WORKSPACE_REMOVE_RETRIES must be at least 1"));
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

/// Who may borrow objects from one mirror.
///
/// A workspace borrowing from a mirror can read every object in it (git's
/// alternates), whichever repository brought it. So a mirror is shared only
/// where every caller whose prepare lands in it may read all of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorSharing {
    /// One mirror per clone URL (the default): only prepares of that URL,
    /// each of which must pass the remote's own authentication, share it.
    /// A prepare's `network` groups nothing.
    Repository,
    /// One mirror per `network` (the fork network's root): forks share
    /// objects. Only for deployments whose callers may all read every
    /// repository of a network (one tenant).
    Network,
}

/// `key`'s whole seconds into `slot`, if set.
fn seconds_into(
    get: &impl Fn(&str) -> Option<String>,
    key: &str,
    slot: &mut Duration,
) -> Result<()> {
    if let Some(v) = get(key) {
        *slot = Duration::from_secs(parse(key, &v)?);
    }
    Ok(())
}

/// Settings of the standalone server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Listen address (`WORKSPACE_BIND`, default `127.0.0.1:8080`).
    pub bind: SocketAddr,
    /// The bearer token; none: a random one is made at start-up.
    pub token: Option<ApiToken>,
    /// Largest request body accepted (`WORKSPACE_MAX_BODY_BYTES`, 64 KiB).
    pub body_limit: u64,
    /// Run a cleanup at start-up (`WORKSPACE_CLEANUP_ON_STARTUP=1`).
    pub cleanup_on_startup: bool,
    /// Run cleanups periodically (`WORKSPACE_CLEANUP_INTERVAL_MINUTES`).
    pub cleanup_interval: Option<Duration>,
    /// How long in-flight requests may run after SIGTERM (`WORKSPACE_SHUTDOWN_GRACE_SECONDS`, 30).
    pub shutdown_grace: Duration,
    /// Open connections served at once (`WORKSPACE_MAX_CONNECTIONS`, 1024);
    /// further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client may take to send its request headers
    /// (`WORKSPACE_HEADER_TIMEOUT_SECONDS`, 10).
    pub header_read_timeout: Duration,
    /// After SIGTERM, how long `/readyz` fails while requests are still
    /// accepted, before the grace period (`WORKSPACE_DRAIN_SECONDS`, 0).
    pub drain: Duration,
    /// This node's name in the `X-Served-By` header of every answer
    /// (`WORKSPACE_NODE_ID`; else `HOSTNAME`, a pod's name in Kubernetes).
    pub node_id: String,
    /// Every node of the fleet, this one included, for the `/fleet/`
    /// endpoints (`WORKSPACE_FLEET`: `id=http://host:port,...`, the
    /// router's node list); empty: no fleet.
    pub fleet: Vec<crate::fleet::FleetNode>,
    /// How long a fleet endpoint waits for each node
    /// (`WORKSPACE_FLEET_TIMEOUT_SECONDS`, 5).
    pub fleet_timeout: Duration,
    /// The secret push webhooks are signed with (`WORKSPACE_WEBHOOK_SECRET`,
    /// or the file `WORKSPACE_WEBHOOK_SECRET_FILE`); none: `/hooks/` off.
    pub webhook_secret: Option<WebhookSecret>,
}

/// [`ServerConfig::fleet_timeout`]'s default.
pub const DEFAULT_FLEET_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            body_limit: 64 * 1024,
            cleanup_on_startup: false,
            cleanup_interval: None,
            shutdown_grace: Duration::from_secs(30),
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            node_id: "fixsec-workspace".into(),
            drain: Duration::ZERO,
            fleet: Vec::new(),
            fleet_timeout: DEFAULT_FLEET_TIMEOUT,
            webhook_secret: None,
        }
    }
}

impl ServerConfig {
    /// Defaults overridden by the environment.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Defaults overridden by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut c = ServerConfig::default();
        let get = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("WORKSPACE_BIND") {
            c.bind = v.trim().parse().map_err(|_| {
                Error::config(format!(
                    "WORKSPACE_BIND={v:?} is not an address; e.g. 127.0.0.1:8080 or 0.0.0.0:8080"
                ))
            })?;
        }
        if let Some(v) = get("WORKSPACE_API_TOKEN") {
            c.token = ApiToken::new(&v);
        } else if let Some(path) = get("WORKSPACE_API_TOKEN_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::config(format!("cannot read WORKSPACE_API_TOKEN_FILE={path}: {e}"))
            })?;
            c.token = Some(ApiToken::new(&text).ok_or_else(|| {
                Error::config(format!("WORKSPACE_API_TOKEN_FILE={path} is empty"))
            })?);
        }
        let number = |k: &str, v: &str| -> Result<u64> { parse(k, v) };
        if let Some(v) = get("WORKSPACE_MAX_BODY_BYTES") {
            c.body_limit = number("WORKSPACE_MAX_BODY_BYTES", &v)?;
        }
        if let Some(v) = get("WORKSPACE_CLEANUP_ON_STARTUP") {
            c.cleanup_on_startup = crate::config::parse_bool("WORKSPACE_CLEANUP_ON_STARTUP", &v)?;
        }
        if let Some(v) = get("WORKSPACE_CLEANUP_INTERVAL_MINUTES") {
            let minutes = number("WORKSPACE_CLEANUP_INTERVAL_MINUTES", &v)?;
            c.cleanup_interval = (minutes > 0).then(|| Duration::from_secs(minutes * 60));
        }
        if let Some(v) = get("WORKSPACE_SHUTDOWN_GRACE_SECONDS") {
            c.shutdown_grace = Duration::from_secs(number("WORKSPACE_SHUTDOWN_GRACE_SECONDS", &v)?);
        }
        if let Some(v) = get("WORKSPACE_MAX_CONNECTIONS") {
            c.max_connections = number("WORKSPACE_MAX_CONNECTIONS", &v)?.max(1) as usize;
        }
        if let Some(v) = get("WORKSPACE_DRAIN_SECONDS") {
            c.drain = Duration::from_secs(number("WORKSPACE_DRAIN_SECONDS", &v)?);
        }
        if let Some(v) = get("WORKSPACE_NODE_ID").or_else(|| get("HOSTNAME")) {
            let v = v.trim();
            if !v.bytes().all(|b| b.is_ascii_graphic()) || v.len() > 253 {
                return Err(Error::config(format!(
                    "WORKSPACE_NODE_ID={v:?} must be printable ASCII without spaces, at most 253 characters"
                )));
            }
            c.node_id = v.to_string();
        }
        if let Some(v) = get("WORKSPACE_WEBHOOK_SECRET") {
            c.webhook_secret = WebhookSecret::new(&v);
        } else if let Some(path) = get("WORKSPACE_WEBHOOK_SECRET_FILE") {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                Error::config(format!(
                    "cannot read WORKSPACE_WEBHOOK_SECRET_FILE={path}: {e}"
                ))
            })?;
            c.webhook_secret = Some(WebhookSecret::new(&text).ok_or_else(|| {
                Error::config(format!("WORKSPACE_WEBHOOK_SECRET_FILE={path} is empty"))
            })?);
        }
        if let Some(v) = get("WORKSPACE_FLEET") {
            c.fleet = crate::fleet::parse_nodes(&v)?;
        }
        if let Some(v) = get("WORKSPACE_FLEET_TIMEOUT_SECONDS") {
            c.fleet_timeout =
                Duration::from_secs(number("WORKSPACE_FLEET_TIMEOUT_SECONDS", &v)?.max(1));
        }
        if let Some(v) = get("WORKSPACE_HEADER_TIMEOUT_SECONDS") {
            c.header_read_timeout =
                Duration::from_secs(number("WORKSPACE_HEADER_TIMEOUT_SECONDS", &v)?.max(1));
        }
        Ok(c)
    }
}

/// A comma-separated list of host names, trimmed, blanks dropped.
fn host_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect()
}

/// `key=value` pairs separated by `sep`; blank entries and `#` comments skipped.
pub fn parse_settings(text: &str, sep: char, origin: &str) -> Result<Vec<(String, String)>> {
    text.split(sep)
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with('#'))
        .map(|entry| {
            let (k, v) = entry.split_once('=').ok_or_else(|| {
                Error::config(format!(
                    "{origin}: {entry:?} is not key=value (e.g. quota_mb=500)"
                ))
            })?;
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn parse<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| {
        Error::config(format!(
            "{key}={value:?} is not a valid whole number; unset it or give e.g. {key}=100"
        ))
    })
}

/// Hours: a finite number >= 0.
pub fn parse_hours(key: &str, value: &str) -> Result<f64> {
    match value.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h >= 0.0 => Ok(h),
        _ => Err(Error::config(format!(
            "{key}={value:?} is not a number of hours >= 0; e.g. {key}=24"
        ))),
    }
}

/// `1/true/yes/on` or `0/false/no/off` (any case); anything else is an error
/// naming `key`.
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::config(format!("{key}={value:?}: use 1 or 0"))),
    }
}

#[cfg(test)]
mod tests;
