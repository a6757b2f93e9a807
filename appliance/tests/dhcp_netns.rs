//! Root-only: the real `appliance serve` answering real DHCP clients across veth pairs in
//! network namespaces this test creates (names start with `dh`).
//!
//! - server mode: busybox `udhcpc` (plain, PXE arch 7, iPXE, reserved MAC, RELEASE), a short
//!   `perfdhcp` run, and a restart that must keep every lease;
//! - proxy mode: dnsmasq hands out addresses, the appliance adds boot information; a
//!   PXE-like client (this test binary re-executed inside the client namespace, see
//!   `probe_child`) checks both offers and the port-4011 exchange;
//! - rogue DHCP detection: a dnsmasq in a peer namespace (which unicasts its offers to the
//!   offered address at the probe's MAC) is reported by the box's probe in server mode
//!   (log, `/metrics`, console overview), and is not when named in `dhcp.expected_servers`
//!   in proxy mode.
//!
//! Skips with a printed reason when not root or when a tool is missing; with
//! `APPLIANCE_E2E=1` (CI) that is a failure instead.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};

const BIN: &str = env!("CARGO_BIN_EXE_appliance");

#[path = "support/netns.rs"]
mod netns;
#[path = "support/prereq.rs"]
mod prereq;

use netns::{Namespaces, Proc, run, tag, veth};

/// Why this test cannot run here, if it cannot.
fn skip_reason(tools: &[(&str, &[&str])]) -> Option<String> {
    prereq::missing_root_or(tools, "network namespaces and udp/67")
}

fn start_appliance(ns: &str, dir: &Path, config: &str) -> Proc {
    netns::serve(BIN, ns, dir, config, "dhcp serving")
}

/// Writes the udhcpc event script (records the `bound` variables in `$DH_OUT`).
fn udhcpc_script(dir: &Path) -> PathBuf {
    let script = dir.join("udhcpc.sh");
    std::fs::write(
        &script,
        // With DH_CONFIGURE the address is put on the interface (so a RELEASE can be sent
        // from it) and removed again on deconfig.
        "#!/bin/sh\n\
         case \"$1\" in\n\
         bound) [ -n \"$DH_CONFIGURE\" ] && ip addr add \"$ip/24\" dev \"$interface\"\n\
           for v in ip subnet router dns domain lease serverid siaddr boot_file hostname; do\n\
             eval \"echo $v=\\$$v\"\n\
           done > \"$DH_OUT\" ;;\n\
         deconfig) [ -n \"$DH_CONFIGURE\" ] && [ -f \"$DH_OUT\" ] && \
           ip addr del \"$(sed -n s/^ip=//p \"$DH_OUT\")/24\" dev \"$interface\" ;;\n\
         esac\nexit 0\n",
    )
    .unwrap();
    run(&["chmod", "+x", script.to_str().unwrap()]);
    script
}

