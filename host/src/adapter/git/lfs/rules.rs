//! Where the LFS client may go and what it may carry: the endpoint (the
//! clone URL's own), which download gets the caller's credential, which
//! headers an LFS server may have sent, and URLs as messages show them.

use super::*;

/// The LFS endpoint git-lfs derives from a clone URL by default:
/// `<url>/info/lfs` when it ends in `.git`, else `<url>.git/info/lfs`
/// (after dropping a trailing `/`).
pub(super) fn lfs_endpoint(url: &str) -> String {
    let base = url.strip_suffix('/').unwrap_or(url);
    if base.ends_with(".git") {
        format!("{base}/info/lfs")
    } else {
        format!("{base}.git/info/lfs")
    }
}

/// Whether the caller's credential may go with a request to `href`: only
/// to the clone URL's own scheme, host and port, and only when the LFS
/// server did not supply an `Authorization` of its own (in the action's
/// headers, or as user information in `href`).
pub(super) fn credential_goes_to(
    href: &Url,
    clone: &Url,
    header: &BTreeMap<String, serde_json::Value>,
) -> bool {
    href.scheme() == clone.scheme()
        && href.host() == clone.host()
        && href.port_or_known_default() == clone.port_or_known_default()
        && href.username().is_empty()
        && href.password().is_none()
        && !header
            .keys()
            .any(|k| k.trim().eq_ignore_ascii_case("authorization"))
}

/// A header from an LFS action, as it may be sent: `None` for the ones
/// never taken from a server (see [`DROPPED_HEADERS`], `Proxy-*`) and for
/// names or values HTTP does not accept. Values are marked sensitive (they
/// are often tokens), so they never show in a debug print.
pub(super) fn action_header(name: &str, value: &str) -> Option<(HeaderName, HeaderValue)> {
    let lower = name.trim().to_ascii_lowercase();
    if DROPPED_HEADERS.contains(&lower.as_str()) || lower.starts_with("proxy-") {
        return None;
    }
    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
    let mut value = HeaderValue::from_str(value).ok()?;
    value.set_sensitive(true);
    Some((name, value))
}

/// `url` as it may be shown: no user information, query or fragment.
pub(super) fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The host (and explicit port) of `url`, to name it in a message.
pub(super) fn host_of(url: &Url) -> String {
    let host = url.host_str().unwrap_or("an unnamed host");
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}
