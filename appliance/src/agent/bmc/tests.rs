//! The in-band steps against a scripted BMC (a user table and LAN parameters answering
//! the IPMI commands by their bytes), plus a bounded fuzz smoke of the reply handling.

use super::*;

/// A BMC answering the commands `read_lan` / `ensure_user` send, by netfn/cmd/data bytes.
struct ScriptedBmc {
    /// Names of user ids 1..=max (index 0 = id 1).
    names: Vec<Vec<u8>>,
    passwords: Vec<Vec<u8>>,
    enabled: Vec<bool>,
    privilege: Vec<u8>,
    ip: [u8; 4],
    /// `None`: parameter 8 answered 0x80 (not supported).
    port: Option<u16>,
    /// (netfn, cmd) answered with this completion code instead.
    fail: Option<(u8, u8, u8)>,
    /// Ids whose Get User Name fails (0xCB).
    unreadable: Vec<u8>,
    sent: Vec<(u8, u8, Vec<u8>)>,
}

impl ScriptedBmc {
    fn new(max: usize) -> ScriptedBmc {
        let mut names = vec![Vec::new(); max];
        names[0] = b"".to_vec();
        names[1] = b"admin".to_vec();
        ScriptedBmc {
            names,
            passwords: vec![Vec::new(); max],
            enabled: vec![false; max],
            privilege: vec![0; max],
            ip: [10, 77, 0, 1],
            port: Some(623),
            fail: None,
            unreadable: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn commands(&self) -> Vec<(u8, u8)> {
        self.sent.iter().map(|(n, c, _)| (*n, *c)).collect()
    }
}

impl Transport for ScriptedBmc {
    fn call(&mut self, c: &Command) -> Result<Reply, InbandError> {
        self.sent.push((c.netfn, c.cmd, c.data.clone()));
        let ok = |data: Vec<u8>| {
            Ok(Reply {
                completion: 0,
                data,
            })
        };
        let err = |code: u8| {
            Ok(Reply {
                completion: code,
                data: Vec::new(),
            })
        };
        if let Some((n, cmd, code)) = self.fail
            && n == c.netfn
            && cmd == c.cmd
        {
            return err(code);
        }
        let d = &c.data;
        let idx = |id: u8| usize::from(id & 0x3F) - 1;
        match (c.netfn, c.cmd) {
            (0x0C, 0x02) => match d[1] {
                3 => ok(vec![0x11, self.ip[0], self.ip[1], self.ip[2], self.ip[3]]),
                8 => match self.port {
                    Some(p) => ok(vec![0x11, p as u8, (p >> 8) as u8]),
                    None => err(0x80),
                },
                _ => err(0x80),
            },
            (0x06, 0x44) => ok(vec![
                self.names.len() as u8,
                self.enabled.iter().filter(|e| **e).count() as u8,
                0,
                0x14,
            ]),
            (0x06, 0x46) => {
                if self.unreadable.contains(&d[0]) || idx(d[0]) >= self.names.len() {
                    return err(0xCB);
                }
                let mut n = self.names[idx(d[0])].clone();
                n.resize(16, 0);
                ok(n)
            }
            (0x06, 0x45) => {
                let mut n = d[1..17].to_vec();
                while n.last() == Some(&0) {
                    n.pop();
                }
                self.names[idx(d[0])] = n;
                ok(Vec::new())
            }
            (0x06, 0x47) => {
                let i = idx(d[0]);
                match d[1] {
                    1 => self.enabled[i] = true,
                    2 => {
                        let mut p = d[2..].to_vec();
                        while p.last() == Some(&0) {
                            p.pop();
                        }
                        self.passwords[i] = p;
                    }
                    _ => return err(0xCC),
                }
                ok(Vec::new())
            }
            (0x06, 0x43) => {
                self.privilege[idx(d[1])] = d[2] & 0x0F;
                ok(Vec::new())
            }
            _ => err(0xC1),
        }
    }
}

#[test]
fn lan_address_and_port_are_decoded() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.port = Some(0x1234);
    let lan = read_lan(&mut bmc, LAN_CHANNEL).unwrap();
    assert_eq!(lan.ip, Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(lan.port, Some(0x1234));
    // Channel 1, parameter 3 then 8, set 0, block 0.
    assert_eq!(bmc.sent[0], (0x0C, 0x02, vec![1, 3, 0, 0]));
    assert_eq!(bmc.sent[1], (0x0C, 0x02, vec![1, 8, 0, 0]));
}

#[test]
fn port_parameter_not_supported_means_no_port() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.port = None;
    assert_eq!(read_lan(&mut bmc, 1).unwrap().port, None);
    bmc.port = Some(0);
    assert_eq!(read_lan(&mut bmc, 1).unwrap().port, None);
}

#[test]
fn unconfigured_lan_address_is_a_clear_error() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.ip = [0, 0, 0, 0];
    let e = read_lan(&mut bmc, 1).unwrap_err();
    assert!(
        matches!(e, InbandError::NoAddress { channel: 1, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("0.0.0.0"), "{e}");
}

#[test]
fn completion_codes_become_errors_naming_the_command() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.fail = Some((0x0C, 0x02, 0xD4));
    let e = read_lan(&mut bmc, 1).unwrap_err();
    let text = crate::error_chain(&e);
    assert!(
        text.contains("get LAN configuration parameters") && text.contains("0xd4"),
        "{text}"
    );
    assert!(text.contains("insufficient privilege"), "{text}");

    let mut bmc = ScriptedBmc::new(8);
    bmc.fail = Some((0x06, 0x43, 0xCC));
    let e = ensure_user(&mut bmc, 1, SETUP_USER, "pw").unwrap_err();
    assert!(e.to_string().contains("set user access"), "{e}");
    // It stopped there: the user was named and given the password, but never enabled.
    assert!(!bmc.enabled[2]);
}

#[test]
fn a_new_user_goes_to_the_first_free_slot_with_admin_privilege() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.names[2] = b"ops".to_vec();
    let slot = ensure_user(&mut bmc, 1, SETUP_USER, "S3cretS3cretS3cr").unwrap();
    assert_eq!(slot, UserSlot::Free(4));
    assert_eq!(bmc.names[3], b"sidero");
    assert_eq!(bmc.passwords[3], b"S3cretS3cretS3cr");
    assert_eq!(bmc.privilege[3], 4);
    assert!(bmc.enabled[3]);
    // The other users are untouched.
    assert_eq!(bmc.names[1], b"admin");
    assert_eq!(bmc.names[2], b"ops");
    // Order: user access (max users), names 2..4, set name, password, access, enable.
    assert_eq!(
        bmc.commands(),
        [
            (6, 0x44),
            (6, 0x46),
            (6, 0x46),
            (6, 0x46),
            (6, 0x46),
            (6, 0x46),
            (6, 0x46),
            (6, 0x46),
            (6, 0x45),
            (6, 0x47),
            (6, 0x43),
            (6, 0x47)
        ]
    );
    let access = &bmc.sent[10].2;
    assert_eq!(access[0], 0x91, "IPMI messaging + callin on channel 1");
}

