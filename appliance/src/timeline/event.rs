//! The boot timeline's pure parts: the steps a server goes through from its first DHCP
//! packet to its first boot from disk, the order events are shown in, the durations read
//! from them, and the attribution of events that know only a MAC or an address to a server
//! ([`Attributor`], the rule in `timeline/mod.rs`). No IO, no clock: times are inputs.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::model::MacAddr;

/// One step of a server's way from PXE to its installed OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    /// The box offered an address (and boot file) to one of the server's NICs.
    DhcpOffer,
    /// The box acknowledged an address.
    DhcpAck,
    /// A file fetched over TFTP (iPXE), with bytes and duration.
    Tftp,
    /// `/boot.ipxe`, the generic chain script.
    BootScript,
    /// `/ipxe` answered a network boot: the agent or an Environment (or refused one).
    Ipxe,
    /// `/ipxe` answered "boot from disk".
    DiskBoot,
    /// The Environment kernel fetched over HTTP, with bytes and duration.
    Kernel,
    /// The Environment initrd fetched over HTTP, with bytes and duration.
    Initrd,
    /// The agent registered the server (CreateServer).
    Registered,
    /// The agent reported its wipe done.
    Wiped,
    /// The server's first SideroLink handshake with the box.
    SiderolinkUp,
    /// The installer fetched its machine config (`/configdata`).
    ConfigFetched,
    /// Talos reported the installation done (the lifecycle's `installed`).
    Installed,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::DhcpOffer,
        Step::DhcpAck,
        Step::Tftp,
        Step::BootScript,
        Step::Ipxe,
        Step::DiskBoot,
        Step::Kernel,
        Step::Initrd,
        Step::Registered,
        Step::Wiped,
        Step::SiderolinkUp,
        Step::ConfigFetched,
        Step::Installed,
    ];

    /// The step's stable name (stored, on the wire, in `-o json`).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::DhcpOffer => "dhcp-offer",
            Step::DhcpAck => "dhcp-ack",
            Step::Tftp => "tftp",
            Step::BootScript => "boot-script",
            Step::Ipxe => "ipxe",
            Step::DiskBoot => "boot-from-disk",
            Step::Kernel => "kernel",
            Step::Initrd => "initrd",
            Step::Registered => "registered",
            Step::Wiped => "wiped",
            Step::SiderolinkUp => "siderolink-up",
            Step::ConfigFetched => "config-fetched",
            Step::Installed => "installed",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Steps of the firmware/iPXE stage that lead up to an `/ipxe` decision.
    fn leads_to_decision(self) -> bool {
        matches!(
            self,
            Step::DhcpOffer | Step::DhcpAck | Step::Tftp | Step::BootScript
        )
    }
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    /// The box said no (file not found, environment not ready, no boot file…).
    Refused,
    /// It began and did not finish (client went away, transfer timed out).
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Ok, Outcome::Refused, Outcome::Failed]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One event as the timeline holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Arrival order at the box (assigned by the store).
    pub seq: u64,
    /// When the step began, ms since the Unix epoch.
    pub time_ms: u64,
    pub step: Step,
    pub outcome: Outcome,
    /// What happened, for people: the address offered, the file, the decision, the reason.
    pub detail: String,
    pub bytes: Option<u64>,
    pub duration_ms: Option<u64>,
}

/// Sorts events for display and for the durations: by the time the step began, then by
/// arrival (a transfer is recorded when it ends but placed where it began).
pub fn order(events: &mut [Event]) {
    events.sort_by_key(|e| (e.time_ms, e.seq));
}

/// Keeps the newest `max` events by arrival (at least 1), in the given order.
pub fn bound(events: &mut Vec<Event>, max: usize) {
    let max = max.max(1);
    if events.len() <= max {
        return;
    }
    let mut seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    seqs.sort_unstable();
    let cut = seqs[seqs.len() - max];
    events.retain(|e| e.seq >= cut);
}

/// Start of the PXE boot whose `/ipxe` decision is `events[decision]` (events in
/// [`order`]): the first of the DHCP/TFTP/`/boot.ipxe` events right before it, else the
/// decision itself.
fn boot_start(events: &[Event], decision: usize) -> u64 {
    let mut start = decision;
    while start > 0 && events[start - 1].step.leads_to_decision() {
        start -= 1;
    }
    events[start].time_ms
}

