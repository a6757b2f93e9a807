//! The files TFTP and HTTP `/tftp/<file>` serve: one resolver for both, between the lexical
//! check (`protocol::tftp::path`, pure) and the open. It reads the filesystem, so it lives
//! in the glue.
//!
//! A requested name (already a relative path of plain components) is served when:
//! - every directory on the way is a real directory: a symbolic link used as a directory
//!   (`root/etc -> /etc`, then `etc/shadow`) is refused, wherever it points;
//! - the last component is a regular file, or a symbolic link whose final target
//!   (all links followed) is a regular file inside the root or below one of the allowed
//!   link targets (config `tftp.link_targets`: a directory allows every file below it, a
//!   file allows itself). Debian's `/usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi` is such a
//!   link, hence the default `["/usr/lib/ipxe", "/boot/ipxe.efi"]`.
//!
//! - or it is one of the named files of config `tftp.files` (`name = "/absolute/path"`),
//!   served from that path: Debian's signed shim and GRUB images.
//!
//! The caller opens the returned path, which has no symbolic link left in it. Someone who
//! can write inside the root or an allowed directory could still swap a directory for a
//! link between this check and the open; only the operator can write there.

use std::io;
use std::path::{Component, Path, PathBuf};

use crate::config::TftpConfig;

/// The TFTP root, where links in it may lead, and the named files served beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TftpRoot {
    root: PathBuf,
    link_targets: Vec<PathBuf>,
    files: std::collections::BTreeMap<String, PathBuf>,
}

/// Why a name is not served.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("file not found")]
    NotFound,
    #[error("not a regular file")]
    NotRegular,
    #[error("`{0}` is a symbolic link used as a directory; directory links are not followed")]
    DirectoryLink(String),
    #[error("symbolic link leads outside the TFTP root and the allowed link targets")]
    OutsideRoot,
    #[error("requested name is not a plain relative path")]
    NotRelative,
    #[error("cannot read the TFTP root")]
    Io(#[source] io::Error),
}

impl RootError {
    /// Whether the answer is "refused" (access violation, 403) rather than "not found".
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            RootError::DirectoryLink(_) | RootError::OutsideRoot | RootError::NotRelative
        ) || matches!(self, RootError::Io(e) if e.kind() == io::ErrorKind::PermissionDenied)
    }
}

fn io_error(e: io::Error) -> RootError {
    match e.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => RootError::NotFound,
        _ => RootError::Io(e),
    }
}

impl From<&TftpConfig> for TftpRoot {
    fn from(c: &TftpConfig) -> Self {
        TftpRoot::new(c.root.clone(), c.link_targets.clone()).with_files(c.files.clone())
    }
}

impl TftpRoot {
    pub fn new(root: PathBuf, link_targets: Vec<PathBuf>) -> TftpRoot {
        TftpRoot {
            root,
            link_targets,
            files: Default::default(),
        }
    }

    /// Also serves each `name` (a relative path, e.g. `shimx64.efi`) from its absolute
    /// path (config `tftp.files`: Debian's signed shim and GRUB images, which live outside
    /// the iPXE root), before the root is looked at. The operator named the file, so links
    /// to it are followed; it must be a regular file.
    pub fn with_files(mut self, files: std::collections::BTreeMap<String, PathBuf>) -> TftpRoot {
        self.files = files
            .into_iter()
            .map(|(name, path)| (name.trim_start_matches('/').to_string(), path))
            .collect();
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file to open for `rel` (plain components below the root), or why not.
    /// Blocking: call it off the async executor (`resolve_async`).
    pub fn resolve(&self, rel: &Path) -> Result<PathBuf, RootError> {
        let components: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(RootError::NotRelative),
            })
            .collect::<Result<_, _>>()?;
        let Some((last, dirs)) = components.split_last() else {
            return Err(RootError::NotRelative);
        };
        let name = components
            .iter()
            .map(|c| c.to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if let Some(file) = self.files.get(&name) {
            let target = std::fs::canonicalize(file).map_err(io_error)?;
            if !std::fs::metadata(&target).map_err(io_error)?.is_file() {
                return Err(RootError::NotRegular);
            }
            return Ok(target);
        }
        let mut path = self.root.clone();
        for dir in dirs {
            path.push(dir);
            let meta = std::fs::symlink_metadata(&path).map_err(io_error)?;
            if meta.file_type().is_symlink() {
                return Err(RootError::DirectoryLink(
                    path.strip_prefix(&self.root)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                ));
            }
            if !meta.is_dir() {
                return Err(RootError::NotFound);
            }
        }
        path.push(last);
        let meta = std::fs::symlink_metadata(&path).map_err(io_error)?;
        if meta.is_file() {
            return Ok(path);
        }
        if !meta.file_type().is_symlink() {
            return Err(RootError::NotRegular);
        }
        let target = std::fs::canonicalize(&path).map_err(io_error)?;
        if !std::fs::metadata(&target).map_err(io_error)?.is_file() {
            return Err(RootError::NotRegular);
        }
        let root = std::fs::canonicalize(&self.root).map_err(io_error)?;
        let allowed = target.starts_with(&root)
            || self.link_targets.iter().any(|allowed| {
                // An allowed path that does not exist allows nothing.
                std::fs::canonicalize(allowed).is_ok_and(|a| target.starts_with(a))
            });
        if allowed {
            Ok(target)
        } else {
            Err(RootError::OutsideRoot)
        }
    }

