//! Signed A/B update with automatic rollback, on the flashable image under QEMU/OVMF (TCG):
//! one VM that follows its own reboots, updated through the console's upload
//! (`POST /api/v1/update`, admin session + CSRF) as an operator would.
//!
//! 1. First boot on slot A (`/api/v1/system` says slot A and the image's version); a
//!    ServerClass is applied to find again after the updates.
//! 2. Refused, nothing written: a payload byte flipped (SHA-256 mismatch), a truncated
//!    bundle, a bundle signed with another key, one for another architecture: each a 400
//!    naming why, no update pending (these carry a small root: see `make_bundles`).
//! 3. A signed bundle whose `appliance serve` never becomes ready (its root's config is
//!    broken): the box writes slot B and reboots into it by itself; B's health gate
//!    (`appliance-healthy.service`) fails after its deadline (30 s, set by the bundle's own
//!    `/etc/appliance/health-gate.env` instead of the default 120 s: the slot never becomes
//!    ready, so the shorter wait proves the same fallback) and reboots; systemd-boot,
//!    finding B's entry out of tries, boots A again. The test never reboots the VM.
//! 4. A good signed bundle (new version): the box boots B, serves with the new version, the
//!    ServerClass is still there, and B is blessed (its loader entry loses the counter).
//! 5. Powered off, the ESP's entries (read with mtools) are A's and B's blessed one; the
//!    failed trial's entry is gone, replaced by the good update's.
//!
//! Bundles are made from the build's own root (`images/out/x86_64/root.squashfs`, kernel,
//! initrd) with `scripts/sign-bundle` and the repository's test key, which the image was
//! built to accept. Opt-in like every QEMU test; under `APPLIANCE_E2E=1` a missing image
//! fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::image::{ImageVm, data_fs, debugfs, partition, run, tail, token_from_console};
use qemu_tests::{Needs, OVMF_VARS, require_lab, workspace_root};

const DISK_BYTES: u64 = 2 << 30;
/// The unhealthy bundle's health-gate deadline (its `/etc/appliance/health-gate.env`).
const BAD_SLOT_DEADLINE_SECS: u64 = 30;
/// Boot (≈140 s under TCG here) + the health gate's deadline + the fallback boot, generous.
const ROLLBACK_TIMEOUT: Duration = Duration::from_secs(900);
/// From B serving to its loader entry blessed on the disk (the gate's next /readyz poll,
/// then systemd-bless-boot): seconds; generous.
const BLESS_TIMEOUT: Duration = Duration::from_secs(180);

/// A console session: cookie jar + CSRF token.
struct Session {
    jar: PathBuf,
    csrf: String,
}

fn login(vm: &ImageVm, dir: &Path, token: &str) -> Session {
    let jar = dir.join("cookies");
    let (code, body) = vm.curl(&[
        "-c",
        jar.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        "content-type: application/json",
        "--data",
        &format!("{{\"secret\":\"{token}\"}}"),
        &vm.url("/api/v1/login"),
    ]);
    assert_eq!(code, 200, "login: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    Session {
        jar,
        csrf: v["csrf"].as_str().unwrap().to_string(),
    }
}

fn system(vm: &ImageVm, s: &Session) -> Option<serde_json::Value> {
    let (code, body) = vm.curl(&["-b", s.jar.to_str().unwrap(), &vm.url("/api/v1/system")]);
    (code == 200).then(|| serde_json::from_str(&body).unwrap())
}

fn upload(vm: &ImageVm, s: &Session, bundle: &Path) -> (u16, String) {
    vm.curl(&[
        "-m",
        "900",
        "-b",
        s.jar.to_str().unwrap(),
        "-X",
        "POST",
        "-H",
        &format!("x-csrf-token: {}", s.csrf),
        "-H",
        "content-type: application/octet-stream",
        "--data-binary",
        &format!("@{}", bundle.display()),
        &vm.url("/api/v1/update"),
    ])
}

