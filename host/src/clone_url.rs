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
            return Err(Error::InvalidInput("the clone URL is empty".into()));
        }
        if let Some((scheme, _)) = raw.split_once("::")
            && !scheme.contains('/')
        {
            return Err(Error::Refused(format!(
                "the `{scheme}::` transport runs commands or opens descriptors; use https, ssh or git"
            )));
        }
        if raw.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::Refused(
                "the clone URL contains spaces or control characters".into(),
            ));
        }
        if raw.starts_with('-') {
            return Err(Error::Refused(
                "the clone URL starts with '-', which git would read as an option".into(),
            ));
        }
        match url::Url::parse(raw) {
            Ok(url) if url.scheme().len() > 1 => return Self::from_url(url, allow_local),
            Err(e) if raw.contains("://") => {
                return Err(Error::InvalidInput(format!(
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
            return Err(Error::Refused(
                "local paths are not allowed as clone URLs; set WORKSPACE_ALLOW_LOCAL_URLS=1 (or --allow-local-urls) to allow them".into(),
            ));
        }
        let abs = std::path::absolute(raw)
            .map_err(|e| Error::InvalidInput(format!("cannot resolve local path {raw}: {e}")))?;
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
                return Err(Error::Refused(format!(
                    "the `{other}` transport is not allowed; use https, ssh or git"
                )));
            }
        };
        if transport == Transport::Local && !allow_local {
            return Err(Error::Refused(
                "file:// URLs are not allowed; set WORKSPACE_ALLOW_LOCAL_URLS=1 (or --allow-local-urls) to allow them".into(),
            ));
        }
        if transport != Transport::Local && url.host_str().is_none_or(str::is_empty) {
            return Err(Error::InvalidInput(format!(
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
        if allowed.is_empty()
            || allowed.iter().any(|a| {
                let a = a.trim().to_ascii_lowercase();
                host == &a || (a.starts_with('.') && host.ends_with(&a))
            })
        {
            return Ok(());
        }
        Err(Error::Refused(format!(
            "clone host {host} is not in WORKSPACE_ALLOWED_HOSTS ({})",
            allowed.join(", ")
        )))
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
    Some(CloneUrl {
        public: raw.to_string(),
        credentials: None,
        transport: Transport::Ssh,
        host: Some(host.to_ascii_lowercase()),
    })
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
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn strips_token_and_password() {
        let u = CloneUrl::parse("https://user:s3cr%40t@github.com/o/r.git", false).unwrap();
        assert_eq!(u.public, "https://github.com/o/r.git");
        let c = u.credentials.unwrap();
        assert_eq!((c.username.as_str(), c.secret.as_str()), ("user", "s3cr@t"));
        assert!(!format!("{c:?}").contains("s3cr"));

        let u = CloneUrl::parse("https://ghp_TOKEN@github.com/o/r", false).unwrap();
        assert_eq!(u.public, "https://github.com/o/r");
        assert_eq!(u.credentials.unwrap().username, "ghp_TOKEN");
    }

    #[test]
    fn accepts_known_safe_transports() {
        for ok in [
            "https://github.com/o/r.git",
            "http://127.0.0.1:9/o/r",
            "git://127.0.0.1/r.git",
            "ssh://git@github.com/o/r.git",
            "git@github.com:o/r.git",
        ] {
            let u = CloneUrl::parse(ok, false).unwrap();
            assert!(u.credentials.is_none(), "{ok}");
            assert_eq!(u.public, ok);
        }
        let http = CloneUrl::parse("http://u:p@h/r", false).unwrap();
        assert!(http.credentials_in_clear());
    }

    #[test]
    fn refuses_dangerous_and_local() {
        for (bad, kind) in [
            ("ext::sh -c touch% /tmp/pwned", ErrorKind::Refused),
            ("fd::17", ErrorKind::Refused),
            ("--upload-pack=touch /tmp/x", ErrorKind::Refused),
            ("-oProxyCommand=x", ErrorKind::Refused),
            ("ftp://h/r", ErrorKind::Refused),
            ("file:///tmp/r", ErrorKind::Refused),
            ("/tmp/r", ErrorKind::Refused),
            ("./r", ErrorKind::Refused),
            ("", ErrorKind::InvalidInput),
            ("https://", ErrorKind::InvalidInput),
            ("https://[::1/x", ErrorKind::InvalidInput),
        ] {
            let err = CloneUrl::parse(bad, false).unwrap_err();
            assert_eq!(err.kind(), kind, "{bad}: {err}");
        }
    }

    #[test]
    fn hosts_outside_the_allow_list_are_refused() {
        let allowed = vec!["github.com".to_string(), ".corp.example".to_string()];
        for ok in [
            "https://github.com/o/r.git",
            "git@github.com:o/r.git",
            "https://git.corp.example/o/r",
        ] {
            CloneUrl::parse(ok, false)
                .unwrap()
                .check_host(&allowed)
                .unwrap();
        }
        for bad in [
            "https://evil.com/o/r",
            "https://github.com.evil.com/o/r",
            "ssh://git@10.0.0.1/r",
            "git@internal:o/r.git",
        ] {
            let err = CloneUrl::parse(bad, false)
                .unwrap()
                .check_host(&allowed)
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Refused, "{bad}");
        }
        CloneUrl::parse("https://anything/r", false)
            .unwrap()
            .check_host(&[])
            .unwrap();
    }

    #[test]
    fn local_only_when_allowed() {
        let u = CloneUrl::parse("/tmp/r", true).unwrap();
        assert_eq!(u.transport, Transport::Local);
        // Made absolute: on Windows that adds the current drive (`C:\tmp\r`).
        let expected = std::path::absolute("/tmp/r").unwrap();
        assert_eq!(u.public, expected.to_string_lossy());
        let u = CloneUrl::parse("file:///tmp/r", true).unwrap();
        assert_eq!(u.transport, Transport::Local);
    }
}
