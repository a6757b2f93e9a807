//! Root-only (CI runs it under `APPLIANCE_E2E=1`): `kill -9` of the box in the middle of a
//! boot storm (issue 16 item 5). The real `appliance serve` in one network namespace, the
//! `storm` generator in another (as `storm_ci.rs`): 300 machines power on over 10 s and boot
//! through DHCP, TFTP, iPXE's DHCP, HTTP and the agent's token-signed CreateServer. Once
//! the box stores 40 Servers it is killed with SIGKILL and started again on the same data
//! dir while the storm goes on (firmware retransmits DHCP, agents retry their calls; boots
//! cut in the middle of TFTP or holding a token minted by the killed box fail, as real
//! ones would and reboot). Then the same 300 machines do a DHCP exchange again.
//!
//! Every machine writes its account (`storm --outcomes`: each DHCP ACK with the wall-clock
//! time it arrived, the time of its CreateServer answer). Passes only when
//! - no address was ever ACKed to two machines (both storms, before and after the kill);
//! - every machine ACKed before the kill gets the same address after the restart;
//! - the store, opened after the box stopped, holds at most one lease per machine, each
//!   one for the machine the second storm's ACK named;
//! - every machine whose CreateServer was answered before the kill is a stored Server;
//!
//! and neither side of the kill is empty (machines ACKed and registered before it, ACKed
//! after it), so the checks are about something.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use appliance::model::Kind;
use appliance::store::Store;

#[path = "../../appliance/tests/support/netns.rs"]
mod netns;
#[path = "../../appliance/tests/support/prereq.rs"]
mod prereq;
mod support;

use support::{NeighLimits, StormBox};

const CLIENTS: usize = 300;
/// Stored Servers when the box is killed.
const KILL_AT_REGISTERED: usize = 40;

/// One machine's account from a storm's `--outcomes` file.
struct Account {
    uuid: String,
    mac: String,
    /// (address, Unix ms at receipt)
    acks: Vec<(String, u64)>,
    registered_at_ms: Option<u64>,
}

fn accounts(path: &std::path::Path) -> Vec<Account> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Account {
                uuid: v["uuid"].as_str().unwrap().to_string(),
                mac: v["mac"].as_str().unwrap().to_string(),
                acks: v["acks"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| {
                        (
                            a["ip"].as_str().unwrap().to_string(),
                            a["at_ms"].as_u64().unwrap(),
                        )
                    })
                    .collect(),
                registered_at_ms: v["registered_at_ms"].as_u64(),
            }
        })
        .collect()
}

