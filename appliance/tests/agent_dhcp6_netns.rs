//! Root-only: the agent on IPv6 only, across a veth pair in network namespaces this test
//! creates (names start with `a6`). The real `appliance serve` with DHCPv4 off and `[dhcpv6]`
//! on (router advertisements + DHCPv6), the default dual-stack `[::]:8081` listener, and in the
//! client namespace the real binary as the agent initramfs runs it:
//!
//! - `appliance agent --dhcp6 IFACE` (the initramfs's DHCPv6 client): Solicit → Advertise →
//!   Request → Reply, the address from the box's pool configured on the interface (not
//!   tentative), the on-link prefix route from the box's router advertisement, the lease in
//!   the box's store under the NIC's DUID-LL; the box's `/healthz` answers from that address;
//! - `appliance agent` with the kernel arguments `/ipxe` gave over IPv6 (token, endpoint
//!   `[fd00:…]:8081`) registers over IPv6 from its DHCPv6 address, is auto-accepted, wipes
//!   (a fake sysfs tree with no disks) and its MarkServerAsWiped passes the DHCPv6 lease check;
//! - the same from an IPv6 address the box never leased (another server): MarkServerAsWiped
//!   is refused, `holds no lease`;
//! - a forged DUID: once the first server's agent is gone (no live agent, so a fresh boot
//!   token alone would let a new key in), a host on the segment gets its own DHCPv6 lease
//!   from ISC `dhclient -6` under a DUID-LLT naming that server's MAC (a second address "of"
//!   its NIC, which passes the plain lease check) and runs the agent for that server with a
//!   fresh `/ipxe` token: its registration is refused (the displacement rule: the server's
//!   agent address still holds its lease) and the box records no registration from it.
//!
//! Skips with a printed reason when not root or a tool is missing; with `APPLIANCE_E2E=1`
//! (CI) that is a failure instead.

use std::path::Path;

const BIN: &str = env!("CARGO_BIN_EXE_appliance");

#[path = "support/netns.rs"]
mod netns;
#[path = "support/prereq.rs"]
mod prereq;

use netns::{Proc, Segment6, agent_env, curl, dhclient6, run, wait};

const BOX: &str = "fd00:78::1";

/// A sysfs/procfs stand-in for `appliance agent --root`: the server's UUID, one NIC with
/// `mac`, no disks (the wipe writes nothing).
fn fake_root(dir: &Path, uuid: &str, iface: &str, mac: &str) {
    let put = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    put("sys/class/dmi/id/product_uuid", uuid);
    put("sys/class/dmi/id/sys_vendor", "QEMU");
    put(&format!("sys/class/net/{iface}/address"), mac);
    put(&format!("sys/class/net/{iface}/ifindex"), "2");
    put(&format!("sys/class/net/{iface}/mtu"), "1500");
    put("proc/cpuinfo", "processor\t: 0\nmodel name\t: test\n");
    put("proc/meminfo", "MemTotal:        1048576 kB\n");
    std::fs::create_dir_all(dir.join("sys/block")).unwrap();
}

/// The kernel arguments `/ipxe` hands this server's agent (over IPv6, from `ns`).
fn agent_cmdline(ns: &str, uuid: &str, mac: &str) -> String {
    let (code, _, body) = curl(
        ns,
        &format!("http://[{BOX}]:8081/ipxe?uuid={uuid}&mac={mac}"),
    );
    assert_eq!(code, 200, "{body}");
    let line = body
        .lines()
        .find(|l| l.starts_with("kernel "))
        .unwrap_or_else(|| panic!("no kernel line in {body}"));
    assert!(
        line.contains(&format!("sidero.endpoint=[{BOX}]:8081")),
        "{line}"
    );
    line.to_string()
}