/// Runs busybox udhcpc once in `ns` on `dev`; returns the variables of its `bound` event.
fn udhcpc(ns: &str, dev: &str, dir: &Path, extra: &[&str]) -> HashMap<String, String> {
    let script = udhcpc_script(dir);
    let out_file = dir.join("udhcpc.out");
    let _ = std::fs::remove_file(&out_file);
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "busybox", "udhcpc", "-f", "-q", "-n"])
        .args([
            "-t",
            "4",
            "-T",
            "1",
            "-i",
            dev,
            "-s",
            script.to_str().unwrap(),
        ])
        .args(extra)
        .env("DH_OUT", &out_file)
        .output()
        .unwrap();
    let vars = std::fs::read_to_string(&out_file).unwrap_or_else(|_| {
        panic!(
            "udhcpc {extra:?} got no lease: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    vars.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs udhcpc until bound, then makes it send a DHCPRELEASE (SIGUSR2; `-q -R` does not
/// send one in busybox 1.35) and stops it. Returns the released address.
fn udhcpc_release(ns: &str, dev: &str, dir: &Path) -> String {
    let out_file = dir.join("udhcpc.out");
    let _ = std::fs::remove_file(&out_file);
    let log = dir.join("udhcpc-release.log");
    let f = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", ns, "busybox", "udhcpc", "-f", "-t", "4", "-T", "1",
        ])
        .args(["-i", dev, "-s", udhcpc_script(dir).to_str().unwrap()])
        .env("DH_OUT", &out_file)
        .env("DH_CONFIGURE", "1")
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let wait = |what: &dyn Fn() -> bool| {
        let deadline = appliance::clock::now() + Duration::from_secs(15);
        while appliance::clock::now() < deadline && !what() {
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    wait(&|| {
        std::fs::read_to_string(&out_file)
            .unwrap_or_default()
            .contains("hostname=")
    });
    let ip = std::fs::read_to_string(&out_file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("ip=").map(str::to_string))
        .unwrap_or_else(|| panic!("no lease: {}", std::fs::read_to_string(&log).unwrap()));
    run(&["kill", "-USR2", &pid]);
    wait(&|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("entering released state")
    });
    run(&["kill", "-TERM", &pid]);
    let _ = child.wait();
    ip
}

fn set_mac(ns: &str, dev: &str, mac: &str) {
    run(&["ip", "-n", ns, "link", "set", dev, "down"]);
    run(&["ip", "-n", ns, "link", "set", dev, "address", mac]);
    run(&["ip", "-n", ns, "link", "set", dev, "up"]);
}

fn in_range(ip: &str, lo: u8, hi: u8) -> bool {
    let ip: Ipv4Addr = ip.parse().unwrap();
    let last = ip.octets()[3];
    ip.octets()[..3] == [10, 77, 0] && (lo..=hi).contains(&last)
}

#[test]
fn server_mode_serves_real_clients_and_keeps_leases_across_restart() {
    if let Some(why) = skip_reason(&[
        ("busybox", &["--help"]),
        ("perfdhcp", &["-h"]),
        ("ip", &["-V"]),
    ]) {
        prereq::skip(
            "server_mode_serves_real_clients_and_keeps_leases_across_restart",
            &why,
        );
        return;
    }
    let t = tag();
    let (ns_s, ns_c) = (format!("dh{t}s"), format!("dh{t}c"));
    let _ns = Namespaces::new(&[ns_s.clone(), ns_c.clone()]);
    let (dev_s, dev_c) = (format!("dh{t}s0"), format!("dh{t}c0"));
    veth(
        &ns_s,
        &dev_s,
        Some("10.77.0.1/24"),
        &ns_c,
        &dev_c,
        Some("10.77.0.2/24"),
    );
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        r#"data_dir = "{data}"
interface = "{dev_s}"
[http]
listen = "127.0.0.1:8081"
[tftp]
enabled = false
[log]
format = "json"
level = "appliance=debug,info"
[dhcp]
mode = "server"
[[dhcp.pools]]
range_start = "10.77.0.100"
range_end = "10.77.0.200"
netmask = "255.255.255.0"
router = "10.77.0.1"
dns = ["10.77.0.1"]
domain = "lab.test"
[[dhcp.reservations]]
mac = "02:00:00:00:00:99"
ip = "10.77.0.50"
hostname = "reserved-node"
"#,
        data = tmp.path().join("data").display()
    );
    let server = start_appliance(&ns_s, tmp.path(), &config);

    // A plain client gets an address from the pool and the network options.
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:01");
    let plain = udhcpc(&ns_c, &dev_c, tmp.path(), &[]);
    let a_ip = plain["ip"].clone();
    assert!(in_range(&a_ip, 100, 200), "{plain:?}");
    assert_eq!(plain["subnet"], "255.255.255.0");
    assert_eq!(plain["router"].trim(), "10.77.0.1");
    assert_eq!(plain["dns"].trim(), "10.77.0.1");
    assert_eq!(plain["domain"], "lab.test");
    assert_eq!(plain["lease"], "3600");
    assert_eq!(plain["serverid"], "10.77.0.1");
    assert_eq!(plain["boot_file"], "", "no boot file for a plain client");

    // The same client again (INIT-REBOOT style) keeps its address.
    assert_eq!(udhcpc(&ns_c, &dev_c, tmp.path(), &[])["ip"], a_ip);

    // PXE clients get boot files by arch; an iPXE client gets the HTTP script.
    let uefi = udhcpc(
        &ns_c,
        &dev_c,
        tmp.path(),
        &["-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003016"],
    );
    assert_eq!(uefi["boot_file"], "ipxe.efi", "{uefi:?}");
    assert_eq!(uefi["siaddr"], "10.77.0.1");
    let ipxe = udhcpc(
        &ns_c,
        &dev_c,
        tmp.path(),
        &["-x", "0x5d:0000", "-x", "0x4d:69505845"],
    );
    assert_eq!(
        ipxe["boot_file"], "http://10.77.0.1:8081/boot.ipxe",
        "{ipxe:?}"
    );

    // A reserved MAC gets its fixed address and hostname.
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:99");
    let res = udhcpc(&ns_c, &dev_c, tmp.path(), &[]);
    assert_eq!(res["ip"], "10.77.0.50");
    assert_eq!(res["hostname"], "reserved-node");

    // RELEASE frees the address: client 2 takes and releases one, client 3 may ask for it.
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:02");
    let released = udhcpc_release(&ns_c, &dev_c, tmp.path());
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:03");
    let taken = udhcpc(&ns_c, &dev_c, tmp.path(), &["-r", &released])["ip"].clone();
    assert_eq!(
        taken,
        released,
        "a released address can go to another client\n{}",
        server.log()
    );

    // perfdhcp: a short burst of full DORAs from 50 simulated clients, all answered.
    let out = Command::new("ip")
        .args(["netns", "exec", &ns_c, "perfdhcp", "-4", "-l", &dev_c])
        .args(["-r", "100", "-R", "50", "-p", "2"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let acks = text
        .split("***Statistics for: REQUEST-ACK***")
        .nth(1)
        .and_then(|s| s.lines().find(|l| l.starts_with("received packets:")))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or_else(|| {
            panic!(
                "perfdhcp output: {text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        acks >= 150,
        "perfdhcp got {acks} ACKs in 2 s at 100/s:\n{text}"
    );
    assert!(text.contains("non unique addresses: 0"), "{text}");

    // `/metrics` counted what the clients saw: every ACK above, the NAK-free run, nothing
    // dropped for lack of addresses.
    let metrics = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_s,
            "curl",
            "-sf",
            "http://127.0.0.1:8081/metrics",
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout).to_string();
    let sample = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no `{name}` in /metrics:\n{metrics}"))
    };
    let acked = sample("appliance_dhcp_replies_total{type=\"ack\"}");
    let offered = sample("appliance_dhcp_replies_total{type=\"offer\"}");
    assert!(
        acked >= u64::from(acks) + 5,
        "{acked} ACKs counted\n{metrics}"
    );
    assert!(
        offered >= acked,
        "{offered} OFFERs, {acked} ACKs\n{metrics}"
    );
    assert!(sample("appliance_dhcp_received_total") >= offered + acked);
    assert_eq!(
        sample("appliance_dhcp_dropped_total{reason=\"no_address\"}"),
        0
    );
    assert_eq!(
        sample("appliance_dhcp_dropped_total{reason=\"commit_failed\"}"),
        0
    );

    // Restart: every lease is still there.
    server.stop();
    let server = start_appliance(&ns_s, tmp.path(), &config);
    let loaded: u32 = server
        .log()
        .lines()
        .find(|l| l.contains("dhcp serving"))
        .and_then(|l| l.split("\"leases\":").nth(1))
        .and_then(|v| v.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lease count in {}", server.log()));
    // 5 udhcpc clients (one released) + the perfdhcp clients.
    assert!(loaded >= 5, "{loaded} leases loaded");
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:04");
    let other = udhcpc(&ns_c, &dev_c, tmp.path(), &["-r", &a_ip]);
    assert_ne!(
        other["ip"], a_ip,
        "a stored lease is not handed to another client"
    );
    assert!(in_range(&other["ip"], 100, 200));
    set_mac(&ns_c, &dev_c, "02:00:00:00:00:01");
    assert_eq!(
        udhcpc(&ns_c, &dev_c, tmp.path(), &[])["ip"],
        a_ip,
        "old client keeps its address"
    );
    drop(server);
}

// ------------------------------------------------------------------------- proxy mode

/// The PXE-like client, run by the parent test inside the client namespace:
/// `ip netns exec <ns> <this test binary> --exact probe_child --nocapture` with `DH_PROBE_*`
/// set. Sends a DISCOVER (broadcast, port 68 → 67), prints every reply, then sends a
/// REQUEST to the proxy's port 4011 and prints that reply. Does nothing without the env.
#[test]
fn probe_child() {
    let Ok(dev) = std::env::var("DH_PROBE_DEV") else {
        return;
    };
    let pxe = std::env::var("DH_PROBE_PXE").is_ok();
    let ciaddr: Ipv4Addr = std::env::var("DH_PROBE_CIADDR").unwrap().parse().unwrap();
    let sock = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.set_broadcast(true).unwrap();
    sock.bind_device(Some(dev.as_bytes())).unwrap();
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68)).into())
        .unwrap();
    let sock: std::net::UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mac = [0x02, 0, 0, 0, 0x11, 0x22];
    let guid: Vec<u8> = std::iter::once(0).chain(0x10..0x20).collect();
    let build = |ty: MessageType, ciaddr: Ipv4Addr| {
        let mut m = Message::new_with_id(
            0xd4c0_0001,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        m.set_opcode(Opcode::BootRequest);
        m.set_flags(Flags::default().set_broadcast());
        let o = m.opts_mut();
        o.insert(DhcpOption::MessageType(ty));
        if pxe {
            o.insert(DhcpOption::ClientSystemArchitecture(7.into()));
            o.insert(DhcpOption::ClassIdentifier(
                b"PXEClient:Arch:00007:UNDI:003016".to_vec(),
            ));
            o.insert(DhcpOption::ClientMachineIdentifier(guid.clone()));
        }
        m.to_vec().unwrap()
    };
    let collect = |sock: &std::net::UdpSocket, label: &str, secs: u64| {
        let mut buf = [0u8; 2048];
        let deadline = appliance::clock::now() + Duration::from_secs(secs);
        while appliance::clock::now() < deadline {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                println!("REPLY {label} {from} {}", hex::encode(&buf[..n]));
            }
        }
    };
    sock.send_to(
        &build(MessageType::Discover, Ipv4Addr::UNSPECIFIED),
        (Ipv4Addr::BROADCAST, 67),
    )
    .unwrap();
    collect(&sock, "discover", 3);
    if let Ok(proxy) = std::env::var("DH_PROBE_PROXY") {
        let proxy: Ipv4Addr = proxy.parse().unwrap();
        sock.send_to(&build(MessageType::Request, ciaddr), (proxy, 4011))
            .unwrap();
        collect(&sock, "pxe4011", 2);
    }
}

struct ProbeReply {
    label: String,
    msg: Message,
}

fn probe(ns: &str, dev: &str, pxe: bool, ciaddr: &str, proxy: Option<&str>) -> Vec<ProbeReply> {
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns])
        .arg(exe)
        .args(["--exact", "probe_child", "--nocapture", "--test-threads=1"])
        .env("DH_PROBE_DEV", dev)
        .env("DH_PROBE_CIADDR", ciaddr);
    if pxe {
        cmd.env("DH_PROBE_PXE", "1");
    }
    if let Some(p) = proxy {
        cmd.env("DH_PROBE_PROXY", p);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "probe failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        // libtest may print "test probe_child ... " on the same line as the first reply.
        .filter_map(|l| l.find("REPLY ").map(|i| &l[i + "REPLY ".len()..]))
        .map(|l| {
            let mut parts = l.split(' ');
            let label = parts.next().unwrap().to_string();
            let _from = parts.next().unwrap();
            let bytes = hex::decode(parts.next().unwrap()).unwrap();
            ProbeReply {
                label,
                msg: Message::from_bytes(&bytes).unwrap(),
            }
        })
        .collect()
}

