//! Session tokens: `base64url(payload).base64url(HMAC-SHA256(payload))`, signed with the
//! control plane's session secret, and the CSRF token bound to each session.
//!
//! Pure functions: the API checks a token here (signature first, in constant time, then
//! expiry) before it asks the store whether the session still exists.

use crate::users::Role;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

type HmacSha256 = Hmac<Sha256>;

/// Fewest bytes a session secret may have.
pub const MIN_SECRET_BYTES: usize = 32;

/// The key sessions are signed with. Its `Debug` shows no part of it.
#[derive(Clone)]
pub struct SessionSecret {
    /// The secret's bytes, compared when a reload checks whether it changed.
    bytes: Vec<u8>,
    /// An HMAC already keyed with them, cloned for each MAC.
    keyed: HmacSha256,
}

impl PartialEq for SessionSecret {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl Eq for SessionSecret {}

impl std::fmt::Debug for SessionSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SessionSecret({} bytes, redacted)", self.bytes.len())
    }
}

impl SessionSecret {
    /// A secret of at least [`MIN_SECRET_BYTES`] bytes, or what is wrong with it.
    pub fn new(bytes: Vec<u8>) -> Result<Self, &'static str> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err("must be at least 32 bytes (e.g. `openssl rand -hex 32`)");
        }
        let keyed = HmacSha256::new_from_slice(&bytes).map_err(|_| "cannot key HMAC-SHA256")?;
        Ok(Self { bytes, keyed })
    }

    /// A MAC keyed with this secret over `parts`, each prefixed by its length so no two
    /// different part lists share a MAC input.
    fn mac(&self, parts: &[&[u8]]) -> HmacSha256 {
        let mut mac = self.keyed.clone();
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }
}

/// What a session token says; the store has the last word on whether it still holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The session's id in the store.
    pub session_id: String,
    /// The signed-in user's id.
    pub user_id: String,
    /// The user's role when the token was issued (the store's role is the one applied).
    pub role: Role,
    /// When the token stops being accepted, Unix ms.
    pub exp: i64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// Not two base64url parts, or a payload that is not the claims.
    #[error("malformed session token")]
    Malformed,
    /// The signature does not match: tampered, or signed with another secret.
    #[error("session token signature does not match")]
    BadSignature,
    /// Past its `exp`.
    #[error("session token expired")]
    Expired,
}

/// Domain separation of the two MACs made with one secret.
const SESSION_PURPOSE: &[u8] = b"tollgate-session-v1";
const CSRF_PURPOSE: &[u8] = b"tollgate-csrf-v1";

/// The token for `claims`.
pub fn sign(secret: &SessionSecret, claims: &SessionClaims) -> String {
    // Serializing a struct of strings and integers cannot fail.
    let payload = serde_json::to_vec(claims).unwrap_or_default();
    let payload = URL_SAFE_NO_PAD.encode(payload);
    let tag = secret
        .mac(&[SESSION_PURPOSE, payload.as_bytes()])
        .finalize()
        .into_bytes();
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag))
}

/// The claims of `token` if `secret` signed it and it has not expired at `now_ms`. The
/// signature is checked in constant time before the payload is read.
pub fn verify(
    secret: &SessionSecret,
    token: &str,
    now_ms: i64,
) -> Result<SessionClaims, TokenError> {
    let (payload, tag) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    secret
        .mac(&[SESSION_PURPOSE, payload.as_bytes()])
        .verify_slice(&tag)
        .map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Malformed)?;
    let claims: SessionClaims =
        serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    if now_ms >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Whether a session expiring at `exp` should get a fresh token at `now_ms`: once it is
/// past half its lifetime `ttl_ms`, so an active user is never logged out mid-task.
pub fn needs_refresh(exp: i64, now_ms: i64, ttl_ms: u64) -> bool {
    let half = i64::try_from(ttl_ms / 2).unwrap_or(i64::MAX);
    exp.saturating_sub(now_ms) < half
}

/// The CSRF token of a session: a browser's script reads it from the `tollgate_csrf`
/// cookie and sends it back in `x-csrf-token`; a page on another site can do neither.
pub fn csrf_token(secret: &SessionSecret, session_id: &str) -> String {
    let tag = secret
        .mac(&[CSRF_PURPOSE, session_id.as_bytes()])
        .finalize()
        .into_bytes();
    URL_SAFE_NO_PAD.encode(tag)
}

/// Whether `presented` is the CSRF token of `session_id`, compared in constant time.
pub fn csrf_matches(secret: &SessionSecret, session_id: &str, presented: &str) -> bool {
    bool::from(
        csrf_token(secret, session_id)
            .as_bytes()
            .ct_eq(presented.as_bytes()),
    )
}

/// A new random id for a session (128 bits: not guessable, though tokens are signed too).
pub fn new_session_id() -> String {
    format!("ses_{}", hex::encode(rand::random::<[u8; 16]>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(fill: u8) -> SessionSecret {
        SessionSecret::new(vec![fill; 32]).unwrap()
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            session_id: "ses_1".into(),
            user_id: "usr_1".into(),
            role: Role::Member,
            exp: 10_000,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = sign(&secret(1), &claims());
        assert_eq!(verify(&secret(1), &token, 9_999), Ok(claims()));
        assert_eq!(verify(&secret(1), &token, 10_000), Err(TokenError::Expired));
    }

    #[test]
    fn another_secret_or_a_changed_payload_is_refused() {
        let token = sign(&secret(1), &claims());
        assert_eq!(verify(&secret(2), &token, 0), Err(TokenError::BadSignature));
        // A member rewriting their role to admin keeps the old signature.
        let admin = SessionClaims {
            role: Role::Admin,
            ..claims()
        };
        let forged_payload = sign(&secret(2), &admin);
        let (payload, _) = forged_payload.split_once('.').unwrap();
        let (_, tag) = token.split_once('.').unwrap();
        assert_eq!(
            verify(&secret(1), &format!("{payload}.{tag}"), 0),
            Err(TokenError::BadSignature)
        );
        for bad in [
            "",
            "abc",
            "a.b.c",
            "!!.!!",
            &format!("{payload}."),
            "' OR 1=1 --",
        ] {
            assert!(verify(&secret(1), bad, 0).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn a_secret_is_at_least_32_bytes_and_never_shown() {
        assert!(SessionSecret::new(vec![7; 31]).is_err());
        let s = secret(b'z');
        assert!(!format!("{s:?}").contains("zzzz"));
    }

    #[test]
    fn refresh_comes_past_half_the_lifetime() {
        // ttl 1000, exp 2000: issued at 1000, half-way at 1500.
        assert!(!needs_refresh(2_000, 1_500, 1_000));
        assert!(needs_refresh(2_000, 1_501, 1_000));
        assert!(!needs_refresh(i64::MAX, i64::MIN, u64::MAX), "saturates");
    }

    #[test]
    fn csrf_tokens_are_per_session_and_per_secret() {
        let t = csrf_token(&secret(1), "ses_1");
        assert!(csrf_matches(&secret(1), "ses_1", &t));
        assert!(!csrf_matches(&secret(1), "ses_2", &t));
        assert!(!csrf_matches(&secret(2), "ses_1", &t));
        assert!(!csrf_matches(&secret(1), "ses_1", ""));
        // The CSRF token of a session is not a MAC a session token could reuse.
        assert_ne!(t, sign(&secret(1), &claims()).split('.').nth(1).unwrap());
    }
}