/// `appliance agent` in `ns` as the initramfs runs it, for the server `uuid` whose NIC
/// `iface` has `mac`: its fake root and the kernel arguments `/ipxe` gave it, under
/// `dir/{name}-*`.
fn spawn_agent(ns: &str, dir: &Path, name: &str, uuid: &str, iface: &str, mac: &str) -> Proc {
    let root = dir.join(format!("root-{name}"));
    fake_root(&root, uuid, iface, mac);
    let cmdline = dir.join(format!("cmdline-{name}"));
    std::fs::write(&cmdline, agent_cmdline(ns, uuid, mac)).unwrap();
    Proc::spawn(
        ns,
        &[
            BIN,
            "agent",
            "--cmdline",
            cmdline.to_str().unwrap(),
            "--root",
            root.to_str().unwrap(),
            "--no-bmc-setup",
            "--no-power-action",
        ],
        &dir.join(format!("agent-{name}.log")),
    )
}

fn global_v6(ns: &str, dev: &str) -> Vec<String> {
    run(&[
        "ip", "-n", ns, "-6", "addr", "show", "dev", dev, "scope", "global",
    ])
    .lines()
    .filter_map(|l| l.trim().strip_prefix("inet6 "))
    .map(|l| l.to_string())
    .collect()
}

#[test]
fn the_agent_gets_its_address_by_dhcpv6_and_its_wipe_report_passes_the_v6_lease_check() {
    let test = "the_agent_gets_its_address_by_dhcpv6_and_its_wipe_report_passes_the_v6_lease_check";
    if let Some(why) = prereq::missing_root_or(
        &[
            ("ip", &["-V"]),
            ("curl", &["--version"]),
            ("dhclient", &["--version"]),
        ],
        "network namespaces and udp/546-547",
    ) {
        prereq::skip(test, &why);
        return;
    }
    let seg = Segment6::new("a6", BOX, None);
    let (ns_s, ns_c, dev_s, dev_c) = (&seg.ns_s, &seg.ns_c, &seg.dev_s, &seg.dev_c);
    let mac = seg.client_mac();
    let tmp = tempfile::tempdir().unwrap();
    let agent_dir = agent_env(tmp.path(), 1000, 1000);
    let data = tmp.path().join("data");
    // No [http] listen: the default [::]:8081.
    let config = format!(
        r#"data_dir = "{data}"
interface = "{dev_s}"
[boot]
agent_dir = "{agent_dir}"
[tftp]
enabled = false
[siderolink]
enabled = false
[log]
level = "appliance=debug,info"
[dhcp]
mode = "off"
[lifecycle]
auto_accept = true
agent_poll_seconds = 1
[dhcpv6]
enabled = true
prefix = "fd00:78::/64"
range_start = "fd00:78::100"
range_end = "fd00:78::1ff"
ra_interval_secs = 2
"#,
        data = data.display(),
        agent_dir = agent_dir.display()
    );
    let server = netns::serve(BIN, ns_s, tmp.path(), &config, "appliance serving");

    // The initramfs's DHCPv6 client.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns_c, BIN, "agent", "--dhcp6", dev_c])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}\n{}", server.log());
    let line = stdout
        .lines()
        .find(|l| l.starts_with("AGENT-LEASE6 "))
        .unwrap_or_else(|| panic!("no AGENT-LEASE6 line: {stdout}{stderr}"));
    let ip = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .unwrap()
        .to_string();
    let addr: std::net::Ipv6Addr = ip.parse().unwrap();
    assert!(
        (0x100..=0x1ff).contains(&(u128::from(addr) & 0xffff)) && ip.starts_with("fd00:78::"),
        "{line}"
    );
    assert!(line.contains("valid=3600"), "{line}");
    // Configured and usable: on the interface (not tentative), the prefix on-link from the
    // router advertisement, and the box answers from it.
    let addrs = global_v6(ns_c, dev_c);
    assert!(
        addrs
            .iter()
            .any(|a| a.starts_with(&format!("{ip}/128")) && !a.contains("tentative")),
        "{addrs:?}"
    );
    let routes = run(&["ip", "-n", ns_c, "-6", "route"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("fd00:78::/64 dev") && l.contains("expires")),
        "{routes}"
    );
    assert!(
        stderr.contains("on-link from the router advertisement"),
        "{stderr}"
    );
    let (code, _, _) = curl(ns_c, &format!("http://[{BOX}]:8081/healthz"));
    assert_eq!(code, 200);
    // The box's log: the DHCPv6 exchange under the NIC's MAC, and the request from the lease.
    let log = server.log();
    assert!(log.contains(&ip), "{log}");

    // The agent over IPv6 with the kernel arguments /ipxe gave: registered, accepted, wiped
    // (no disks), its MarkServerAsWiped from the DHCPv6 address passes the lease check.
    let uuid = "4c4c4544-0036-3610-8036-b4c04f366636";
    let mut agent = spawn_agent(ns_c, tmp.path(), "a", uuid, dev_c, &mac);
    agent.wait_for_log("AGENT-REGISTERED");
    agent.wait_for_log("AGENT-WIPED");
    assert!(!agent.log().contains("AGENT-FAILED"), "{}", agent.log());
    assert!(
        !server.log().contains("agent call refused"),
        "{}",
        server.log()
    );
    agent.stop();

    // Another server's agent from an IPv6 address the box never leased: registered (the
    // boot token is its own), but its wipe report is refused by the lease check.
    // The client's IPv6 address: `ip -6 addr OP CIDR dev <client side> [nodad]`.
    let client_addr = |op: &str, cidr: &str, extra: &[&str]| {
        let args = ["ip", "-n", ns_c, "-6", "addr", op, cidr, "dev", dev_c];
        run(&[&args[..], extra].concat());
    };
    client_addr("del", &format!("{ip}/128"), &[]);
    client_addr("add", "fd00:78::99/64", &["nodad"]);
    let uuid_b = "4c4c4544-0036-3610-8036-b4c04f366637";
    let mut agent_b = spawn_agent(ns_c, tmp.path(), "b", uuid_b, dev_c, &mac);
    agent_b.wait_for_log("AGENT-FAILED");
    let log_b = agent_b.log();
    assert!(log_b.contains("AGENT-REGISTERED"), "{log_b}");
    assert!(!log_b.contains("AGENT-WIPED "), "{log_b}");
    assert!(
        log_b.contains("MarkServerAsWiped") && log_b.contains("fd00:78::99 holds no lease"),
        "{log_b}"
    );
    wait(5, "the box did not log the refusal", || {
        server.log().contains("agent call refused")
    });
    agent_b.stop();

    // A forged DUID. The first server's agent stopped seconds ago (more than 3 poll
    // intervals: no live agent), so without the displacement rule a fresh token would
    // replace its key. A host on the segment leases an address of its own under a DUID-LLT
    // naming that server's MAC (ISC dhclient with a `default-duid`), then runs the agent for
    // that server, reporting that MAC, with a fresh token from /ipxe.
    std::thread::sleep(std::time::Duration::from_secs(4));
    client_addr("del", "fd00:78::99/64", &[]);
    let mac_bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let duid_llt = [vec![0, 1, 0, 1, 0x30, 0x39, 0x2f, 0x11], mac_bytes].concat();
    let (vars, _dhclient) = dhclient6(ns_c, dev_c, tmp.path(), "forged", None, Some(&duid_llt));
    let forged = vars["new_ip6_address"].clone();
    assert!(
        forged.starts_with("fd00:78::") && forged != ip,
        "{forged} vs {ip}"
    );
    let refusals = server.log().matches("agent call refused").count();
    let mut forger = spawn_agent(ns_c, tmp.path(), "forger", uuid, dev_c, &mac);
    forger.wait_for_log("AGENT-FAILED");
    let log_f = forger.log();
    assert!(!log_f.contains("AGENT-REGISTERED"), "{log_f}");
    assert!(
        log_f.contains("CreateServer")
            && log_f.contains("PermissionDenied")
            && log_f.contains("copied DUID"),
        "{log_f}"
    );
    wait(5, "the box did not log the forger's refusal", || {
        server.log().matches("agent call refused").count() > refusals
    });
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains("agent call refused") && l.contains(&forged)),
        "{log}"
    );
    assert!(!log.contains("agent-key-replaced"), "{log}");
    forger.stop();
    assert!(!server.log().contains("panicked"), "{}", server.log());
    server.stop();
}