fn server_id(m: &Message) -> Option<Ipv4Addr> {
    match m.opts().get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
        _ => None,
    }
}

fn opt(m: &Message, code: OptionCode) -> Option<Vec<u8>> {
    match m.opts().get(code)? {
        DhcpOption::ClassIdentifier(v)
        | DhcpOption::BootfileName(v)
        | DhcpOption::VendorExtensions(v)
        | DhcpOption::ClientMachineIdentifier(v) => Some(v.clone()),
        _ => None,
    }
}

#[test]
fn proxy_mode_adds_boot_info_beside_dnsmasq() {
    if let Some(why) = skip_reason(&[("dnsmasq", &["--version"]), ("ip", &["-V"])]) {
        prereq::skip("proxy_mode_adds_boot_info_beside_dnsmasq", &why);
        return;
    }
    // Three namespaces on one L2: the client's namespace holds the bridge.
    let t = tag();
    let (ns_a, ns_d, ns_c) = (format!("dh{t}a"), format!("dh{t}d"), format!("dh{t}c"));
    let _ns = Namespaces::new(&[ns_a.clone(), ns_d.clone(), ns_c.clone()]);
    let br = format!("dh{t}br");
    run(&["ip", "-n", &ns_c, "link", "add", &br, "type", "bridge"]);
    run(&[
        "ip",
        "-n",
        &ns_c,
        "addr",
        "add",
        "10.78.0.50/24",
        "dev",
        &br,
    ]);
    run(&["ip", "-n", &ns_c, "link", "set", &br, "up"]);
    let (dev_a, dev_d) = (format!("dh{t}a0"), format!("dh{t}d0"));
    for (ns, dev, addr) in [
        (&ns_a, &dev_a, "10.78.0.1/24"),
        (&ns_d, &dev_d, "10.78.0.2/24"),
    ] {
        let peer = format!("{dev}p");
        veth(ns, dev, Some(addr), &ns_c, &peer, None);
        run(&["ip", "-n", &ns_c, "link", "set", &peer, "master", &br]);
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut dnsmasq = Proc::spawn(
        &ns_d,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--group=root",
            &format!("--interface={dev_d}"),
            "--bind-interfaces",
            "--dhcp-range=10.78.0.100,10.78.0.150,255.255.255.0,1h",
            "--leasefile-ro",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-facility=-",
        ],
        &tmp.path().join("dnsmasq.log"),
    );
    dnsmasq.wait_for_log("DHCP, IP range");
    let config = format!(
        r#"data_dir = "{data}"
interface = "{dev_a}"
[http]
listen = "127.0.0.1:8081"
[tftp]
enabled = false
[log]
level = "appliance=debug,info"
[dhcp]
mode = "proxy"
expected_servers = ["10.78.0.2"]
"#,
        data = tmp.path().join("data").display()
    );
    let appliance = start_appliance(&ns_a, tmp.path(), &config);
    let box_ip: Ipv4Addr = "10.78.0.1".parse().unwrap();

    // A PXE client: an address from dnsmasq, boot information (and no address) from us.
    let replies = probe(&ns_c, &br, true, "10.78.0.50", Some("10.78.0.1"));
    let from_dnsmasq: Vec<_> = replies
        .iter()
        .filter(|r| {
            r.label == "discover" && server_id(&r.msg) == Some("10.78.0.2".parse().unwrap())
        })
        .collect();
    assert!(
        !from_dnsmasq.is_empty(),
        "dnsmasq offered nothing\n{:?}\n{}\n{}",
        replies
            .iter()
            .map(|r| (&r.label, server_id(&r.msg), r.msg.yiaddr()))
            .collect::<Vec<_>>(),
        dnsmasq.log(),
        appliance.log()
    );
    assert_ne!(from_dnsmasq[0].msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    let ours: Vec<_> = replies
        .iter()
        .filter(|r| server_id(&r.msg) == Some(box_ip))
        .collect();
    let offer = ours
        .iter()
        .find(|r| r.label == "discover")
        .unwrap_or_else(|| {
            panic!(
                "no proxy offer\n{:?}\n{}",
                replies
                    .iter()
                    .map(|r| (&r.label, server_id(&r.msg), r.msg.yiaddr()))
                    .collect::<Vec<_>>(),
                appliance.log()
            )
        });
    let m = &offer.msg;
    assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
    assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED, "proxy gives no address");
    assert_eq!(m.siaddr(), box_ip);
    assert_eq!(
        opt(m, OptionCode::BootfileName).as_deref(),
        Some(&b"ipxe.efi"[..])
    );
    assert_eq!(
        opt(m, OptionCode::ClassIdentifier).as_deref(),
        Some(&b"PXEClient"[..])
    );
    assert_eq!(
        opt(m, OptionCode::VendorExtensions),
        Some(vec![6, 1, 8, 255])
    );
    let guid: Vec<u8> = std::iter::once(0).chain(0x10..0x20).collect();
    assert_eq!(opt(m, OptionCode::ClientMachineIdentifier), Some(guid));
    let ack = ours
        .iter()
        .find(|r| r.label == "pxe4011")
        .unwrap_or_else(|| panic!("no answer on port 4011\n{}", appliance.log()));
    assert_eq!(ack.msg.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(
        opt(&ack.msg, OptionCode::BootfileName).as_deref(),
        Some(&b"ipxe.efi"[..])
    );

    // A plain client: dnsmasq answers, the proxy stays silent.
    let replies = probe(&ns_c, &br, false, "10.78.0.50", None);
    assert!(
        replies
            .iter()
            .any(|r| server_id(&r.msg) == Some("10.78.0.2".parse().unwrap()))
    );
    assert!(
        !replies.iter().any(|r| server_id(&r.msg) == Some(box_ip)),
        "proxy answered a non-PXE client"
    );
    drop(appliance);
    drop(dnsmasq);
}

// ------------------------------------- reply destinations, ARP probes, two interfaces

/// The BOOTP replies a `tcpdump -e -n -l` log shows from `server`: (destination MAC,
/// destination IP) of each.
fn replies_seen(tcpdump_log: &str, server: &str) -> Vec<(String, String)> {
    let from = format!(" {server}.67 > ");
    tcpdump_log
        .lines()
        .filter(|l| l.contains(&from))
        .filter_map(|l| {
            // "<time> <src mac> > <dst mac>, ethertype IPv4 ..., length N: <src>.67 > <dst>.68: …"
            let dst_mac = l.split(" > ").nth(1)?.split(',').next()?.to_string();
            let dst_ip = l.split(&from).nth(1)?.split(".68").next()?.to_string();
            Some((dst_mac, dst_ip))
        })
        .collect()
}

#[test]
fn server_mode_unicasts_probes_arp_and_serves_two_interfaces() {
    let test = "server_mode_unicasts_probes_arp_and_serves_two_interfaces";
    if let Some(why) = skip_reason(&[
        ("busybox", &["--help"]),
        ("tcpdump", &["--version"]),
        ("ip", &["-V"]),
    ]) {
        prereq::skip(test, &why);
        return;
    }
    // Segment 1: box, a squatter (static 10.79.0.100, never asked us) and the client, on a
    // bridge in the client's namespace. Segment 2: box and a second client, one veth.
    let t = tag();
    let (ns_s, ns_c, ns_q, ns_2) = (
        format!("dh{t}s"),
        format!("dh{t}c"),
        format!("dh{t}q"),
        format!("dh{t}2"),
    );
    let _ns = Namespaces::new(&[ns_s.clone(), ns_c.clone(), ns_q.clone(), ns_2.clone()]);
    let br = format!("dh{t}br");
    run(&["ip", "-n", &ns_c, "link", "add", &br, "type", "bridge"]);
    run(&["ip", "-n", &ns_c, "link", "set", &br, "up"]);
    let (dev_s1, dev_q) = (format!("dh{t}s1"), format!("dh{t}q0"));
    for (ns, dev, addr) in [
        (&ns_s, &dev_s1, "10.79.0.1/24"),
        (&ns_q, &dev_q, "10.79.0.100/24"),
    ] {
        let peer = format!("{dev}p");
        veth(ns, dev, Some(addr), &ns_c, &peer, None);
        run(&["ip", "-n", &ns_c, "link", "set", &peer, "master", &br]);
    }
    let (dev_s2, dev_c2) = (format!("dh{t}s2"), format!("dh{t}c2"));
    veth(&ns_s, &dev_s2, Some("10.80.0.1/24"), &ns_2, &dev_c2, None);
    let tmp = tempfile::tempdir().unwrap();
    // A TFTP root with the x64 file only: the BIOS and ARM64 defaults are missing.
    let root = tmp.path().join("tftp");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("ipxe.efi"), b"MZ").unwrap();
    let config = format!(
        r#"data_dir = "{data}"
interface = "{dev_s1}"
[http]
listen = "127.0.0.1:8081"
[tftp]
enabled = false
root = "{root}"
[log]
format = "json"
level = "appliance=debug,info"
[dhcp]
mode = "server"
interfaces = ["{dev_s1}", "{dev_s2}"]
[[dhcp.pools]]
range_start = "10.79.0.100"
range_end = "10.79.0.200"
netmask = "255.255.255.0"
[[dhcp.pools]]
range_start = "10.80.0.100"
range_end = "10.80.0.200"
netmask = "255.255.255.0"
"#,
        data = tmp.path().join("data").display(),
        root = root.display()
    );
    let mut server = start_appliance(&ns_s, tmp.path(), &config);
    // Each configured boot file missing from the TFTP root is named at start; the ARM64
    // default (GRUB's arm64 image, a `tftp.files` name from grub-efi-arm64-bin) is there.
    let defaults = appliance::config::Config::default().dhcp.boot;
    let warning = format!(
        "dhcp.boot.bios = \\\"{}\\\" is not in the TFTP root",
        defaults.bios
    );
    assert!(
        server.log().contains(&warning),
        "{warning}\n{}",
        server.log()
    );
    for key in ["uefi_x64", "uefi_arm64"] {
        assert!(
            !server.log().contains(&format!("dhcp.boot.{key}")),
            "{}",
            server.log()
        );
    }

    // ARP probing ahead: the squatter answers the probe for 10.79.0.100 before any client
    // asked, and the address is held.
    server.wait_for_log("address in use");
    let held_line = server
        .log()
        .lines()
        .find(|l| l.contains("address in use"))
        .unwrap()
        .to_string();
    assert!(
        held_line.contains("\"addr\":\"10.79.0.100\""),
        "{held_line}"
    );
    let squatter_mac = run(&["ip", "-n", &ns_q, "-br", "link", "show", &dev_q])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .replace(':', "");
    assert!(
        held_line.contains(&squatter_mac),
        "{squatter_mac}: {held_line}"
    );

    // The client on segment 1, broadcast flag clear (udhcpc's default): the OFFER and ACK
    // are sent to its MAC and its new address, not broadcast; the held address is skipped.
    let client_mac = "02:00:00:00:01:01";
    set_mac(&ns_c, &br, client_mac);
    let mut dump = Proc::spawn(
        &ns_c,
        &["tcpdump", "-i", &br, "-e", "-n", "-l", "udp", "port", "68"],
        &tmp.path().join("tcpdump.log"),
    );
    dump.wait_for_log("listening on");
    let lease = udhcpc(&ns_c, &br, tmp.path(), &[]);
    assert_eq!(
        lease["ip"],
        "10.79.0.101",
        "10.79.0.100 is held\n{}",
        server.log()
    );
    assert_eq!(lease["serverid"], "10.79.0.1");
    // Broadcast flag set (-B): broadcast replies.
    set_mac(&ns_c, &br, "02:00:00:00:01:02");
    let lease_b = udhcpc(&ns_c, &br, tmp.path(), &["-B"]);
    std::thread::sleep(Duration::from_millis(300));
    let seen = replies_seen(&dump.log(), "10.79.0.1");
    drop(dump);
    let to_client: Vec<_> = seen.iter().filter(|(_, ip)| *ip == lease["ip"]).collect();
    assert!(
        to_client.len() >= 2 && to_client.iter().all(|(mac, _)| mac == client_mac),
        "OFFER and ACK unicast to {client_mac} / {}: {seen:?}",
        lease["ip"]
    );
    assert!(
        seen.iter()
            .filter(|(mac, _)| mac == "ff:ff:ff:ff:ff:ff")
            .count()
            >= 2
            && seen.iter().all(|(_, ip)| *ip != lease_b["ip"]),
        "replies to the -B client are broadcast: {seen:?}"
    );

    // Segment 2 is served by its own interface: its pool, its address as server id and
    // boot server.
    set_mac(&ns_2, &dev_c2, "02:00:00:00:02:01");
    let pxe = udhcpc(
        &ns_2,
        &dev_c2,
        tmp.path(),
        &["-x", "0x5d:0007", "-V", "PXEClient:Arch:00007:UNDI:003016"],
    );
    assert!(pxe["ip"].starts_with("10.80.0."), "{pxe:?}");
    assert_eq!(pxe["serverid"], "10.80.0.1");
    assert_eq!(pxe["siaddr"], "10.80.0.1");
    assert_eq!(pxe["boot_file"], "ipxe.efi");

    // An architecture with no boot file: an address, no boot file, and a log line naming it.
    set_mac(&ns_2, &dev_c2, "02:00:00:00:02:02");
    let ppc = udhcpc(&ns_2, &dev_c2, tmp.path(), &["-x", "0x5d:000c"]);
    assert!(ppc["ip"].starts_with("10.80.0."), "{ppc:?}");
    assert_eq!(ppc["boot_file"], "");
    assert!(
        server
            .log()
            .contains("no boot file for client architecture 12 (PowerPC Open Firmware)"),
        "{}",
        server.log()
    );

    let metrics = run(&[
        "ip",
        "netns",
        "exec",
        &ns_s,
        "curl",
        "-sf",
        "http://127.0.0.1:8081/metrics",
    ]);
    assert!(
        metrics.contains("appliance_dhcp_arp_probes_total{result=\"in_use\"} 1\n"),
        "{metrics}"
    );

    // An ARM64 client gets the default ARM64 first stage: GRUB's arm64 network image from
    // Debian's grub-efi-arm64-bin (a `tftp.files` name), not a refusal.
    set_mac(&ns_2, &dev_c2, "02:00:00:00:02:03");
    let arm = udhcpc(&ns_2, &dev_c2, tmp.path(), &["-x", "0x5d:000b"]);
    assert!(arm["ip"].starts_with("10.80.0."), "{arm:?}");
    assert_eq!(arm["boot_file"], "grubaa64.efi", "{arm:?}");
    assert!(
        !server
            .log()
            .contains("no boot file for client architecture 11"),
        "{}",
        server.log()
    );

    // The hold is a stored lease: after a restart 10.79.0.100 is still not handed out.
    server.stop();
    let server = start_appliance(&ns_s, tmp.path(), &config);
    set_mac(&ns_c, &br, "02:00:00:00:01:03");
    let after = udhcpc(&ns_c, &br, tmp.path(), &["-r", "10.79.0.100"]);
    assert_ne!(after["ip"], "10.79.0.100", "{}", server.log());
    drop(server);
}

