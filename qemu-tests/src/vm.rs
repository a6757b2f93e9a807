//! QEMU PXE clients (TCG: KVM is not usable on the CI machines) on a tap of the lab bridge.
//!
//! - [`Firmware::Bios`]: SeaBIOS with the iPXE option ROM of ipxe-qemu on virtio-net
//!   (`-machine graphics=off` puts SeaBIOS' and iPXE's screen output on the serial port).
//! - [`Firmware::Uefi`]: OVMF (a private copy of the vars store) with the NIC's option ROM
//!   removed (`romfile=`), so the firmware's own PXE client (EDK2 PxeBcDxe on VirtioNetDxe)
//!   does DHCP and TFTP: the path goes through the server's DHCP and TFTP and iPXE only starts
//!   once `ipxe.efi` was fetched. With the ROM, OVMF would start the ROM's iPXE directly.
//! - [`Firmware::UefiSecureBoot`]: the same with OVMF's Secure Boot build and Microsoft's
//!   keys enrolled (`-machine q35,smm=on`, secure pflash).
//! - [`Firmware::UefiHttp`]: OVMF as above with its PXE clients turned off
//!   (`-fw_cfg opt/org.tianocore/IPv4PXESupport` and `IPv6PXESupport` = `no`), so the
//!   network boot option is the firmware's UEFI HTTP boot client (HttpBootDxe: DHCP with
//!   `HTTPClient:Arch:00016`, then the boot file URL over HTTP), no TFTP on the path.
//!   [`VmSpec::no_firmware_ipv4`] also turns off OVMF's IPv4 stack
//!   (`opt/org.tianocore/IPv4Support` = `no`) for an IPv6-only segment: the firmware's first
//!   boot option is then HTTP boot over IPv6 (after a 6 s boot-menu wait), with no IPv4
//!   attempt timing out before it.
//! - [`Firmware::Aavmf`]: an ARM64 server, `qemu-system-aarch64 -machine virt -cpu
//!   cortex-a57` with AAVMF (`qemu-efi-aarch64`), whose own UEFI PXE client (arch 11) gets the
//!   box's ARM64 first stage over TFTP. No SATA or in-band BMC on this machine type.
//!
//! The serial console goes to a file that [`Vm::wait_for`] polls. QEMU runs with
//! `-no-reboot`, so a guest that powers off or reboots ends the process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::Netns;
use crate::process::Guarded;
use crate::{OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS, OVMF_VARS_MS, tail};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// SeaBIOS + the iPXE option ROM (PXE client = iPXE, user class "iPXE", arch 0).
    Bios,
    /// OVMF's own UEFI PXE client (arch 7, not iPXE) → TFTP → ipxe.efi.
    Uefi,
    /// OVMF's UEFI HTTP boot client (arch 16), PXE off: DHCP → the boot file URL over HTTP.
    UefiHttp,
    /// ARM64: AAVMF's UEFI PXE client (arch 11) → TFTP → the box's ARM64 first stage.
    Aavmf,
    /// OVMF with Secure Boot enforced: the SMM build (`-machine q35,smm=on`, secure
    /// pflash) and a copy of the vars store enrolled with Microsoft's keys, so only signed
    /// loaders run (Debian's shim → signed GRUB → signed kernel).
    UefiSecureBoot,
}

impl Firmware {
    /// The QEMU system emulator for this firmware's machine.
    pub fn qemu(self) -> &'static str {
        match self {
            Firmware::Bios | Firmware::Uefi | Firmware::UefiHttp | Firmware::UefiSecureBoot => {
                "qemu-system-x86_64"
            }
            Firmware::Aavmf => "qemu-system-aarch64",
        }
    }
}

/// OVMF's boot-menu wait (`-boot menu=on,splash-time=`) for a VM without the firmware's
/// IPv4 stack. Its HTTPv6 boot option then comes first, and started at once it failed
/// ("Unexpected network error", no DHCPv6 Solicit of its own: 2 runs of 2, while the
/// stack's own DHCPv6, started by the box's router advertisement, got an address); after
/// this wait it booted (2 runs of 2), as it did after the 90 s IPv4 attempt that came first
/// before.
pub const FIRMWARE_SETTLE_MS: u32 = 6000;

