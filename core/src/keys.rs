//! Virtual API keys: how a secret is recognised without ever being stored.

use sha2::{Digest, Sha256};

/// Every secret the control plane issues starts with this, so leaked keys are easy to grep for.
pub const KEY_PREFIX: &str = "tg-";

/// Lower-case hex SHA-256 of a secret: the only form a key is stored or sent in.
pub fn hash_key(secret: &[u8]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// The token of an `Authorization: Bearer <token>` header value, if it has that form.
///
/// The scheme is matched case-insensitively (RFC 9110); surrounding spaces are ignored.
/// Returns `None` for other schemes, an empty token or a token with inner whitespace.
pub fn bearer_token(header_value: &[u8]) -> Option<&[u8]> {
    let value = header_value.trim_ascii();
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    if token.is_empty()
        || token
            .iter()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return None;
    }
    Some(token)
}

/// The first characters of a secret, shown in listings so a person can tell keys apart.
pub fn display_prefix(secret: &str) -> String {
    secret.chars().take(KEY_PREFIX.len() + 6).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_key(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token(b"Bearer tg-abc"), Some(&b"tg-abc"[..]));
        assert_eq!(bearer_token(b"bearer   tg-abc  "), Some(&b"tg-abc"[..]));
        assert_eq!(bearer_token(b"BEARER tg-abc"), Some(&b"tg-abc"[..]));
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer a b"), None);
        assert_eq!(bearer_token(b"Bear"), None);
        assert_eq!(bearer_token(b""), None);
        // Non-UTF-8 bytes are still a token; they just will not match any stored hash.
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), Some(&b"\xff\xfe"[..]));
    }

    #[test]
    fn prefix_is_short() {
        assert_eq!(display_prefix("tg-abcdefghijk"), "tg-abcdef");
        assert_eq!(display_prefix("tg-ab"), "tg-ab");
    }
}
