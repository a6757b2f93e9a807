//! DHCPv6 core tests: the message exchanges, the boot options by client kind, bindings
//! across a restart, the router advertisement, and a smoke run of the fuzz target's
//! property (no input panics; every reply parses).

use std::net::Ipv6Addr;

use super::ra::{self, Advert};
use super::server::{Config, Dhcpv6Server, Lease6};
use super::wire::{self, DropReason};
use crate::protocol::dhcp::{BootConfig, LeaseState};

const T0: u64 = 1_700_000_000;
const SERVER_DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 1];

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn config() -> Config {
    Config {
        server_duid: SERVER_DUID.to_vec(),
        server_ip: ip("fd00:77::1"),
        prefix: ip("fd00:77::"),
        prefix_len: 64,
        pool_start: ip("fd00:77::100"),
        pool_end: ip("fd00:77::103"),
        preferred_secs: 1800,
        valid_secs: 3600,
        dns: vec![ip("fd00:77::53")],
        boot: BootConfig::default(),
        boot_file_params: Vec::new(),
        decline_hold_secs: 600,
    }
}

fn server() -> Dhcpv6Server {
    Dhcpv6Server::new(config(), []).unwrap()
}

/// A client message: type, client DUID-LL of `mac`, IA_NAs (iaid, addresses), extra options.
#[derive(Clone, Default)]
struct C {
    ty: u8,
    mac: u8,
    server_id: Option<Vec<u8>>,
    ia: Vec<(u32, Vec<Ipv6Addr>)>,
    arch: Option<u16>,
    vendor: Option<&'static str>,
    user: Option<&'static str>,
    rapid: bool,
    no_client_id: bool,
}

impl C {
    fn new(ty: u8, mac: u8) -> C {
        C {
            ty,
            mac,
            ia: vec![(1, Vec::new())],
            ..C::default()
        }
    }
    fn duid(&self) -> Vec<u8> {
        vec![0, 3, 0, 1, 0x52, 0x54, 0, 0, 0, self.mac]
    }
    fn bytes(&self) -> Vec<u8> {
        let mut o = wire::Out::new(self.ty, [1, 2, self.mac]);
        if !self.no_client_id {
            o.opt(wire::OPT_CLIENTID, &self.duid());
        }
        if let Some(s) = &self.server_id {
            o.opt(wire::OPT_SERVERID, s);
        }
        for (iaid, addrs) in &self.ia {
            let inner: Vec<u8> = addrs.iter().flat_map(|a| wire::iaaddr(*a, 0, 0)).collect();
            o.opt(wire::OPT_IA_NA, &wire::ia_na(*iaid, 0, 0, &inner));
        }
        if let Some(a) = self.arch {
            o.opt(wire::OPT_CLIENT_ARCH_TYPE, &a.to_be_bytes());
        }
        if let Some(v) = self.vendor {
            let mut b = 343u32.to_be_bytes().to_vec();
            b.extend(wire::items([v.as_bytes()]));
            o.opt(wire::OPT_VENDOR_CLASS, &b);
        }
        if let Some(u) = self.user {
            o.opt(wire::OPT_USER_CLASS, &wire::items([u.as_bytes()]));
        }
        if self.rapid {
            o.opt(wire::OPT_RAPID_COMMIT, &[]);
        }
        o.opt(wire::OPT_ORO, &[0, 23, 0, 59, 0, 60]);
        o.into_bytes()
    }
}

/// One IA_NA of a reply: (iaid, t1, t2, addresses with (preferred, valid), status inside).
type Ia = (u32, u32, u32, Vec<(Ipv6Addr, u32, u32)>, Option<u16>);
/// A boot case: arch, vendor class, user class, wanted URL, HTTPClient answered.
type BootCase = (
    Option<u16>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    bool,
);

/// A parsed reply: type, top-level options.
struct R {
    ty: u8,
    xid: [u8; 3],
    opts: Vec<(u16, Vec<u8>)>,
}

