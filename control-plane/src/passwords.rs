//! Passwords: what is accepted, and their Argon2id hashes (the only form stored).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use thiserror::Error;

/// Fewest characters a password may have.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most bytes a password may have: enough for any passphrase, and bounds hashing work.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PasswordError {
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password must be at least 12 characters")]
    TooShort,
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("password must be at most 1024 bytes")]
    TooLong,
    /// The hasher failed (never for valid input; kept typed rather than unwrapped).
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// Checks `password` against the policy.
pub fn check_policy(password: &str) -> Result<(), PasswordError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// The Argon2id hash of `password` (PHC string, random salt, the crate's default cost:
/// OWASP's 19 MiB, 2 passes), after checking the policy. CPU-heavy: call off async workers.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    check_policy(password)?;
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches `stored` (a PHC string); a malformed hash matches nothing.
/// CPU-heavy: call off async workers.
pub fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_PASSWORD_BYTES {
        return false;
    }
    PasswordHash::new(stored).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Spends the time of one [`verify`] on a hash no password matches, so a login for an
/// unknown or disabled user takes as long as a wrong password and reveals nothing.
pub fn verify_nothing(password: &str) {
    let _ = verify(password, DECOY);
}

/// A hash of a random password at the default cost, for [`verify_nothing`]; only the work
/// it takes matters.
const DECOY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$\
                     l5xN5SmqJ9WkxF7x3+AWgf7+i6oKZ3iZyVj62JMQ8l8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let h = hash("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse battery", &h));
        assert!(!verify("correct horse battery!", &h));
        assert!(!verify("correct horse battery", "not a hash"));
        assert_ne!(h, hash("correct horse battery").unwrap(), "salted");
    }

    #[test]
    fn the_policy_bounds_length() {
        assert_eq!(check_policy("short"), Err(PasswordError::TooShort));
        assert_eq!(hash("elevenchars"), Err(PasswordError::TooShort));
        assert_eq!(check_policy(&"x".repeat(1025)), Err(PasswordError::TooLong));
        assert_eq!(check_policy("twelve chars"), Ok(()));
    }

    #[test]
    fn the_decoy_is_a_valid_hash_so_it_costs_a_real_verify() {
        // A decoy that failed to parse would return at once and tell unknown users apart.
        assert!(PasswordHash::new(DECOY).is_ok());
        verify_nothing("anything at all");
    }
}
