//! The update's IO: verifying a bundle file, writing the inactive slot, the box's update
//! status, and creating signed bundles.
//!
//! Writing is two passes over the bundle. The first checks everything (signature, arch,
//! length, every component's SHA-256) and a bundle failing it changes nothing. Only then
//! are the target slot's loader entries removed (a slot being written is never bootable),
//! and the second pass streams the components into the root partition and the ESP while
//! hashing them again (the file could have changed in between); only if they match again
//! are the kernel/initrd moved into place and the new try-once entry written.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::bundle::{
    self, BundleError, Component, ComponentCheck, ComponentKind, Header, Manifest, PREFIX_LEN,
};
use super::keys;
use super::slots::{self, Entry, Slot};

/// Why an update could not be checked or written.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Bundle(#[from] BundleError),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the running system was not booted from an A/B slot (no root=PARTLABEL=root-a|b in {0})"
    )]
    NotSlotted(String),
    #[error("no loader entry of the booted slot {0} in {1} to copy the kernel command line from")]
    NoBootedEntry(Slot, String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> UpdateError + 'a {
    move |source| UpdateError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a flashed box keeps its slots. Tests point these at temp files.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The mounted EFI system partition.
    pub esp: PathBuf,
    /// Partitions by GPT label (`root-a`, `root-b`).
    pub partitions: PathBuf,
    /// The running kernel's command line.
    pub cmdline: PathBuf,
    /// The running root's os-release (`IMAGE_VERSION`).
    pub os_release: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            esp: "/efi".into(),
            partitions: "/dev/disk/by-partlabel".into(),
            cmdline: "/proc/cmdline".into(),
            os_release: "/etc/os-release".into(),
        }
    }
}

impl Layout {
    fn entries_dir(&self) -> PathBuf {
        self.esp.join("loader/entries")
    }

    pub fn booted(&self) -> Result<Slot, UpdateError> {
        let path = &self.cmdline;
        let c = std::fs::read_to_string(path).map_err(io("reading", path))?;
        slots::booted_slot(&c).ok_or_else(|| UpdateError::NotSlotted(path.display().to_string()))
    }