impl R {
    fn parse(b: &[u8]) -> R {
        R {
            ty: b[0],
            xid: [b[1], b[2], b[3]],
            opts: wire::options(&b[4..])
                .unwrap()
                .into_iter()
                .map(|(c, v)| (c, v.to_vec()))
                .collect(),
        }
    }
    fn get(&self, code: u16) -> Option<&[u8]> {
        self.opts
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| v.as_slice())
    }
    fn text(&self, code: u16) -> Option<String> {
        self.get(code)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
    fn status(&self) -> Option<u16> {
        self.get(wire::OPT_STATUS_CODE)
            .map(|v| u16::from_be_bytes([v[0], v[1]]))
    }
    fn ias(&self) -> Vec<Ia> {
        self.opts
            .iter()
            .filter(|(c, _)| *c == wire::OPT_IA_NA)
            .map(|(_, v)| {
                let be = |i: usize| u32::from_be_bytes(v[i..i + 4].try_into().unwrap());
                let mut addrs = Vec::new();
                let mut st = None;
                for (c, a) in wire::options(&v[12..]).unwrap() {
                    if c == wire::OPT_IAADDR {
                        let o: [u8; 16] = a[..16].try_into().unwrap();
                        let p = u32::from_be_bytes(a[16..20].try_into().unwrap());
                        let l = u32::from_be_bytes(a[20..24].try_into().unwrap());
                        addrs.push((Ipv6Addr::from(o), p, l));
                    }
                    if c == wire::OPT_STATUS_CODE {
                        st = Some(u16::from_be_bytes([a[0], a[1]]));
                    }
                }
                (be(0), be(4), be(8), addrs, st)
            })
            .collect()
    }
    fn addr(&self) -> Ipv6Addr {
        self.ias()[0].3[0].0
    }
}

fn send(s: &mut Dhcpv6Server, now: u64, c: &C) -> Result<(R, super::Decision), DropReason> {
    let d = s.handle(now, &c.bytes())?;
    Ok((R::parse(d.reply.as_ref().expect("a reply")), d))
}

/// Solicit, Advertise, Request, Reply: the bound address.
fn sarr(s: &mut Dhcpv6Server, now: u64, mac: u8) -> Ipv6Addr {
    let (adv, d) = send(s, now, &C::new(wire::SOLICIT, mac)).unwrap();
    assert!(d.changes.is_empty(), "an Advertise persists nothing");
    let a = adv.addr();
    let req = C {
        server_id: Some(SERVER_DUID.to_vec()),
        ia: vec![(1, vec![a])],
        ..C::new(wire::REQUEST, mac)
    };
    let (rep, d) = send(s, now, &req).unwrap();
    assert_eq!(rep.ty, wire::REPLY);
    assert_eq!(rep.addr(), a);
    assert_eq!(d.changes.len(), 1);
    a
}

#[test]
fn solicit_advertise_request_reply_renew_release() {
    let mut s = server();
    let (adv, d) = send(&mut s, T0, &C::new(wire::SOLICIT, 1)).unwrap();
    assert_eq!(adv.ty, wire::ADVERTISE);
    assert_eq!(adv.xid, [1, 2, 1]);
    assert_eq!(adv.get(wire::OPT_SERVERID), Some(SERVER_DUID));
    assert_eq!(
        adv.get(wire::OPT_CLIENTID),
        Some(C::new(0, 1).duid().as_slice())
    );
    assert_eq!(
        adv.get(wire::OPT_DNS_SERVERS),
        Some(ip("fd00:77::53").octets().as_slice())
    );
    let ias = adv.ias();
    assert_eq!(ias.len(), 1);
    let (iaid, t1, t2, addrs, st) = &ias[0];
    assert_eq!((*iaid, *t1, *t2, *st), (1, 900, 1440, None));
    assert_eq!(addrs, &[(ip("fd00:77::100"), 1800, 3600)]);
    assert_eq!(d.addrs, [ip("fd00:77::100")]);
    assert_eq!(d.boot_url, None, "a plain client gets no boot file");
    assert!(adv.get(wire::OPT_BOOTFILE_URL).is_none());

    // Request binds it, durably.
    let req = C {
        server_id: Some(SERVER_DUID.to_vec()),
        ia: vec![(1, vec![ip("fd00:77::100")])],
        ..C::new(wire::REQUEST, 1)
    };
    let (rep, d) = send(&mut s, T0 + 1, &req).unwrap();
    assert_eq!(rep.ty, wire::REPLY);
    assert_eq!(rep.addr(), ip("fd00:77::100"));
    assert_eq!(
        d.changes,
        [Lease6 {
            addr: ip("fd00:77::100"),
            state: LeaseState::Bound,
            duid: C::new(0, 1).duid(),
            iaid: 1,
            expires_at: T0 + 1 + 3600,
        }]
    );
    // Another client never gets it.
    assert_ne!(sarr(&mut s, T0 + 2, 2), ip("fd00:77::100"));

    // Renew extends; Rebind (no server id) too.
    let renew = C {
        ty: wire::RENEW,
        ..req.clone()
    };
    let (rep, d) = send(&mut s, T0 + 1000, &renew).unwrap();
    assert_eq!(rep.addr(), ip("fd00:77::100"));
    assert_eq!(d.changes[0].expires_at, T0 + 1000 + 3600);
    let rebind = C {
        ty: wire::REBIND,
        server_id: None,
        ..req.clone()
    };
    let (_, d) = send(&mut s, T0 + 2000, &rebind).unwrap();
    assert_eq!(d.changes[0].expires_at, T0 + 2000 + 3600);

    // Release: Success, released, and the same client gets the same address back.
    let release = C {
        ty: wire::RELEASE,
        ..req.clone()
    };
    let (rep, d) = send(&mut s, T0 + 2100, &release).unwrap();
    assert_eq!(rep.status(), Some(wire::STATUS_SUCCESS));
    assert_eq!(d.changes[0].state, LeaseState::Released);
    // Renewing a released binding: NoBinding inside the IA.
    let (rep, _) = send(&mut s, T0 + 2200, &renew).unwrap();
    assert_eq!(rep.ias()[0].4, Some(wire::STATUS_NO_BINDING));
    // Rebind for nothing we hold is not answered.
    assert!(send(&mut s, T0 + 2200, &rebind).is_err());
    assert_eq!(sarr(&mut s, T0 + 2300, 1), ip("fd00:77::100"));
}