/// Milliseconds from the start of the PXE boot that led to the event with sequence number
/// `seq` (a `Registered` or `Installed`, events in [`order`]) to that event: the boot
/// begins with the DHCP/TFTP/`/boot.ipxe` run before the last network-boot `/ipxe`
/// decision preceding it that a kernel fetch followed (else the last decision). None when no decision precedes it, or when the same step
/// already happened since that decision (a boot is counted once).
pub fn time_to(events: &[Event], seq: u64) -> Option<u64> {
    let at = events.iter().position(|e| e.seq == seq)?;
    let step = events[at].step;
    // The decision the client acted on: the last one followed by a kernel fetch (an
    // `/ipxe` asked meanwhile, by a person or a probe, started no boot), else the last.
    let decisions: Vec<usize> = events[..at]
        .iter()
        .enumerate()
        .filter(|(_, e)| e.step == Step::Ipxe)
        .map(|(i, _)| i)
        .collect();
    let decision = decisions
        .iter()
        .rev()
        .find(|&&d| events[d + 1..at].iter().any(|e| e.step == Step::Kernel))
        .or(decisions.last())
        .copied()?;
    if events[decision + 1..at].iter().any(|e| e.step == step) {
        return None;
    }
    Some(
        events[at]
            .time_ms
            .saturating_sub(boot_start(events, decision)),
    )
}

/// What a timeline adds up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The last registration and how long its PXE boot took to get there.
    pub registered_ms: Option<u64>,
    pub time_to_registered_ms: Option<u64>,
    /// The last installation and how long its PXE boot took.
    pub installed_ms: Option<u64>,
    pub time_to_installed_ms: Option<u64>,
    /// The first boot from disk after the last installation.
    pub first_disk_boot_ms: Option<u64>,
}

/// The summary of `events` (in [`order`]).
pub fn summary(events: &[Event]) -> Summary {
    let last = |step: Step| events.iter().rposition(|e| e.step == step);
    let mut s = Summary::default();
    if let Some(i) = last(Step::Registered) {
        s.registered_ms = Some(events[i].time_ms);
        s.time_to_registered_ms = time_to(events, events[i].seq);
    }
    if let Some(i) = last(Step::Installed) {
        s.installed_ms = Some(events[i].time_ms);
        s.time_to_installed_ms = time_to(events, events[i].seq);
        s.first_disk_boot_ms = events[i + 1..]
            .iter()
            .find(|e| e.step == Step::DiskBoot && e.outcome == Outcome::Ok)
            .map(|e| e.time_ms);
    }
    s
}

/// Where an event comes from, as far as its room knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Who {
    /// The server, when the room knows it for sure (a stored Server named by the request).
    pub server: Option<String>,
    /// The client's MAC (DHCP's chaddr, `/ipxe`'s `mac=`).
    pub mac: Option<MacAddr>,
    /// The client's address (TFTP and HTTP peers; the address a DHCP ACK gave).
    pub ip: Option<IpAddr>,
    /// A registration's NICs (the inventory the agent reported): these MACs are the
    /// server's from now on.
    pub nics: Option<Vec<MacAddr>>,
    /// `ip` is the address this box's DHCP server leased to `mac` (a server-mode ACK).
    pub leased: bool,
}

/// Whose ring an event goes to: a server's, or a client's pending ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Server(String),
    Mac(MacAddr),
    Ip(IpAddr),
}

impl Key {
    /// The store key: the server name, or `mac:<mac>` / `ip:<addr>` (server names never
    /// hold a `:`).
    pub fn store_key(&self) -> String {
        match self {
            Key::Server(s) => s.clone(),
            Key::Mac(m) => format!("mac:{m}"),
            Key::Ip(ip) => format!("ip:{ip}"),
        }
    }
}

/// Pending events move from one key to another (a client became known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub from: Key,
    pub to: Key,
}

/// Who holds an address: a MAC (`leased`: this box's DHCP leased the address to it), or a
/// server by its number in [`Attributor::names`] (what a registration tells; never a lease
/// of this box's). 8 bytes: the flag fits beside the MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Mac { mac: MacAddr, leased: bool },
    Server(u32),
}

