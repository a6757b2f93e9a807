//! Reference peers that run inside the lab namespace beside (or instead of) the appliance:
//!
//! - dnsmasq as an **address-only** DHCP server (no boot options: the proxy-mode test needs a
//!   DHCP server that knows nothing about PXE), or as a complete reference PXE server (DHCP +
//!   TFTP) for the harness self-check;
//! - busybox httpd as a static HTTP server for the self-check.
//!
//! Both log to files in the lab directory; their access logs are what the self-check reads.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::netns::Place;
use crate::process::Guarded;

/// First and last address dnsmasq hands out (the appliance's pool, when it has one, must
/// not overlap when both run).
pub const DNSMASQ_RANGE: (Ipv4Addr, Ipv4Addr) =
    (Ipv4Addr::new(10, 77, 0, 150), Ipv4Addr::new(10, 77, 0, 199));

#[derive(Debug, Clone)]
pub enum DnsmasqRole {
    /// Addresses only: no boot file, no next-server, no PXE vendor options, no TFTP.
    AddressesOnly,
    /// A full PXE server: non-iPXE BIOS clients get `undionly.kpxe`, non-iPXE UEFI x86-64
    /// clients `ipxe.efi` (TFTP from `tftp_root`), iPXE clients the script at `script_url`.
    Pxe {
        tftp_root: PathBuf,
        script_url: String,
    },
}

#[derive(Debug)]
pub struct Dnsmasq {
    process: Guarded,
}

impl Dnsmasq {
    pub(crate) fn start(place: &Place, dir: &Path, role: &DnsmasqRole) -> Result<Dnsmasq> {
        let (first, last) = DNSMASQ_RANGE;
        let mut cmd = place.command("dnsmasq");
        cmd.args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--group=root",
            "--bind-interfaces",
            "--leasefile-ro",
            "--log-dhcp",
            "--dhcp-authoritative",
        ])
        .arg(format!("--interface={}", place.iface))
        .arg(format!("--listen-address={}", place.addr))
        .arg(format!("--dhcp-range={first},{last},255.255.255.0,1h"))
        .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
        if let DnsmasqRole::Pxe {
            tftp_root,
            script_url,
        } = role
        {
            cmd.args([
                "--dhcp-userclass=set:ipxe,iPXE",
                "--dhcp-match=set:efi64,option:client-arch,7",
                "--dhcp-boot=tag:!ipxe,tag:efi64,ipxe.efi",
                "--dhcp-boot=tag:!ipxe,tag:!efi64,undionly.kpxe",
                "--enable-tftp",
            ])
            .arg(format!("--dhcp-boot=tag:ipxe,{script_url}"))
            .arg(format!("--tftp-root={}", tftp_root.display()));
        }
        let process = Guarded::spawn("dnsmasq", cmd, &dir.join("dnsmasq.log"))?;
        Ok(Dnsmasq { process })
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn log_path(&self) -> &Path {
        self.process.log_path()
    }
}

/// busybox httpd serving a directory on `BRIDGE_ADDR:port`, logging every request.
#[derive(Debug)]
pub struct StaticHttp {
    process: Guarded,
    pub base_url: String,
}

impl StaticHttp {
    pub(crate) fn start(place: &Place, dir: &Path, root: &Path, port: u16) -> Result<StaticHttp> {
        let mut cmd = place.command("busybox");
        cmd.args(["httpd", "-f", "-vv"])
            .arg("-p")
            .arg(format!("{}:{port}", place.addr))
            .arg("-h")
            .arg(root);
        let process = Guarded::spawn("httpd", cmd, &dir.join("httpd.log"))?;
        Ok(StaticHttp {
            process,
            base_url: format!("http://{}:{port}", place.addr),
        })
    }

    /// The access log: lines `<ip>:<port>: url:<path>` and `response:<code>`.
    pub fn log(&self) -> String {
        self.process.log()
    }
}