#[test]
fn requests_for_other_servers_and_bad_messages_are_dropped() {
    let mut s = server();
    let other = C {
        server_id: Some(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]),
        ..C::new(wire::REQUEST, 1)
    };
    assert_eq!(
        send(&mut s, T0, &other).err(),
        Some(DropReason::OtherServer)
    );
    let no_id = C {
        no_client_id: true,
        ..C::new(wire::SOLICIT, 1)
    };
    assert!(matches!(
        send(&mut s, T0, &no_id),
        Err(DropReason::Malformed(_))
    ));
    let solicit_with_sid = C {
        server_id: Some(SERVER_DUID.to_vec()),
        ..C::new(wire::SOLICIT, 1)
    };
    assert!(send(&mut s, T0, &solicit_with_sid).is_err());
    assert_eq!(
        send(&mut s, T0, &C::new(wire::ADVERTISE, 1)).err(),
        Some(DropReason::Unhandled(wire::ADVERTISE))
    );
    assert!(matches!(
        s.handle(T0, &[wire::RELAY_FORW, 0, 0, 0]),
        Err(DropReason::Ignored(_))
    ));
    assert!(s.leases().next().is_none(), "nothing written");
}

#[test]
fn pool_exhaustion_offers_no_addresses_and_never_shares_one() {
    let mut s = server();
    let got: Vec<Ipv6Addr> = (1..=4).map(|m| sarr(&mut s, T0, m)).collect();
    let mut uniq = got.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 4, "{got:?}");
    let (adv, d) = send(&mut s, T0, &C::new(wire::SOLICIT, 5)).unwrap();
    assert!(d.addrs.is_empty());
    assert_eq!(adv.ias()[0].4, Some(wire::STATUS_NO_ADDRS_AVAIL));
    assert_eq!(adv.status(), Some(wire::STATUS_NO_ADDRS_AVAIL));
    // After the bindings expire the pool serves again.
    let (adv, _) = send(&mut s, T0 + 3601, &C::new(wire::SOLICIT, 5)).unwrap();
    assert_eq!(adv.ias()[0].3.len(), 1);
}

