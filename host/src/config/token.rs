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

#[cfg(test)]
mod tests {
    use super::*;

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