// ------------------------------------------------------------------ rogue DHCP detection

/// Runs `curl args…` inside `ns`; returns stdout (panics on failure).
fn curl(ns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-sS", "-f"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn metric(ns: &str, name: &str) -> Option<u64> {
    curl(ns, &["http://127.0.0.1:8081/metrics"])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok())
}

/// The console overview's JSON, logged in with the admin token.
fn console_overview(ns: &str, data: &Path, jar: &Path) -> serde_json::Value {
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let body = serde_json::json!({ "secret": token.trim() }).to_string();
    let jar = jar.to_str().unwrap();
    curl(
        ns,
        &[
            "-c",
            jar,
            "-H",
            "content-type: application/json",
            "--data",
            &body,
            "http://127.0.0.1:8081/api/v1/login",
        ],
    );
    serde_json::from_str(&curl(
        ns,
        &["-b", jar, "http://127.0.0.1:8081/api/v1/overview"],
    ))
    .unwrap()
}

/// The log without ANSI colour sequences (`ESC [ … m`).
fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn rogue_dnsmasq(ns: &str, dev: &str, log: &Path) -> Proc {
    let mut dnsmasq = Proc::spawn(
        ns,
        &[
            "dnsmasq",
            "--no-daemon",
            "--conf-file=/dev/null",
            "--port=0",
            "--user=root",
            "--group=root",
            &format!("--interface={dev}"),
            "--bind-interfaces",
            "--dhcp-range=10.79.0.100,10.79.0.150,255.255.255.0,1h",
            "--leasefile-ro",
            "--dhcp-authoritative",
            "--no-ping",
            "--log-dhcp",
            "--log-facility=-",
        ],
        log,
    );
    dnsmasq.wait_for_log("DHCP, IP range");
    dnsmasq
}