#[test]
fn boot_options_by_client_kind() {
    let mut cfg = config();
    cfg.boot_file_params = vec!["console=ttyS0".into()];
    cfg.pool_end = ip("fd00:77::1ff");
    let mut s = Dhcpv6Server::new(cfg, []).unwrap();
    #[rustfmt::skip]
    let cases: [BootCase; 6] = [
        (Some(16), Some("HTTPClient:Arch:00016:UNDI:003001"), None,
         Some("http://[fd00:77::1]:8081/tftp/ipxe.efi"), true),
        (Some(7), Some("PXEClient:Arch:00007:UNDI:003000"), None,
         Some("tftp://[fd00:77::1]/ipxe.efi"), false),
        (Some(0), None, None, Some("tftp://[fd00:77::1]/undionly.kpxe"), false),
        (Some(7), None, Some("iPXE"), Some("http://[fd00:77::1]:8081/boot.ipxe"), false),
        (Some(6), None, None, None, false),
        (None, None, None, None, false),
    ];
    for (i, (arch, vendor, user, want, http)) in cases.into_iter().enumerate() {
        let c = C {
            arch,
            vendor,
            user,
            ..C::new(wire::SOLICIT, 10 + i as u8)
        };
        let (adv, d) = send(&mut s, T0, &c).unwrap();
        assert_eq!(
            adv.text(wire::OPT_BOOTFILE_URL).as_deref(),
            want,
            "case {i}"
        );
        assert_eq!(d.boot_url.as_deref(), want, "case {i}");
        let vc = adv.get(wire::OPT_VENDOR_CLASS);
        if http {
            assert_eq!(vc, Some(&b"\0\0\x01\x57\0\x0aHTTPClient"[..]), "case {i}");
        } else {
            assert_eq!(vc, None, "case {i}");
        }
        assert_eq!(
            adv.get(wire::OPT_BOOTFILE_PARAM),
            want.map(|_| &b"\0\x0dconsole=ttyS0"[..]),
            "case {i}"
        );
        assert_eq!(d.no_boot_file, (arch == Some(6)).then_some(6), "case {i}");
        // The Reply to a Request carries the same.
        let req = C {
            ty: wire::REQUEST,
            server_id: Some(SERVER_DUID.to_vec()),
            ia: vec![(1, vec![adv.addr()])],
            ..c
        };
        let (rep, _) = send(&mut s, T0, &req).unwrap();
        assert_eq!(
            rep.text(wire::OPT_BOOTFILE_URL).as_deref(),
            want,
            "case {i}"
        );
    }
    // Information-request: DNS and boot options, no address.
    let c = C {
        ia: Vec::new(),
        arch: Some(16),
        vendor: Some("HTTPClient"),
        ..C::new(wire::INFORMATION_REQUEST, 30)
    };
    let (rep, d) = send(&mut s, T0, &c).unwrap();
    assert!(rep.ias().is_empty() && d.changes.is_empty());
    assert!(rep.get(wire::OPT_DNS_SERVERS).is_some());
    assert_eq!(
        rep.text(wire::OPT_BOOTFILE_URL).as_deref(),
        Some("http://[fd00:77::1]:8081/tftp/ipxe.efi")
    );
}

#[test]
fn rapid_commit_binds_at_once_and_decline_holds_the_address() {
    let mut s = server();
    let c = C {
        rapid: true,
        ..C::new(wire::SOLICIT, 1)
    };
    let (rep, d) = send(&mut s, T0, &c).unwrap();
    assert_eq!(rep.ty, wire::REPLY);
    assert!(rep.get(wire::OPT_RAPID_COMMIT).is_some());
    assert_eq!(d.changes[0].state, LeaseState::Bound);
    let a = rep.addr();
    let decline = C {
        server_id: Some(SERVER_DUID.to_vec()),
        ia: vec![(1, vec![a])],
        ..C::new(wire::DECLINE, 1)
    };
    let (rep, d) = send(&mut s, T0 + 1, &decline).unwrap();
    assert_eq!(rep.status(), Some(wire::STATUS_SUCCESS));
    assert_eq!(d.changes[0].state, LeaseState::Declined);
    assert_eq!(d.changes[0].expires_at, T0 + 601);
    for m in 2..=4 {
        assert_ne!(sarr(&mut s, T0 + 2, m), a, "a declined address is held");
    }
}

#[test]
fn confirm_says_whether_addresses_are_on_link() {
    let mut s = server();
    let on = C {
        ia: vec![(1, vec![ip("fd00:77::abcd")])],
        ..C::new(wire::CONFIRM, 1)
    };
    assert_eq!(
        send(&mut s, T0, &on).unwrap().0.status(),
        Some(wire::STATUS_SUCCESS)
    );
    let off = C {
        ia: vec![(1, vec![ip("fd00:99::1")])],
        ..C::new(wire::CONFIRM, 1)
    };
    assert_eq!(
        send(&mut s, T0, &off).unwrap().0.status(),
        Some(wire::STATUS_NOT_ON_LINK)
    );
}

