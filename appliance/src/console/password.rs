//! The console password: argon2id (OWASP parameters: 19 MiB, 2 passes, 1 lane) in PHC
//! string form, with a 16-byte salt the caller draws from the OS RNG.
//!
//! Pure apart from the CPU time the hash costs (tens of milliseconds: call it from a
//! blocking thread, never on the async runtime).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Shortest password accepted.
pub const MIN_LEN: usize = 12;
/// Longest password accepted (argon2 would take more, but nobody types this).
pub const MAX_LEN: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetPasswordError {
    #[error("the password is {len} characters; at least {MIN_LEN} are required")]
    TooShort { len: usize },
    #[error("the password is longer than {MAX_LEN} characters")]
    TooLong,
    #[error("password hashing failed: {0}")]
    Hash(String),
}

fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("fixed argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Checks the policy and hashes `password` with `salt` into a PHC string.
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, SetPasswordError> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(SetPasswordError::TooShort { len });
    }
    if len > MAX_LEN {
        return Err(SetPasswordError::TooLong);
    }
    let salt = SaltString::encode_b64(&salt).map_err(|e| SetPasswordError::Hash(e.to_string()))?;
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| SetPasswordError::Hash(e.to_string()))
}

/// Does `password` match the stored PHC string? A malformed stored hash never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_LEN * 4 {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    hasher()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let phc = hash("correct horse battery", [7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterx", &phc));
        assert!(!verify("correct horse battery", "not a hash"));
        // Another salt, another hash.
        assert_ne!(phc, hash("correct horse battery", [8; 16]).unwrap());
    }

    #[test]
    fn policy() {
        assert_eq!(
            hash("short", [0; 16]),
            Err(SetPasswordError::TooShort { len: 5 })
        );
        assert_eq!(
            hash(&"x".repeat(MAX_LEN + 1), [0; 16]),
            Err(SetPasswordError::TooLong)
        );
    }
}
