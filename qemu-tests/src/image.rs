//! The flashable image under QEMU/OVMF (TCG), shared by `tests/appliance_image.rs` and
//! `tests/appliance_update.rs`: [`ImageVm`] boots a copy of `images/appliance-<arch>.img`
//! with two NICs (management on QEMU user-net with the box's :8081 forwarded to a loopback
//! port; provisioning on an unconnected datagram socket, or with [`ImageVm::start_in_lab`]
//! on a tap of a lab bridge that other VMs share), serial console to a file; helpers
//! read the disk from outside (partitions by name, the data filesystem through debugfs)
//! and the first-boot token banner.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::OVMF_CODE;
use crate::netns::Netns;

/// TCG on 2 shared cores: firmware + kernel + systemd + first-boot repart.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(420);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `cmd`, panicking with its stderr unless it succeeds; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running image VM; killed on drop.
/// The image's architecture: which QEMU, machine and firmware boot it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// q35 + OVMF.
    X86_64,
    /// virt (cortex-a57, TCG) + AAVMF (`qemu-efi-aarch64`).
    Aarch64,
}

/// AAVMF, the arm64 UEFI firmware (package qemu-efi-aarch64), 64 MiB pflash images.
pub const AAVMF_CODE: &str = "/usr/share/AAVMF/AAVMF_CODE.fd";
pub const AAVMF_VARS: &str = "/usr/share/AAVMF/AAVMF_VARS.fd";

impl Arch {
    /// vCPUs of this arch's image VM running alone: [`ALONE_VCPUS`] for x86-64; one for arm64,
    /// whose test took longer with two (174 s against 142 s with one, at more load then): the
    /// guest's weaker memory ordering is emulated across the vCPU threads on this x86 host.
    fn alone_vcpus(self) -> u32 {
        match self {
            Arch::X86_64 => ALONE_VCPUS,
            Arch::Aarch64 => 1,
        }
    }

    /// The firmware variable store to copy for a fresh VM.
    pub fn vars_template(self) -> &'static str {
        match self {
            Arch::X86_64 => crate::OVMF_VARS,
            Arch::Aarch64 => AAVMF_VARS,
        }
    }
}

/// vCPUs of an x86-64 image VM that runs alone (no other VM beside it): under TCG each vCPU is
/// a host thread, so a second one lets the guest's boot use the host's second core (load ~3:
/// /healthz after 89 and 99 s against 97 and 121 s with one). A VM sharing the host with
/// another VM keeps one ([`ImageVm::start_in_lab`]), and so does the arm64 one (see
/// [`Arch::alone_vcpus`]).
const ALONE_VCPUS: u32 = 2;

pub struct ImageVm {
    child: Child,
    /// For a VM following its reboots: the stop flag of its [`reset_guard`] thread.
    guard_stop: Option<Arc<AtomicBool>>,
    serial: PathBuf,
    monitor: PathBuf,
    port: u16,
    started: Instant,
    /// The lab namespace QEMU runs in (its management port is forwarded there).
    netns: Option<String>,
}

/// Where the image VM's provisioning NIC is plugged in.
enum Provisioning<'a> {
    /// A datagram socket to nowhere (a link, no peers).
    Nowhere,
    /// A new tap on the lab bridge of `ns` (QEMU runs inside `ns`).
    Lab(&'a Netns),
}

impl ImageVm {
    /// Starts the VM on `disk` (boot number `boot` names its logs). QEMU exits when the
    /// guest reboots (`-no-reboot`); see [`ImageVm::start_following_reboots`].
    pub fn start(dir: &Path, disk: &Path, vars: &Path, boot: u32) -> ImageVm {
        Self::launch(
            Arch::X86_64,
            dir,
            disk,
            vars,
            boot,
            false,
            Provisioning::Nowhere,
            1024,
            ALONE_VCPUS,
        )
    }

    /// As [`ImageVm::start`] for an image of `arch`.
    pub fn start_arch(arch: Arch, dir: &Path, disk: &Path, vars: &Path, boot: u32) -> ImageVm {
        Self::launch(
            arch,
            dir,
            disk,
            vars,
            boot,
            false,
            Provisioning::Nowhere,
            1024,
            arch.alone_vcpus(),
        )
    }

    /// As [`ImageVm::start`], but a guest reboot reboots the VM (an update's reboot, a
    /// failed trial's fallback), on the same serial log; a reboot that hangs silent is reset
    /// (see [`reset_guard`]).
    pub fn start_following_reboots(dir: &Path, disk: &Path, vars: &Path, boot: u32) -> ImageVm {
        Self::launch(
            Arch::X86_64,
            dir,
            disk,
            vars,
            boot,
            true,
            Provisioning::Nowhere,
            1024,
            ALONE_VCPUS,
        )
    }