#[test]
fn bindings_survive_a_restart() {
    let mut s = server();
    let a = sarr(&mut s, T0, 1);
    let b = sarr(&mut s, T0, 2);
    let saved: Vec<Lease6> = s.leases().cloned().collect();
    let mut s2 = Dhcpv6Server::new(config(), saved).unwrap();
    let (adv, _) = send(&mut s2, T0 + 10, &C::new(wire::SOLICIT, 1)).unwrap();
    assert_eq!(adv.addr(), a);
    let (adv, _) = send(&mut s2, T0 + 10, &C::new(wire::SOLICIT, 3)).unwrap();
    assert!(adv.addr() != a && adv.addr() != b);
}

/// The restart rule of lease time, shared with DHCPv4 (`dhcp::clamp_after_restart`): a
/// binding written by an earlier process and loaded after the wall clock was set back a
/// day lasts at most one valid lifetime more, never the day; a decline hold likewise; set
/// forward a day, the binding has ended and its address is free again.
#[test]
fn a_restart_after_a_wall_clock_jump_keeps_no_lease_beyond_one_lease_time() {
    let mut s = server();
    let a = sarr(&mut s, T0, 1);
    let held = C {
        rapid: true,
        ..C::new(wire::SOLICIT, 2)
    };
    let b = send(&mut s, T0, &held).unwrap().0.addr();
    let decline = C {
        server_id: Some(SERVER_DUID.to_vec()),
        ia: vec![(1, vec![b])],
        ..C::new(wire::DECLINE, 2)
    };
    send(&mut s, T0, &decline).unwrap();
    let stored: Vec<Lease6> = s.leases().cloned().collect();
    assert_eq!(stored.len(), 2);
    assert_eq!(config().longest_secs(), 3600);

    // Set back a day while the box was down: without the clamp the binding would end in a
    // day and an hour, the decline hold in a day and ten minutes.
    let back = T0 - 86_400;
    let (mut s, clamped) = Dhcpv6Server::restarted(config(), stored.clone(), back).unwrap();
    assert_eq!(clamped, 2);
    assert!(
        s.leases().all(|l| l.expires_at == back + 3600),
        "{stored:?}"
    );
    // Pool fd00:77::100-103: a and b are held, two addresses are left for newcomers.
    for mac in 3..=4 {
        let got = sarr(&mut s, back + 3599, mac);
        assert!(got != a && got != b);
    }
    let (adv, _) = send(&mut s, back + 3599, &C::new(wire::SOLICIT, 5)).unwrap();
    assert!(adv.ias()[0].3.is_empty(), "still held for one lease time");
    let (adv, _) = send(&mut s, back + 3601, &C::new(wire::SOLICIT, 5)).unwrap();
    let freed = adv.addr();
    assert!(
        freed == a || freed == b,
        "free after one lease time, not a day"
    );
    // Its own client renews meanwhile: the same address.
    let (mut s, _) = Dhcpv6Server::restarted(config(), stored.clone(), back).unwrap();
    assert_eq!(sarr(&mut s, back + 10, 1), a);

    // Within the limit nothing changes.
    let (s, clamped) = Dhcpv6Server::restarted(config(), stored.clone(), T0 + 30).unwrap();
    assert_eq!(clamped, 0);
    let mut kept: Vec<Lease6> = s.leases().cloned().collect();
    kept.sort_by_key(|l| l.addr);
    let mut want = stored.clone();
    want.sort_by_key(|l| l.addr);
    assert_eq!(kept, want);

    // Set forward a day across a restart: as a day of downtime, the binding has ended.
    let fwd = T0 + 86_400;
    let (mut s, clamped) = Dhcpv6Server::restarted(config(), stored, fwd).unwrap();
    assert_eq!(clamped, 0);
    let got: Vec<Ipv6Addr> = (3..=6).map(|mac| sarr(&mut s, fwd, mac)).collect();
    assert!(got.contains(&a) && got.contains(&b), "{got:?}");
}

#[test]
fn bad_config_is_an_error() {
    let mut c = config();
    c.pool_start = ip("fd00:78::1");
    assert!(Dhcpv6Server::new(c, []).is_err());
    let mut c = config();
    c.pool_end = ip("fd00:77::1");
    assert!(Dhcpv6Server::new(c, []).is_err());
    let mut c = config();
    c.valid_secs = 10;
    assert!(Dhcpv6Server::new(c, []).is_err());
    let mut c = config();
    c.prefix_len = 0;
    assert!(Dhcpv6Server::new(c, []).is_err());
}