#[derive(Debug, Clone)]
pub struct VmSpec {
    pub firmware: Firmware,
    /// SMBIOS system UUID (`-uuid`): what iPXE sends as `${uuid}` and Servers are named by.
    pub uuid: Option<String>,
    /// MAC address of the NIC; the lab picks a unique one when `None`.
    pub mac: Option<String>,
    pub memory_mb: u32,
    /// A raw disk image booted after the NIC (bootindex 1).
    pub disk: Option<PathBuf>,
    /// Virtual CPUs (`-smp`).
    pub smp: u32,
    /// More raw disk images on virtio-blk, not bootable (`vda`, `vdb`… after `disk`).
    pub data_disks: Vec<PathBuf>,
    /// Raw disk images on an AHCI controller (SATA: `sda`, `sdb`… in the guest, through
    /// libata and the SCSI layer), with the serial number and WWN the ATA IDENTIFY data
    /// reports.
    pub sata_disks: Vec<SataDisk>,
    /// Also offer the serial console on a unix socket `<name>.console.sock` (interactive
    /// use, `scripts/lab`); the log file is written either way.
    pub console_socket: bool,
    /// `-no-reboot`: a guest reboot ends QEMU (default). Off for VMs whose power a BMC
    /// controls, where a reboot keeps the machine powered.
    pub no_reboot: bool,
    /// An in-guest BMC on the ISA KCS interface whose BMC side is external: QEMU connects
    /// (`ipmi-bmc-extern`, reconnecting) to `127.0.0.1:<port>`, where ipmi_sim's
    /// `serial kcs … codec VM` listens. The guest then has `/dev/ipmi0` with `ipmi_si`.
    pub inband_bmc_port: Option<u16>,
    /// OVMF's IPv6 PXE attempt (`opt/org.tianocore/IPv6PXESupport`); off saves its wait on
    /// a segment without IPv6 boot service.
    pub ipv6_pxe: bool,
    /// OVMF's IPv4 network stack (`opt/org.tianocore/IPv4Support`). Off on an IPv6-only
    /// segment: OVMF otherwise tries HTTP boot over IPv4 first, and on a segment without
    /// DHCPv4 that attempt times out (about 90 s under TCG) before IPv6 is tried. Off, the
    /// firmware also waits [`FIRMWARE_SETTLE_MS`] before its first boot option.
    pub firmware_ipv4: bool,
}

impl VmSpec {
    pub fn new(firmware: Firmware) -> VmSpec {
        VmSpec {
            firmware,
            uuid: None,
            mac: None,
            memory_mb: 512,
            disk: None,
            smp: 1,
            data_disks: Vec::new(),
            sata_disks: Vec::new(),
            console_socket: false,
            no_reboot: true,
            inband_bmc_port: None,
            ipv6_pxe: true,
            firmware_ipv4: true,
        }
    }

    pub fn uuid(mut self, uuid: &str) -> VmSpec {
        self.uuid = Some(uuid.to_string());
        self
    }

    pub fn memory(mut self, mb: u32) -> VmSpec {
        self.memory_mb = mb;
        self
    }

    pub fn disk(mut self, disk: &Path) -> VmSpec {
        self.disk = Some(disk.to_path_buf());
        self
    }

    pub fn smp(mut self, cpus: u32) -> VmSpec {
        self.smp = cpus;
        self
    }

    pub fn data_disk(mut self, disk: &Path) -> VmSpec {
        self.data_disks.push(disk.to_path_buf());
        self
    }

    /// Adds a SATA disk (see [`VmSpec::sata_disks`]).
    pub fn sata_disk(mut self, disk: &Path, serial: &str, wwn: u64) -> VmSpec {
        self.sata_disks.push(SataDisk {
            path: disk.to_path_buf(),
            serial: serial.to_string(),
            wwn,
        });
        self
    }

    /// Gives the VM an in-band BMC served by ipmi_sim on `127.0.0.1:<port>` (see
    /// [`VmSpec::inband_bmc_port`]).
    pub fn inband_bmc(mut self, port: u16) -> VmSpec {
        self.inband_bmc_port = Some(port);
        self
    }

    /// OVMF tries no IPv6 PXE (it waits for an IPv6 boot server first otherwise).
    pub fn no_ipv6_pxe(mut self) -> VmSpec {
        self.ipv6_pxe = false;
        self
    }

    /// OVMF has no IPv4 network stack: its network boot options are IPv6 only (see
    /// [`VmSpec::firmware_ipv4`]), tried after a [`FIRMWARE_SETTLE_MS`] boot-menu wait. An
    /// OS or iPXE it loads still has IPv4.
    pub fn no_firmware_ipv4(mut self) -> VmSpec {
        self.firmware_ipv4 = false;
        self
    }

    /// A guest reboot restarts the guest instead of ending QEMU.
    pub fn reboot_keeps_running(mut self) -> VmSpec {
        self.no_reboot = false;
        self
    }

