//! Root-only: IPv6 provisioning against real clients across a veth pair in network
//! namespaces this test creates (names start with `d6`). The real `appliance serve` with
//! `[dhcpv6]` on and `[http] listen = "[::]:8081"`:
//!
//! - router advertisements: `rdisc6` (ndisc6) solicits one and reads the Managed flag and the
//!   prefix; the client kernel installs the prefix route from it (`proto ra`);
//! - DHCPv6: ISC `dhclient -6` announcing x64 UEFI HTTP boot (option 61 = 16) gets an address
//!   from the pool (Solicit/Advertise/Request/Reply), the DNS server and the boot file URL
//!   `http://[fd00:77::1]:8081/tftp/ipxe.efi` (option 59) and the parameters (option 60);
//! - HTTP over IPv6 from that address: `/boot.ipxe`, `/tftp/ipxe.efi` (its exact size), `/ipxe`
//!   and `/healthz` answer, and the box's log names the client's leased address; the listener
//!   is bound to `[::]` (dual stack: IPv4 still answers);
//! - leases in redb: after a restart a second client never gets the first one's address.
//!
//! Skips with a printed reason when not root or a tool is missing; with `APPLIANCE_E2E=1`
//! (CI) that is a failure instead.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_appliance");

#[path = "support/netns.rs"]
mod netns;
#[path = "support/prereq.rs"]
mod prereq;

use netns::{Proc, Segment6, agent_env, curl, dhclient6, run, wait};

const BOX: &str = "fd00:77::1";

fn start_appliance(ns: &str, dir: &Path, config: &str) -> Proc {
    netns::serve(BIN, ns, dir, config, "dhcpv6 serving")
}

/// The dhclient config of the UEFI HTTP boot client: architecture x64 UEFI HTTP (16), the
/// boot file URL and parameters and the DNS servers asked for.
const UEFI_HTTP: &str = "send dhcp6.client-arch-type 16;\n\
     also request dhcp6.bootfile-url, dhcp6.bootfile-param, dhcp6.name-servers;\n";

fn in_pool(addr: &str) -> bool {
    let a: std::net::Ipv6Addr = addr.parse().unwrap();
    let a = u128::from(a);
    let lo = u128::from("fd00:77::100".parse::<std::net::Ipv6Addr>().unwrap());
    (lo..=lo + 0xff).contains(&a)
}