#[test]
fn router_advertisement_is_managed_with_the_prefix() {
    let v = ra::build(&Advert {
        prefix: ip("fd00:77::1234"),
        prefix_len: 64,
        router_lifetime_secs: 0,
        valid_secs: 3600,
        preferred_secs: 1800,
        mac: Some([0x52, 0x54, 0, 1, 2, 3]),
    });
    assert_eq!(&v[..4], &[134, 0, 0, 0]);
    assert_eq!(v[5] & 0xc0, 0xc0, "Managed + Other");
    assert_eq!(&v[6..8], &[0, 0], "not a default router");
    assert_eq!(&v[16..24], &[1, 1, 0x52, 0x54, 0, 1, 2, 3]);
    let pi = &v[24..];
    assert_eq!(pi.len(), 32);
    assert_eq!(&pi[..4], &[3, 4, 64, 0x80], "on-link, not autonomous");
    assert_eq!(&pi[16..], &ip("fd00:77::").octets());
    assert!(ra::is_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
    assert!(!ra::is_solicitation(&[133, 0, 0]));
    assert!(!ra::is_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
}

/// The fuzz target's property (`fuzz/fuzz_targets/dhcpv6_packet.rs`) over a fixed-seed
/// stream of random and mutated messages: never a panic; every reply parses; no IA holds
/// two bound addresses.
#[test]
fn fuzz_smoke_never_panics() {
    let mut s = server();
    let mut seed = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let seeds: Vec<Vec<u8>> = [wire::SOLICIT, wire::REQUEST, wire::RENEW, wire::RELEASE]
        .iter()
        .map(|t| {
            C {
                server_id: (*t != wire::SOLICIT).then(|| SERVER_DUID.to_vec()),
                arch: Some(16),
                vendor: Some("HTTPClient:Arch:00016"),
                ..C::new(*t, 1)
            }
            .bytes()
        })
        .collect();
    for i in 0..20_000u64 {
        let mut b = seeds[(next() % 4) as usize].clone();
        match next() % 4 {
            0 => b = (0..next() % 300).map(|_| next() as u8).collect(),
            1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % b.len();
                    b[at] = next() as u8;
                }
            }
            2 => b.truncate((next() as usize) % (b.len() + 1)),
            _ => b[9] = (next() % 8) as u8, // another client
        }
        if let Ok(d) = s.handle(T0 + i / 100, &b)
            && let Some(r) = d.reply
        {
            assert!(wire::options(&r[4..]).is_ok());
        }
    }
    let mut held = std::collections::HashMap::new();
    let mut bound = 0;
    for l in s.leases() {
        if l.state == LeaseState::Bound && l.expires_at > T0 + 200 {
            bound += 1;
            assert!(
                held.insert((l.duid.clone(), l.iaid), l.addr).is_none(),
                "{l:?}"
            );
        }
    }
    assert!(
        bound > 0,
        "the stream bound nothing: the property was not exercised"
    );
}

mod client {
    //! The agent's client against this server core: the whole exchange, and what it ignores.
    use super::*;
    use crate::protocol::dhcpv6::client::{Client, Event, duid_ll};
    use crate::protocol::dhcpv6::duid_mac;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// Runs one message of `c` through `s`; the reply bytes.
    fn exchange(s: &mut Dhcpv6Server, c: &Client, now: u64) -> Vec<u8> {
        let msg = c.message(0).expect("a message to send");
        let d = s.handle(now, &msg).expect("answered");
        d.reply.expect("a reply")
    }

