//! The secrets key file: 32 random bytes as 64 hex characters and a newline, mode 0600,
//! created once (never replaced: [`create`] refuses an existing file) and read at start.
//! Whoever opens sealed data decides what a missing file means; the store refuses to start
//! when it holds sealed records and the file is gone (see `store::Store::open`), so a lost
//! key is reported, never silently replaced by a new one.

use std::path::{Path, PathBuf};

use super::{KEY_LEN, SecretKey, files};

/// File name of the key inside the data dir.
pub const KEY_FILE: &str = "secrets.key";

#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read secrets key {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write secrets key {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secrets key {path} is malformed (expected 64 hex characters)")]
    Malformed { path: PathBuf },
    #[error("no randomness available for a new secrets key")]
    Random,
}

/// Reads the key at `path`; `None` when the file does not exist.
pub fn load(path: &Path) -> Result<Option<SecretKey>, KeyFileError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(KeyFileError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut bytes = [0u8; KEY_LEN];
    hex::decode_to_slice(text.trim(), &mut bytes).map_err(|_| KeyFileError::Malformed {
        path: path.to_path_buf(),
    })?;
    Ok(Some(SecretKey::from_bytes(&bytes)))
}

/// Creates a new random key at `path` (0600, fsync'd); fails if the file exists.
pub fn create(path: &Path) -> Result<SecretKey, KeyFileError> {
    let mut bytes = [0u8; KEY_LEN];
    getrandom::fill(&mut bytes).map_err(|_| KeyFileError::Random)?;
    files::write_private(path, format!("{}\n", hex::encode(bytes)).as_bytes(), true).map_err(
        |source| KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        },
    )?;
    Ok(SecretKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_0600_loaded_back_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        assert!(load(&path).unwrap().is_none());
        let key = create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap().unwrap().id(), key.id());
        assert!(matches!(create(&path), Err(KeyFileError::Write { .. })));
        assert_eq!(load(&path).unwrap().unwrap().id(), key.id());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65, "{text:?}");
    }

    #[test]
    fn malformed_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
            std::fs::write(&path, bad).unwrap();
            assert!(
                matches!(load(&path), Err(KeyFileError::Malformed { .. })),
                "{bad:?}"
            );
        }
    }
}
