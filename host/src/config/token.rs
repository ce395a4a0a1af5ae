//! The HTTP API's bearer token: configuration (it lives here, not in
//! `http`, so the configuration builds without the server), compared in
//! constant time.

use subtle::ConstantTimeEq;

/// The API token. `Debug` never shows it.
#[derive(Clone)]
pub struct ApiToken(String);

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A token from configuration; surrounding white space (a trailing
    /// newline in a token file) is dropped. None when empty.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| ApiToken(t.to_string()))
    }

    /// A random 256-bit token, hex encoded.
    pub fn generate() -> Self {
        let bytes: [u8; 32] = rand::random();
        ApiToken(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The token itself, for printing once at start-up.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value carries this token.
    pub fn matches_header(&self, header: Option<&str>) -> bool {
        let Some(given) = header.and_then(|h| {
            let (scheme, token) = h.trim().split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }) else {
            return false;
        };
        given.len() == self.0.len() && bool::from(given.as_bytes().ct_eq(self.0.as_bytes()))
    }
}

/// The secret push webhooks are signed with (`WORKSPACE_WEBHOOK_SECRET`):
/// GitHub's `X-Hub-Signature-256` (also sent by Gitea and Forgejo) is the
/// HMAC-SHA256 of the body under it. `Debug` never shows it.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl WebhookSecret {
    /// A secret from configuration, trimmed; none when empty.
    pub fn new(secret: &str) -> Option<Self> {
        let s = secret.trim();
        (!s.is_empty()).then(|| WebhookSecret(s.as_bytes().to_vec()))
    }

    /// Whether `header` (`sha256=<hex>`) signs `body` with this secret,
    /// compared in constant time.
    pub fn verifies(&self, body: &[u8], header: Option<&str>) -> bool {
        use hmac::{Hmac, Mac};
        let Some(hex) = header.and_then(|h| h.trim().strip_prefix("sha256=")) else {
            return false;
        };
        let given: Option<Vec<u8>> = (hex.len() == 64)
            .then(|| {
                (0..32)
                    .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
                    .collect()
            })
            .flatten();
        let Some(given) = given else {
            return false;
        };
        let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(&self.0) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_verify_as_github_computes_them() {
        // GitHub's documented example: secret "It's a Secret to Everybody",
        // payload "Hello, World!".
        let secret = WebhookSecret::new("It's a Secret to Everybody").unwrap();
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(secret.verifies(b"Hello, World!", Some(good)));
        assert!(!secret.verifies(b"Hello, World?", Some(good)));
        for bad in [
            None,
            Some(""),
            Some("sha1=abc"),
            Some("sha256=zz"),
            Some(&good[..20]),
        ] {
            assert!(!secret.verifies(b"Hello, World!", bad), "{bad:?}");
        }
        assert!(WebhookSecret::new("  ").is_none());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
    }

    #[test]
    fn matches_only_the_right_bearer() {
        let t = ApiToken::new("abc123\n").unwrap();
        assert!(t.matches_header(Some("Bearer abc123")));
        assert!(t.matches_header(Some("bearer  abc123 ")));
        for bad in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer abc12"),
            Some("Basic abc123"),
            Some("abc123"),
        ] {
            assert!(!t.matches_header(bad), "{bad:?}");
        }
        assert!(ApiToken::new("  ").is_none());
        assert_eq!(ApiToken::generate().expose().len(), 64);
        assert!(!format!("{t:?}").contains("abc"));
    }
}