#[test]
fn an_existing_sidero_user_is_reused_and_its_password_reset() {
    let mut bmc = ScriptedBmc::new(8);
    bmc.names[5] = b"sidero".to_vec();
    bmc.passwords[5] = b"old".to_vec();
    let slot = ensure_user(&mut bmc, 1, SETUP_USER, "new").unwrap();
    assert_eq!(slot, UserSlot::Existing(6));
    assert_eq!(bmc.passwords[5], b"new");
    assert_eq!(bmc.names.iter().filter(|n| *n == b"sidero").count(), 1);
    // No Set User Name; the scan stopped at the match.
    assert!(!bmc.commands().contains(&(6, 0x45)));
    assert_eq!(
        bmc.commands().iter().filter(|c| **c == (6, 0x46)).count(),
        5
    );
}

#[test]
fn slot_choice_follows_sidero() {
    let s = |v: &[(u8, Option<&[u8]>)]| -> Vec<(u8, Option<Vec<u8>>)> {
        v.iter().map(|(i, n)| (*i, n.map(<[u8]>::to_vec))).collect()
    };
    use command::pick_user_slot as pick;
    let u = b"sidero";
    assert_eq!(
        pick(u, &s(&[(2, Some(b"a")), (3, Some(b""))])),
        Some(UserSlot::Free(3))
    );
    assert_eq!(
        pick(u, &s(&[(2, Some(b"(Empty User)")), (3, Some(b"sidero"))])),
        Some(UserSlot::Existing(3))
    );
    assert_eq!(
        pick(u, &s(&[(2, Some(b"a")), (3, None)])),
        Some(UserSlot::Free(3))
    );
    assert_eq!(pick(u, &s(&[(2, Some(b"a")), (3, Some(b"b"))])), None);
    assert_eq!(pick(u, &[]), None);
}