    /// [`TftpRoot::resolve`] on the blocking pool.
    pub async fn resolve_async(
        self: &std::sync::Arc<Self>,
        rel: PathBuf,
    ) -> Result<PathBuf, RootError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.resolve(&rel))
            .await
            .unwrap_or_else(|e| Err(RootError::Io(io::Error::other(e))))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Tree {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        allowed: PathBuf,
    }

    /// root/{file, sub/x}, outside/{shadow, dir/y}, allowed/{ipxe.efi, nested/z}.
    fn tree() -> Tree {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        for (f, body) in [
            ("root/file", "in root"),
            ("root/sub/x", "x"),
            ("outside/shadow", "root:$6$secret"),
            ("outside/dir/y", "y"),
            ("allowed/ipxe.efi", "efi"),
            ("allowed/nested/z", "z"),
        ] {
            let f = p.join(f);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, body).unwrap();
        }
        Tree {
            root: p.join("root"),
            outside: p.join("outside"),
            allowed: p.join("allowed"),
            _tmp: tmp,
        }
    }

    fn served(r: &TftpRoot, rel: &str) -> Result<String, String> {
        r.resolve(Path::new(rel))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .map_err(|e| match e {
                RootError::NotFound => "not found".into(),
                RootError::NotRegular => "not regular".into(),
                RootError::DirectoryLink(_) => "dir link".into(),
                RootError::OutsideRoot => "outside".into(),
                RootError::NotRelative => "not relative".into(),
                RootError::Io(e) => format!("io {e}"),
            })
    }

    #[test]
    fn links_are_followed_only_to_files_inside_the_root_or_allowed_targets() {
        let t = tree();
        let r = TftpRoot::new(t.root.clone(), vec![t.allowed.clone()]);
        symlink(t.outside.join("shadow"), t.root.join("shadow")).unwrap();
        symlink(&t.outside, t.root.join("etc")).unwrap();
        symlink(t.outside.join("dir"), t.root.join("dirlink")).unwrap();
        symlink(t.root.join("sub"), t.root.join("innerdir")).unwrap();
        symlink("file", t.root.join("rel-inside")).unwrap();
        symlink("sub/x", t.root.join("rel-x")).unwrap();
        symlink("../outside/shadow", t.root.join("rel-outside")).unwrap();
        symlink(t.allowed.join("ipxe.efi"), t.root.join("ipxe.efi")).unwrap();
        symlink(t.allowed.join("nested/z"), t.root.join("z")).unwrap();
        // A link to a link inside the root that leads out is judged by its final target.
        symlink(t.root.join("shadow"), t.root.join("chain")).unwrap();
        symlink(t.root.join("missing"), t.root.join("dangling")).unwrap();
        symlink(&t.allowed, t.root.join("allowed-dir")).unwrap();
        let cases = [
            ("file", Ok("in root")),
            ("sub/x", Ok("x")),
            ("rel-inside", Ok("in root")),
            ("rel-x", Ok("x")),
            ("ipxe.efi", Ok("efi")),
            ("z", Ok("z")),
            ("shadow", Err("outside")),
            ("rel-outside", Err("outside")),
            ("chain", Err("outside")),
            ("etc/shadow", Err("dir link")),
            ("dirlink/y", Err("dir link")),
            ("innerdir/x", Err("dir link")),
            ("allowed-dir/ipxe.efi", Err("dir link")),
            ("etc", Err("not regular")),
            ("allowed-dir", Err("not regular")),
            ("sub", Err("not regular")),
            ("missing", Err("not found")),
            ("dangling", Err("not found")),
            ("file/x", Err("not found")),
            ("nope/x", Err("not found")),
        ];
        for (rel, want) in cases {
            let want = want.map(String::from).map_err(String::from);
            assert_eq!(served(&r, rel), want, "{rel}");
        }
        assert!(matches!(
            r.resolve(Path::new("../outside/shadow")),
            Err(RootError::NotRelative)
        ));
        assert!(matches!(
            r.resolve(Path::new("/etc/passwd")),
            Err(RootError::NotRelative)
        ));
        assert!(matches!(
            r.resolve(Path::new("")),
            Err(RootError::NotRelative)
        ));
    }

    #[test]
    fn an_allowed_file_allows_only_itself_and_no_targets_means_root_only() {
        let t = tree();
        symlink(t.allowed.join("ipxe.efi"), t.root.join("ipxe.efi")).unwrap();
        symlink(t.allowed.join("nested/z"), t.root.join("z")).unwrap();
        let r = TftpRoot::new(
            t.root.clone(),
            vec![t.allowed.join("ipxe.efi"), t.root.join("no-such-dir")],
        );
        assert_eq!(served(&r, "ipxe.efi"), Ok("efi".into()));
        assert_eq!(served(&r, "z"), Err("outside".into()));
        let r = TftpRoot::new(t.root.clone(), vec![]);
        assert_eq!(served(&r, "ipxe.efi"), Err("outside".into()));
        assert_eq!(served(&r, "file"), Ok("in root".into()));
    }

    #[test]
    fn a_root_that_is_itself_a_link_works() {
        let t = tree();
        let link = t.root.parent().unwrap().join("root-link");
        symlink(&t.root, &link).unwrap();
        symlink("file", t.root.join("alias")).unwrap();
        let r = TftpRoot::new(link, vec![]);
        assert_eq!(served(&r, "file"), Ok("in root".into()));
        assert_eq!(served(&r, "alias"), Ok("in root".into()));
    }
}