    /// As [`ImageVm::start`] with `memory_mb` of RAM, QEMU running inside the lab namespace
    /// `ns` and the provisioning NIC on a new tap of its bridge, where the lab's other VMs
    /// are: the box is their DHCP/TFTP/HTTP server. The management port is forwarded to
    /// the namespace's loopback; [`ImageVm::curl`] and [`ImageVm::command`] run there.
    pub fn start_in_lab(
        ns: &Netns,
        dir: &Path,
        disk: &Path,
        vars: &Path,
        boot: u32,
        memory_mb: u32,
    ) -> ImageVm {
        Self::launch(
            Arch::X86_64,
            dir,
            disk,
            vars,
            boot,
            false,
            Provisioning::Lab(ns),
            memory_mb,
            1,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn launch(
        arch: Arch,
        dir: &Path,
        disk: &Path,
        vars: &Path,
        boot: u32,
        follow_reboots: bool,
        provisioning: Provisioning<'_>,
        memory_mb: u32,
        vcpus: u32,
    ) -> ImageVm {
        let port = free_port();
        let serial = dir.join(format!("serial-{boot}.log"));
        let monitor = dir.join(format!("monitor-{boot}.sock"));
        let prov_netdev = match provisioning {
            Provisioning::Nowhere => format!(
                "dgram,id=prov,local.type=inet,local.host=127.0.0.1,local.port={},remote.type=inet,remote.host=127.0.0.1,remote.port={}",
                free_port(),
                free_port()
            ),
            Provisioning::Lab(ns) => format!(
                "tap,id=prov,ifname={},script=no,downscript=no",
                ns.add_tap().expect("tap on the lab bridge")
            ),
        };
        let netns = match provisioning {
            Provisioning::Nowhere => None,
            Provisioning::Lab(ns) => Some(ns.name().to_string()),
        };
        let (qemu, machine, code): (&str, &[&str], &str) = match arch {
            Arch::X86_64 => (
                "qemu-system-x86_64",
                &["-machine", "q35", "-vga", "none"],
                OVMF_CODE,
            ),
            Arch::Aarch64 => (
                "qemu-system-aarch64",
                &["-machine", "virt", "-cpu", "cortex-a57"],
                AAVMF_CODE,
            ),
        };
        let mut cmd = match &netns {
            None => Command::new(qemu),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, qemu]);
                c
            }
        };
        let child = cmd
            .args(["-accel", "tcg", "-m", &memory_mb.to_string()])
            .args(["-smp", &vcpus.to_string()])
            .args(machine)
            .args(["-display", "none"])
            .args(if follow_reboots {
                &[][..]
            } else {
                &["-no-reboot"][..]
            })
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
            .arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()))
            .arg("-drive")
            .arg(format!("if=virtio,format=raw,file={}", disk.display()))
            // Management (enp0s3): user-net DHCP, :8081 forwarded to the host's loopback.
            .arg("-netdev")
            .arg(format!("user,id=mgmt,hostfwd=tcp:127.0.0.1:{port}-:8081"))
            .args(["-device", "virtio-net-pci,netdev=mgmt,addr=0x3"])
            // Provisioning (enp0s4).
            .arg("-netdev")
            .arg(prov_netdev)
            .args(["-device", "virtio-net-pci,netdev=prov,addr=0x4"])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {qemu}: {e}"));
        let guard_stop = follow_reboots.then(|| {
            let stop = Arc::new(AtomicBool::new(false));
            std::thread::spawn({
                let (stop, serial, monitor) = (stop.clone(), serial.clone(), monitor.clone());
                move || reset_guard(&stop, &serial, &monitor)
            });
            stop
        });
        ImageVm {
            child,
            guard_stop,
            serial,
            monitor,
            port,
            started: Instant::now(),
            netns,
        }
    }

    /// A command running `program` where the management port is reachable: the lab
    /// namespace for [`ImageVm::start_in_lab`], this host otherwise.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        match &self.netns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }

    pub fn serial(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).into_owned()
    }

    pub fn curl(&self, args: &[&str]) -> (u16, String) {
        let out = self
            .command("curl")
            .args(["-s", "-m", "5", "-o", "-", "-w", "\n%{http_code}"])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for `/healthz` 200; returns seconds since QEMU started.
    pub fn wait_healthy(&mut self) -> f64 {
        self.wait_healthy_within(BOOT_TIMEOUT)
    }

    /// As [`ImageVm::wait_healthy`], with its own timeout.
    pub fn wait_healthy_within(&mut self, timeout: Duration) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            if self.curl(&[&self.url("/healthz")]).0 == 200 {
                return self.started.elapsed().as_secs_f64();
            }
            if let Some(st) = self.child.try_wait().unwrap() {
                panic!(
                    "QEMU exited ({st}) before the box served\n{}",
                    tail(&self.serial())
                );
            }
            assert!(
                Instant::now() < deadline,
                "no /healthz within {timeout:?}\n{}",
                tail(&self.serial())
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// ACPI power button; waits for QEMU to exit (systemd shuts down cleanly).
    pub fn power_off(mut self) {
        let mut s = std::os::unix::net::UnixStream::connect(&self.monitor).unwrap();
        s.write_all(b"system_powerdown\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no power-off\n{}",
                tail(&self.serial())
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// How long a guest's reboot may stay silent (after the kernel's "reboot: Restarting system",
/// before the firmware's `BdsDxe` lines) before [`reset_guard`] resets the VM; a reset under
/// TCG here puts them on the serial within about 10 s.
const SILENT_REBOOT: Duration = Duration::from_secs(60);

/// Watches the serial log of a VM that follows its reboots: when the kernel has said
/// "reboot: Restarting system" and the serial then stays silent for [`SILENT_REBOOT`], resets
/// the VM through the monitor, as an operator would with the BMC's reset. Once an update's
/// reboot here sat silent for 10 minutes, until the guest's iTCO watchdog (systemd's default
/// `RebootWatchdogSec`) reset it; the cause (kernel or firmware under TCG) was not found, and
/// the update test is about the box, so a hung reset is cut short, and said so on stderr.
fn reset_guard(stop: &AtomicBool, serial: &Path, monitor: &Path) {
    const MARK: &[u8] = b"reboot: Restarting system";
    const FIRMWARE: &[u8] = b"BdsDxe";
    let find = |log: &[u8], from: usize, what: &[u8]| {
        log.get(from..)
            .and_then(|rest| rest.windows(what.len()).position(|w| w == what))
            .map(|at| from + at + what.len())
    };
    // Where the serial was read up to, and since when a reboot has been silent.
    let mut seen = 0usize;
    let mut rebooting: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let log = std::fs::read(serial).unwrap_or_default();
        match rebooting {
            None => {
                if let Some(end) = find(&log, seen, MARK) {
                    seen = end;
                    rebooting = Some(Instant::now());
                }
            }
            Some(since) => {
                if let Some(end) = find(&log, seen, FIRMWARE) {
                    seen = end;
                    rebooting = None;
                } else if since.elapsed() > SILENT_REBOOT {
                    eprintln!(
                        "IMAGE-VM: the reboot stayed silent for {SILENT_REBOOT:?} after \"reboot: Restarting system\"; reset through the monitor"
                    );
                    if let Ok(mut m) = std::os::unix::net::UnixStream::connect(monitor) {
                        let _ = m.write_all(b"system_reset\n");
                    }
                    rebooting = Some(Instant::now());
                }
            }
        }
    }
}

impl Drop for ImageVm {
    fn drop(&mut self) {
        if let Some(stop) = &self.guard_stop {
            stop.store(true, Ordering::Relaxed);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn tail(s: &str) -> &str {
    crate::tail(s, 6000)
}

/// (start, size) in bytes of the partition named `name`.
pub fn partition(disk: &Path, name: &str) -> (u64, u64) {
    let json = run(Command::new("sfdisk").arg("-J").arg(disk));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let parts = v["partitiontable"]["partitions"].as_array().unwrap();
    let p = parts
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no partition {name}: {json}"));
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

/// The data partition copied out of the disk, for debugfs.
pub fn data_fs(dir: &Path, disk: &Path) -> PathBuf {
    let (start, size) = partition(disk, "data");
    let out = dir.join("data.ext4");
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", out.display()))
        .args([
            "bs=1M",
            "conv=sparse",
            "status=none",
            "iflag=skip_bytes,count_bytes",
        ])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
    out
}

pub fn debugfs(fs: &Path, request: &str) -> String {
    run(Command::new("debugfs").args(["-R", request]).arg(fs))
}

/// The token from the first-boot console banner.
pub fn token_from_console(serial: &str) -> Option<String> {
    let after = serial.split("admin token (shown once; keep it)").nth(1)?;
    after
        .lines()
        .map(str::trim)
        .find(|l| l.len() == 48 && l.chars().all(|c| c.is_ascii_hexdigit()))
        .map(str::to_string)
}
