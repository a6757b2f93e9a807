//! Root-only (CI runs it under `APPLIANCE_E2E=1`): a 1,000-machine boot storm against the
//! real `appliance serve` across a veth between two network namespaces this test creates
//! (names start with `st`). Every machine boots through DHCP, TFTP on the packet socket,
//! iPXE's DHCP, `/boot.ipxe`, `/ipxe`, kernel + initrd and the agent's token-signed
//! CreateServer/NextAction (the `storm` binary, power-on spread over 5 s; test-sized boot
//! files: 256 KiB over TFTP, 256 KiB kernel, 512 KiB initrd).
//!
//! Passes only when the generator reports 1,000 completed boots and none failed, the box
//! itself stores 1,000 Servers (`ctl status`, independent of the generator's account),
//! and a sampled machine's boot timeline on the box holds every step of the boot. Times
//! are printed, never asserted (numbers come from `scripts/bench storm`).

use std::process::Command;
use std::time::Duration;

#[path = "../../appliance/tests/support/netns.rs"]
mod netns;
#[path = "../../appliance/tests/support/prereq.rs"]
mod prereq;
mod support;

use netns::{Namespaces, Proc, tag, veth};
use support::{NeighLimits, appliance_bin};

const GEN: &str = env!("CARGO_BIN_EXE_storm");
const CLIENTS: usize = 1000;
/// Power-on spread: 1,000 machines in 5 s (200 power-ons a second). The box's 256
/// full-speed TFTP slots are then far fewer than the machines fetching `ipxe.efi`: the rest
/// are answered at once and paced until a slot frees (`net::tftp`); while they waited
/// silently instead, 35 of 1,000 firmware clients gave up at block 1 at this spread.
const RAMP_SECS: &str = "5";

#[test]
fn a_thousand_machines_boot_and_register_with_none_failed() {
    if let Some(why) = prereq::missing_root_or(
        &[("ip", &["-V"]), ("curl", &["--version"])],
        "network namespaces and the packet socket",
    ) {
        return prereq::skip("storm_ci", &why);
    }
    let t = tag();
    let (ns_s, ns_c) = (format!("sts{t}"), format!("stc{t}"));
    let (vs, vc) = (format!("sts{t}"), format!("stc{t}"));
    let _ns = Namespaces::new(&[ns_s.clone(), ns_c.clone()]);
    veth(
        &ns_s,
        &vs,
        Some("10.254.0.1/16"),
        &ns_c,
        &vc,
        Some("10.254.255.254/16"),
    );
    let _limits = NeighLimits::raise();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tftp = dir.join("tftp");
    std::fs::create_dir_all(&tftp).unwrap();
    std::fs::write(tftp.join("ipxe.efi"), vec![0x5a; 256 * 1024]).unwrap();
    let env = dir.join("data/env/agent-amd64");
    std::fs::create_dir_all(&env).unwrap();
    std::fs::write(env.join("vmlinuz"), vec![b'k'; 256 * 1024]).unwrap();
    std::fs::write(env.join("initramfs.xz"), vec![b'i'; 512 * 1024]).unwrap();
    let config = format!(
        "data_dir = \"{data}\"\ninterface = \"{vs}\"\n\
         [http]\nlisten = \"0.0.0.0:8081\"\n\
         [tftp]\nlisten = \"10.254.0.1:69\"\nroot = \"{tftp}\"\n\
         [dhcp]\nmode = \"server\"\n\
         [[dhcp.pools]]\nrange_start = \"10.254.1.0\"\nrange_end = \"10.254.200.255\"\nnetmask = \"255.255.0.0\"\n\
         [boot]\nadvertise = \"10.254.0.1:8081\"\ndownload_assets = false\n\
         [siderolink]\nenabled = false\n[admin_tls]\nenabled = false\n[log]\nlevel = \"warn\"\n",
        data = dir.join("data").display(),
        tftp = tftp.display(),
    );
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let bin = appliance_bin();
    let bin = bin.to_str().unwrap();
    let mut server = Proc::spawn(
        &ns_s,
        &[bin, "serve", "--config", cfg.to_str().unwrap()],
        &dir.join("appliance.log"),
    );
    let healthy = || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_s,
                "curl",
                "-sf",
                "http://10.254.0.1:8081/healthz",
            ])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let deadline = appliance::clock::now() + Duration::from_secs(60);
    while !healthy() {
        assert!(
            appliance::clock::now() < deadline,
            "the box never became healthy:\n{}",
            server.log()
        );
        if let Some(st) = server.child.try_wait().unwrap() {
            panic!("the box exited ({st}):\n{}", server.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let json = dir.join("report.jsonl");
    let pid = server.child.id().to_string();
    let out = Command::new("ip")
        .args(["netns", "exec", &ns_c, GEN, "--iface", &vc])
        .args([
            "--clients",
            &CLIENTS.to_string(),
            "--ramp-secs",
            RAMP_SECS,
            "--stages",
            "full",
        ])
        .args(["--box-pid", &pid, "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&json).unwrap().trim()).unwrap();
    assert_eq!(report["failed"], 0, "{text}\nbox log:\n{}", server.log());
    assert_eq!(report["completed"], CLIENTS, "{text}");
    assert!(out.status.success(), "{text}");

    // The box's own account: every machine is a stored Server.
    let ctl = |args: &[&str]| {
        let o = Command::new("ip")
            .args(["netns", "exec", &ns_s, bin, "ctl"])
            .args(["--endpoint", "http://10.254.0.1:8081"])
            .args(["--data-dir", dir.join("data").to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let status = ctl(&["status"]);
    let servers = status
        .lines()
        .find_map(|l| l.strip_prefix("Server:"))
        .map(|v| v.split_whitespace().next().unwrap_or("").to_string());
    assert_eq!(servers.as_deref(), Some("1000"), "{status}");

    // A sampled machine went through every step on the box's side.
    let name = storm::synthetic_agent::uuid(CLIENTS / 2);
    let mut steps = Vec::new();
    let deadline = appliance::clock::now() + Duration::from_secs(20);
    let want = [
        "dhcp-ack",
        "tftp",
        "boot-script",
        "ipxe",
        "kernel",
        "initrd",
        "registered",
    ];
    while appliance::clock::now() < deadline {
        let t: serde_json::Value =
            serde_json::from_str(&ctl(&["server", "timeline", &name, "-o", "json"])).unwrap();
        steps = t["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "ok")
            .map(|e| e["step"].as_str().unwrap_or("").to_string())
            .collect();
        if want.iter().all(|w| steps.iter().any(|s| s == w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for w in want {
        assert!(
            steps.iter().any(|s| s == w),
            "{name}: no `{w}` in {steps:?}"
        );
    }
    server.stop();
}