    /// Our loader entries (unreadable ESP: none).
    pub fn entries(&self) -> Result<Vec<Entry>, UpdateError> {
        let dir = self.entries_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(io("listing", &dir))? {
            let e = e.map_err(io("listing", &dir))?;
            if let Some(entry) = e.file_name().to_str().and_then(Entry::parse) {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.file.cmp(&b.file));
        Ok(out)
    }
}

/// The public key from a PEM file.
pub fn read_public_key(path: &Path) -> Result<[u8; 32], UpdateError> {
    let text = std::fs::read_to_string(path).map_err(io("reading the update key", path))?;
    Ok(keys::public_from_pem(&text)?)
}

fn read_header(
    f: &mut File,
    path: &Path,
    key: &[u8; 32],
    arch: &str,
) -> Result<Header, UpdateError> {
    let len = f.metadata().map_err(io("reading", path))?.len();
    let mut prefix = [0u8; PREFIX_LEN];
    let got = read_up_to(f, &mut prefix).map_err(io("reading", path))?;
    if got < PREFIX_LEN {
        // Too short even for the prefix: a foreign file says so by its magic.
        if got < 8 || &prefix[..8] != bundle::MAGIC {
            return Err(BundleError::Magic.into());
        }
        return Err(BundleError::ShortHeader {
            got: len,
            need: PREFIX_LEN as u64,
        }
        .into());
    }
    let rest = bundle::header_rest_len(&prefix)?;
    let mut bytes = prefix.to_vec();
    bytes.resize(PREFIX_LEN + rest, 0);
    let got = read_up_to(f, &mut bytes[PREFIX_LEN..]).map_err(io("reading", path))?;
    bytes.truncate(PREFIX_LEN + got);
    Ok(bundle::verify_header(&bytes, key, arch, len)?)
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

const CHUNK: usize = 1 << 20;

/// Streams one component from `f` into `out` (if any), hashing it.
fn copy_component(
    f: &mut File,
    path: &Path,
    c: &Component,
    mut out: Option<(&mut File, &Path)>,
) -> Result<(), UpdateError> {
    let mut check = ComponentCheck::new(c);
    let mut buf = vec![0u8; CHUNK];
    while check.remaining() > 0 {
        let want = (check.remaining() as usize).min(CHUNK);
        let got = read_up_to(f, &mut buf[..want]).map_err(io("reading", path))?;
        if got == 0 {
            return Err(BundleError::Digest { kind: c.kind }.into());
        }
        check.update(&buf[..got]);
        if let Some((w, p)) = out.as_mut() {
            w.write_all(&buf[..got]).map_err(io("writing", p))?;
        }
    }
    Ok(check.finish()?)
}

/// The first pass: the whole bundle checked; nothing is written.
pub fn verify_file(path: &Path, key: &[u8; 32], arch: &str) -> Result<Manifest, UpdateError> {
    let mut f = File::open(path).map_err(io("opening", path))?;
    let header = read_header(&mut f, path, key, arch)?;
    for c in &header.manifest.components {
        copy_component(&mut f, path, c, None)?;
    }
    Ok(header.manifest)
}

/// What an update wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub version: String,
    /// The new loader entry (with its boot counter).
    pub entry: String,
}

fn sync_dir(dir: &Path) -> Result<(), UpdateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

/// Verifies `bundle_path` and writes it to the slot the box did not boot, as its next boot
/// tried `tries` times. Refuses (writing nothing) a bundle failing any check.
pub fn install(
    bundle_path: &Path,
    layout: &Layout,
    key: &[u8; 32],
    arch: &str,
    tries: u32,
) -> Result<Installed, UpdateError> {
    let booted = layout.booted()?;
    let target = booted.other();
    let manifest = verify_file(bundle_path, key, arch)?;

    // Does it fit? (the partition's size is its end offset)
    let device = layout.partitions.join(target.partlabel());
    let mut dev = OpenOptions::new()
        .write(true)
        .open(&device)
        .map_err(io("opening the slot", &device))?;
    let room = dev.seek(SeekFrom::End(0)).map_err(io("sizing", &device))?;
    dev.seek(SeekFrom::Start(0))
        .map_err(io("seeking", &device))?;
    let root = manifest.component(ComponentKind::Root);
    if root.size > room {
        return Err(BundleError::TooLarge {
            kind: ComponentKind::Root,
            size: root.size,
            room,
            what: "root partition",
        }
        .into());
    }

    // The kernel command line of the booted slot, for the new entry.
    let entries = layout.entries()?;
    let entries_dir = layout.entries_dir();
    let booted_entry = slots::next_boot(
        &entries
            .iter()
            .filter(|e| e.slot == booted)
            .cloned()
            .collect::<Vec<_>>(),
    )
    .cloned()
    .ok_or_else(|| UpdateError::NoBootedEntry(booted, entries_dir.display().to_string()))?;
    let booted_path = entries_dir.join(&booted_entry.file);
    let booted_text = std::fs::read_to_string(&booted_path).map_err(io("reading", &booted_path))?;
    let options = slots::options_for(&booted_text, target)
        .ok_or_else(|| UpdateError::NoBootedEntry(booted, booted_path.display().to_string()))?;
    let plan = slots::plan(&entries, target, tries);

    // From here on the target slot is not bootable until its new entry is written.
    for old in &plan.remove {
        let p = entries_dir.join(old);
        std::fs::remove_file(&p).map_err(io("removing", &p))?;
    }
    sync_dir(&entries_dir)?;

    let mut f = File::open(bundle_path).map_err(io("opening", bundle_path))?;
    let header = read_header(&mut f, bundle_path, key, arch)?;
    if header.manifest != manifest {
        return Err(BundleError::Signature.into());
    }
    copy_component(&mut f, bundle_path, root, Some((&mut dev, &device)))?;
    dev.sync_all().map_err(io("syncing", &device))?;

    let slot_dir = layout.esp.join(target.letter());
    std::fs::create_dir_all(&slot_dir).map_err(io("creating", &slot_dir))?;
    let mut staged = Vec::new();
    for (kind, name) in [
        (ComponentKind::Kernel, "vmlinuz"),
        (ComponentKind::Initrd, "initrd.img"),
    ] {
        let tmp = slot_dir.join(format!("{name}.new"));
        let mut out = File::create(&tmp).map_err(io("creating", &tmp))?;
        copy_component(
            &mut f,
            bundle_path,
            manifest.component(kind),
            Some((&mut out, &tmp)),
        )?;
        out.sync_all().map_err(io("syncing", &tmp))?;
        staged.push((tmp, slot_dir.join(name)));
    }
    for (tmp, dst) in staged {
        std::fs::rename(&tmp, &dst).map_err(io("renaming", &tmp))?;
    }
    sync_dir(&slot_dir)?;

    let text = slots::entry_text(target, &manifest.version, &options);
    let tmp = entries_dir.join(format!("{}.tmp", plan.new_file));
    std::fs::write(&tmp, text).map_err(io("writing", &tmp))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io("syncing", &tmp))?;
    let dst = entries_dir.join(&plan.new_file);
    std::fs::rename(&tmp, &dst).map_err(io("renaming", &tmp))?;
    sync_dir(&entries_dir)?;
    Ok(Installed {
        slot: target,
        version: manifest.version,
        entry: plan.new_file,
    })
}

