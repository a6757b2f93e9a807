//! IPv6-only boot end to end: an OVMF VM on a segment where the box serves no IPv4 (DHCPv4
//! off; router advertisements + DHCPv6 on, the default dual-stack `[::]:8081`) boots the
//! agent through OVMF's UEFI HTTP boot client over IPv6 (PXE off and the firmware's IPv4
//! stack off by fw_cfg, no option ROM: HTTP boot over IPv6 is the firmware's first boot
//! option, with no IPv4 attempt timing out before it, about 90 s of TCG):
//! DHCPv6 with vendor class `HTTPClient` → option 59 `http://[fd00:77::1]:8081/tftp/ipxe.efi`
//! → Debian's iPXE → its own DHCPv6 (user class iPXE) → `/boot.ipxe` → `/ipxe` → the agent
//! Environment, whose init runs `appliance agent --dhcp6` (the agent's own DHCPv6 client)
//! because `sidero.endpoint` is an IPv6 address → the agent registers over IPv6.
//!
//! The wire (tcpdump on the bridge): no IPv4 packet from the VM other than iPXE's unanswered
//! DHCPv4 broadcasts from 0.0.0.0 (the VM never has an IPv4 address; nothing IPv4 reaches
//! the box's address), none of them before the firmware's first DHCPv6 Solicit (the firmware
//! tried no IPv4); the registration came from the VM's DHCPv6 lease.

use std::time::{Duration, Instant};

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::capture::Capture;
use qemu_tests::env::agent_env;
use qemu_tests::vm::whole_lines;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab, skip, which};
use serde_json::Value;

/// Generous: TCG on 2 shared cores, with builds running beside.
const BOOT_TIMEOUT: Duration = Duration::from_secs(400);
const UUID: &str = "6b0e5d2c-1f3a-4c8e-9d7b-16a1b2c3d466";
const MAC: &str = "52:54:00:16:00:66";
const BOX6: &str = "fd00:77::1";

#[test]
fn an_ipv6_only_uefi_http_boot_registers_the_agent_over_ipv6() {
    require_lab!(Needs::Uefi);
    if which("tcpdump").is_none() {
        skip(module_path!(), "tcpdump not installed (run scripts/setup)");
        return;
    }
    let env = agent_env().expect("agent environment");
    let mut lab = Lab::new().expect("lab");
    lab.ns()
        .ip(&["addr", "add", &format!("{BOX6}/64"), "dev", "br0", "nodad"])
        .expect("box IPv6 address");
    let mut config = ApplianceConfig::dhcp_off().agent_env(&env);
    config.http_listen = Some("[::]:8081".into());
    config.extra_toml = "[dhcpv6]\nenabled = true\nprefix = \"fd00:77::/64\"\n\
         range_start = \"fd00:77::100\"\nrange_end = \"fd00:77::1ff\"\nra_interval_secs = 3\n"
        .into();
    lab.start_appliance(&config).expect("appliance");
    let v4 = Capture::start(&lab, "v4", &format!("ether src {MAC} and ip")).expect("tcpdump");
    let v6 = Capture::start(
        &lab,
        "v6",
        &format!("ether src {MAC} and ip6 and (udp dst port 547 or tcp dst port 8081)"),
    )
    .expect("tcpdump");

    let mut spec = VmSpec::new(Firmware::UefiHttp)
        .uuid(UUID)
        .memory(1024)
        .no_firmware_ipv4();
    spec.mac = Some(MAC.to_string());
    let mut vm = lab.start_vm(&spec).expect("vm");
    let lease = vm
        .wait_for("AGENT-LEASE6", BOOT_TIMEOUT)
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\n{}\nv4:\n{}\nv6:\n{}",
                lab.report(),
                v4.log(),
                v6.log()
            )
        });
    let deadline = Instant::now() + Duration::from_secs(120);
    let line = loop {
        let serial = vm.serial();
        if let Some(l) = whole_lines(&serial)
            .lines()
            .find(|l| l.contains("AGENT-REGISTERED"))
        {
            break l.trim_end().to_string();
        }
        if serial.contains("AGENT-EXIT") || Instant::now() >= deadline {
            panic!("agent did not register\n{serial}\n{}", lab.report());
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let registered_after = vm.elapsed().as_secs_f64();
    println!("time-to-registered: ipv6 {registered_after:.1} s (QEMU start → registered, TCG)");
    assert!(line.contains(&format!("uuid={UUID}")), "{line}");
    let serial = vm.serial();
    let ip = lease
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .unwrap_or_else(|| panic!("no ip= in {lease}"));
    assert!(ip.starts_with("fd00:77::"), "{lease}");

    // The box saw the registration from the agent's DHCPv6 address.
    let s: Value = serde_json::from_str(
        &lab.appliance()
            .ctl(&["get", "server", UUID, "-o", "json"])
            .expect("ctl get server"),
    )
    .unwrap();
    assert!(
        s.to_string().contains(ip),
        "the server does not name its address {ip}: {s:#}"
    );
    // The wire: DHCPv6 and HTTP over IPv6 from the VM; over IPv4 at most unanswered DHCP
    // broadcasts from 0.0.0.0, never a packet to the box's IPv4 address.
    let v6_log = v6.log();
    assert!(
        v6_log.contains(".547: "),
        "no DHCPv6 from the VM:\n{v6_log}"
    );
    assert!(
        v6_log.contains(".8081: "),
        "no HTTP over IPv6 from the VM:\n{v6_log}"
    );
    let v4_log = v4.log();
    // The firmware went straight to IPv6: its console names no IPv4 boot attempt, and the
    // first IPv4 packet from the VM (iPXE's DHCPv4) comes after its first DHCPv6 Solicit.
    assert!(
        serial.contains(">>Start HTTP Boot over IPv6")
            && !serial.contains("HTTP Boot over IPv4")
            && !serial.contains("PXE over IPv4"),
        "the firmware tried IPv4 or did not HTTP boot over IPv6:\n{serial}"
    );
    let first = |log: &str| {
        log.lines()
            .find_map(|l| l.split_whitespace().next()?.parse::<f64>().ok())
    };
    if let (Some(v4_first), Some(v6_first)) = (first(&v4_log), first(&v6_log)) {
        assert!(
            v6_first < v4_first,
            "IPv4 from the VM before its first DHCPv6:\nv4:\n{v4_log}\nv6:\n{v6_log}"
        );
    }
    for l in v4_log.lines().filter(|l| l.contains(" > ")) {
        assert!(
            l.trim_start()
                .starts_with("0.0.0.0.68 > 255.255.255.255.67"),
            "an IPv4 packet from the VM other than a DHCP broadcast: {l}\n{v4_log}"
        );
    }
    let log = lab.appliance().log();
    assert!(
        !log.contains("DHCP offer") && !log.contains("DHCPOFFER"),
        "the box answered DHCPv4:\n{}",
        lab.report()
    );
    lab.appliance().check_alive().expect("appliance still up");
    vm.kill();
    eprintln!(
        "ipv6_boot: registered after {registered_after:.1}s (QEMU start → AGENT-REGISTERED); \
         {} DHCPv4 broadcasts from the VM unanswered",
        v4_log.lines().filter(|l| l.contains(".67: ")).count()
    );
}
