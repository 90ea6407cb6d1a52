//! The secret the filter and the control plane share, so each gRPC call between them is
//! known to come from a sidecar of this gateway and not from a client that found the port.

use serde::Deserialize;
use subtle::ConstantTimeEq;

/// Fewest bytes a sidecar token may have; 32 random bytes are beyond guessing.
pub const MIN_TOKEN_BYTES: usize = 32;

/// The shared token. Its `Debug` shows no part of it, so logging a configuration is safe.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SidecarToken(String);

impl std::fmt::Debug for SidecarToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SidecarToken({} bytes, redacted)", self.0.len())
    }
}

impl From<String> for SidecarToken {
    fn from(token: String) -> Self {
        Self(token)
    }
}

impl SidecarToken {
    /// Why this token is unusable, if it is: too short, or not a valid header value.
    pub fn problem(&self) -> Option<&'static str> {
        if self.0.len() < MIN_TOKEN_BYTES {
            return Some("must be at least 32 bytes (e.g. `openssl rand -hex 32`)");
        }
        // Sent as `authorization: Bearer <token>`: visible ASCII only, no spaces.
        if !self.0.bytes().all(|b| b.is_ascii_graphic()) {
            return Some("must be visible ASCII without spaces");
        }
        None
    }

    /// The token itself, for writing into the filter's settings (`tollgate envoy-config`);
    /// never for logs.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The `authorization` metadata value that carries it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` value carries this token. The comparison takes the same
    /// time wherever the first wrong byte is, so timing reveals nothing of the token.
    pub fn accepts(&self, authorization: &[u8]) -> bool {
        let Some(presented) = crate::keys::bearer_token(authorization) else {
            return false;
        };
        !self.0.is_empty() && bool::from(presented.ct_eq(self.0.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> SidecarToken {
        SidecarToken::from(s.to_owned())
    }

    #[test]
    fn accepts_only_its_own_bearer() {
        let t = token(&"a".repeat(40));
        assert!(t.accepts(t.bearer().as_bytes()));
        assert!(t.accepts(format!("bearer {}", "a".repeat(40)).as_bytes()));
        assert!(!t.accepts(format!("Bearer {}", "a".repeat(39)).as_bytes()));
        assert!(!t.accepts(format!("Bearer {}b", "a".repeat(39)).as_bytes()));
        assert!(!t.accepts(format!("Bearer {}", "a".repeat(41)).as_bytes()));
        assert!(
            !t.accepts("a".repeat(40).as_bytes()),
            "the scheme is required"
        );
        assert!(!t.accepts(b""));
        assert!(!SidecarToken::default().accepts(b"Bearer "));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused() {
        assert!(token(&"a".repeat(31)).problem().is_some());
        assert!(token(&format!("{} b", "a".repeat(32))).problem().is_some());
        assert!(token(&format!("{}\n", "a".repeat(32))).problem().is_some());
        assert_eq!(token(&"a".repeat(32)).problem(), None);
    }

    #[test]
    fn debug_hides_the_token() {
        let shown = format!("{:?}", token("secret-secret-secret-secret-secret"));
        assert!(!shown.contains("secret"), "{shown}");
    }
}
