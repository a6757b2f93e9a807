//! UEFI HTTP Boot end to end, no TFTP on the path: an OVMF VM whose PXE clients are turned
//! off (`-fw_cfg opt/org.tianocore/IPv4PXESupport=no`, the same for IPv6) and whose NIC has
//! no option ROM boots through the firmware's HTTP boot client: DHCP with vendor class
//! `HTTPClient:Arch:00016` → the box's server-mode OFFER/ACK echoing `HTTPClient` with the boot
//! file as a URL (`http://10.77.0.1:8081/tftp/ipxe.efi`, Debian's iPXE served by the box's
//! HTTP) → iPXE → `/boot.ipxe` → `/ipxe` → the agent Environment → the agent registers.
//!
//! Proven from two sides: the wire, by tcpdump on the bridge (the VM's DHCP request carried
//! `HTTPClient:Arch:00016`; not one packet to UDP 69 from anyone; the first TCP connection
//! to the box's HTTP port, timed from QEMU's start), and the box's own record (the server's
//! boot timeline: the first OFFER names the client class and the URL, no `tftp` step; the
//! log's `GET /tftp/ipxe.efi -> 200`).

use std::time::Duration;

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::bmc::epoch_now;
use qemu_tests::capture::Capture;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab, skip, which};
use serde_json::Value;

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const UUID: &str = "6b0e5d2c-1f3a-4c8e-9d7b-16a1b2c3d4e5";
const MAC: &str = "52:54:00:16:00:16";
const BOOT_URL: &str = "http://10.77.0.1:8081/tftp/ipxe.efi";

/// Epoch seconds of the tcpdump packet header lines (`<secs>.<micros> IP …`) whose next
/// line (the `-v` continuation naming source and destination) contains `needle`.
fn packet_times(capture: &str, needle: &str) -> Vec<f64> {
    let lines: Vec<&str> = capture.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].contains(needle))
        .filter_map(|w| w[0].split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn uefi_http_boot_registers_without_tftp() {
    require_lab!(Needs::Uefi);
    if which("tcpdump").is_none() {
        skip(module_path!(), "tcpdump not installed (run scripts/setup)");
        return;
    }
    let mut lab = Lab::with_agent(ApplianceConfig::server()).expect("lab with the agent");
    let wire = Capture::start(
        &lab,
        "wire",
        &format!(
            "(ether src {MAC} and (udp dst port 67 or \
             (tcp dst port 8081 and tcp[tcpflags] & tcp-syn != 0))) or udp dst port 69"
        ),
    )
    .expect("tcpdump");

    let mut spec = VmSpec::new(Firmware::UefiHttp).uuid(UUID).memory(1024);
    spec.mac = Some(MAC.to_string());
    let started = epoch_now();
    let mut vm = lab.start_vm(&spec).expect("vm");

    let registered = lab
        .wait_registered(&mut vm, "uefi-http", BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", wire.log()));
    let registered_after = registered.after.as_secs_f64();
    let line = registered.line;
    assert!(line.contains(&format!("uuid={UUID}")), "{line}");
    let s: Value = lab.get("server", UUID).expect("ctl get server");
    let nics = s["spec"]["hardware"]["network"]["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        nics.iter().any(|n| n["mac"] == MAC),
        "NIC {MAC} not in {s:#}"
    );

    // The wire: the firmware's DHCP said HTTPClient, x64 UEFI HTTP (arch 16); no TFTP at all.
    let captured = wire.log();
    assert!(
        captured.contains("\"HTTPClient:Arch:00016"),
        "no DHCP request with HTTPClient:Arch:00016 from {MAC}:\n{captured}"
    );
    let tftp = packet_times(&captured, ".69: ");
    assert!(tftp.is_empty(), "TFTP requests on the wire:\n{captured}");
    let first_http = packet_times(&captured, ".8081: ")
        .first()
        .copied()
        .unwrap_or_else(|| panic!("no TCP connection to :8081 from {MAC}:\n{captured}"));

    // The box: its log served the first stage over HTTP; the timeline's first OFFER names
    // the client class and the URL; no TFTP step.
    let log = lab.appliance().log();
    assert!(
        log.lines()
            .any(|l| l.contains("HTTP GET /tftp/ipxe.efi ") && l.contains("-> 200")),
        "{}",
        lab.report()
    );
    assert!(
        !log.lines()
            .any(|l| ["TFTP sent", "TFTP request", "TFTP transfer"]
                .iter()
                .any(|t| l.contains(t))),
        "the box logged TFTP activity:\n{}",
        lab.report()
    );
    let timeline = lab
        .appliance()
        .timeline_with(UUID, "registered", Duration::from_secs(10))
        .expect("ctl server timeline");
    let text = lab
        .appliance()
        .ctl(&["server", "timeline", UUID])
        .unwrap_or_default();
    let events = timeline["events"].as_array().expect("events");
    let offer = events
        .iter()
        .find(|e| e["step"] == "dhcp-offer")
        .unwrap_or_else(|| panic!("no dhcp-offer in the timeline\n{text}"));
    let detail = offer["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(&format!("boot file {BOOT_URL}"))
            && detail.contains("client HTTPClient:Arch:00016"),
        "first OFFER: {offer}\n{text}"
    );
    assert!(
        !events.iter().any(|e| e["step"] == "tftp"),
        "a TFTP step in the timeline\n{text}"
    );
    for step in ["boot-script", "ipxe", "kernel", "initrd", "registered"] {
        assert!(
            events.iter().any(|e| e["step"] == step),
            "no {step} in the timeline\n{text}"
        );
    }
    eprintln!("{text}");
    lab.appliance().check_alive().expect("appliance still up");
    vm.kill();
    eprintln!(
        "uefi_http_boot: first HTTP connection {:.1}s after QEMU start, registered after \
         {registered_after:.1}s",
        first_http - started
    );
}

#[test]
fn tcpdump_lines_are_read_by_destination() {
    let text =
        "tcpdump: listening on br0, link-type EN10MB (Ethernet), snapshot length 262144 bytes
1764150000.250000 IP (tos 0x0, ttl 64, id 0, offset 0, flags [none], proto UDP (17), length 375)
    0.0.0.0.68 > 255.255.255.255.67: BOOTP/DHCP, Request from 52:54:00:16:00:16, length 347
1764150004.500000 IP (tos 0x0, ttl 64, id 1, offset 0, flags [DF], proto TCP (6), length 60)
    10.77.0.100.49152 > 10.77.0.1.8081: Flags [S], seq 1, win 64240, length 0
1764150005.000000 IP (tos 0x0, ttl 64, id 2, offset 0, flags [none], proto UDP (17), length 50)
    10.77.0.100.2070 > 10.77.0.1.69: TFTP, length 22, RRQ \"ipxe.efi\" octet
";
    assert_eq!(packet_times(text, ".8081: "), vec![1764150004.5]);
    assert_eq!(packet_times(text, ".69: "), vec![1764150005.0]);
    assert!(packet_times(text, ".4011: ").is_empty());
}