/// `IMAGE_VERSION` of an os-release file (unquoted).
pub fn image_version(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("IMAGE_VERSION=")?;
        Some(v.trim_matches(|c| c == '"' || c == '\'').to_string())
    })
}

/// The running system as the update sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub booted: Option<Slot>,
    /// The running image's version (`IMAGE_VERSION`), if it has one.
    pub image_version: Option<String>,
}

pub fn status(layout: &Layout) -> Status {
    Status {
        booted: layout.booted().ok(),
        image_version: std::fs::read_to_string(&layout.os_release)
            .ok()
            .and_then(|t| image_version(&t)),
    }
}

/// Writes a signed bundle of `root`, `kernel`, `initrd` to `out` (`scripts/sign-bundle`).
pub fn create(
    out: &Path,
    key_pem: &Path,
    arch: &str,
    version: &str,
    parts: [&Path; 3],
) -> Result<Manifest, UpdateError> {
    let key_text =
        std::fs::read_to_string(key_pem).map_err(io("reading the signing key", key_pem))?;
    let key = keys::private_from_pem(&key_text)?;
    let mut components = Vec::new();
    for (kind, path) in bundle::COMPONENTS.iter().zip(parts) {
        let mut f = File::open(path).map_err(io("opening", path))?;
        let size = f.metadata().map_err(io("reading", path))?.len();
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        std::io::copy(&mut f, &mut hasher).map_err(io("reading", path))?;
        components.push(Component {
            kind: *kind,
            size,
            sha256: sha2::Digest::finalize(hasher).into(),
        });
    }
    let manifest = Manifest {
        arch: arch.to_string(),
        version: version.to_string(),
        components,
    };
    // Checked like a box would before anything is written.
    Manifest::parse(&manifest.render())?;
    let tmp = out.with_extension("tmp");
    let mut w = File::create(&tmp).map_err(io("creating", &tmp))?;
    w.write_all(&bundle::sign_header(&manifest, &key))
        .map_err(io("writing", &tmp))?;
    for path in parts {
        let mut f = File::open(path).map_err(io("opening", path))?;
        std::io::copy(&mut f, &mut w).map_err(io("writing", &tmp))?;
    }
    w.sync_all().map_err(io("syncing", &tmp))?;
    std::fs::rename(&tmp, out).map_err(io("renaming", &tmp))?;
    Ok(manifest)
}

