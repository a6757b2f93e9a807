//! IPMI glue against real peers: OpenIPMI `ipmi_sim` (suite 3, cross-checked with
//! `ipmitool -I lanplus -C 3`), `ipmitool -C 17` logging into the core's BMC-side
//! responder (suite 17, since ipmi_sim 2.0.33 has no SHA-256), and faults: wrong password,
//! closed port, silent peer, garbage-answering peer.

use std::time::Duration;

use super::*;
use crate::bmc::Bmc;
use crate::bmc::testsupport::{IpmiSim, ipmi_tools_present, ipmitool_at};
use crate::protocol::ipmi::responder::Responder;

fn admin() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: "password".into(),
    }
}

fn quick() -> IpmiTimeouts {
    IpmiTimeouts {
        attempt: Duration::from_millis(300),
        retries: 1,
    }
}

#[tokio::test]
async fn suite3_power_and_boot_device_cross_checked_with_ipmitool() {
    if !ipmi_tools_present("suite3_power_and_boot_device_cross_checked_with_ipmitool") {
        return;
    }
    let sim = IpmiSim::start();
    let bmc = IpmiBmc::new(
        sim.endpoint(),
        admin(),
        CipherSuite::Suite3,
        IpmiTimeouts::default(),
    );
    let caps = bmc.probe().await.unwrap();
    assert!(caps.ipmi_v2, "{caps:?}");

    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    bmc.power(PowerAction::On).await.unwrap();
    assert_eq!(sim.state("power").as_deref(), Some("1"));
    let (ok, out) = sim.ipmitool("admin", "password", 3, &["chassis", "power", "status"]);
    assert!(ok && out.contains("Chassis Power is on"), "{out}");
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);

    bmc.set_boot(BootOverride {
        target: BootTarget::Pxe,
        firmware: Firmware::Uefi,
        persistent: false,
    })
    .await
    .unwrap();
    assert_eq!(sim.state("boot").as_deref(), Some("pxe"));
    // ipmi_sim keeps only the device selector (not the EFI/persistent bits): read it back
    // with ipmitool.
    let (ok, out) = sim.ipmitool(
        "admin",
        "password",
        3,
        &["chassis", "bootparam", "get", "5"],
    );
    assert!(ok && out.contains("Force PXE"), "{out}");
    let flags = bmc.chassis_boot_flags().await.unwrap();
    assert_eq!(flags.device, BootDevice::Pxe);

    bmc.set_boot(BootOverride {
        target: BootTarget::Disk,
        firmware: Firmware::Bios,
        persistent: true,
    })
    .await
    .unwrap();
    assert_eq!(sim.state("boot").as_deref(), Some("default"));
    let (_, out) = sim.ipmitool(
        "admin",
        "password",
        3,
        &["chassis", "bootparam", "get", "5"],
    );
    assert!(out.contains("Force Boot from default Hard-Drive"), "{out}");

    // Cycle of a running server: ipmi_sim powers off then on again about a second later.
    bmc.power(PowerAction::Cycle).await.unwrap();
    assert!(sim.calls().contains("set power 0"), "{}", sim.calls());
    bmc.power(PowerAction::Reset).await.unwrap();
    assert!(sim.state("resets").is_some());
    bmc.power(PowerAction::Off).await.unwrap();
    assert_eq!(sim.state("power").as_deref(), Some("0"));
    let (_, out) = sim.ipmitool("admin", "password", 3, &["chassis", "power", "status"]);
    assert!(out.contains("Chassis Power is off"), "{out}");
    // Cycle of a server that is off powers it on.
    bmc.power(PowerAction::Cycle).await.unwrap();
    assert_eq!(sim.state("power").as_deref(), Some("1"));
}

#[tokio::test]
async fn suite17_is_refused_by_ipmi_sim_with_a_clear_error() {
    if !ipmi_tools_present("suite17_is_refused_by_ipmi_sim_with_a_clear_error") {
        return;
    }
    let sim = IpmiSim::start();
    let bmc = IpmiBmc::new(
        sim.endpoint(),
        admin(),
        CipherSuite::Suite17,
        IpmiTimeouts::default(),
    );
    let err = bmc.power_state().await.unwrap_err();
    let text = crate::error_chain(&err);
    assert!(matches!(err, BmcError::Auth { .. }), "{text}");
    assert!(text.contains("refused the open session request"), "{text}");
}

