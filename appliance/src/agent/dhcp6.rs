//! `appliance agent --dhcp6 IFACE`: the agent initramfs's DHCPv6 client (busybox-static has
//! none), the glue around `protocol::dhcpv6::client`. On IFACE it waits for a usable
//! link-local address, runs Solicit → Advertise → Request → Reply from udp/546 to
//! `ff02::1:2`, adds the bound address (`ip -6 addr add ADDR/128`, busybox's `ip`), waits for
//! duplicate address detection, and for the on-link prefix route the kernel installs from the
//! box's router advertisement (the box's RA carries the prefix; the address itself comes with
//! no prefix length). Prints one `AGENT-LEASE6` line for the console log and exits; like
//! `udhcpc -q` it does not stay to renew (a valid lifetime of an hour outlasts an agent boot).

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use thiserror::Error;

use crate::clock;
use crate::protocol::dhcpv6::client::{Binding, Client, Event};

/// How long the whole exchange may take before the agent gives up.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the link-local address, DAD and the RA route.
const LINK_WAIT: Duration = Duration::from_secs(15);
/// First retransmission timeout (RFC 8415 SOL_TIMEOUT/REQ_TIMEOUT), doubled up to the cap.
const FIRST_RT: Duration = Duration::from_secs(1);
const MAX_RT: Duration = Duration::from_secs(8);

const IFA_F_TENTATIVE: u32 = 0x40;
const IFA_F_DADFAILED: u32 = 0x08;

#[derive(Debug, Error)]
pub enum Dhcp6Error {
    #[error("no interface {0}")]
    NoInterface(String),
    #[error("{iface} has no usable link-local address after {secs} s")]
    NoLinkLocal { iface: String, secs: u64 },
    #[error("DHCPv6 socket on {iface}")]
    Socket {
        iface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no DHCPv6 server bound an address on {iface} within {secs} s")]
    Timeout { iface: String, secs: u64 },
    #[error("`ip -6 addr add {addr}/128 dev {iface}` failed: {message}")]
    AddAddress {
        addr: Ipv6Addr,
        iface: String,
        message: String,
    },
    #[error("duplicate address detection failed for {0}: another host uses it")]
    Duplicate(Ipv6Addr),
}

/// One interface address line of `/proc/net/if_inet6`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct IfAddr6 {
    addr: Ipv6Addr,
    ifindex: u32,
    flags: u32,
    name: String,
}

fn if_inet6(text: &str) -> Vec<IfAddr6> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 6 || f[0].len() != 32 {
                return None;
            }
            Some(IfAddr6 {
                addr: Ipv6Addr::from(u128::from_str_radix(f[0], 16).ok()?),
                ifindex: u32::from_str_radix(f[1], 16).ok()?,
                flags: u32::from_str_radix(f[4], 16).ok()?,
                name: f[5].to_string(),
            })
        })
        .collect()
}

/// Whether `/proc/net/ipv6_route` has an on-link route on `iface` (no next hop) covering
/// `addr` with a prefix shorter than /128: the prefix the kernel took from an RA.
fn on_link_route(text: &str, iface: &str, addr: Ipv6Addr) -> Option<(Ipv6Addr, u8)> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 || f[9] != iface {
            return None;
        }
        let dest = u128::from_str_radix(f[0], 16).ok()?;
        let len = u8::from_str_radix(f[1], 16).ok()?;
        let next_hop = u128::from_str_radix(f[4], 16).ok()?;
        if len == 0 || len >= 128 || next_hop != 0 {
            return None;
        }
        let mask = u128::MAX << (128 - u32::from(len));
        (u128::from(addr) & mask == dest & mask).then(|| (Ipv6Addr::from(dest), len))
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn mac_of(iface: &str) -> Option<[u8; 6]> {
    let text = read(&format!("/sys/class/net/{iface}/address"));
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// Polls `f` every 100 ms for up to `LINK_WAIT`.
async fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = clock::now() + LINK_WAIT;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if clock::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The xid and IAID only tell exchanges apart; a failed random source leaves zeros.
    let _ = getrandom::fill(&mut b);
    b
}

