//! The admin token: generated on first start, stored 0600 in the data dir, checked on every
//! admin call as `authorization: Bearer <token>`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// File name of the admin token inside the data dir.
pub const TOKEN_FILE: &str = "admin.token";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read admin token {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write admin token {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("admin token {path} is empty or malformed")]
    Malformed { path: PathBuf },
    #[error("admin token {path} is readable by others (mode {mode:o}); run chmod 600 on it")]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("no randomness available for a new admin token")]
    Random(#[source] getrandom::Error),
}

/// The admin token and whether it was created just now (then it is printed once).
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub token: String,
    pub created: bool,
}

/// Loads the token from `data_dir`, creating it (0600) if missing.
pub fn load_or_create(data_dir: &Path) -> Result<AdminToken, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mode = std::fs::metadata(&path)
                .map_err(|source| TokenError::Read {
                    path: path.clone(),
                    source,
                })?
                .permissions()
                .mode()
                & 0o777;
            if mode & 0o077 != 0 {
                return Err(TokenError::TooOpen { path, mode });
            }
            let token = text.trim().to_string();
            if token.len() < 16 || !token.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(TokenError::Malformed { path });
            }
            Ok(AdminToken {
                token,
                created: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 24];
            getrandom::fill(&mut bytes).map_err(TokenError::Random)?;
            let token = hex::encode(bytes);
            // 0600, written to a temp file and renamed: a crash never leaves half a token.
            crate::secrets::files::write_private(&path, format!("{token}\n").as_bytes(), false)
                .map_err(|source| TokenError::Write {
                    path: path.clone(),
                    source,
                })?;
            Ok(AdminToken {
                token,
                created: true,
            })
        }
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// Reads an existing token (for `appliance ctl` on the box).
pub fn read(data_dir: &Path) -> Result<String, TokenError> {
    let path = data_dir.join(TOKEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| TokenError::Read {
        path: path.clone(),
        source,
    })?;
    Ok(text.trim().to_string())
}

/// Constant-time comparison of the presented header value against the token.
pub fn check_bearer(header: Option<&str>, token: &str) -> bool {
    let Some(presented) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_with_mode_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.created);
        let mode = std::fs::metadata(dir.path().join(TOKEN_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path()).unwrap();
        assert!(!second.created);
        assert_eq!(first.token, second.token);
    }

    #[test]
    fn open_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(dir.path()),
            Err(TokenError::TooOpen { .. })
        ));
    }

    #[test]
    fn bearer_check() {
        assert!(check_bearer(Some("Bearer abc"), "abc"));
        assert!(!check_bearer(Some("Bearer abd"), "abc"));
        assert!(!check_bearer(Some("abc"), "abc"));
        assert!(!check_bearer(None, "abc"));
        assert!(!check_bearer(Some("Bearer "), "abc"));
    }
}
