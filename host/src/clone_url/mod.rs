//! Clone URL checks and credential stripping (invariant 3).
//!
//! git's own list of known-safe transports is followed: `https`, `http`,
//! `ssh` (and scp-like `user@host:path`) and `git` are accepted; local paths
//! and `file://` only when the deployment allows them; anything else
//! (`ext::`, `fd::`, option-like strings) is refused. A credential in the URL
//! is taken out here, so only the clean URL goes on to the policy, the disk
//! and the logs; the credential reaches git2 only through its callback.

use crate::error::{Error, Result};
use std::fmt;

/// A user name and secret taken out of a clone URL. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (for a bare token, the token itself goes in `secret`).
    pub username: String,
    /// The password or token.
    pub secret: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &"<redacted>")
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// How the URL reaches its repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `https://`
    Https,
    /// `http://` (credentials travel in clear text)
    Http,
    /// `ssh://` or `user@host:path`
    Ssh,
    /// `git://`
    Git,
    /// A local path or `file://`.
    Local,
}

/// A checked clone URL split into its public part and its credentials.
#[derive(Debug, Clone)]
pub struct CloneUrl {
    /// The URL without credentials: what is stored, logged and given to the policy.
    pub public: String,
    /// Credentials that were in the URL, if any.
    pub credentials: Option<Credentials>,
    /// The transport.
    pub transport: Transport,
    /// The host it connects to (none for local paths).
    pub host: Option<String>,
}