impl Holder {
    /// The same MAC or server, leased or not.
    fn same(self, other: Holder) -> bool {
        match (self, other) {
            (Holder::Mac { mac: a, .. }, Holder::Mac { mac: b, .. }) => a == b,
            (Holder::Server(a), Holder::Server(b)) => a == b,
            _ => false,
        }
    }
}

/// What the attributor knows of one address: its holder and the low 32 bits of the number
/// it was learned under. 12 bytes: an IPv4 address's bucket is 16 bytes (20 with a separate
/// leased flag: 128 KiB more at 15,000 addresses), where an `IpAddr` key and a [`Key`] took
/// 72.
#[derive(Debug, Clone, Copy)]
struct Held {
    holder: Holder,
    learned: u32,
}

/// The addresses of one family: what each is held by, and the order they were learned in
/// (each with its learn number; an entry whose address was forgotten or learned again
/// since is stale and skipped). The oldest address is at the front: evicting it is no scan
/// of the map (with 16,384 addresses held, a scan per new address made the timeline writer
/// drop a third of a 45,000-client DHCP storm's events).
#[derive(Debug, Clone)]
struct Family<A> {
    held: HashMap<A, Held>,
    order: VecDeque<(A, u32)>,
}

impl<A: Copy + Eq + Hash> Family<A> {
    fn new() -> Family<A> {
        Family {
            held: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The learn number of the oldest live address (stale entries in front are dropped).
    fn oldest(&mut self) -> Option<u32> {
        while let Some(&(a, n)) = self.order.front() {
            if self.held.get(&a).is_some_and(|h| h.learned == n) {
                return Some(n);
            }
            self.order.pop_front();
        }
        None
    }

    /// Forgets the oldest live address (after [`Family::oldest`] found one).
    fn forget_oldest(&mut self) {
        if let Some((a, _)) = self.order.pop_front() {
            self.held.remove(&a);
        }
    }

    /// Holds `a` as the newest address. The order queue is trimmed of stale entries when
    /// it reaches `2 * bound` before it grows, so it never holds more than that.
    fn learn(&mut self, a: A, h: Held, bound: usize) {
        if self.order.len() >= 2 * bound {
            let held = &self.held;
            self.order
                .retain(|(a, n)| held.get(a).is_some_and(|h| h.learned == *n));
        }
        self.held.insert(a, h);
        self.order.push_back((a, h.learned));
    }
}

/// The attribution state: which MAC is whose NIC, which address which client holds.
#[derive(Debug, Clone)]
pub struct Attributor {
    /// Server names, each once; a server is its number here.
    names: Vec<Arc<str>>,
    numbers: HashMap<Arc<str>, u32>,
    mac_server: HashMap<MacAddr, u32>,
    /// Address → the MAC a DHCP ACK (or `/ipxe`'s `mac=`) gave it, or the server that
    /// registered from it, by family (a DHCP storm's IPv4 addresses in 20-byte buckets);
    /// at most `max_addresses` of both together, the one learned longest ago goes first.
    v4: Family<Ipv4Addr>,
    v6: Family<Ipv6Addr>,
    learned: u64,
    max_addresses: usize,
}

impl Attributor {
    /// From the stored servers' NICs; remembers at most `max_addresses` addresses.
    pub fn new(
        servers: impl IntoIterator<Item = (String, Vec<MacAddr>)>,
        max_addresses: usize,
    ) -> Attributor {
        let mut a = Attributor {
            names: Vec::new(),
            numbers: HashMap::new(),
            mac_server: HashMap::new(),
            v4: Family::new(),
            v6: Family::new(),
            learned: 0,
            max_addresses: max_addresses.max(1),
        };
        for (name, macs) in servers {
            let n = a.number(&name);
            for m in macs {
                a.mac_server.insert(m, n);
            }
        }
        a
    }

    /// The number of server `name` (given one on first sight).
    fn number(&mut self, name: &str) -> u32 {
        if let Some(&n) = self.numbers.get(name) {
            return n;
        }
        let n = u32::try_from(self.names.len()).expect("fewer than 2^32 servers");
        let name: Arc<str> = Arc::from(name);
        self.names.push(name.clone());
        self.numbers.insert(name, n);
        n
    }

    fn server(&self, n: u32) -> Key {
        Key::Server(self.names[n as usize].to_string())
    }

    fn held(&self, ip: &IpAddr) -> Option<&Held> {
        match ip {
            IpAddr::V4(a) => self.v4.held.get(a),
            IpAddr::V6(a) => self.v6.held.get(a),
        }
    }

    /// Where events of a key go now (a MAC whose server is known goes to the server).
    fn resolve(&self, key: &Key) -> Key {
        match key {
            Key::Mac(m) => match self.mac_server.get(m) {
                Some(&n) => self.server(n),
                None => key.clone(),
            },
            Key::Ip(ip) => match self.held(ip).map(|h| h.holder) {
                Some(Holder::Mac { mac, .. }) => self.resolve(&Key::Mac(mac)),
                Some(Holder::Server(n)) => self.server(n),
                None => key.clone(),
            },
            Key::Server(_) => key.clone(),
        }
    }

    /// Remembers that `ip` is held by `holder` (a MAC, leased or not by this box's DHCP, or
    /// a server); true if the holder is new.
    fn learn_ip(&mut self, ip: IpAddr, holder: Holder) -> bool {
        let known = match ip {
            IpAddr::V4(a) => self.v4.held.get_mut(&a),
            IpAddr::V6(a) => self.v6.held.get_mut(&a),
        };
        let known = match known {
            Some(h) if h.holder.same(holder) => {
                if let (
                    Holder::Mac { leased, .. },
                    Holder::Mac {
                        leased: leased_now, ..
                    },
                ) = (&mut h.holder, holder)
                {
                    *leased |= leased_now;
                }
                return false;
            }
            known => known.is_some(),
        };
        let count = self.v4.held.len() + self.v6.held.len();
        if count >= self.max_addresses && !known {
            // The live entry learned longest ago, of either family (by age: the learn
            // numbers are the low 32 bits of a counter).
            let now = self.learned as u32;
            let age = |n: Option<u32>| n.map(|n| now.wrapping_sub(n));
            match (age(self.v4.oldest()), age(self.v6.oldest())) {
                (Some(a4), Some(a6)) if a6 > a4 => self.v6.forget_oldest(),
                (Some(_), _) => self.v4.forget_oldest(),
                (None, Some(_)) => self.v6.forget_oldest(),
                (None, None) => {}
            }
        }
        self.learned += 1;
        let h = Held {
            holder,
            learned: self.learned as u32,
        };
        match ip {
            IpAddr::V4(a) => self.v4.learn(a, h, self.max_addresses),
            IpAddr::V6(a) => self.v6.learn(a, h, self.max_addresses),
        }
        true
    }

    /// Learns what `who` tells (a registration's NICs and address; an address held by a
    /// MAC) and returns the pending moves that follow, in order, and the key of the event.
    pub fn place(&mut self, who: &Who) -> (Vec<Move>, Key) {
        let mut moves = Vec::new();
        if let (Some(server), Some(nics)) = (&who.server, &who.nics) {
            let n = self.number(server);
            for &m in nics {
                if self.mac_server.get(&m) != Some(&n) {
                    self.mac_server.insert(m, n);
                    moves.push(Move {
                        from: Key::Mac(m),
                        to: Key::Server(server.clone()),
                    });
                }
            }
            // A registration speaks for its own address too (proxy DHCP: no ACK names it).
            if let Some(ip) = who.ip
                && self.learn_ip(ip, Holder::Server(n))
            {
                moves.push(Move {
                    from: Key::Ip(ip),
                    to: Key::Server(server.clone()),
                });
            }
        } else if let (Some(ip), Some(mac)) = (who.ip, who.mac) {
            // A request naming a stored server (`/ipxe?uuid=…&mac=…`) from the address this
            // box's DHCP leased to that MAC: the NIC is the server's (the lease tie; a
            // client speaks only for the MAC whose lease it holds).
            let leased_here = matches!(
                self.held(&ip),
                Some(Held { holder: Holder::Mac { mac: m, leased: true }, .. }) if *m == mac
            );
            if let Some(server) = &who.server
                && leased_here
            {
                let n = self.number(server);
                if self.mac_server.get(&mac) != Some(&n) {
                    self.mac_server.insert(mac, n);
                    moves.push(Move {
                        from: Key::Mac(mac),
                        to: Key::Server(server.clone()),
                    });
                }
            }
            if self.learn_ip(
                ip,
                Holder::Mac {
                    mac,
                    leased: who.leased,
                },
            ) {
                moves.push(Move {
                    from: Key::Ip(ip),
                    to: self.resolve(&Key::Mac(mac)),
                });
            }
        }
        let key = if let Some(s) = &who.server {
            Key::Server(s.clone())
        } else if let Some(mac) = who.mac {
            self.resolve(&Key::Mac(mac))
        } else if let Some(ip) = who.ip {
            self.resolve(&Key::Ip(ip))
        } else {
            Key::Ip(IpAddr::from([0, 0, 0, 0]))
        };
        moves.retain(|m| m.from != m.to);
        (moves, key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u64, time_ms: u64, step: Step) -> Event {
        Event {
            seq,
            time_ms,
            step,
            outcome: Outcome::Ok,
            detail: String::new(),
            bytes: None,
            duration_ms: None,
        }
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    #[test]
    fn names_round_trip() {
        for s in Step::ALL {
            assert_eq!(Step::parse(s.as_str()), Some(s));
        }
        assert_eq!(Step::parse("nope"), None);
        assert_eq!(Outcome::parse("failed"), Some(Outcome::Failed));
    }

    #[test]
    fn order_by_start_then_arrival_and_bound_by_arrival() {
        // A TFTP transfer recorded (seq 3) after the ACK that came during it (seq 2).
        let mut v = vec![ev(1, 100, Step::DhcpAck), ev(3, 150, Step::Tftp), {
            let mut e = ev(2, 150, Step::DhcpAck);
            e.detail = "renew".into();
            e
        }];
        order(&mut v);
        assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let mut v: Vec<Event> = (1..=10).map(|i| ev(i, 1000 - i, Step::Tftp)).collect();
        bound(&mut v, 3);
        assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), [8, 9, 10]);
        bound(&mut v, 0);
        assert_eq!(v.len(), 1);
    }

    /// A whole life: agent boot, install boot, disk boot.
    fn life() -> Vec<Event> {
        let steps = [
            (1_000, Step::DhcpOffer),
            (1_100, Step::DhcpAck),
            (1_200, Step::Tftp),
            (2_000, Step::DhcpOffer),
            (2_100, Step::BootScript),
            (2_200, Step::Ipxe),
            (2_300, Step::Kernel),
            (3_000, Step::Initrd),
            (9_000, Step::Registered),
            (9_500, Step::Registered), // an agent retry: counted once
            (20_000, Step::Wiped),
            // Install boot.
            (60_000, Step::DhcpOffer),
            (60_500, Step::Tftp),
            (61_000, Step::BootScript),
            (61_100, Step::Ipxe),
            (62_000, Step::Kernel),
            (63_000, Step::Initrd),
            (65_000, Step::Ipxe), // someone asked /ipxe meanwhile: no boot
            (70_000, Step::ConfigFetched),
            (71_000, Step::SiderolinkUp),
            (90_000, Step::Installed),
            (95_000, Step::DhcpOffer),
            (95_100, Step::BootScript),
            (95_200, Step::DiskBoot),
        ];
        steps
            .iter()
            .enumerate()
            .map(|(i, (t, s))| ev(i as u64 + 1, *t, *s))
            .collect()
    }

    #[test]
    fn durations_run_from_the_pxe_boot_that_led_to_the_milestone() {
        let v = life();
        // Registered: from the firmware's DHCP offer (1 000; the run of DHCP, TFTP, iPXE's
        // own DHCP and /boot.ipxe before the decision is one boot) to 9 000.
        assert_eq!(time_to(&v, 9), Some(8_000));
        assert_eq!(
            time_to(&v, 10),
            None,
            "a second registration is not counted"
        );
        // Installed: from the install boot's offer (60 000) to 90 000.
        assert_eq!(time_to(&v, 21), Some(30_000));
        // Not a milestone after a decision: none.
        assert_eq!(time_to(&v, 1), None);
        assert_eq!(time_to(&v, 99), None);
        let s = summary(&v);
        assert_eq!(s.registered_ms, Some(9_500));
        assert_eq!(s.time_to_registered_ms, None);
        assert_eq!(s.installed_ms, Some(90_000));
        assert_eq!(s.time_to_installed_ms, Some(30_000));
        assert_eq!(s.first_disk_boot_ms, Some(95_200));
        // Without the milestones nothing is claimed.
        assert_eq!(summary(&v[..8]), Summary::default());
        // A decision with nothing before it starts the boot itself.
        let v = vec![ev(1, 500, Step::Ipxe), ev(2, 800, Step::Registered)];
        assert_eq!(time_to(&v, 2), Some(300));
    }

    #[test]
    fn clients_are_pending_until_a_registration_names_their_nic() {
        let known = mac(9);
        let mut a = Attributor::new([("old".to_string(), vec![known])], 2);
        let ip = |n: u8| IpAddr::from([10, 0, 0, n]);
        // A known NIC goes straight to its server.
        let (m, k) = a.place(&Who {
            mac: Some(known),
            ..Default::default()
        });
        assert!(m.is_empty());
        assert_eq!(k, Key::Server("old".into()));
        // An unknown client: TFTP before any ACK is kept under its address…
        let (_, k) = a.place(&Who {
            ip: Some(ip(5)),
            ..Default::default()
        });
        assert_eq!(k, Key::Ip(ip(5)));
        // …the ACK ties the address to a MAC: its events move there.
        let (m, k) = a.place(&Who {
            mac: Some(mac(1)),
            ip: Some(ip(5)),
            ..Default::default()
        });
        assert_eq!(
            m,
            [Move {
                from: Key::Ip(ip(5)),
                to: Key::Mac(mac(1))
            }]
        );
        assert_eq!(k, Key::Mac(mac(1)));
        // Later address-only events go under the MAC.
        let (m, k) = a.place(&Who {
            ip: Some(ip(5)),
            ..Default::default()
        });
        assert!(m.is_empty());
        assert_eq!(k, Key::Mac(mac(1)));
        // The registration names the NIC: MAC and address move to the server.
        let (m, k) = a.place(&Who {
            server: Some("s1".into()),
            ip: Some(ip(5)),
            nics: Some(vec![mac(1), mac(2)]),
            ..Default::default()
        });
        assert_eq!(
            m,
            [
                Move {
                    from: Key::Mac(mac(1)),
                    to: Key::Server("s1".into())
                },
                Move {
                    from: Key::Mac(mac(2)),
                    to: Key::Server("s1".into())
                },
                Move {
                    from: Key::Ip(ip(5)),
                    to: Key::Server("s1".into())
                },
            ]
        );
        assert_eq!(k, Key::Server("s1".into()));
        // From now on the NIC's and the address's events are the server's.
        for who in [
            Who {
                mac: Some(mac(2)),
                ..Default::default()
            },
            Who {
                ip: Some(ip(5)),
                ..Default::default()
            },
        ] {
            assert_eq!(a.place(&who).1, Key::Server("s1".into()));
        }
        // A registration repeated moves nothing.
        let (m, _) = a.place(&Who {
            server: Some("s1".into()),
            nics: Some(vec![mac(1)]),
            ..Default::default()
        });
        assert!(m.is_empty());
        // Addresses are bounded: the oldest pair goes.
        a.place(&Who {
            mac: Some(mac(3)),
            ip: Some(ip(6)),
            ..Default::default()
        });
        a.place(&Who {
            mac: Some(mac(4)),
            ip: Some(ip(7)),
            ..Default::default()
        });
        assert_eq!(
            a.place(&Who {
                ip: Some(ip(5)),
                ..Default::default()
            })
            .1,
            Key::Ip(ip(5))
        );
        // The lease tie: a stored server's /ipxe from the address this box leased to a MAC
        // makes the MAC the server's; the same request without that lease does not.
        let mut a = Attributor::new(Vec::new(), 8);
        let ipxe = |m: MacAddr, from: IpAddr| Who {
            server: Some("s2".into()),
            mac: Some(m),
            ip: Some(from),
            ..Default::default()
        };
        assert_eq!(a.place(&ipxe(mac(6), ip(9))).1, Key::Server("s2".into()));
        assert_eq!(
            a.place(&Who {
                mac: Some(mac(6)),
                ..Default::default()
            })
            .1,
            Key::Mac(mac(6)),
            "an /ipxe without this box's lease ties nothing"
        );
        a.place(&Who {
            mac: Some(mac(5)),
            ip: Some(ip(8)),
            leased: true,
            ..Default::default()
        });
        let (m, k) = a.place(&ipxe(mac(5), ip(8)));
        assert_eq!(k, Key::Server("s2".into()));
        assert_eq!(
            m,
            [Move {
                from: Key::Mac(mac(5)),
                to: Key::Server("s2".into())
            }]
        );
        for who in [
            Who {
                mac: Some(mac(5)),
                ..Default::default()
            },
            Who {
                ip: Some(ip(8)),
                ..Default::default()
            },
        ] {
            assert_eq!(a.place(&who).1, Key::Server("s2".into()));
        }
        // Claiming another client's MAC from an address leased to a third one ties nothing.
        let (m, _) = a.place(&ipxe(mac(6), ip(8)));
        assert!(!m.iter().any(|m| m.from == Key::Mac(mac(6))), "{m:?}");
        assert_eq!(
            Key::Mac(mac(1)).store_key(),
            "mac:52:54:00:00:00:01".to_string()
        );
    }

    /// The bound keeps the addresses learned last, whatever was learned again in between:
    /// an address given to a new holder counts as new (its old place in the order is
    /// stale), one confirmed by the same holder keeps its place; the order queue stays
    /// within twice the bound.
    #[test]
    fn the_addresses_learned_last_are_kept_and_relearning_moves_one_to_the_back() {
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        let mac = |i: u32| MacAddr([0x52, 0x54, 0, 0, (i >> 8) as u8, i as u8]);
        let learn = |a: &mut Attributor, i: u32, m: u32| {
            a.place(&Who {
                mac: Some(mac(m)),
                ip: Some(ip(i)),
                leased: true,
                ..Default::default()
            })
        };
        let held = |a: &Attributor, i: u32| a.held(&ip(i)).is_some();
        let mut a = Attributor::new(Vec::new(), 3);
        for i in 1..=3 {
            learn(&mut a, i, i);
        }
        learn(&mut a, 1, 9); // a new holder: address 1 is now the newest
        learn(&mut a, 2, 2); // the same holder: address 2 keeps its place (oldest)
        learn(&mut a, 4, 4);
        assert!(!held(&a, 2) && held(&a, 1) && held(&a, 3) && held(&a, 4));
        learn(&mut a, 5, 5);
        assert!(!held(&a, 3) && held(&a, 1) && held(&a, 4) && held(&a, 5));
        // Many re-learnings: the queue is trimmed, the bound and the order still hold.
        for round in 0..50 {
            learn(&mut a, 1, 100 + round);
        }
        assert!(
            a.v4.order.len() <= 6,
            "order queue {} long",
            a.v4.order.len()
        );
        learn(&mut a, 6, 6);
        learn(&mut a, 7, 7);
        assert_eq!(a.v4.held.len(), 3);
        assert!(
            held(&a, 1) && held(&a, 6) && held(&a, 7),
            "1 was learned after 4 and 5"
        );
    }

    /// IPv4 and IPv6 addresses share the one bound: the oldest of either goes first.
    #[test]
    fn both_families_share_the_bound_oldest_first() {
        let v4 = |i: u8| IpAddr::from([10, 0, 0, i]);
        let v6 = |i: u16| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, i]);
        let mut a = Attributor::new(Vec::new(), 3);
        for (i, ip) in [v4(1), v6(1), v4(2)].into_iter().enumerate() {
            a.place(&Who {
                mac: Some(mac(i as u8)),
                ip: Some(ip),
                ..Default::default()
            });
        }
        a.place(&Who {
            mac: Some(mac(10)),
            ip: Some(v6(2)),
            ..Default::default()
        });
        assert!(a.held(&v4(1)).is_none(), "the oldest, IPv4, went");
        a.place(&Who {
            mac: Some(mac(11)),
            ip: Some(v4(3)),
            ..Default::default()
        });
        assert!(a.held(&v6(1)).is_none(), "then the oldest, IPv6, went");
        for ip in [v4(2), v6(2), v4(3)] {
            assert!(a.held(&ip).is_some(), "{ip} is held");
        }
        // A registered server's address resolves to it by name.
        a.place(&Who {
            server: Some("s9".into()),
            ip: Some(v6(3)),
            nics: Some(vec![mac(12)]),
            ..Default::default()
        });
        let by_ip = Who {
            ip: Some(v6(3)),
            ..Default::default()
        };
        assert_eq!(a.place(&by_ip).1, Key::Server("s9".into()));
        // What a storm fills: an IPv4 address's bucket stays 16 bytes.
        assert_eq!(std::mem::size_of::<(Ipv4Addr, Held)>(), 16);
    }
}