#[tokio::test]
async fn auto_suite_falls_back_from_17_to_3_on_ipmi_sim() {
    if !ipmi_tools_present("auto_suite_falls_back_from_17_to_3_on_ipmi_sim") {
        return;
    }
    let sim = IpmiSim::start();
    let bmc = IpmiBmc::new_auto(sim.endpoint(), admin(), IpmiTimeouts::default());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(bmc.suite(), CipherSuite::Suite3);
    // Against a BMC that speaks 17 (the responder), auto mode stays on 17.
    let (endpoint, task) = serve_responder(Responder::new(b"admin", b"password")).await;
    let bmc = IpmiBmc::new_auto(endpoint, admin(), quick());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(bmc.suite(), CipherSuite::Suite17);
    task.abort();
}

#[tokio::test]
async fn wrong_password_is_a_clear_login_error() {
    if !ipmi_tools_present("wrong_password_is_a_clear_login_error") {
        return;
    }
    let sim = IpmiSim::start();
    let bad = Credentials {
        username: "admin".into(),
        password: "not-it".into(),
    };
    let bmc = IpmiBmc::new(
        sim.endpoint(),
        bad,
        CipherSuite::Suite3,
        IpmiTimeouts::default(),
    );
    let err = bmc.power_state().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BmcError::Auth { .. }), "{text}");
    assert!(text.contains("wrong password"), "{text}");
    assert!(
        !text.contains("not-it"),
        "password leaked into error: {text}"
    );
    let nobody = Credentials {
        username: "nobody".into(),
        password: "x".into(),
    };
    let bmc = IpmiBmc::new(
        sim.endpoint(),
        nobody,
        CipherSuite::Suite3,
        IpmiTimeouts::default(),
    );
    let text = bmc.power_state().await.unwrap_err().to_string();
    assert!(text.contains("login failed"), "{text}");
}

/// Serves the pure responder on a loopback UDP socket until the task is aborted.
async fn serve_responder(responder: Responder) -> (String, tokio::task::JoinHandle<Responder>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let endpoint = sock.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut r = responder;
        let mut buf = vec![0u8; 2048];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                return r;
            };
            let mut random = [0u8; 16];
            getrandom::fill(&mut random).unwrap();
            if let Some(reply) = r.handle(&buf[..n], random) {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    (endpoint, task)
}

#[tokio::test]
async fn suite17_interoperates_with_ipmitool_through_the_responder() {
    if !ipmi_tools_present("suite17_interoperates_with_ipmitool_through_the_responder") {
        return;
    }
    let (endpoint, task) = serve_responder(Responder::new(b"admin", b"password")).await;
    // ipmitool (independent implementation) logs in with RAKP-HMAC-SHA256 and exchanges
    // HMAC-SHA256-128 + AES-CBC-128 packets with our key derivation.
    let ep = endpoint.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool_at(&ep, "admin", "password", 17, &["chassis", "power", "on"])
    })
    .await
    .unwrap();
    assert!(ok && out.contains("Up/On"), "{out}");
    let ep = endpoint.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool_at(
            &ep,
            "admin",
            "password",
            17,
            &["chassis", "power", "status"],
        )
    })
    .await
    .unwrap();
    assert!(ok && out.contains("Chassis Power is on"), "{out}");
    let ep = endpoint.clone();
    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool_at(&ep, "admin", "wrong", 17, &["chassis", "power", "status"])
    })
    .await
    .unwrap();
    assert!(!ok, "{out}");

    // Our client with suite 17 against the same responder.
    let bmc = IpmiBmc::new(endpoint.clone(), admin(), CipherSuite::Suite17, quick());
    assert_eq!(bmc.power_state().await.unwrap(), PowerState::On);
    bmc.set_boot(BootOverride {
        target: BootTarget::Pxe,
        firmware: Firmware::Uefi,
        persistent: false,
    })
    .await
    .unwrap();
    bmc.power(PowerAction::Off).await.unwrap();
    task.abort();
    let _ = task.await;
    // ipmitool reads back what our client set.
    let (endpoint, task) = serve_responder({
        let mut r = Responder::new(b"admin", b"password");
        r.boot_flags = [0xA0, 0x04, 0, 0, 0];
        r
    })
    .await;
    let (ok, out) = tokio::task::spawn_blocking(move || {
        ipmitool_at(
            &endpoint,
            "admin",
            "password",
            17,
            &["chassis", "bootparam", "get", "5"],
        )
    })
    .await
    .unwrap();
    assert!(
        ok && out.contains("Force PXE") && out.contains("EFI"),
        "{out}"
    );
    task.abort();
}