    /// QEMU's arguments (without the program) for VM `name` with NIC `mac` on `tap`; its
    /// files (serial log `<name>.serial.log`, OVMF vars copy) go to `dir`. The NIC has
    /// `bootindex=0` and `-boot strict=on` is set, so the firmware PXE boots first.
    pub fn qemu_args(&self, dir: &Path, name: &str, mac: &str, tap: &str) -> Result<Vec<String>> {
        let serial = dir.join(format!("{name}.serial.log"));
        let mut a: Vec<String> = Vec::new();
        let mut push = |args: &[&str]| a.extend(args.iter().map(|s| s.to_string()));
        push(&[
            "-name",
            name,
            "-accel",
            "tcg",
            "-smp",
            &self.smp.to_string(),
        ]);
        push(&["-m", &self.memory_mb.to_string()]);
        push(&["-display", "none", "-monitor", "none"]);
        if self.no_reboot {
            push(&["-no-reboot"]);
        }
        if self.console_socket {
            let sock = dir.join(format!("{name}.console.sock"));
            push(&[
                "-chardev",
                &format!(
                    "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                    sock.display(),
                    serial.display()
                ),
                "-serial",
                "chardev:ser0",
            ]);
        } else {
            push(&["-serial", &format!("file:{}", serial.display())]);
        }
        if let Some(uuid) = &self.uuid {
            push(&["-uuid", uuid]);
        }
        let mut nic = format!("virtio-net-pci,netdev=n0,mac={mac},bootindex=0");
        match self.firmware {
            Firmware::Bios => push(&["-machine", "pc,graphics=off"]),
            Firmware::Uefi | Firmware::UefiHttp | Firmware::UefiSecureBoot => {
                let secure = self.firmware == Firmware::UefiSecureBoot;
                let (code, vars_src) = if secure {
                    (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
                } else {
                    (OVMF_CODE, OVMF_VARS)
                };
                let vars = dir.join(format!("{name}.OVMF_VARS.fd"));
                std::fs::copy(vars_src, &vars)
                    .with_context(|| format!("copy {vars_src} to {}", vars.display()))?;
                if secure {
                    push(&[
                        "-machine",
                        "q35,smm=on,graphics=off",
                        "-global",
                        "driver=cfi.pflash01,property=secure,value=on",
                    ]);
                } else {
                    push(&["-machine", "q35,graphics=off"]);
                }
                push(&[
                    "-drive",
                    &format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
                // (UefiHttp turns IPv6 PXE off below, with IPv4.)
                if !self.ipv6_pxe && self.firmware != Firmware::UefiHttp {
                    push(&["-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]);
                }
                if !self.firmware_ipv4 {
                    push(&["-fw_cfg", "name=opt/org.tianocore/IPv4Support,string=no"]);
                    push(&[
                        "-boot",
                        &format!("menu=on,splash-time={FIRMWARE_SETTLE_MS}"),
                    ]);
                }
                nic.push_str(",romfile=");
                if self.firmware == Firmware::UefiHttp {
                    for proto in ["IPv4", "IPv6"] {
                        push(&[
                            "-fw_cfg",
                            &format!("name=opt/org.tianocore/{proto}PXESupport,string=no"),
                        ]);
                    }
                }
            }
            Firmware::Aavmf => {
                use crate::image::{AAVMF_CODE, AAVMF_VARS};
                let vars = dir.join(format!("{name}.AAVMF_VARS.fd"));
                std::fs::copy(AAVMF_VARS, &vars)
                    .with_context(|| format!("copy {AAVMF_VARS} to {}", vars.display()))?;
                push(&[
                    "-machine",
                    "virt",
                    "-cpu",
                    "cortex-a57",
                    "-drive",
                    &format!("if=pflash,format=raw,unit=0,readonly=on,file={AAVMF_CODE}"),
                    "-drive",
                    &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
                nic.push_str(",romfile=");
            }
        }
        push(&[
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device",
            &nic,
        ]);
        if let Some(disk) = &self.disk {
            push(&[
                "-drive",
                &format!("if=none,id=d0,format=raw,file={}", disk.display()),
                "-device",
                "virtio-blk-pci,drive=d0,bootindex=1",
            ]);
        }
        for (i, disk) in self.data_disks.iter().enumerate() {
            push(&[
                "-drive",
                &format!("if=none,id=data{i},format=raw,file={}", disk.display()),
                "-device",
                &format!("virtio-blk-pci,drive=data{i},serial=data{i}"),
            ]);
        }
        if !self.sata_disks.is_empty() {
            push(&["-device", "ahci,id=ahci0"]);
        }
        for (i, d) in self.sata_disks.iter().enumerate() {
            push(&[
                "-drive",
                &format!("if=none,id=sata{i},format=raw,file={}", d.path.display()),
                "-device",
                &format!(
                    "ide-hd,drive=sata{i},bus=ahci0.{i},serial={},wwn={:#x}",
                    d.serial, d.wwn
                ),
            ]);
        }
        if let Some(port) = self.inband_bmc_port {
            push(&[
                "-chardev",
                &format!("socket,id=ipmi0,host=127.0.0.1,port={port},reconnect=1"),
                "-device",
                "ipmi-bmc-extern,id=bmc0,chardev=ipmi0",
                "-device",
                "isa-ipmi-kcs,bmc=bmc0",
            ]);
        }
        push(&["-boot", "strict=on"]);
        Ok(a)
    }
}

/// A raw disk image on the VM's AHCI controller.
#[derive(Debug, Clone)]
pub struct SataDisk {
    pub path: PathBuf,
    /// ATA serial number (at most 20 characters; QEMU pads it with spaces).
    pub serial: String,
    /// World wide name (NAA), reported in ATA IDENTIFY.
    pub wwn: u64,
}

#[derive(Debug)]
pub struct Vm {
    name: String,
    mac: String,
    serial: PathBuf,
    process: Guarded,
    started: Instant,
}

impl Vm {
    /// Starts QEMU inside `ns` on a new tap. Files (serial log, QEMU's own log, OVMF vars)
    /// go to `dir`.
    pub(crate) fn start(
        ns: &Netns,
        dir: &Path,
        name: &str,
        mac: String,
        spec: &VmSpec,
    ) -> Result<Vm> {
        let tap = ns.add_tap()?;
        let serial = dir.join(format!("{name}.serial.log"));
        let mut cmd = ns.command(spec.firmware.qemu());
        cmd.args(spec.qemu_args(dir, name, &mac, &tap)?);
        let process = Guarded::spawn(name, cmd, &dir.join(format!("{name}.qemu.log")))?;
        Ok(Vm {
            name: name.to_string(),
            mac,
            serial,
            process,
            started: Instant::now(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> &str {
        &self.mac
    }

    pub fn pid(&self) -> u32 {
        self.process.id()
    }

    pub fn serial_path(&self) -> &Path {
        &self.serial
    }

    /// The console socket (when the spec asked for one).
    pub fn console_socket(&self) -> PathBuf {
        self.serial
            .with_file_name(format!("{}.console.sock", self.name))
    }

    /// `Some(status text)` once QEMU has exited.
    pub fn exited(&mut self) -> Option<String> {
        self.process.exited().map(|s| s.to_string())
    }

    /// Everything the guest wrote on its serial console so far.
    pub fn serial(&self) -> String {
        std::fs::read(&self.serial)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits until a whole serial line contains `needle`; returns that line. Fails on timeout or
    /// when QEMU exits first, with the end of the serial log and QEMU's own output.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let exited = self.process.exited();
            let serial = self.serial();
            // Only whole lines while the guest runs: a line is read while the emulated UART
            // is still writing it, and a caller that parses the rest of the line (the test
            // Environment's kernel command line) would see it cut short.
            let whole = match exited {
                Some(_) => serial.as_str(),
                None => whole_lines(&serial),
            };
            if let Some(line) = whole.lines().find(|l| l.contains(needle)) {
                return Ok(line.trim_end_matches('\r').to_string());
            }
            if let Some(status) = exited {
                bail!(
                    "VM {} exited ({status}) after {:.1}s without printing {needle:?}\n{}",
                    self.name,
                    self.started.elapsed().as_secs_f64(),
                    self.describe(&serial)
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "VM {} did not print {needle:?} within {timeout:?}\n{}",
                    self.name,
                    self.describe(&serial)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for QEMU to exit (the guest powered off or rebooted with `-no-reboot`).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.process.exited().is_none() {
            if Instant::now() >= deadline {
                bail!("VM {} still running after {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Seconds since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn kill(&mut self) {
        self.process.kill();
    }

    fn describe(&self, serial: &str) -> String {
        format!(
            "--- serial ({}), last 3000 bytes ---\n{}\n--- qemu output ({}) ---\n{}",
            self.serial.display(),
            tail(serial, 3000),
            self.process.log_path().display(),
            tail(&self.process.log(), 1000)
        )
    }
}

/// The serial log up to its last line break: what a running guest has finished printing.
pub fn whole_lines(serial: &str) -> &str {
    serial.rfind('\n').map_or("", |end| &serial[..end])
}