impl CloneUrl {
    /// Check `raw` and take any credentials out of it.
    pub fn parse(raw: &str, allow_local: bool) -> Result<Self> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(Error::invalid_input("the clone URL is empty"));
        }
        if let Some((scheme, _)) = raw.split_once("::")
            && !scheme.contains('/')
        {
            // Name the transport only when it is a plain word: the text before
            // `::` may hold a credential (`user:TOKEN@host::x`).
            let named = if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            {
                format!("`{scheme}::`")
            } else {
                "`<transport>::`".to_string()
            };
            return Err(Error::refused(format!(
                "the {named} transport syntax runs commands or opens descriptors; use https, ssh or git"
            )));
        }
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::refused(
                "the clone URL contains spaces or control characters",
            ));
        }
        if raw.starts_with('-') {
            return Err(Error::refused(
                "the clone URL starts with '-', which git would read as an option",
            ));
        }
        match url::Url::parse(raw) {
            Ok(url) if url.scheme().len() > 1 => {
                check_authority(raw, url.scheme())?;
                return Self::from_url(url, allow_local);
            }
            Err(e) if raw.contains("://") => {
                return Err(Error::invalid_input(format!(
                    "the clone URL is malformed ({e}); expected e.g. https://github.com/owner/repo.git"
                )));
            }
            _ => {}
        }
        if let Some(scp) = scp_like(raw) {
            return Ok(scp);
        }
        // Anything left is a local path.
        if !allow_local {
            return Err(Error::refused(
                "local paths are not allowed as clone URLs; set WORKSPACE_ALLOW_LOCAL_URLS=1 (or --allow-local-urls) to allow them",
            ));
        }
        let abs = std::path::absolute(raw)
            .map_err(|e| Error::invalid_input(format!("cannot resolve local path {raw}: {e}")))?;
        Ok(CloneUrl {
            public: abs.to_string_lossy().into_owned(),
            credentials: None,
            transport: Transport::Local,
            host: None,
        })
    }

    fn from_url(mut url: url::Url, allow_local: bool) -> Result<Self> {
        let transport = match url.scheme() {
            "https" => Transport::Https,
            "http" => Transport::Http,
            "ssh" | "git+ssh" | "ssh+git" => Transport::Ssh,
            "git" => Transport::Git,
            "file" => Transport::Local,
            other => {
                return Err(Error::refused(format!(
                    "the `{other}` transport is not allowed; use https, ssh or git"
                )));
            }
        };
        if transport == Transport::Local && !allow_local {
            return Err(Error::refused(
                "file:// URLs are not allowed; set WORKSPACE_ALLOW_LOCAL_URLS=1 (or --allow-local-urls) to allow them",
            ));
        }
        if transport != Transport::Local && url.host_str().is_none_or(str::is_empty) {
            return Err(Error::invalid_input(format!(
                "the clone URL {} has no host",
                redact(&url)
            )));
        }
        let username = percent_decode(url.username());
        let password = url.password().map(percent_decode);
        let credentials = match (transport, password) {
            // ssh: the user name is not a secret (git@...); a password is.
            (Transport::Ssh, Some(secret)) => Some(Credentials { username, secret }),
            (Transport::Ssh, None) => None,
            (_, Some(secret)) => Some(Credentials { username, secret }),
            // `https://TOKEN@host/...`: a bare token in the user name.
            (_, None) if !username.is_empty() => Some(Credentials {
                username: username.clone(),
                secret: String::new(),
            }),
            _ => None,
        };
        let _ = url.set_password(None);
        if transport != Transport::Ssh {
            let _ = url.set_username("");
        }
        Ok(CloneUrl {
            public: url.to_string(),
            credentials,
            transport,
            host: url
                .host_str()
                .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase()),
        })
    }

    /// Refuse a host outside `allowed` (an empty list allows every host).
    /// Entries match the host exactly or, written `.example.com`, any
    /// subdomain. Keeps a service from being used to reach internal hosts.
    pub fn check_host(&self, allowed: &[String]) -> Result<()> {
        let Some(host) = &self.host else {
            return Ok(());
        };
        if allowed.is_empty() || host_listed(host, allowed) {
            return Ok(());
        }
        Err(Error::refused(format!(
            "clone host {host} is not in WORKSPACE_ALLOWED_HOSTS ({})",
            allowed.join(", ")
        )))
    }

    /// The port the URL connects to (its own, or the transport's default).
    pub fn port(&self) -> Option<u16> {
        let default = match self.transport {
            Transport::Https => 443,
            Transport::Http => 80,
            Transport::Ssh => 22,
            Transport::Git => 9418,
            Transport::Local => return None,
        };
        Some(
            url::Url::parse(&self.public)
                .ok()
                .and_then(|u| u.port())
                .unwrap_or(default),
        )
    }

    /// Resolve the host and refuse it when any address it resolves to is
    /// loopback, private, link-local, or otherwise not a public unicast
    /// address, unless `allow_private` (`WORKSPACE_ALLOW_PRIVATE_NETWORKS`).
    /// Keeps callers from using the service to reach the cloud metadata
    /// endpoint (169.254.169.254), the machine itself or the internal net.
    ///
    /// libgit2 resolves the name again when it connects; redirects are off,
    /// so the only window left is a DNS answer that changes between the two
    /// look-ups (see docs/RELIABILITY.md).
    pub fn check_addresses(&self, allow_private: bool) -> Result<()> {
        if allow_private {
            return Ok(());
        }
        self.resolve_checked(false).map(drop)
    }

    /// The addresses the host resolves to, each held to the rule of
    /// [`check_addresses`](Self::check_addresses): for a client that
    /// connects to exactly these (no second look-up for DNS to change).
    pub fn resolve_checked(&self, allow_private: bool) -> Result<Vec<std::net::SocketAddr>> {
        let (Some(host), Some(port)) = (&self.host, self.port()) else {
            return Ok(Vec::new());
        };
        use std::net::ToSocketAddrs;
        let addrs: Vec<std::net::SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| {
                tracing::info!(host, error = %e, "clone host does not resolve");
                Error::git(format!(
                    "cannot resolve the clone host {host}; check the URL"
                ))
            })?
            .collect();
        if let Some(bad) = addrs.iter().find(|a| !allow_private && !is_public(a.ip())) {
            return Err(Error::refused(format!(
                "clone host {host} resolves to {}, a loopback, private or link-local address; \
                 set WORKSPACE_ALLOW_PRIVATE_NETWORKS=1 to allow on-premises hosts",
                bad.ip()
            )));
        }
        Ok(addrs)
    }

    /// Whether credentials would travel unencrypted.
    pub fn credentials_in_clear(&self) -> bool {
        self.credentials.is_some() && matches!(self.transport, Transport::Http | Transport::Git)
    }
}