#[tokio::test]
async fn closed_port_fails_fast() {
    let port = crate::bmc::testsupport::free_udp_port();
    let bmc = IpmiBmc::new(
        format!("127.0.0.1:{port}"),
        admin(),
        CipherSuite::Suite3,
        IpmiTimeouts::default(),
    );
    let start = crate::clock::now();
    let err = bmc.power_state().await.unwrap_err();
    assert!(
        matches!(err, BmcError::Unreachable { .. }),
        "{}",
        crate::error_chain(&err)
    );
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn silent_peer_times_out_within_the_budget() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let bmc = IpmiBmc::new(
        sock.local_addr().unwrap().to_string(),
        admin(),
        CipherSuite::Suite3,
        quick(),
    );
    let start = crate::clock::now();
    let err = bmc.power(PowerAction::On).await.unwrap_err();
    assert!(matches!(err, BmcError::Timeout { .. }), "{err}");
    // 2 attempts × 300 ms
    assert!(start.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn garbage_answering_peer_is_an_error_not_a_panic() {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let endpoint = sock.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        let mut seed = 7u32;
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            // Answer with the request mangled: right RMCP header, nonsense after it.
            let mut reply = buf[..n].to_vec();
            for b in reply.iter_mut().skip(5) {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (seed >> 16) as u8;
            }
            let _ = sock.send_to(&reply, from).await;
            let _ = sock.send_to(&[0x06, 0, 0xff, 0x07, 0x06], from).await;
        }
    });
    let bmc = IpmiBmc::new(endpoint, admin(), CipherSuite::Suite3, quick());
    let err = bmc.power_state().await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, BmcError::Timeout { .. }), "{text}");
    assert!(text.contains("dropped invalid replies"), "{text}");
    task.abort();
}

/// Latency of each operation against ipmi_sim (printed; recorded in the notes, not
/// asserted).
#[tokio::test]
async fn measure_latencies_against_ipmi_sim() {
    if !ipmi_tools_present("measure_latencies_against_ipmi_sim") {
        return;
    }
    let sim = IpmiSim::start();
    let bmc = IpmiBmc::new(
        sim.endpoint(),
        admin(),
        CipherSuite::Suite3,
        IpmiTimeouts::default(),
    );
    let n = 20;
    let mut report = Vec::new();
    for (name, op) in [
        ("status", 0),
        ("power on", 1),
        ("bootdev pxe", 2),
        ("power off", 3),
    ] {
        let start = crate::clock::now();
        for _ in 0..n {
            match op {
                0 => drop(bmc.power_state().await.unwrap()),
                1 => bmc.power(PowerAction::On).await.unwrap(),
                2 => bmc
                    .set_boot(BootOverride {
                        target: BootTarget::Pxe,
                        firmware: Firmware::Uefi,
                        persistent: false,
                    })
                    .await
                    .unwrap(),
                _ => bmc.power(PowerAction::Off).await.unwrap(),
            }
        }
        report.push(format!("{name}: {:?}/op", start.elapsed() / n));
    }
    let start = crate::clock::now();
    for _ in 0..n {
        let (ok, _) = sim.ipmitool("admin", "password", 3, &["chassis", "power", "status"]);
        assert!(ok);
    }
    report.push(format!("ipmitool status: {:?}/op", start.elapsed() / n));
    println!(
        "ipmi_sim latencies (suite 3, session per op): {}",
        report.join(", ")
    );
}
