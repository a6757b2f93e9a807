//! SideroLink end to end, the proof that a provisioning completes: one VM, two boots.
//!
//! The real box in the lab namespace; a Server (accepted, clean) allocated with `ctl
//! allocate` from a ServerClass whose Environment is the Talos stand-in
//! (`scripts/build-talos-standin-initramfs`: Debian's kernel with its own `wireguard.ko`,
//! Debian's `wg`, and `qemu-tests/talos-standin`, which speaks the Talos/Sidero wire shapes
//! through its own protos). The box downloads the Environment's kernel and initrd from a
//! static HTTP server in the lab (sha512-checked). The VM then:
//!
//! boot 1: SeaBIOS + iPXE → the box's DHCP → `/ipxe` → the stand-in Environment, whose
//! kernel args carry `talos.config=`, `siderolink.api=`, `talos.logging.kernel=` and
//! `talos.events.sink=` → config fetched → Provision → the guest kernel's WireGuard link to
//! the box's userspace endpoint → kernel log to `[prefix::1]:4001` and machine events to
//! `[prefix::1]:4002` through the tunnel → a boot sector written to the disk → the install
//! reported → reboot;
//!
//! boot 2: iPXE → `/ipxe` answers boot-from-disk (`ipxe-exit`) → SeaBIOS boots the disk →
//! the boot sector the stand-in wrote prints its marker.
//!
//! Asserted on the box: the ServerBinding's SideroLink address is the one the guest
//! configured; the conditions flip in order (the stand-in waits at two gates this test
//! opens after checking the state: Loaded/Validated True and not installed; then
//! TalosInstalled False/InProgress, still PXE-booting; then TalosInstalled True and Server
//! `PXEBooted=True`, lifecycle `installed`); addresses and hostname recorded without the
//! SideroLink address; every kernel log line the guest sent is in `ctl server logs` under
//! this server, attributed by its tunnel address; the event backlog replayed on a new connection was not applied twice; the
//! second boot fetched no Environment and came from the disk; `ctl server timeline` holds
//! the whole sequence in order (DHCP offer/ack, `/boot.ipxe`, the `/ipxe` decision, kernel
//! and initrd fetched, SideroLink up, config fetched, installed, boot from disk: the DHCP
//! and `/boot.ipxe` steps, which know only the VM's MAC or address, attached to the server
//! by the lease tie) and `/metrics` counts one installation in
//! `appliance_time_to_installed_seconds`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::env::talos_standin_env;
use qemu_tests::netns::BRIDGE_ADDR;
use qemu_tests::{Firmware, Lab, Needs, Vm, VmSpec, require_lab};
use serde_json::Value;

/// Generous: TCG on 2 shared cores, with builds running beside.
const TIMEOUT: Duration = Duration::from_secs(300);
const UUID: &str = "5a1d0e11-7e57-4000-8000-0000005e1d0e";
/// The static HTTP server in the lab: Environment assets and the stand-in's gates.
const WWW_PORT: u16 = 8090;
/// What the stand-in's boot sector prints (qemu-tests/talos-standin, `DISK_MARKER`).
const DISK_MARKER: &str = "TALOS-STANDIN-INSTALLED-DISK-BOOTED";