/// The last 40 lines of a log.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn kill_9_mid_storm_hands_no_address_twice_and_loses_no_registration() {
    if let Some(why) = prereq::missing_root_or(
        &[("ip", &["-V"]), ("curl", &["--version"])],
        "network namespaces and the packet socket",
    ) {
        return prereq::skip("kill9", &why);
    }
    let sb = StormBox::new("sk", "10.254.200.255", "");
    let _limits = NeighLimits::raise();
    let dir = sb.dir();
    let t0 = appliance::clock::now();
    let at = || format!("{:.1} s", t0.elapsed().as_secs_f64());

    let start_box = |log: &str| sb.start(log, &[]);
    let storm = |stages: &str, ramp: &str, outcomes: &std::path::Path| {
        let mut c = sb.storm();
        c.args(["--clients", &CLIENTS.to_string(), "--ramp-secs", ramp])
            .args(["--stages", stages])
            .arg("--outcomes")
            .arg(outcomes);
        c
    };

    let mut server = start_box("appliance.log");
    let out1 = dir.join("storm1.jsonl");
    let mut gen1 = storm("full", "10", &out1)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // Kill once the box stores KILL_AT_REGISTERED Servers.
    let deadline = appliance::clock::now() + Duration::from_secs(60);
    loop {
        if sb.servers_stored().is_some_and(|n| n >= KILL_AT_REGISTERED) {
            break;
        }
        assert!(
            appliance::clock::now() < deadline,
            "the box never stored {KILL_AT_REGISTERED} Servers:\n{}",
            server.log()
        );
        assert!(
            gen1.try_wait().unwrap().is_none(),
            "the storm ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill_ms = appliance::clock::unix_ms();
    println!("{}: kill -9", at());
    server.child.kill().unwrap();
    let st = server.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "the box was killed by SIGKILL");
    let killed_log = server.log();
    drop(server);
    let server = start_box("appliance-restarted.log");
    println!("{}: restarted", at());

    let out = gen1.wait_with_output().unwrap();
    println!(
        "storm across the kill:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out2 = dir.join("storm2.jsonl");
    let again = storm("dhcp", "2", &out2).output().unwrap();
    let again_text = String::from_utf8_lossy(&again.stdout).into_owned();
    println!("DHCP again after the restart:\n{again_text}");
    assert!(
        again.status.success(),
        "every machine gets an address after the restart: {again_text}{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let restarted_log = server.log();
    server.stop();
    println!("{}: both storms done, box stopped", at());

    let first = accounts(&out1);
    let second = accounts(&out2);
    assert_eq!(first.len(), CLIENTS);
    assert_eq!(second.len(), CLIENTS);

    // No address ever ACKed to two machines.
    let mut holders: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for a in first.iter().chain(&second) {
        for (ip, _) in &a.acks {
            holders.entry(ip).or_default().insert(&a.mac);
        }
    }
    let shared: Vec<_> = holders.iter().filter(|(_, m)| m.len() > 1).collect();
    assert!(
        shared.is_empty(),
        "{} addresses handed to two machines: {shared:?}\nkilled box (end):\n{}\nrestarted box (end):\n{}",
        shared.len(),
        tail(&killed_log),
        tail(&restarted_log)
    );

    // Every machine ACKed before the kill keeps its address.
    let mut acked_before = 0;
    let mut acked_after = 0;
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.mac, b.mac);
        if a.acks.iter().any(|(_, at)| *at > kill_ms) {
            acked_after += 1;
        }
        let Some((ip, _)) = a.acks.iter().rev().find(|(_, at)| *at < kill_ms) else {
            continue;
        };
        acked_before += 1;
        let now = b.acks.last().map(|(ip, _)| ip.as_str());
        assert_eq!(
            now,
            Some(ip.as_str()),
            "{} was ACKed {ip} before the kill",
            a.mac
        );
    }

    // The store: one lease per machine, the one the second storm was given.
    let store = Store::open(&sb.data.join("state.redb")).unwrap();
    let leases = store.dhcp_leases().unwrap();
    let mut by_mac: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for l in &leases {
        let mac = l
            .chaddr
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        by_mac.entry(mac).or_default().push(l.addr.to_string());
    }
    for b in &second {
        let want = &b.acks.last().expect("an ACK").0;
        assert_eq!(
            by_mac.get(&b.mac),
            Some(&vec![want.clone()]),
            "the stored lease of {}",
            b.mac
        );
    }

    // Every registration answered before the kill is stored.
    let stored: BTreeSet<String> = store
        .list(Kind::Server)
        .unwrap()
        .into_iter()
        .map(|s| s.object.name().to_string())
        .collect();
    let registered_before: Vec<&Account> = first
        .iter()
        .filter(|a| a.registered_at_ms.is_some_and(|at| at < kill_ms))
        .collect();
    for a in &registered_before {
        assert!(
            stored.contains(&a.uuid),
            "{} registered before the kill is not stored",
            a.uuid
        );
    }
    println!(
        "kill -9 mid-storm: {acked_before} machines ACKed before the kill and {acked_after} after, \
         {} registered before it, {} Servers and {} leases stored",
        registered_before.len(),
        stored.len(),
        leases.len()
    );
    assert!(
        acked_before >= KILL_AT_REGISTERED && acked_after > 0,
        "the storm did not straddle the kill"
    );
    assert!(
        !registered_before.is_empty(),
        "no registration before the kill"
    );
}