/// `user@host:path` (scp-like ssh), as git reads it: a colon before any slash.
fn scp_like(raw: &str) -> Option<CloneUrl> {
    let colon = raw.find(':')?;
    let slash = raw.find('/').unwrap_or(usize::MAX);
    let host_part = &raw[..colon];
    if colon > slash || colon < 2 || host_part.contains('\\') {
        return None; // a path, or a Windows drive letter (`C:`)
    }
    let host = host_part.rsplit('@').next().unwrap_or(host_part);
    if host.is_empty() || host_part.matches('@').count() > 1 || !plain_host(host) {
        // Not a host libgit2 and this check would read alike: treat as a
        // path (refused unless local paths are allowed).
        return None;
    }
    Some(CloneUrl {
        public: raw.to_string(),
        credentials: None,
        transport: Transport::Ssh,
        host: Some(host.to_ascii_lowercase()),
    })
}

/// Refuse an authority that libgit2 and the `url` crate would read
/// differently, so the host the allow-list checks is the host git connects to.
///
/// libgit2 ends the authority at the first `/` only (not at `?` or `#`),
/// takes the host after the *last* `@`, and percent-decodes it: so
/// `git://allowed.example?@127.0.0.1/r` is `allowed.example` to `url` and
/// `127.0.0.1` to libgit2, and `%00` can cut a host short. An authority
/// with `?`, `#`, `%`, `\`, or more than one `@`, is refused. What is
/// left parses the same in both.
fn check_authority(raw: &str, scheme: &str) -> Result<()> {
    if scheme.eq_ignore_ascii_case("file") {
        return Ok(());
    }
    let Some((_, rest)) = raw.split_once("://") else {
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let refuse = |why: &str| {
        Err(Error::refused(format!(
            "the clone URL's host part {why}; write it as scheme://[user@]host[:port]/path"
        )))
    };
    if let Some(c) = authority.chars().find(|c| matches!(c, '?' | '#' | '\\')) {
        return refuse(&format!(
            "contains {c:?}, which git and this check would read differently"
        ));
    }
    if authority.matches('@').count() > 1 {
        return refuse("contains more than one '@'");
    }
    // Escapes stay allowed in the user and password (`p%40ss`), not the host.
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if host_port.contains('%') {
        return refuse("contains '%', which git would decode into another host");
    }
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split(']').next().unwrap_or(inner)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    if !plain_host(host) {
        return refuse(&format!("{host:?} is not a plain host name or address"));
    }
    Ok(())
}

/// Whether `host` is one of `list` (exactly, or under a `.suffix` entry).
pub(crate) fn host_listed(host: &str, list: &[String]) -> bool {
    list.iter().any(|a| {
        let a = a.trim().to_ascii_lowercase();
        host == a || (a.starts_with('.') && host.ends_with(&a))
    })
}

/// A public unicast address: not loopback, private (RFC 1918, unique
/// local), link-local, shared (CGNAT), unspecified, multicast, broadcast,
/// documentation or benchmarking ranges; IPv4-mapped IPv6 judged as IPv4.
pub fn is_public(ip: std::net::IpAddr) -> bool {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18.0.0/15
                || o[0] >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0 && s[1] == 0 && s[2] == 0 && s[3] == 0 && s[4] == 0 && s[5] == 0)) // IPv4-compatible
        }
    }
}

/// Letters, digits, `.`, `-`, `_` and (for IPv6) `:`: nothing that decodes
/// or ends the host early.
fn plain_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

/// Decode `%XX` escapes; invalid ones are kept as they are.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A URL for messages: credentials replaced.
fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

#[cfg(test)]
mod tests;
