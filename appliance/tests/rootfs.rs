//! The files `rootfs/` lays over the image's root, checked offline with the real systemd
//! tools: the units verify (`systemd-analyze verify` in a scratch root holding the real
//! binary), appliance.service's sandbox scores as hardened, sysusers/tmpfiles create the
//! user and the data dirs, the fstab generator turns /etc/fstab into var.mount with growfs,
//! and `appliance setup token` creates the token once (0600) and prints it only then.
//!
//! Needs systemd's tools (`scripts/setup` installs them); without them the test skips with
//! a reason, except under CI=true or APPLIANCE_E2E=1 where that is a failure.

#[path = "support/prereq.rs"]
mod prereq;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn have_systemd_tools() -> bool {
    let ok = Path::new("/lib/systemd/system-generators/systemd-fstab-generator").exists()
        && Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "CI: systemd tools missing (scripts/setup installs systemd)"
        );
        prereq::skip(
            "rootfs",
            "systemd-analyze / systemd-fstab-generator not installed",
        );
    }
    ok
}

fn copy_tree(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a {} {}", from.display(), to.display());
}

/// A scratch root: the host's systemd units (for the targets ours name), `rootfs/`, the
/// binary under test at /usr/bin/appliance and setpriv (used by show-token).
fn scratch_root() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let root = t.path();
    for d in ["usr/lib/systemd/system", "usr/bin", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    copy_tree(
        Path::new("/lib/systemd/system"),
        &root.join("usr/lib/systemd/system"),
    );
    copy_tree(&repo().join("rootfs"), root);
    std::fs::copy(
        env!("CARGO_BIN_EXE_appliance"),
        root.join("usr/bin/appliance"),
    )
    .unwrap();
    std::fs::copy("/usr/bin/setpriv", root.join("usr/bin/setpriv")).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nsystemd-journal:x:101:\n",
    )
    .unwrap();
    t
}

const UNITS: &[&str] = &[
    "appliance.service",
    "appliance-setup.service",
    "appliance-firstboot.service",
    "appliance-agent-env.service",
    "appliance-healthy.service",
    "appliance-update.path",
    "appliance-update.service",
];

#[test]
fn units_verify_in_a_scratch_root() {
    if !have_systemd_tools() {
        return;
    }
    let t = scratch_root();
    let root = t.path();
    let units: Vec<PathBuf> = UNITS
        .iter()
        .map(|u| root.join("usr/lib/systemd/system").join(u))
        .collect();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("--man=no")
        .args(&units)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    for u in UNITS {
        assert!(!text.contains(u), "verify complained about {u}:\n{text}");
    }
    // The enablement symlinks shipped in rootfs/ point at units that exist.
    for link in [
        "etc/systemd/system/multi-user.target.wants/appliance.service",
        "etc/systemd/system/multi-user.target.wants/appliance-firstboot.service",
        "etc/systemd/system/multi-user.target.wants/appliance-agent-env.service",
        "etc/systemd/system/sysinit.target.wants/appliance-setup.service",
        "etc/systemd/system/multi-user.target.wants/appliance-update.path",
        "etc/systemd/system/boot-complete.target.requires/appliance-healthy.service",
    ] {
        let target = std::fs::read_link(root.join(link)).unwrap();
        let inside = root.join(target.strip_prefix("/").unwrap());
        assert!(inside.is_file(), "{link} -> {}", target.display());
    }
}

#[test]
fn service_sandbox_is_hardened() {
    if !have_systemd_tools() {
        return;
    }
    let unit = repo().join("rootfs/usr/lib/systemd/system/appliance.service");
    // systemd's own exposure score, 0 (locked down) .. 10 (unprotected); fail above 2.5.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=25", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "exposure above 2.5:\n{text}");
    let unit_text = std::fs::read_to_string(&unit).unwrap();
    // Exactly the capabilities the code uses; never CAP_NET_ADMIN or root.
    assert!(unit_text.contains("\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE CAP_NET_RAW\n"));
    assert!(unit_text.contains("\nUser=appliance\n"));
    assert!(!unit_text.contains("CAP_NET_ADMIN\n") && !unit_text.contains("CAP_SYS_ADMIN"));
    assert!(unit_text.contains("\nReadWritePaths=/var/lib/appliance\n"));
}

#[test]
fn sysusers_and_tmpfiles_create_user_and_data_dirs() {
    if !have_systemd_tools() {
        return;
    }
    let t = scratch_root();
    let root = t.path();
    let st = Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .status()
        .unwrap();
    assert!(st.success());
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("appliance:x:990:990:Provisioning appliance:/var/lib/appliance:"),
        "{passwd}"
    );
    let st = Command::new("systemd-tmpfiles")
        .arg(format!("--root={}", root.display()))
        .arg("--create")
        .arg(root.join("usr/lib/tmpfiles.d/appliance.conf"))
        .status()
        .unwrap();
    assert!(st.success());
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.join("var/lib/appliance")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (990, 990, 0o750));
    assert!(root.join("var/lib/appliance-setup").is_dir());
}

#[test]
fn fstab_gives_var_with_growfs_and_esp_automount() {
    if !have_systemd_tools() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let normal = out.path().join("normal");
    std::fs::create_dir_all(&normal).unwrap();
    let st = Command::new("/lib/systemd/system-generators/systemd-fstab-generator")
        .arg(&normal)
        .arg(out.path().join("early"))
        .arg(out.path().join("late"))
        .env("SYSTEMD_FSTAB", repo().join("rootfs/etc/fstab"))
        .env("SYSTEMD_PROC_CMDLINE", "root=PARTLABEL=root-a ro")
        .env("SYSTEMD_IN_INITRD", "0")
        .status()
        .unwrap();
    assert!(st.success());
    let var = std::fs::read_to_string(normal.join("var.mount")).unwrap();
    assert!(var.contains("What=/dev/disk/by-partlabel/data"), "{var}");
    assert!(var.contains("Type=ext4"), "{var}");
    assert!(
        normal
            .join("var.mount.wants/systemd-growfs@var.service")
            .exists()
            || normal
                .join("local-fs.target.wants/systemd-growfs@var.service")
                .exists()
            || std::fs::read_to_string(normal.join("systemd-growfs@var.service")).is_ok(),
        "no growfs for /var: {:?}",
        std::fs::read_dir(&normal)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    assert!(normal.join("efi.automount").exists());
    assert!(normal.join("tmp.mount").exists());
}

#[test]
fn setup_token_is_created_once_and_printed_only_then() {
    let t = tempfile::tempdir().unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_appliance"))
            .args(["setup", "token", "--data-dir"])
            .arg(t.path())
            .output()
            .unwrap()
    };
    let first = run();
    assert!(first.status.success());
    let printed = String::from_utf8(first.stdout).unwrap();
    let token = printed.trim();
    assert_eq!(token.len(), 48, "{printed:?}");
    assert!(
        first.stderr.is_empty(),
        "token path must print nothing else"
    );
    let file = t.path().join("admin.token");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let second = run();
    assert!(second.status.success());
    assert!(second.stdout.is_empty(), "printed again");
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), token);
}