/// The privileged path's step (`appliance update apply --request DIR`): the request marker
/// is removed first (a failing bundle is tried once, not in a loop), the bundle installed,
/// and the outcome left in `DIR/result` for the console.
pub fn apply_request(
    dir: &Path,
    layout: &Layout,
    key: &[u8; 32],
    arch: &str,
    tries: u32,
) -> Result<Installed, UpdateError> {
    let request = dir.join("request");
    match std::fs::remove_file(&request) {
        Ok(()) => {}
        Err(e) => return Err(io("removing", &request)(e)),
    }
    let bundle = dir.join("bundle");
    let result = install(&bundle, layout, key, arch, tries);
    let text = match &result {
        Ok(i) => format!(
            "ok: version {} written to slot {}, trying it once\n",
            i.version, i.slot
        ),
        Err(e) => format!("refused: {}\n", crate::error_chain(e)),
    };
    let _ = std::fs::remove_file(&bundle);
    let out = dir.join("result");
    std::fs::write(&out, text).map_err(io("writing", &out))?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEY: &str = include_str!("../../../scripts/keys/update-test.pem");
    const TEST_PUB: &str = include_str!("../../../scripts/keys/update-test.pub.pem");
    const OPTIONS: &str = "root=PARTLABEL=root-a rootfstype=squashfs ro console=ttyS0,115200";

    struct Box {
        dir: tempfile::TempDir,
        layout: Layout,
    }

    /// A fake flashed box booted from slot A: partitions as 4 KiB files, an ESP directory
    /// with the image's entries.
    fn flashed() -> Box {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let layout = Layout {
            esp: d.join("esp"),
            partitions: d.join("by-partlabel"),
            cmdline: d.join("cmdline"),
            os_release: d.join("os-release"),
        };
        std::fs::create_dir_all(layout.esp.join("loader/entries")).unwrap();
        std::fs::create_dir_all(&layout.partitions).unwrap();
        for s in ["a", "b"] {
            std::fs::write(
                layout.partitions.join(format!("root-{s}")),
                vec![s.as_bytes()[0]; 4096],
            )
            .unwrap();
            std::fs::create_dir_all(layout.esp.join(s)).unwrap();
            std::fs::write(
                layout.esp.join(s).join("vmlinuz"),
                format!("old kernel {s}"),
            )
            .unwrap();
        }
        std::fs::write(
            layout.esp.join("loader/entries/appliance-1-a.conf"),
            slots::entry_text(Slot::A, "1.0", OPTIONS),
        )
        .unwrap();
        std::fs::write(
            layout.esp.join("loader/entries/appliance-0-b.conf"),
            slots::entry_text(Slot::B, "1.0", &OPTIONS.replace("root-a", "root-b")),
        )
        .unwrap();
        std::fs::write(
            &layout.cmdline,
            format!("BOOT_IMAGE=/a/vmlinuz {OPTIONS}\n"),
        )
        .unwrap();
        std::fs::write(&layout.os_release, "ID=debian\nIMAGE_VERSION=\"1.0\"\n").unwrap();
        Box { dir, layout }
    }

    fn make_bundle(b: &Box, root: &[u8], arch: &str) -> PathBuf {
        let d = b.dir.path();
        std::fs::write(d.join("key.pem"), TEST_KEY).unwrap();
        for (n, bytes) in [
            ("root.sq", root),
            ("k", b"new kernel".as_slice()),
            ("i", b"new initrd"),
        ] {
            std::fs::write(d.join(n), bytes).unwrap();
        }
        let out = d.join(format!("{arch}.bundle"));
        create(
            &out,
            &d.join("key.pem"),
            arch,
            "2.0",
            [&d.join("root.sq"), &d.join("k"), &d.join("i")],
        )
        .unwrap();
        out
    }

    fn key() -> [u8; 32] {
        keys::public_from_pem(TEST_PUB).unwrap()
    }

    /// Every file of the fake box, for "nothing changed" checks.
    fn snapshot(b: &Box) -> Vec<(PathBuf, Vec<u8>)> {
        fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
            let mut es: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            es.sort();
            for e in es {
                if e.is_dir() {
                    walk(&e, out);
                } else {
                    out.push((e.clone(), std::fs::read(&e).unwrap()));
                }
            }
        }
        let mut out = Vec::new();
        walk(&b.layout.esp, &mut out);
        walk(&b.layout.partitions, &mut out);
        out
    }

    #[test]
    fn a_good_bundle_writes_the_other_slot_and_a_try_once_entry() {
        let b = flashed();
        let bundle = make_bundle(&b, b"new root squashfs", "x86_64");
        let done = install(&bundle, &b.layout, &key(), "x86_64", 1).unwrap();
        assert_eq!(
            done,
            Installed {
                slot: Slot::B,
                version: "2.0".into(),
                entry: "appliance-2-b+1.conf".into()
            }
        );
        let root_b = std::fs::read(b.layout.partitions.join("root-b")).unwrap();
        assert_eq!(&root_b[..17], b"new root squashfs");
        assert_eq!(root_b.len(), 4096, "the partition keeps its size");
        assert_eq!(
            std::fs::read(b.layout.partitions.join("root-a")).unwrap(),
            vec![b'a'; 4096]
        );
        assert_eq!(
            std::fs::read(b.layout.esp.join("b/vmlinuz")).unwrap(),
            b"new kernel"
        );
        assert_eq!(
            std::fs::read(b.layout.esp.join("b/initrd.img")).unwrap(),
            b"new initrd"
        );
        assert_eq!(
            std::fs::read(b.layout.esp.join("a/vmlinuz")).unwrap(),
            b"old kernel a"
        );
        let names: Vec<String> = b
            .layout
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.file)
            .collect();
        assert_eq!(names, ["appliance-1-a.conf", "appliance-2-b+1.conf"]);
        let text =
            std::fs::read_to_string(b.layout.esp.join("loader/entries/appliance-2-b+1.conf"))
                .unwrap();
        assert_eq!(
            text,
            slots::entry_text(Slot::B, "2.0", &OPTIONS.replace("root-a", "root-b"))
        );
        assert_eq!(
            slots::next_boot(&b.layout.entries().unwrap()).unwrap().slot,
            Slot::B
        );
    }

    #[test]
    fn bad_bundles_are_refused_and_change_nothing() {
        let b = flashed();
        let good = make_bundle(&b, b"new root squashfs", "x86_64");
        let bytes = std::fs::read(&good).unwrap();
        let before = snapshot(&b);
        let d = b.dir.path();
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "truncated",
                bytes[..bytes.len() - 3].to_vec(),
                "truncated or padded",
            ),
            ("header cut", bytes[..30].to_vec(), "truncated"),
            ("empty", Vec::new(), "not an update bundle"),
            (
                "squashfs",
                b"hsqs not a bundle".to_vec(),
                "not an update bundle",
            ),
        ];
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        cases.push(("payload byte", tampered, "initrd: SHA-256 does not match"));
        let mut resigned = bytes.clone();
        resigned[20] ^= 1;
        cases.push(("manifest byte", resigned, "bad signature"));
        for (name, data, want) in cases {
            let p = d.join(name);
            std::fs::write(&p, &data).unwrap();
            let e = install(&p, &b.layout, &key(), "x86_64", 1)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{name}: {e:?} lacks {want:?}");
            assert_eq!(snapshot(&b), before, "{name} changed the box");
        }
        let arm = make_bundle(&b, b"arm root", "aarch64");
        let e = install(&arm, &b.layout, &key(), "x86_64", 1)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "bundle is for aarch64, this box is x86_64");
        let other_key = keys::public_from_pem(&keys::public_pem(
            &keys::private_from_pem(&keys::generate_private_pem().unwrap()).unwrap(),
        ))
        .unwrap();
        let e = install(&good, &b.layout, &other_key, "x86_64", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad signature"), "{e}");
        let big = make_bundle(&b, &vec![0u8; 5000], "x86_64");
        let e = install(&big, &b.layout, &key(), "x86_64", 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("5000 bytes does not fit the 4096-byte root partition"),
            "{e}"
        );
        assert_eq!(snapshot(&b), before);
    }

    #[test]
    fn a_second_update_goes_back_to_a_and_replaces_a_failed_trial() {
        let b = flashed();
        let bundle = make_bundle(&b, b"first", "x86_64");
        install(&bundle, &b.layout, &key(), "x86_64", 1).unwrap();
        // The loader tried B and it failed: +0-1; the box is back on A.
        let e = b.layout.esp.join("loader/entries");
        std::fs::rename(
            e.join("appliance-2-b+1.conf"),
            e.join("appliance-2-b+0-1.conf"),
        )
        .unwrap();
        assert_eq!(
            slots::next_boot(&b.layout.entries().unwrap()).unwrap().slot,
            Slot::A
        );
        let done = install(&bundle, &b.layout, &key(), "x86_64", 1).unwrap();
        assert_eq!(done.entry, "appliance-3-b+1.conf");
        let names: Vec<String> = b
            .layout
            .entries()
            .unwrap()
            .into_iter()
            .map(|e| e.file)
            .collect();
        assert_eq!(names, ["appliance-1-a.conf", "appliance-3-b+1.conf"]);
        // B blessed and booted: the next update writes A.
        std::fs::rename(e.join("appliance-3-b+1.conf"), e.join("appliance-3-b.conf")).unwrap();
        std::fs::write(&b.layout.cmdline, OPTIONS.replace("root-a", "root-b")).unwrap();
        let done = install(&bundle, &b.layout, &key(), "x86_64", 1).unwrap();
        assert_eq!(
            (done.slot, done.entry.as_str()),
            (Slot::A, "appliance-4-a+1.conf")
        );
        let text = std::fs::read_to_string(e.join("appliance-4-a+1.conf")).unwrap();
        assert!(text.contains(&format!("options {OPTIONS}\n")), "{text}");
    }

    #[test]
    fn request_removes_the_marker_and_records_the_outcome() {
        let b = flashed();
        let req = b.dir.path().join("update");
        std::fs::create_dir_all(&req).unwrap();
        std::fs::write(req.join("request"), "").unwrap();
        std::fs::write(req.join("bundle"), b"junk").unwrap();
        apply_request(&req, &b.layout, &key(), "x86_64", 1).unwrap_err();
        assert!(!req.join("request").exists() && !req.join("bundle").exists());
        let r = std::fs::read_to_string(req.join("result")).unwrap();
        assert_eq!(r, "refused: not an update bundle (no APLBNDL1 magic)\n");
        let good = make_bundle(&b, b"root", "x86_64");
        std::fs::rename(good, req.join("bundle")).unwrap();
        std::fs::write(req.join("request"), "").unwrap();
        apply_request(&req, &b.layout, &key(), "x86_64", 1).unwrap();
        let r = std::fs::read_to_string(req.join("result")).unwrap();
        assert_eq!(r, "ok: version 2.0 written to slot B, trying it once\n");
        assert!(
            apply_request(&req, &b.layout, &key(), "x86_64", 1).is_err(),
            "no request"
        );
    }

    #[test]
    fn status_reads_slot_and_image_version() {
        let b = flashed();
        assert_eq!(
            status(&b.layout),
            Status {
                booted: Some(Slot::A),
                image_version: Some("1.0".into())
            }
        );
        assert_eq!(
            image_version("IMAGE_VERSION=2.1+abc\n").as_deref(),
            Some("2.1+abc")
        );
        assert_eq!(image_version("ID=x\n"), None);
    }
}