#[test]
fn dhcpv6_and_router_advertisements_serve_real_clients_and_http_answers_over_ipv6() {
    let test = "dhcpv6_and_router_advertisements_serve_real_clients_and_http_answers_over_ipv6";
    if let Some(why) = prereq::missing_root_or(
        &[
            ("ip", &["-V"]),
            ("dhclient", &["--version"]),
            ("rdisc6", &["-V"]),
            ("curl", &["--version"]),
        ],
        "network namespaces and udp/547",
    ) {
        prereq::skip(test, &why);
        return;
    }
    // Link-local addresses past DAD before the box and dhclient use them.
    let seg = Segment6::new("d6", BOX, Some("10.78.0.1/24"));
    let (ns_s, ns_c, dev_s, dev_c) = (&seg.ns_s, &seg.ns_c, &seg.dev_s, &seg.dev_c);
    // The client learns routes from advertisements (it is no router).
    run(&[
        "ip",
        "netns",
        "exec",
        ns_c,
        "sysctl",
        "-q",
        "-w",
        &format!("net.ipv6.conf.{dev_c}.accept_ra=1"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    // A stand-in agent Environment, so /ipxe boots it and its kernel is fetched over IPv6.
    let agent_dir = agent_env(tmp.path(), 300_000, 100_000);
    let config = format!(
        r#"data_dir = "{data}"
interface = "{dev_s}"
[http]
listen = "[::]:8081"
[boot]
agent_dir = "{agent_dir}"
[tftp]
enabled = false
[log]
format = "json"
level = "appliance=debug,info"
[dhcp]
mode = "off"
[dhcpv6]
enabled = true
prefix = "fd00:77::/64"
range_start = "fd00:77::100"
range_end = "fd00:77::1ff"
dns = ["fd00:77::53"]
boot_file_params = ["ip=dhcp6"]
ra_interval_secs = 3
"#,
        data = tmp.path().join("data").display(),
        agent_dir = agent_dir.display()
    );
    let server = start_appliance(ns_s, tmp.path(), &config);

    // The HTTP listener is bound to [::] (dual stack); it comes up after DHCPv6.
    let listening = || {
        run(&[
            "ip", "netns", "exec", ns_s, "ss", "-Hltn", "sport", "= :8081",
        ])
    };
    wait(20, "no listener on :8081", || !listening().is_empty());
    let ss = listening();
    assert!(ss.contains("[::]:8081") || ss.contains("*:8081"), "{ss}");

    // Router advertisement, solicited by rdisc6: Managed, the prefix, not a default router.
    let out = Command::new("ip")
        .args(["netns", "exec", ns_c, "rdisc6", "-1", "-w", "3000", dev_c])
        .output()
        .unwrap();
    let ra = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        ra.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("rdisc6 printed no {name}:\n{ra}\n{}", server.log()))
    };
    assert_eq!(field("Stateful address conf."), "Yes", "{ra}");
    assert_eq!(field("Stateful other conf."), "Yes", "{ra}");
    assert_eq!(field("Router lifetime"), "0 (0x00000000) seconds", "{ra}");
    assert!(
        ra.contains("Prefix                   : fd00:77::/64"),
        "{ra}"
    );
    // The client kernel took the prefix as on-link from the advertisements: a route for it
    // with the advertised lifetime (the client has no address there yet).
    let routes = || run(&["ip", "-n", ns_c, "-6", "route"]);
    wait(10, "no prefix route from the advertisements", || {
        routes()
            .lines()
            .any(|l| l.starts_with("fd00:77::/64 dev") && l.contains("expires"))
    });

    // DHCPv6 with a real client announcing UEFI HTTP boot.
    let (a, a_client) = dhclient6(ns_c, dev_c, tmp.path(), "a", Some(UEFI_HTTP), None);
    let a_ip = a["new_ip6_address"].clone();
    assert!(in_pool(&a_ip), "{a:?}");
    assert_eq!(a["new_dhcp6_name_servers"], "fd00:77::53", "{a:?}");
    assert_eq!(
        a["new_dhcp6_bootfile_url"], "http://[fd00:77::1]:8081/tftp/ipxe.efi",
        "{a:?}"
    );
    // Option 60: one item, length 8, "ip=dhcp6" (dhclient prints it as hex).
    assert_eq!(
        a["new_dhcp6_bootfile_param"], "0:8:69:70:3d:64:68:63:70:36",
        "{a:?}"
    );
    // Option 16 answered: enterprise 343, "HTTPClient".
    assert_eq!(
        a["new_dhcp6_unknown_16"], "0:0:1:57:0:a:48:54:54:50:43:6c:69:65:6e:74",
        "{a:?}"
    );

    // HTTP over IPv6 from the leased address: the boot script, the first stage (its exact
    // size), the /ipxe decision, health; the box logs the client's v6 address.
    let (code, _, body) = curl(ns_c, &format!("http://[{BOX}]:8081/boot.ipxe"));
    assert_eq!(code, 200, "{body}");
    assert!(body.starts_with("#!ipxe"), "{body}");
    let efi = std::fs::metadata("/usr/lib/ipxe/ipxe.efi").map(|m| m.len() as usize);
    let (code, size, _) = curl(ns_c, &format!("http://[{BOX}]:8081/tftp/ipxe.efi"));
    if let Ok(len) = efi {
        assert_eq!((code, size), (200, len));
    }
    let (code, _, body) = curl(
        ns_c,
        &format!(
            "http://[{BOX}]:8081/ipxe?uuid=11111111-2222-3333-4444-555555555555&mac=02:00:00:00:00:01"
        ),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("#!ipxe"), "{body}");
    // The agent is pointed back at the box by the address the client used, bracketed.
    assert!(
        body.contains(&format!("sidero.endpoint=[{BOX}]:8081 ")),
        "{body}"
    );
    let kernel = body
        .split_whitespace()
        .find(|w| w.starts_with("/env/") && w.ends_with("vmlinuz"))
        .unwrap_or_else(|| panic!("no kernel path in {body}"));
    let (code, size, _) = curl(ns_c, &format!("http://[{BOX}]:8081{kernel}"));
    assert_eq!((code, size), (200, 300_000), "{kernel}");
    assert_eq!(curl(ns_c, &format!("http://[{BOX}]:8081/healthz")).0, 200);
    // Dual stack: IPv4 on the same listener.
    assert_eq!(curl(ns_s, "http://10.78.0.1:8081/healthz").0, 200);
    wait(5, "no log line with the client's v6 address", || {
        server.log().contains(&format!("[{a_ip}]"))
    });

    // Leases are durable: after a restart, a second client never gets the first's address.
    drop(a_client);
    server.stop();
    let server = start_appliance(ns_s, tmp.path(), &config);
    let (b, b_client) = dhclient6(ns_c, dev_c, tmp.path(), "b", Some(UEFI_HTTP), None);
    assert!(in_pool(&b["new_ip6_address"]), "{b:?}");
    assert_ne!(
        b["new_ip6_address"], a_ip,
        "an address bound before the restart was handed out again"
    );
    drop(b_client);
    assert!(!server.log().contains("panicked"), "{}", server.log());
    server.stop();
}
