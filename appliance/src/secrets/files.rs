//! Private files and directories: the data dir is 0700 and every file holding state or a
//! secret (`state.redb`, `admin.token`, `secrets.key`, later WireGuard keys) is 0600.
//! New files are created that way ([`write_private`]); [`restrict`] tightens what an older
//! install left more open, returning the old mode so the caller can say what changed.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the data dir.
pub const DIR_MODE: u32 = 0o700;
/// Mode of state and secret files.
pub const FILE_MODE: u32 = 0o600;

/// Removes every permission bit outside `mode` from `path` (never adds any). Returns the
/// old permission bits when they changed, `None` when nothing was to do or `path` does
/// not exist.
pub fn restrict(path: &Path, mode: u32) -> std::io::Result<Option<u32>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() {
        // Never chmod through a link (the target may be anything).
        return Ok(None);
    }
    let old = meta.permissions().mode() & 0o7777;
    let new = old & mode;
    if new == old {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))?;
    Ok(Some(old))
}

/// Tightens the data dir to [`DIR_MODE`] and every regular file directly in it (the store,
/// the admin token, the secrets key and any later secret file) to [`FILE_MODE`]; returns
/// what changed as `"<name> 644→600"` items, for one log line. Subdirectories (the boot
/// asset cache) are left as they are: nobody else can reach them through a 0700 dir.
pub fn restrict_data_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut changed = Vec::new();
    if let Some(old) = restrict(dir, DIR_MODE)? {
        changed.push(format!("{} {old:o}→{:o}", dir.display(), old & DIR_MODE));
    }
    let mut entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if !entry.file_type()?.is_file() {
            continue;
        }
        if let Some(old) = restrict(&entry.path(), FILE_MODE)? {
            changed.push(format!(
                "{} {old:o}→{:o}",
                entry.file_name().to_string_lossy(),
                old & FILE_MODE
            ));
        }
    }
    Ok(changed)
}

/// Writes `bytes` to `path` as a 0600 file: a temp file beside it, fsync'd, then renamed
/// over `path`, so a crash leaves the old content or the new, never a partial file.
/// `create_new` refuses to replace an existing `path` (for keys that must never change).
pub fn write_private(path: &Path, bytes: &[u8], create_new: bool) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.map_or_else(|| tmp_name.clone().into(), |d| d.join(&tmp_name));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)?;
    // An older temp file keeps its mode through truncate: set it explicitly.
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    if create_new {
        // link(2) fails with EEXIST instead of replacing.
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        linked?;
    } else {
        std::fs::rename(&tmp, path)?;
    }
    if let Some(d) = dir
        && let Ok(d) = std::fs::File::open(d)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn restrict_only_removes_bits_and_reports_the_old_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(restrict(&f, FILE_MODE).unwrap(), Some(0o644));
        assert_eq!(mode(&f), 0o600);
        assert_eq!(restrict(&f, FILE_MODE).unwrap(), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(restrict(&f, FILE_MODE).unwrap(), None);
        assert_eq!(mode(&f), 0o400, "never adds bits");
        assert_eq!(
            restrict(&dir.path().join("missing"), FILE_MODE).unwrap(),
            None
        );
        let d = dir.path().join("d");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(restrict(&d, DIR_MODE).unwrap(), Some(0o755));
        assert_eq!(mode(&d), 0o700);
    }

    #[test]
    fn data_dir_and_its_files_are_tightened_and_reported() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, m) in [
            ("state.redb", 0o644),
            ("admin.token", 0o600),
            ("x.key", 0o664),
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(m)).unwrap();
        }
        std::fs::create_dir(dir.join("env")).unwrap();
        std::fs::set_permissions(dir.join("env"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let changed = restrict_data_dir(&dir).unwrap();
        assert_eq!(
            changed,
            [
                format!("{} 755→700", dir.display()),
                "state.redb 644→600".to_string(),
                "x.key 664→600".to_string()
            ]
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.redb")), 0o600);
        assert_eq!(mode(&dir.join("env")), 0o755);
        assert!(restrict_data_dir(&dir).unwrap().is_empty());
    }

    #[test]
    fn restrict_does_not_follow_links() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::write(&target, b"x").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(restrict(&link, FILE_MODE).unwrap(), None);
        assert_eq!(mode(&target), 0o644);
    }

    #[test]
    fn write_private_is_0600_and_create_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k");
        write_private(&f, b"one", true).unwrap();
        assert_eq!(mode(&f), 0o600);
        let e = write_private(&f, b"two", true).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&f).unwrap(), b"one");
        write_private(&f, b"three", false).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"three");
        assert_eq!(mode(&f), 0o600);
        assert!(!dir.path().join("k.tmp").exists());
    }
}