/// A root squashfs made from the build's root with `edit` applied, its os-release saying
/// `version`.
fn root_squashfs(work: &Path, out_dir: &Path, version: &str, edit: impl Fn(&Path)) -> PathBuf {
    let tree = out_dir.join(format!("root-{version}"));
    run(Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&tree)
        .arg(work.join("root.squashfs")));
    let os_release = tree.join("usr/lib/os-release");
    let text = std::fs::read_to_string(&os_release).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("IMAGE_VERSION=") {
                format!("IMAGE_VERSION={version}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&os_release, text).unwrap();
    edit(&tree);
    let squash = out_dir.join(format!("root-{version}.squashfs"));
    // One compressor thread: the bundles are made while slot A boots on the other core.
    run(Command::new("mksquashfs").arg(&tree).arg(&squash).args([
        "-comp",
        "zstd",
        "-Xcompression-level",
        "3",
        "-processors",
        "1",
        "-noappend",
        "-quiet",
        "-no-progress",
    ]));
    std::fs::remove_dir_all(&tree).unwrap();
    squash
}

/// `root` with the build's kernel and initrd, signed with `key` as `version` for `arch`.
fn sign(
    work: &Path,
    out_dir: &Path,
    root: &Path,
    version: &str,
    key: &Path,
    arch: &str,
) -> PathBuf {
    let out = out_dir.join(format!("{version}.bundle"));
    run(Command::new(workspace_root().join("scripts/sign-bundle"))
        .arg("--key")
        .arg(key)
        .args(["--arch", arch, "--version", version])
        .arg("--root")
        .arg(root)
        .arg("--kernel")
        .arg(work.join("esp/a/vmlinuz"))
        .arg("--initrd")
        .arg(work.join("esp/a/initrd.img"))
        .arg("--out")
        .arg(&out));
    out
}

/// The bundles the test uploads.
struct Bundles {
    /// Signed, its slot never ready (broken config, a 30 s health gate).
    bad: PathBuf,
    /// Signed, a new version.
    good: PathBuf,
    /// A small root signed with the box's key: the CSRF check's upload.
    small: PathBuf,
    /// The small root signed for aarch64.
    arm: PathBuf,
    /// The small root signed with another key.
    foreign: PathBuf,
    /// The small bundle with a payload byte flipped.
    tampered: PathBuf,
    /// The small bundle without its last 4 KiB.
    truncated: PathBuf,
}

/// Makes [`Bundles`] in `d` from the build in `work`: two full roots (the unhealthy one and
/// the good one). What the refused bundles are refused for lies in their header or in a
/// component's digest, whatever the root's size, so they carry a small root (a squashfs of
/// an os-release alone) beside the build's kernel and initrd: about 11 MiB each to upload
/// into the TCG guest instead of 93 MiB.
fn make_bundles(work: &Path, d: &Path, key: &Path, bin: &Path) -> Bundles {
    let started = Instant::now();
    let bad_root = root_squashfs(work, d, "9.9.9-unhealthy", |tree| {
        std::fs::write(
            tree.join("etc/appliance/config.toml"),
            "this is [not toml\n",
        )
        .unwrap();
        std::fs::write(
            tree.join("etc/appliance/health-gate.env"),
            format!("APPLIANCE_HEALTH_DEADLINE_SECS={BAD_SLOT_DEADLINE_SECS}\n"),
        )
        .unwrap();
    });
    let bad = sign(work, d, &bad_root, "9.9.9-unhealthy", key, "x86_64");
    std::fs::remove_file(&bad_root).unwrap();
    let good_root = root_squashfs(work, d, "9.9.9-good", |_| {});
    let good = sign(work, d, &good_root, "9.9.9-good", key, "x86_64");
    std::fs::remove_file(&good_root).unwrap();
    let small_tree = d.join("root-small");
    std::fs::create_dir_all(small_tree.join("usr/lib")).unwrap();
    std::fs::write(
        small_tree.join("usr/lib/os-release"),
        "ID=debian\nIMAGE_VERSION=9.9.9-refused\n",
    )
    .unwrap();
    let small_root = d.join("root-small.squashfs");
    run(Command::new("mksquashfs")
        .arg(&small_tree)
        .arg(&small_root)
        .args(["-comp", "zstd", "-noappend", "-quiet", "-no-progress"]));
    let small = sign(work, d, &small_root, "9.9.9-small", key, "x86_64");
    let arm = sign(work, d, &small_root, "9.9.9-arm", key, "aarch64");
    let other_key = d.join("other.pem");
    run(Command::new(bin).args(["update", "keygen"]).arg(&other_key));
    let foreign = sign(work, d, &small_root, "9.9.9-foreign", &other_key, "x86_64");
    std::fs::remove_file(&small_root).unwrap();
    let small_bytes = std::fs::read(&small).unwrap();
    let tampered = d.join("tampered.bundle");
    let mut t = small_bytes.clone();
    let mid = t.len() / 2;
    t[mid] ^= 0x40;
    std::fs::write(&tampered, t).unwrap();
    let truncated = d.join("truncated.bundle");
    std::fs::write(&truncated, &small_bytes[..small_bytes.len() - 4096]).unwrap();
    println!(
        "UPDATE-BUNDLES made in {:.1} s (good {} MiB, refused {} MiB)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&good).unwrap().len() >> 20,
        small_bytes.len() >> 20
    );
    Bundles {
        bad,
        good,
        small,
        arm,
        foreign,
        tampered,
        truncated,
    }
}

/// Waits until `/api/v1/system` answers and `check` holds; returns its last answer. Logs
/// in again when the session is gone (sessions live in memory: a reboot ends them).
fn wait_system(
    vm: &mut ImageVm,
    s: &mut Session,
    token: &str,
    timeout: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match system(vm, s) {
            Some(v) if check(&v) => return v,
            Some(v) => last = Some(v),
            None if vm.curl(&[&vm.url("/readyz")]).0 == 200 => {
                let dir = s.jar.parent().unwrap().to_path_buf();
                *s = login(vm, &dir, token);
            }
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?} (last /api/v1/system: {last:?})\n{}",
            tail(&vm.serial())
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The loader entries on the ESP of `disk` (VM off), through mtools.
fn loader_entries(disk: &Path) -> Vec<String> {
    read_loader_entries(disk).unwrap_or_else(|e| panic!("{e}"))
}

/// As [`loader_entries`], an error instead of a panic: also read while the VM runs, when
/// the guest may be writing the FAT.
fn read_loader_entries(disk: &Path) -> Result<Vec<String>, String> {
    let (start, _) = partition(disk, "esp");
    let out = Command::new("mdir")
        .args(["-b", "-i"])
        .arg(format!("{}@@{start}", disk.display()))
        .arg("::/loader/entries")
        .output()
        .map_err(|e| format!("mdir: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mdir {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(str::to_string)
        .filter(|n| n.ends_with(".conf"))
        .collect();
    names.sort();
    Ok(names)
}

#[test]
fn update_rolls_back_a_bad_slot_and_switches_to_a_good_one() {
    require_lab!(Needs::Uefi);
    let root = workspace_root();
    let image = root.join("images/appliance-x86_64.img");
    let work = root.join("images/out/x86_64");
    for need in [
        image.clone(),
        work.join("root.squashfs"),
        work.join("esp/a/vmlinuz"),
    ] {
        assert!(
            need.is_file(),
            "{} missing: run scripts/build-image x86_64",
            need.display()
        );
    }
    for tool in ["unsquashfs", "mksquashfs", "mdir"] {
        assert!(
            qemu_tests::which(tool).is_some(),
            "{tool} missing (scripts/setup)"
        );
    }
    let key = root.join("scripts/keys/update-test.pem");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let bin = qemu_tests::appliance::binary().unwrap();
    let started = Instant::now();
    let disk = d.join("disk.img");
    let vars = d.join("vars.fd");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&image)
        .arg(&disk));
    run(Command::new("truncate")
        .arg(format!("--size={DISK_BYTES}"))
        .arg(&disk));
    std::fs::copy(OVMF_VARS, &vars).unwrap();

    // 1. Slot A. The bundles are made meanwhile: the VM (TCG, one vCPU) keeps one core
    // busy and the test is otherwise idle while it boots.
    let mut vm = ImageVm::start_following_reboots(d, &disk, &vars, 1);
    let maker = std::thread::spawn({
        let (work, d, key, bin) = (work.clone(), d.to_path_buf(), key.clone(), bin.clone());
        move || make_bundles(&work, &d, &key, &bin)
    });
    let secs = vm.wait_healthy();
    println!("UPDATE-BOOT slot A: /healthz after {secs:.1} s (TCG)");
    let serial = vm.serial();
    let token = token_from_console(&serial)
        .unwrap_or_else(|| panic!("no admin token banner\n{}", tail(&serial)));
    let mut s = login(&vm, d, &token);
    let sys = system(&vm, &s).expect("/api/v1/system");
    assert_eq!(sys["slot"], "A", "{sys}");
    assert_eq!(sys["other_slot"], "B", "{sys}");
    assert_eq!(sys["updates"], true, "{sys}");
    let version_a = sys["image_version"].as_str().unwrap().to_string();
    assert!(!version_a.starts_with("9.9.9"), "{sys}");
    let yaml = d.join("class.yaml");
    std::fs::write(
        &yaml,
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: kept-across-updates\nspec:\n  qualifiers: {}\n",
    )
    .unwrap();
    let ctl = |vm: &ImageVm, args: &[&str]| {
        run(Command::new(&bin)
            .arg("ctl")
            .arg("--endpoint")
            .arg(vm.url(""))
            .arg("--token")
            .arg(&token)
            .args(args))
    };
    ctl(&vm, &["apply", "-f", yaml.to_str().unwrap()]);

    // 2. Refused, nothing pending.
    let Bundles {
        bad,
        good,
        small,
        arm,
        foreign,
        tampered,
        truncated,
    } = maker.join().expect("making the bundles");
    for (b, want) in [
        (&tampered, "SHA-256 does not match"),
        (&truncated, "truncated or padded"),
        (&foreign, "bad signature"),
        (&arm, "bundle is for aarch64, this box is x86_64"),
    ] {
        let (code, body) = upload(&vm, &s, b);
        assert_eq!(code, 400, "{}: {body}", b.display());
        assert!(
            body.contains(want),
            "{}: {body} lacks {want:?}",
            b.display()
        );
        let sys = system(&vm, &s).unwrap();
        assert_eq!(sys["update_pending"], false, "{sys}");
        assert_eq!(sys["slot"], "A", "{sys}");
    }
    // Without the CSRF token a session cannot upload.
    let (code, _) = vm.curl(&[
        "-b",
        s.jar.to_str().unwrap(),
        "-X",
        "POST",
        "--data-binary",
        &format!("@{}", small.display()),
        &vm.url("/api/v1/update"),
    ]);
    assert_eq!(code, 403);

    // 3. The unhealthy bundle: written, tried once, rolled back by the box itself.
    let t0 = Instant::now();
    let (code, body) = upload(&vm, &s, &bad);
    assert_eq!(code, 202, "{body}");
    // Down (rebooting into B), then back: on A, the result recorded before the reboot.
    let deadline = Instant::now() + Duration::from_secs(300);
    while vm.curl(&[&vm.url("/healthz")]).0 == 200 {
        assert!(
            Instant::now() < deadline,
            "the box never rebooted for the update\n{}",
            tail(&vm.serial())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let sys = wait_system(
        &mut vm,
        &mut s,
        &token,
        ROLLBACK_TIMEOUT,
        "back on slot A",
        |v| v["slot"] == "A",
    );
    println!(
        "UPDATE-ROLLBACK unhealthy slot B → back on A after {:.1} s (TCG)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(sys["image_version"], version_a.as_str(), "{sys}");
    let last = sys["last_update"].as_str().unwrap_or_default();
    assert!(last.contains("9.9.9-unhealthy written to slot B"), "{sys}");
    assert!(ctl(&vm, &["get", "serverclass"]).contains("kept-across-updates"));

    // 4. The good bundle: B, new version, data kept.
    let t0 = Instant::now();
    let (code, body) = upload(&vm, &s, &good);
    assert_eq!(code, 202, "{body}");
    let sys = wait_system(
        &mut vm,
        &mut s,
        &token,
        ROLLBACK_TIMEOUT,
        "serving from slot B",
        |v| v["slot"] == "B",
    );
    println!(
        "UPDATE-SWITCH slot B serving after {:.1} s (TCG)",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(sys["image_version"], "9.9.9-good", "{sys}");
    assert_eq!(sys["other_slot"], "A", "{sys}");
    assert!(ctl(&vm, &["get", "serverclass"]).contains("kept-across-updates"));
    // systemd-bless-boot runs right after the health gate passed (it polls /readyz every
    // second) and syncs the ESP: power off once the disk shows B's entry without its
    // counter (read while the VM runs; the check below reads it again, powered off).
    let blessed = "appliance-3-b.conf".to_string();
    let deadline = Instant::now() + BLESS_TIMEOUT;
    while !read_loader_entries(&disk).is_ok_and(|e| e.contains(&blessed))
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_secs(1));
    }
    println!(
        "UPDATE-BLESSED slot B's entry blessed on the disk {:.1} s after the upload (TCG)",
        t0.elapsed().as_secs_f64()
    );
    vm.power_off();

    // 5. The ESP: A's entry and B's blessed one (generation 3: the failed trial was 2).
    let entries = loader_entries(&disk);
    assert_eq!(
        entries,
        ["appliance-1-a.conf", "appliance-3-b.conf"],
        "loader entries after the updates"
    );
    // The journal (data partition) tells the boots apart: A, B failing its gate, A, B good.
    let fs = data_fs(d, &disk);
    let journal = d.join("journal");
    std::fs::create_dir_all(&journal).unwrap();
    debugfs(&fs, &format!("rdump /log/journal {}", journal.display()));
    // One directory per boot's machine id (the read-only root has an empty machine-id), below
    // the `journal/` that rdump recreates: every journal file found, each given by --file.
    let mut files = Vec::new();
    let mut dirs = vec![journal.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "journal") {
                files.push(format!("--file={}", path.display()));
            }
        }
    }
    assert!(!files.is_empty(), "no journal files on the data partition");
    let kernel = run(Command::new("journalctl")
        .args(&files)
        .args(["_TRANSPORT=kernel", "-o", "cat"])
        .args(["--grep", "^Command line:"]));
    let roots: Vec<&str> = kernel
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("root=")))
        .collect();
    assert_eq!(
        roots,
        [
            "root=PARTLABEL=root-a",
            "root=PARTLABEL=root-b",
            "root=PARTLABEL=root-a",
            "root=PARTLABEL=root-b"
        ],
        "boots in order\n{kernel}"
    );
    let gate = run(Command::new("journalctl").args(&files).args([
        "-u",
        "appliance-healthy.service",
        "-o",
        "cat",
    ]));
    println!("UPDATE-GATE journal:\n{gate}");
    // B's gate waited the bundle's own deadline, not the default.
    assert!(
        gate.contains(&format!(
            "no /readyz within {BAD_SLOT_DEADLINE_SECS} s: this slot failed its trial"
        )),
        "the unhealthy slot's gate did not use its {BAD_SLOT_DEADLINE_SECS} s deadline:\n{gate}"
    );
    let failed = gate.find("this slot failed its trial");
    let good = gate.find("marking this slot good");
    assert!(
        matches!((failed, good), (Some(f), Some(g)) if f < g),
        "the gate failed B's first trial and passed the second:\n{gate}"
    );
    println!(
        "UPDATE-TOTAL {:.1} s (TCG)",
        started.elapsed().as_secs_f64()
    );
}