#[test]
fn rogue_dhcp_server_is_reported_and_the_expected_one_is_not() {
    if let Some(why) = skip_reason(&[
        ("dnsmasq", &["--version"]),
        ("curl", &["--version"]),
        ("ip", &["-V"]),
    ]) {
        prereq::skip(
            "rogue_dhcp_server_is_reported_and_the_expected_one_is_not",
            &why,
        );
        return;
    }
    let t = tag();
    let (ns_a, ns_d) = (format!("dh{t}a"), format!("dh{t}d"));
    let _ns = Namespaces::new(&[ns_a.clone(), ns_d.clone()]);
    let (dev_a, dev_d) = (format!("dh{t}a0"), format!("dh{t}d0"));
    veth(
        &ns_a,
        &dev_a,
        Some("10.79.0.1/24"),
        &ns_d,
        &dev_d,
        Some("10.79.0.2/24"),
    );
    let rogue_mac = "02:00:00:00:d0:02";
    set_mac(&ns_d, &dev_d, rogue_mac);
    let tmp = tempfile::tempdir().unwrap();
    let dnsmasq = rogue_dnsmasq(&ns_d, &dev_d, &tmp.path().join("dnsmasq.log"));

    // Server mode with the rogue already there: the probe at start reports it.
    let data = tmp.path().join("data");
    let config = |mode: &str, extra: &str| {
        format!(
            r#"data_dir = "{data}"
interface = "{dev_a}"
[http]
listen = "127.0.0.1:8081"
[tftp]
enabled = false
[log]
level = "appliance=debug,info"
[dhcp]
mode = "{mode}"
{extra}
"#,
            data = data.display()
        )
    };
    let mut server = start_appliance(
        &ns_a,
        tmp.path(),
        &config(
            "server",
            "[[dhcp.pools]]\nrange_start = \"10.79.0.200\"\nrange_end = \"10.79.0.220\"\n\
             netmask = \"255.255.255.0\"",
        ),
    );
    server.wait_for_log("dhcp probe: round done");
    let log = plain(&server.log());
    let line = log
        .lines()
        .find(|l| l.contains("ROGUE DHCP server"))
        .unwrap_or_else(|| panic!("no rogue reported:\n{log}\n{}", dnsmasq.log()));
    assert!(line.contains(&format!("server_mac={rogue_mac}")), "{line}");
    assert!(line.contains("source_ip=10.79.0.2"), "{line}");
    assert!(line.contains("server_id=10.79.0.2"), "{line}");
    // dnsmasq answered the probe (broadcast flag clear) by unicast to the offered address.
    assert!(line.contains("unicast=true"), "{line}");
    assert!(log.contains("offers=1 rogue=1"), "{log}");
    assert_eq!(metric(&ns_a, "appliance_rogue_dhcp_servers"), Some(1));
    let overview = console_overview(&ns_a, &data, &tmp.path().join("jar"));
    let rogues = overview["rogue_dhcp"].as_array().unwrap();
    assert_eq!(rogues.len(), 1, "{overview}");
    assert_eq!(rogues[0]["mac"], rogue_mac);
    assert_eq!(rogues[0]["source_ip"], "10.79.0.2");
    // The box's own DHCP server ignored its probe (no offer of its own pool to itself).
    assert!(!log.contains("dhcp: reply"), "{log}");
    server.stop();

    // Proxy mode beside the same server named in dhcp.expected_servers: it offers, and is
    // seen offering, but is not a rogue.
    let mut proxy = start_appliance(
        &ns_a,
        tmp.path(),
        &config("proxy", r#"expected_servers = ["10.79.0.2"]"#),
    );
    proxy.wait_for_log("dhcp probe: round done");
    let log = plain(&proxy.log());
    assert!(log.contains("offers=1 rogue=0"), "{log}");
    assert!(
        log.contains("expected DHCP server offering") && log.contains("unicast=true"),
        "{log}"
    );
    assert!(!log.contains("ROGUE"), "{log}");
    assert_eq!(metric(&ns_a, "appliance_rogue_dhcp_servers"), Some(0));
    let overview = console_overview(&ns_a, &data, &tmp.path().join("jar2"));
    assert_eq!(overview["rogue_dhcp"], serde_json::json!([]), "{overview}");
    proxy.stop();
    drop(dnsmasq);
}