fn sha512(path: &Path) -> String {
    let out = Command::new("sha512sum")
        .arg(path)
        .output()
        .expect("sha512sum");
    assert!(out.status.success(), "sha512sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn get(lab: &mut Lab, kind: &str, name: &str) -> Result<Value> {
    let out = lab.appliance().ctl(&["get", kind, name, "-o", "json"])?;
    serde_json::from_str(&out).with_context(|| format!("ctl get {kind} {name}: {out}"))
}

/// Polls `kind/name` until `check` holds.
fn wait_until(
    lab: &mut Lab,
    kind: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let v = get(lab, kind, name);
        if let Ok(v) = &v
            && check(v)
        {
            return v.clone();
        }
        if Instant::now() >= deadline {
            panic!(
                "{kind} {name}: {what} not reached within {TIMEOUT:?}; last: {v:#?}\n{}",
                lab.report()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `(status, reason)` of condition `type_` in `v.status.conditions`.
fn condition(v: &Value, type_: &str) -> Option<(String, String)> {
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or("").to_string(),
                c["reason"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn is_true(v: &Value, type_: &str) -> bool {
    condition(v, type_).is_some_and(|(s, _)| s == "True")
}

fn transition_time(v: &Value, type_: &str) -> String {
    v["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["lastTransitionTime"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Waits for a serial line with `needle`, failing with the lab's logs.
fn wait_serial(lab: &Lab, vm: &mut Vm, needle: &str) -> String {
    let line = vm
        .wait_for(needle, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.report()));
    eprintln!("{:>6.1}s  {line}", vm.elapsed().as_secs_f64());
    line
}

/// The value of `key=` in a serial line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

/// Opens the stand-in's gate `step` (its /init polls `<www>/gate/<step>`).
fn open_gate(www: &Path, step: &str) {
    std::fs::write(www.join("gate").join(step), "open\n").unwrap();
}

/// The kernel log lines the box keeps for `uuid` (`ctl server logs -o json`).
fn stored_logs(lab: &mut Lab, uuid: &str) -> Vec<Value> {
    let out = lab
        .appliance()
        .ctl(&["server", "logs", uuid, "-o", "json"])
        .expect("ctl server logs");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn talos_standin_installs_over_siderolink_then_boots_from_disk() {
    require_lab!(Needs::Bios);
    let started = Instant::now();
    let env = talos_standin_env().expect("Talos stand-in Environment");
    let initrd_size = std::fs::metadata(&env.initrd).map(|m| m.len()).unwrap_or(0);
    let built = started.elapsed();
    let mut lab = Lab::new().expect("lab");

    let www = lab.path("www");
    std::fs::create_dir_all(www.join("assets")).unwrap();
    std::fs::create_dir_all(www.join("gate")).unwrap();
    std::fs::copy(&env.kernel, www.join("assets/vmlinuz")).unwrap();
    std::fs::copy(&env.initrd, www.join("assets/initramfs.xz")).unwrap();
    lab.start_static_http(&www, WWW_PORT).expect("httpd");
    lab.start_appliance(&ApplianceConfig::server())
        .expect("appliance");

    let base = format!("http://{BRIDGE_ADDR}:{WWW_PORT}");
    let dir = lab.dir().to_path_buf();
    let objects = format!(
        "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {{name: talos-standin}}
spec:
  kernel:
    url: {base}/assets/vmlinuz
    sha512: {ksha}
    args: [console=ttyS0, loglevel=4, 'standin.gate={base}/gate/']
  initrd:
    url: {base}/assets/initramfs.xz
    sha512: {isha}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {{name: standin}}
spec:
  qualifiers: {{}}
  environmentRef: {{name: talos-standin}}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {{name: {UUID}}}
spec:
  accepted: true
status:
  isClean: true
",
        ksha = sha512(&www.join("assets/vmlinuz")),
        isha = sha512(&www.join("assets/initramfs.xz")),
    );
    lab.appliance().apply(&dir, &objects).expect("ctl apply");
    wait_until(&mut lab, "server", UUID, "state available", |v| {
        v["status"]["state"] == "available"
    });
    wait_until(
        &mut lab,
        "environment",
        "talos-standin",
        "assets downloaded",
        |v| {
            v["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c["status"] == "True"))
        },
    );
    let config = lab.path("talos.yaml");
    std::fs::write(
        &config,
        "version: v1alpha1\nmachine:\n  type: controlplane\n  token: standin\ncluster:\n  clusterName: proof\n",
    )
    .unwrap();
    let allocated = lab
        .appliance()
        .ctl(&[
            "allocate",
            "--class",
            "standin",
            "--owner",
            "default/m1",
            "--bootstrap",
            config.to_str().unwrap(),
        ])
        .expect("ctl allocate");
    assert!(allocated.contains(UUID), "{allocated}");

    // One VM for both boots: a guest reboot restarts it; the disk starts all zero.
    let disk = lab.path("disk.img");
    std::fs::write(&disk, vec![0u8; 8 << 20]).unwrap();
    let mut vm = lab
        .start_vm(
            &VmSpec::new(Firmware::Bios)
                .uuid(UUID)
                .disk(&disk)
                .memory(512)
                .reboot_keeps_running(),
        )
        .expect("vm");

    // Boot 1: the stand-in Environment.
    wait_serial(&lab, &mut vm, "TALOS-STANDIN booted");
    let boot1_kernel = vm.elapsed();
    let lease = wait_serial(&lab, &mut vm, "TALOS-STANDIN lease ");
    let v4 = field(&lease, "ip=").to_string();
    let provisioned = wait_serial(&lab, &mut vm, "TALOS-STANDIN provisioned ");
    let node_prefix = field(&provisioned, "address=").to_string();
    let node_addr = node_prefix.split('/').next().unwrap().to_string();
    wait_serial(&lab, &mut vm, "TALOS-STANDIN link siderolink up");
    wait_serial(&lab, &mut vm, "TALOS-STANDIN waiting at gate configured");
    let link_up = vm.elapsed();

    // Gate 1: config loaded and validated, addresses in, not installed.
    let binding = get(&mut lab, "serverbinding", UUID).expect("binding");
    assert_eq!(
        binding["spec"]["siderolink"]["address"].as_str(),
        Some(node_prefix.as_str()),
        "the binding's SideroLink address is the one the guest configured\n{binding:#}"
    );
    assert!(is_true(&binding, "TalosConfigLoaded"), "{binding:#}");
    assert!(is_true(&binding, "TalosConfigValidated"), "{binding:#}");
    assert!(!is_true(&binding, "TalosInstalled"), "{binding:#}");
    let addresses: Vec<&str> = binding["spec"]["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        addresses,
        vec![v4.as_str()],
        "addresses = the lease, without the SideroLink address {node_addr}\n{binding:#}"
    );
    assert_eq!(
        binding["spec"]["hostname"].as_str(),
        Some(&format!("talos-{}", &UUID[UUID.len() - 6..])[..]),
        "{binding:#}"
    );
    let server = get(&mut lab, "server", UUID).unwrap();
    assert!(!is_true(&server, "PXEBooted"), "{server:#}");
    open_gate(&www, "configured");

    // Gate 2: installing; /ipxe still sends it to its Environment.
    wait_serial(&lab, &mut vm, "TALOS-STANDIN waiting at gate installing");
    let binding = get(&mut lab, "serverbinding", UUID).unwrap();
    assert_eq!(
        condition(&binding, "TalosInstalled"),
        Some(("False".into(), "TalosInstallationInProgress".into())),
        "{binding:#}"
    );
    assert!(is_true(&binding, "TalosConfigLoaded"), "{binding:#}");
    let server = get(&mut lab, "server", UUID).unwrap();
    assert!(!is_true(&server, "PXEBooted"), "{server:#}");
    let (code, body) = lab
        .http_get(&format!(
            "/ipxe?uuid={UUID}&mac=52-54-00-77-00-00&arch=x86_64"
        ))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("/env/talos-standin/vmlinuz"), "{body}");
    open_gate(&www, "installing");

    // Installed: reported, then the reboot.
    let replayed = wait_serial(&lab, &mut vm, "TALOS-STANDIN backlog replayed");
    let backlog: usize = field(&replayed, "events=").parse().unwrap();
    let shipped = wait_serial(&lab, &mut vm, "TALOS-STANDIN kernel log shipped");
    let lines: usize = field(&shipped, "lines=").parse().unwrap();
    wait_serial(&lab, &mut vm, "TALOS-STANDIN-REBOOTING");
    let boot1_done = vm.elapsed();
    let server = wait_until(&mut lab, "server", UUID, "PXEBooted=True", |v| {
        is_true(v, "PXEBooted")
    });
    assert_eq!(server["status"]["state"], "installed", "{server:#}");
    let binding = get(&mut lab, "serverbinding", UUID).unwrap();
    for c in [
        "TalosConfigLoaded",
        "TalosConfigValidated",
        "TalosInstalled",
    ] {
        assert!(
            is_true(&binding, c),
            "{c} not True after the replayed backlog\n{binding:#}"
        );
    }
    // RFC 3339 UTC strings compare in time order.
    assert!(
        transition_time(&binding, "TalosConfigLoaded")
            <= transition_time(&binding, "TalosInstalled"),
        "{binding:#}"
    );

    // Boot 2: from the disk the stand-in wrote.
    wait_serial(&lab, &mut vm, DISK_MARKER);
    let boot2 = vm.elapsed() - boot1_done;
    vm.kill();

    // Every kernel log line the guest sent is kept under this server (`ctl server logs`),
    // attributed by its tunnel address; the box writes them in batches.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut received = stored_logs(&mut lab, UUID);
    while received.len() < lines && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        received = stored_logs(&mut lab, UUID);
    }
    assert_eq!(
        received.len(),
        lines,
        "the guest sent {lines} kernel log lines; ctl server logs shows {}\n{}",
        received.len(),
        lab.report()
    );
    for l in &received {
        assert_eq!(l["server"], UUID, "{l}");
        assert_eq!(l["address"], node_addr.as_str(), "{l}");
        // The kernel's own records are `kern`; lines written to /dev/kmsg are `user`.
        let facility = if l["msg"]
            .as_str()
            .is_some_and(|m| m.starts_with("talos-standin:"))
        {
            "user"
        } else {
            "kern"
        };
        assert_eq!(l["facility"], facility, "{l}");
    }
    for want in [
        "Linux version",
        &format!("talos-standin: node {UUID} streaming its kernel log"),
        "talos-standin: installed to /dev/vda",
        "talos-standin: end of kernel log",
    ] {
        assert!(
            received
                .iter()
                .any(|l| l["msg"].as_str().is_some_and(|m| m.contains(want))),
            "no kernel log line {want:?} in ctl server logs {UUID}\n{}",
            lab.report()
        );
    }
    let log = lab.appliance().log();
    // The replayed backlog was acknowledged without being applied again.
    let duplicates = log
        .lines()
        .filter(|l| l.contains("Talos event already applied") && l.contains(UUID))
        .count();
    assert_eq!(duplicates, backlog, "{}", lab.report());
    let installs = log
        .lines()
        .filter(|l| l.contains("Talos installed: server boots from disk") && l.contains(UUID))
        .count();
    assert_eq!(installs, 1, "{}", lab.report());
    // Two boot decisions: the Environment, then the disk; the Environment fetched once.
    let decisions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("boot decision uuid={UUID} ")))
        .collect();
    assert!(
        decisions.len() >= 2
            && decisions[0].contains("plan=Environment")
            && decisions.last().unwrap().contains("plan=Disk"),
        "{decisions:#?}"
    );
    let fetches = log
        .lines()
        .filter(|l| l.contains("HTTP GET /env/talos-standin/vmlinuz ") && l.contains("-> 200"))
        .count();
    assert_eq!(fetches, 1, "{}", lab.report());
    let events = lab.appliance().ctl(&["server", "events", UUID]).unwrap();
    assert!(events.contains("installed"), "{events}");

    // The boot timeline: the whole sequence, in order, every step ok.
    let want = [
        "dhcp-offer",
        "dhcp-ack",
        "boot-script",
        "ipxe",
        "kernel",
        "initrd",
        "siderolink-up",
        "config-fetched",
        "installed",
        "dhcp-ack",
        "boot-script",
        "boot-from-disk",
    ];
    let timeline = lab
        .appliance()
        .timeline_with(UUID, "boot-from-disk", Duration::from_secs(10))
        .expect("ctl server timeline");
    let text = lab
        .appliance()
        .ctl(&["server", "timeline", UUID])
        .unwrap_or_default();
    let events = timeline["events"].as_array().unwrap();
    let mut next = 0;
    for e in events {
        if next < want.len() && e["step"] == want[next] {
            assert_eq!(
                e["outcome"], "ok",
                "{e}
{text}"
            );
            next += 1;
        }
    }
    assert_eq!(
        next,
        want.len(),
        "ctl server timeline lacks {:?} (in order) of {want:?}
{text}",
        want.get(next)
    );
    let decision = events.iter().find(|e| e["step"] == "ipxe").unwrap();
    assert_eq!(decision["detail"], "environment talos-standin", "{text}");
    let kernel = events.iter().find(|e| e["step"] == "kernel").unwrap();
    assert_eq!(
        kernel["bytes"].as_u64(),
        std::fs::metadata(&env.kernel).ok().map(|m| m.len()),
        "{text}"
    );
    assert!(timeline["timeToInstalledMs"].is_u64(), "{text}");
    assert!(timeline["firstDiskBootUnixMs"].is_u64(), "{text}");
    let (code, metrics) = lab.http_get("/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("appliance_time_to_installed_seconds_count 1\n"),
        "{metrics}"
    );
    eprintln!("{text}");
    lab.appliance().check_alive().expect("appliance still up");

    eprintln!(
        "siderolink_install: stand-in initramfs {initrd_size} bytes (built/checked in {:.1}s); \
         boot 1: kernel at {:.1}s, link up at {:.1}s, reboot at {:.1}s; \
         boot 2 (disk) {:.1}s; {lines} log lines, {backlog} events; test {:.1}s",
        built.as_secs_f64(),
        boot1_kernel.as_secs_f64(),
        link_up.as_secs_f64(),
        boot1_done.as_secs_f64(),
        boot2.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