    #[test]
    fn solicit_advertise_request_reply_binds_a_pool_address_under_the_nics_duid_ll() {
        let mut s = server();
        let mut c = Client::new(MAC, 7, [9, 9, 9]);
        assert_eq!(duid_mac(c.duid()), Some(MAC), "the box reads the MAC back");
        assert_eq!(c.duid(), duid_ll(MAC));
        let solicit = wire::parse(&c.message(0).unwrap()).unwrap();
        assert_eq!(solicit.msg_type, wire::SOLICIT);
        assert!(solicit.server_id.is_none() && solicit.ia_na[0].iaid == 7);
        let adv = exchange(&mut s, &c, T0);
        let Event::Advertised { addr } = c.receive(&adv).unwrap() else {
            panic!("no advertise")
        };
        assert!(
            (0x100..=0x103).contains(&(u128::from(addr) & 0xffff)),
            "{addr}"
        );
        // The same Advertise again is no answer to the Request now pending.
        assert!(c.receive(&adv).is_err());
        let request = wire::parse(&c.message(120).unwrap()).unwrap();
        assert_eq!(request.msg_type, wire::REQUEST);
        assert_eq!(request.server_id.as_deref(), Some(SERVER_DUID));
        assert_eq!(request.ia_na[0].addrs, [addr]);
        assert_ne!(
            request.xid, solicit.xid,
            "a new exchange, a new transaction id"
        );
        let reply = exchange(&mut s, &c, T0 + 1);
        let Event::Bound(b) = c.receive(&reply).unwrap() else {
            panic!("not bound")
        };
        assert_eq!((b.addr, b.preferred_secs, b.valid_secs), (addr, 1800, 3600));
        assert_eq!(b.dns, [ip("fd00:77::53")]);
        assert_eq!(b.server_id, SERVER_DUID);
        assert!(c.message(0).is_none(), "bound: nothing more to send");
        // The server's lease names the client's DUID, hence its MAC.
        let l = s.leases().find(|l| l.addr == addr).unwrap();
        assert_eq!((l.state, duid_mac(&l.duid)), (LeaseState::Bound, Some(MAC)));
    }

    #[test]
    fn answers_to_other_clients_or_transactions_and_refusals_change_nothing_or_start_over() {
        let mut s = server();
        let mut c = Client::new(MAC, 1, [1, 1, 1]);
        let mut other = Client::new([2, 0, 0, 0, 0, 9], 1, [1, 1, 1]);
        // Another client's advertise (same xid): ignored.
        let adv_other = exchange(&mut s, &other, T0);
        assert!(c.receive(&adv_other).is_err());
        assert!(other.receive(&adv_other).is_ok());
        // Another transaction: ignored.
        let mut adv = exchange(&mut s, &c, T0);
        adv[1] ^= 0xff;
        assert!(c.receive(&adv).is_err());
        assert_eq!(
            wire::parse(&c.message(0).unwrap()).unwrap().msg_type,
            wire::SOLICIT
        );
        // Garbage: an error, never a panic.
        assert!(c.receive(&[2, 1]).is_err());
        assert!(c.receive(&[2, 1, 1, 1, 0, 1, 0, 200]).is_err());
        // A full pool: the advertise carries NoAddrsAvail and is not taken.
        let mut full = Dhcpv6Server::new(
            Config {
                pool_end: ip("fd00:77::100"),
                ..config()
            },
            [],
        )
        .unwrap();
        let mut first = Client::new([2, 0, 0, 0, 0, 1], 1, [5, 5, 5]);
        let a = exchange(&mut full, &first, T0);
        first.receive(&a).unwrap();
        let r = exchange(&mut full, &first, T0);
        assert!(matches!(first.receive(&r), Ok(Event::Bound(_))));
        let mut second = Client::new(MAC, 1, [6, 6, 6]);
        let a = exchange(&mut full, &second, T0);
        assert!(second.receive(&a).is_err(), "no address offered");
        // A Reply refusing the Request (another client took the address meanwhile): start
        // over with a Solicit.
        let mut late = Client::new([2, 0, 0, 0, 0, 3], 1, [7, 7, 7]);
        let mut pool = Dhcpv6Server::new(
            Config {
                pool_end: ip("fd00:77::100"),
                ..config()
            },
            [],
        )
        .unwrap();
        let a = exchange(&mut pool, &late, T0);
        late.receive(&a).unwrap();
        // The hold expired and someone else bound the one address.
        let mut thief = Client::new([2, 0, 0, 0, 0, 4], 1, [8, 8, 8]);
        let t = T0 + OFFER_HOLD;
        let a = exchange(&mut pool, &thief, t);
        thief.receive(&a).unwrap();
        let r = exchange(&mut pool, &thief, t);
        assert!(matches!(thief.receive(&r), Ok(Event::Bound(_))));
        let r = exchange(&mut pool, &late, t);
        assert!(
            matches!(late.receive(&r), Ok(Event::Refused(_))),
            "{:?}",
            wire::parse(&r)
        );
        assert_eq!(
            wire::parse(&late.message(0).unwrap()).unwrap().msg_type,
            wire::SOLICIT
        );
    }

    const OFFER_HOLD: u64 = crate::protocol::dhcpv6::server::OFFER_HOLD_SECS + 1;
}