/// Runs the client on `iface` until the address is configured; returns the binding.
pub async fn run(iface: &str) -> Result<Binding, Dhcp6Error> {
    let mac = mac_of(iface).ok_or_else(|| Dhcp6Error::NoInterface(iface.to_string()))?;
    let _ = tokio::process::Command::new("ip")
        .args(["link", "set", iface, "up"])
        .status()
        .await;
    let secs = LINK_WAIT.as_secs();
    let link_local = wait_until(|| {
        if_inet6(&read("/proc/net/if_inet6")).into_iter().find(|a| {
            a.name == iface
                && a.addr.is_unicast_link_local()
                && a.flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED) == 0
        })
    })
    .await
    .ok_or_else(|| Dhcp6Error::NoLinkLocal {
        iface: iface.to_string(),
        secs,
    })?;
    let socket_err = |source| Dhcp6Error::Socket {
        iface: iface.to_string(),
        source,
    };
    let socket = bind(link_local.addr, link_local.ifindex).map_err(socket_err)?;
    let to = SocketAddrV6::new(
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2),
        547,
        0,
        link_local.ifindex,
    );
    let iaid = u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]]);
    let mut client = Client::new(mac, iaid, random());
    let started = clock::now();
    let deadline = started + EXCHANGE_TIMEOUT;
    let mut exchange_start = started;
    let mut rt = FIRST_RT;
    let mut buf = vec![0u8; 1500];
    let binding = 'exchange: loop {
        let elapsed_cs =
            u16::try_from(exchange_start.elapsed().as_millis() / 10).unwrap_or(u16::MAX);
        let Some(msg) = client.message(elapsed_cs) else {
            break client.binding().cloned().expect("bound");
        };
        if let Err(e) = socket.send_to(&msg, to).await {
            tracing::warn!("dhcp6: send on {iface}: {e}");
        }
        let wait_until = (clock::now() + rt).min(deadline);
        loop {
            let left = wait_until.saturating_duration_since(clock::now());
            if left.is_zero() {
                break;
            }
            let Ok(got) = tokio::time::timeout(left, socket.recv_from(&mut buf)).await else {
                break;
            };
            let (n, from) = got.map_err(socket_err)?;
            match client.receive(&buf[..n]) {
                Ok(Event::Advertised { addr }) => {
                    tracing::info!("dhcp6: {from} advertised {addr}; requesting it");
                    exchange_start = clock::now();
                    rt = FIRST_RT;
                    continue 'exchange;
                }
                Ok(Event::Bound(b)) => break 'exchange b,
                Ok(Event::Refused(why)) => {
                    tracing::warn!("dhcp6: {from}: {why}; soliciting again");
                    exchange_start = clock::now();
                    rt = FIRST_RT;
                    continue 'exchange;
                }
                Err(e) => tracing::debug!("dhcp6: ignored {n} bytes from {from}: {e}"),
            }
        }
        if clock::now() >= deadline {
            return Err(Dhcp6Error::Timeout {
                iface: iface.to_string(),
                secs: EXCHANGE_TIMEOUT.as_secs(),
            });
        }
        rt = (rt * 2).min(MAX_RT);
    };
    configure(iface, &binding).await?;
    Ok(binding)
}

fn bind(link_local: Ipv6Addr, ifindex: u32) -> std::io::Result<tokio::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_multicast_if_v6(ifindex)?;
    s.set_multicast_hops_v6(1)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV6::new(link_local, 546, 0, ifindex).into())?;
    tokio::net::UdpSocket::from_std(s.into())
}

/// Adds the address, waits for DAD, then for the RA's on-link route, and writes the DNS
/// servers to /etc/resolv.conf.
async fn configure(iface: &str, b: &Binding) -> Result<(), Dhcp6Error> {
    let out = tokio::process::Command::new("ip")
        .args([
            "-6",
            "addr",
            "add",
            &format!("{}/128", b.addr),
            "dev",
            iface,
        ])
        .output()
        .await
        .map_err(|e| Dhcp6Error::AddAddress {
            addr: b.addr,
            iface: iface.to_string(),
            message: e.to_string(),
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Already there (a second run) is fine.
    if !out.status.success() && !stderr.contains("exists") {
        return Err(Dhcp6Error::AddAddress {
            addr: b.addr,
            iface: iface.to_string(),
            message: stderr.trim().to_string(),
        });
    }
    let state = wait_until(|| {
        if_inet6(&read("/proc/net/if_inet6"))
            .into_iter()
            .find(|a| a.addr == b.addr && a.name == iface)
            .and_then(|a| {
                if a.flags & IFA_F_DADFAILED != 0 {
                    Some(false)
                } else {
                    (a.flags & IFA_F_TENTATIVE == 0).then_some(true)
                }
            })
    })
    .await;
    if state == Some(false) {
        return Err(Dhcp6Error::Duplicate(b.addr));
    }
    match wait_until(|| on_link_route(&read("/proc/net/ipv6_route"), iface, b.addr)).await {
        Some((prefix, len)) => {
            tracing::info!("dhcp6: {prefix}/{len} on-link from the router advertisement")
        }
        None => tracing::warn!(
            "dhcp6: no on-link route covering {} on {iface} (no router advertisement with its prefix): only the address itself is reachable",
            b.addr
        ),
    }
    Ok(())
}