#[test]
fn unreadable_slots_count_as_free_and_a_full_bmc_is_an_error() {
    let mut bmc = ScriptedBmc::new(4);
    bmc.unreadable = vec![2];
    bmc.names[1] = b"x".to_vec();
    assert_eq!(
        ensure_user(&mut bmc, 1, SETUP_USER, "p").unwrap(),
        UserSlot::Free(2)
    );

    let mut bmc = ScriptedBmc::new(4);
    for i in 1..4 {
        bmc.names[i] = format!("u{i}").into_bytes();
    }
    let e = ensure_user(&mut bmc, 1, SETUP_USER, "p").unwrap_err();
    assert!(matches!(e, InbandError::NoFreeSlot { max: 4 }), "{e}");
    // Nothing was written.
    assert!(bmc.commands().iter().all(|(_, c)| *c == 0x44 || *c == 0x46));
}

#[test]
fn bad_inputs_are_refused_before_touching_the_bmc() {
    let mut bmc = ScriptedBmc::new(8);
    assert!(ensure_user(&mut bmc, 1, "a-name-longer-than-16", "p").is_err());
    assert!(ensure_user(&mut bmc, 1, SETUP_USER, &"p".repeat(21)).is_err());
    assert!(bmc.sent.is_empty());
}

#[test]
fn device_replies_are_checked_against_the_request() {
    let c = command::get_lan_config(1, 3);
    let r = Reply::from_device(&c, 0x0D, 0x02, &[0x00, 0x11, 1, 2, 3, 4]).unwrap();
    assert_eq!(r.completion, 0);
    assert_eq!(r.data, [0x11, 1, 2, 3, 4]);
    assert!(matches!(
        Reply::from_device(&c, 0x07, 0x02, &[0]),
        Err(InbandError::Mismatch { .. })
    ));
    assert!(matches!(
        Reply::from_device(&c, 0x0D, 0x02, &[]),
        Err(InbandError::Empty { .. })
    ));
}

/// A transport answering every request with the next fuzz-chosen bytes.
struct FuzzBmc<'a> {
    replies: std::slice::Iter<'a, Vec<u8>>,
}

impl Transport for FuzzBmc<'_> {
    fn call(&mut self, c: &Command) -> Result<Reply, InbandError> {
        let d = self.replies.next().ok_or(InbandError::Timeout {
            command: c.name,
            timeout: Duration::ZERO,
        })?;
        let netfn = d.first().map_or(
            c.netfn | 1,
            |b| if b & 0x80 != 0 { *b } else { c.netfn | 1 },
        );
        Reply::from_device(c, netfn, c.cmd, d.get(1..).unwrap_or_default())
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
    /// Arbitrary replies never panic the in-band steps.
    #[test]
    fn arbitrary_replies_never_panic(
        replies in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24), 0..80)
    ) {
        let mut t = FuzzBmc { replies: replies.iter() };
        let _ = read_lan(&mut t, 1);
        let mut t = FuzzBmc { replies: replies.iter() };
        let _ = ensure_user(&mut t, 1, SETUP_USER, "0123456789abcdef");
    }
}
