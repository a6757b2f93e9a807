//! The DHCPv6 client side, sans-IO, for the agent (busybox-static has no DHCPv6 client):
//! Solicit → Advertise → Request → Reply for one IA_NA (RFC 8415 §18.2), with the client's
//! DUID-LL made from its MAC (so the box's lease names the NIC's MAC, as the agent API's lease
//! check wants). Replies are read by `wire::parse`, the server's parser (one parser).
//!
//! [`Client::message`] is what to (re)send now; [`Client::receive`] takes a datagram and says
//! what it changed. Retransmission timing, sockets and configuring the address are the
//! glue's (`agent/dhcp6.rs`). Pure: no IO, no clock.

use std::net::Ipv6Addr;

use super::wire::{self, DropReason, Out};

/// Option 8: elapsed time in hundredths of a second.
const OPT_ELAPSED_TIME: u16 = 8;

/// The address the box bound to this client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub addr: Ipv6Addr,
    /// The server's DUID (option 2).
    pub server_id: Vec<u8>,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub dns: Vec<Ipv6Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Soliciting,
    Requesting { server_id: Vec<u8>, addr: Ipv6Addr },
    Bound(Binding),
}

/// What a received datagram did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An Advertise offered `addr`: the next message is a Request for it.
    Advertised { addr: Ipv6Addr },
    /// The Reply bound the address.
    Bound(Binding),
    /// The server refused the Request (status code and message): soliciting again.
    Refused(String),
}

/// A client of one IA_NA on one interface.
#[derive(Debug, Clone)]
pub struct Client {
    duid: Vec<u8>,
    iaid: u32,
    xid: [u8; 3],
    state: State,
}

/// DUID-LL (RFC 8415 §11.4): type 3, hardware type 1 (Ethernet), the MAC.
pub fn duid_ll(mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac);
    d
}

impl Client {
    /// A client for the NIC with `mac`; `iaid` names its IA_NA and `xid` the first exchange
    /// (the glue draws both at random; the xid changes with each new exchange).
    pub fn new(mac: [u8; 6], iaid: u32, xid: [u8; 3]) -> Client {
        Client {
            duid: duid_ll(mac),
            iaid,
            xid,
            state: State::Soliciting,
        }
    }

    pub fn duid(&self) -> &[u8] {
        &self.duid
    }

    /// The binding, once a Reply gave one.
    pub fn binding(&self) -> Option<&Binding> {
        match &self.state {
            State::Bound(b) => Some(b),
            _ => None,
        }
    }

    /// The message to send now (a Solicit or a Request; none once bound), `elapsed_cs`
    /// hundredths of a second into the exchange.
    pub fn message(&self, elapsed_cs: u16) -> Option<Vec<u8>> {
        let (msg_type, request) = match &self.state {
            State::Soliciting => (wire::SOLICIT, None),
            State::Requesting { server_id, addr } => (wire::REQUEST, Some((server_id, *addr))),
            State::Bound(_) => return None,
        };
        let mut out = Out::new(msg_type, self.xid);
        out.opt(wire::OPT_CLIENTID, &self.duid);
        if let Some((server_id, _)) = request {
            out.opt(wire::OPT_SERVERID, server_id);
        }
        out.opt(OPT_ELAPSED_TIME, &elapsed_cs.to_be_bytes());
        out.opt(wire::OPT_ORO, &wire::OPT_DNS_SERVERS.to_be_bytes());
        let inner = request
            .map(|(_, addr)| wire::iaaddr(addr, 0, 0))
            .unwrap_or_default();
        out.opt(wire::OPT_IA_NA, &wire::ia_na(self.iaid, 0, 0, &inner));
        Some(out.into_bytes())
    }

    /// Takes one datagram from a server. Anything not an answer to the current message
    /// (other transaction, other client, no usable address) is an `Err` and changes nothing.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Event, DropReason> {
        let m = wire::parse(bytes)?;
        if m.xid != self.xid {
            return Err(DropReason::Ignored("another transaction"));
        }
        if m.client_id.as_deref() != Some(self.duid.as_slice()) {
            return Err(DropReason::Ignored("for another client"));
        }
        let server_id = m
            .server_id
            .clone()
            .ok_or_else(|| DropReason::Malformed("no server identifier".into()))?;
        let ia = m.ia_na.iter().find(|ia| ia.iaid == self.iaid);
        let refused = |what: &str, code: Option<u16>| {
            format!(
                "{what} (status {})",
                code.map_or("none".to_string(), |c| c.to_string())
            )
        };
        match (&self.state, m.msg_type) {
            (State::Soliciting, wire::ADVERTISE) => {
                if m.status.is_some_and(|s| s != wire::STATUS_SUCCESS) {
                    return Err(DropReason::Ignored("advertise with an error status"));
                }
                let Some(addr) = ia
                    .filter(|ia| ia.status.is_none_or(|s| s == wire::STATUS_SUCCESS))
                    .and_then(|ia| ia.addrs.first().copied())
                else {
                    return Err(DropReason::Ignored("advertise without an address"));
                };
                self.state = State::Requesting { server_id, addr };
                self.next_xid();
                Ok(Event::Advertised { addr })
            }
            (
                State::Requesting {
                    server_id: want,
                    addr,
                },
                wire::REPLY,
            ) => {
                if *want != server_id {
                    return Err(DropReason::OtherServer);
                }
                let addr = *addr;
                let bound = ia
                    .filter(|ia| ia.status.is_none_or(|s| s == wire::STATUS_SUCCESS))
                    .and_then(|ia| {
                        ia.addrs
                            .iter()
                            .zip(&ia.lifetimes)
                            .find(|(a, (_, valid))| **a == addr && *valid > 0)
                    });
                let top_ok = m.status.is_none_or(|s| s == wire::STATUS_SUCCESS);
                match bound {
                    Some((_, (preferred, valid))) if top_ok => {
                        let b = Binding {
                            addr,
                            server_id,
                            preferred_secs: *preferred,
                            valid_secs: *valid,
                            dns: m.dns.clone(),
                        };
                        self.state = State::Bound(b.clone());
                        Ok(Event::Bound(b))
                    }
                    _ => {
                        let code = if top_ok {
                            ia.and_then(|ia| ia.status)
                        } else {
                            m.status
                        };
                        self.state = State::Soliciting;
                        self.next_xid();
                        Ok(Event::Refused(refused(
                            &format!("the Request for {addr} was not granted"),
                            code,
                        )))
                    }
                }
            }
            _ => Err(DropReason::Ignored("not an answer to the current message")),
        }
    }

    /// A new exchange gets a new transaction id (derived, so the core stays pure).
    fn next_xid(&mut self) {
        let x = u32::from_be_bytes([0, self.xid[0], self.xid[1], self.xid[2]]);
        let x = x.wrapping_mul(2_654_435_761).wrapping_add(1) & 0x00ff_ffff;
        let b = x.to_be_bytes();
        self.xid = [b[1], b[2], b[3]];
    }
}
