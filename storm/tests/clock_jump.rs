//! Root-only (CI runs it under `APPLIANCE_E2E=1`): the wall clock of the real box jumps a
//! day forwards and two days back while machines hold DHCP leases (issue 16 item 5), and
//! the box restarts with its clock a day behind. The box is the debug `appliance serve` with
//! `APPLIANCE_FAULT_WALL_OFFSET_FILE` (a debug-build fault hook of `appliance::clock`: the
//! whole seconds in that file are added to the process's wall clock), the machines are the
//! `storm` generator's DHCP stage in a second network namespace. The pool has four
//! addresses, leases last 10 s.
//!
//! 1. Four machines lease the four addresses.
//! 2. +1 day: two newcomers get no address (the leases are live: a box measuring expiry on
//!    the wall clock would hand them out again), and the four renew the same addresses.
//! 3. −2 days (a day behind real time): 11 s later the leases have ended after their 10 s of
//!    real time and two newcomers get addresses (a box measuring on the wall clock would
//!    hold them for two more days).
//! 4. Restart a day behind: every stored lease, written on the old lease time a day "ahead",
//!    is clamped to one lease time (logged): right after the restart newcomers get nothing,
//!    11 s later four newcomers get the four addresses (without the clamp: held for a day).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

#[path = "../../appliance/tests/support/netns.rs"]
mod netns;
#[path = "../../appliance/tests/support/prereq.rs"]
mod prereq;
mod support;

use netns::Proc;
use support::StormBox;

const LEASE_SECS: u64 = 10;

/// The addresses a storm's machines were ACKed last, by machine (None: no address).
fn leased(outcomes: &Path) -> Vec<Option<String>> {
    std::fs::read_to_string(outcomes)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["acks"]
                .as_array()
                .unwrap()
                .last()
                .map(|a| a["ip"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn wall_clock_jumps_neither_expire_nor_prolong_dhcp_leases() {
    if let Some(why) = prereq::missing_root_or(
        &[("ip", &["-V"]), ("curl", &["--version"])],
        "network namespaces and the packet socket",
    ) {
        return prereq::skip("clock_jump", &why);
    }
    let sb = StormBox::new(
        "sj",
        "10.254.1.3",
        &format!(
            "lease_time_secs = {LEASE_SECS}\ndecline_hold_secs = {LEASE_SECS}\nprobe_interval_secs = 0\n"
        ),
    );
    let dir = sb.dir();
    let offset = dir.join("wall-offset");
    std::fs::write(&offset, "0").unwrap();
    let start_box = |log: &str| {
        sb.start(
            log,
            &[("APPLIANCE_FAULT_WALL_OFFSET_FILE", offset.to_str().unwrap())],
        )
    };
    // `clients` machines from index `first` do one PXE DHCP exchange (`tries`
    // transmissions); their addresses.
    let run = 0.into();
    let dhcp = |first: usize, clients: usize, tries: usize| -> Vec<Option<String>> {
        let n: usize = std::cell::Cell::replace(&run, std::cell::Cell::get(&run) + 1);
        let out = dir.join(format!("storm{n}.jsonl"));
        let o = sb
            .storm()
            .args(["--stages", "dhcp"])
            .args(["--first", &first.to_string()])
            .args(["--clients", &clients.to_string(), "--ramp-secs", "0.2"])
            .args(["--pxe-dhcp-tries", &tries.to_string()])
            .arg("--outcomes")
            .arg(&out)
            .output()
            .unwrap();
        println!("{}", String::from_utf8_lossy(&o.stdout).trim_end());
        leased(&out)
    };
    let jump = |server: &mut Proc, secs: i64| {
        std::fs::write(&offset, secs.to_string()).unwrap();
        server.wait_for_log(&format!("wall clock offset {secs:+} s"));
    };
    let all = |v: &[Option<String>]| -> Vec<String> { v.iter().flatten().cloned().collect() };

    let mut server = start_box("appliance.log");
    // 1. Four machines, four addresses.
    let four = dhcp(0, 4, 4);
    let pool: BTreeSet<String> = all(&four).into_iter().collect();
    assert_eq!(pool.len(), 4, "four machines, four addresses: {four:?}");

    // 2. A day forwards: the leases stay live.
    jump(&mut server, 86_400);
    let newcomers = dhcp(100, 2, 1);
    assert_eq!(
        newcomers,
        [None, None],
        "+1 day: addresses still leased were handed to newcomers\n{}",
        server.log()
    );
    assert_eq!(
        dhcp(0, 4, 4),
        four,
        "+1 day: the four renew their own addresses"
    );
    let renewed = appliance::clock::now();

    // 3. Two days back (a day behind real time): the leases end after their real 10 s.
    jump(&mut server, -86_400);
    std::thread::sleep(Duration::from_secs(LEASE_SECS + 1).saturating_sub(renewed.elapsed()));
    let newcomers = dhcp(100, 2, 4);
    assert!(
        newcomers
            .iter()
            .all(|a| a.as_ref().is_some_and(|a| pool.contains(a))),
        "-1 day: leases that ended in real time were still held: {newcomers:?}\n{}",
        server.log()
    );
    let held: BTreeSet<String> = all(&newcomers).into_iter().collect();
    assert_eq!(held.len(), 2);

    // 4. Restart a day behind: every stored lease was written on the old lease time, a day
    // ahead of the new one. Clamped to one lease time from the restart, they are all held
    // for 10 s (the box cannot tell an ended lease of the old clock from a live one), then
    // every address is free again, not held for a day.
    server.stop();
    let server = start_box("appliance-restarted.log");
    let restarted = appliance::clock::now();
    assert!(
        server.log().contains("end 10 s from now"),
        "the restart clamped the leases:\n{}",
        server.log()
    );
    assert_eq!(
        dhcp(200, 2, 1),
        [None, None],
        "right after the restart the leases are held"
    );
    std::thread::sleep(Duration::from_secs(LEASE_SECS + 1).saturating_sub(restarted.elapsed()));
    let late: BTreeSet<String> = all(&dhcp(300, 4, 4)).into_iter().collect();
    assert_eq!(
        late,
        pool,
        "one lease time after the restart every address is free\n{}",
        server.log()
    );
    server.stop();
}
