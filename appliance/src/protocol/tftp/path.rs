//! Mapping a requested TFTP filename to a path relative to the served root, lexically and
//! purely (no filesystem access).
//!
//! Decisions:
//! - A leading `/` (or several) means "the root": PXE firmware sends `undionly.kpxe`, some
//!   iPXE builds and scripts send `/undionly.kpxe`; both name the same file.
//! - `\` is treated as a separator too (Windows-style PXE clients send `boot\x64\...`), so
//!   `..\..\etc` is caught like `../../etc`.
//! - Any `..` component is refused outright (not "cleaned"): no legitimate boot client
//!   needs it, and refusing makes escapes impossible to construct.
//! - NUL and other control characters are refused.
//! - Empty and `.` components are dropped; a name with nothing left is refused.
//! - Symlinks *inside* the root are followed by the glue: the root is operator-controlled
//!   and Debian's `/usr/lib/ipxe/ipxe.efi` is itself a symlink to `/boot/ipxe.efi`.
//!   Clients cannot create files (the server is read-only), so they cannot plant links.

use std::path::PathBuf;

/// Why a requested filename is not served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolvePathError {
    #[error("empty filename")]
    Empty,
    #[error("filename contains a control character")]
    ControlCharacter,
    #[error("filename contains a `..` component")]
    ParentComponent,
}

/// Resolves `requested` to a relative path below the served root.
pub fn resolve(requested: &str) -> Result<PathBuf, ResolvePathError> {
    if requested.chars().any(char::is_control) {
        return Err(ResolvePathError::ControlCharacter);
    }
    let mut out = PathBuf::new();
    for component in requested.split(['/', '\\']) {
        match component {
            "" | "." => {}
            ".." => return Err(ResolvePathError::ParentComponent),
            c => out.push(c),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(ResolvePathError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        use ResolvePathError as E;
        let ok = |s: &str| Ok(PathBuf::from(s));
        let cases: &[(&str, Result<PathBuf, E>)] = &[
            ("undionly.kpxe", ok("undionly.kpxe")),
            ("/undionly.kpxe", ok("undionly.kpxe")),
            ("//ipxe.efi", ok("ipxe.efi")),
            ("./a/./b", ok("a/b")),
            ("a//b/", ok("a/b")),
            ("boot\\x64\\wdsnbp.com", ok("boot/x64/wdsnbp.com")),
            ("..foo", ok("..foo")),
            ("foo..", ok("foo..")),
            ("", Err(E::Empty)),
            ("/", Err(E::Empty)),
            ("./.", Err(E::Empty)),
            ("..", Err(E::ParentComponent)),
            ("../etc/passwd", Err(E::ParentComponent)),
            ("/../../etc/passwd", Err(E::ParentComponent)),
            ("a/../../b", Err(E::ParentComponent)),
            ("a/..", Err(E::ParentComponent)),
            ("..\\..\\etc\\shadow", Err(E::ParentComponent)),
            ("a\0b", Err(E::ControlCharacter)),
            ("a\nb", Err(E::ControlCharacter)),
        ];
        for (input, want) in cases {
            assert_eq!(&resolve(input), want, "{input:?}");
        }
    }

    #[test]
    fn result_is_always_relative_and_inside() {
        for s in ["/etc/passwd", "///x", "a/b/c", "\\\\server\\share"] {
            let p = resolve(s).unwrap();
            assert!(p.is_relative(), "{s}");
            assert!(
                p.components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
                "{s}"
            );
        }
    }
}
