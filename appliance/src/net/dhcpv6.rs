//! IPv6 provisioning glue: the DHCPv6 server (`protocol::dhcpv6`) on udp/547 of the
//! provisioning interface (joined to ff02::1:2) and router advertisements from a raw ICMPv6
//! socket (every `dhcpv6.ra_interval_secs` to ff02::1, and at once to a router
//! solicitation, at most one a second). Needs CAP_NET_RAW for the advertisements (the
//! service runs without them, with a warning).
//!
//! A reply whose decision changes leases is sent only after the store committed them.
//! Offers and acks go to the boot timeline under the MAC inside the client's DUID.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::clock::WallClock;
use crate::config::Config;
use crate::error_chain;
use crate::model::MacAddr;
use crate::net::iface;
use crate::protocol::dhcp::arch_name;
use crate::protocol::dhcpv6::ra::{self, Advert};
use crate::protocol::dhcpv6::wire;
use crate::protocol::dhcpv6::{self, Dhcpv6Server, duid_mac};
use crate::store::{Store, StoreError};
use crate::timeline::Recorder;
use crate::timeline::event::{Outcome, Step, Who};

/// All DHCPv6 servers and relay agents (RFC 8415 §7.1).
const ALL_DHCP: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

#[derive(Debug, thiserror::Error)]
pub enum Dhcpv6StartError {
    #[error(transparent)]
    Config(#[from] dhcpv6::ConfigError),
    #[error("dhcpv6: {0}")]
    Setting(String),
    #[error("dhcpv6: interface {interface}: {message}")]
    Interface { interface: String, message: String },
    #[error("dhcpv6: cannot bind udp/{port} on {interface}")]
    Bind {
        port: u16,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dhcpv6: cannot load leases")]
    Store(#[from] StoreError),
}

/// The bound service, ready to run.
#[derive(Debug)]
pub struct Dhcpv6Service {
    pub interface: String,
    pub address: Ipv6Addr,
    core: Dhcpv6Server,
    udp: UdpSocket,
    ra: Option<(UdpSocket, u32)>,
    advert: Vec<u8>,
    interval: Duration,
    store: Store,
    timeline: Recorder,
    /// Lease time for every expiry.
    clock: WallClock,
}

fn interface_error(interface: &str, message: impl Into<String>) -> Dhcpv6StartError {
    Dhcpv6StartError::Interface {
        interface: interface.to_string(),
        message: message.into(),
    }
}

/// The box's address inside `prefix/len` on `name`.
fn address_in(name: &str, prefix: Ipv6Addr, len: u8) -> Result<Ipv6Addr, Dhcpv6StartError> {
    let m = u128::MAX << (128 - u32::from(len));
    let list = if_addrs::get_if_addrs()
        .map_err(|e| interface_error(name, format!("cannot list addresses: {e}")))?;
    list.iter()
        .filter(|i| i.name == name)
        .find_map(|i| match &i.addr {
            if_addrs::IfAddr::V6(a) if u128::from(a.ip) & m == u128::from(prefix) & m => Some(a.ip),
            _ => None,
        })
        .ok_or_else(|| {
            interface_error(
                name,
                format!("no IPv6 address inside {prefix}/{len} (boot URLs need one)"),
            )
        })
}

fn sys_value(name: &str, file: &str) -> Result<String, Dhcpv6StartError> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/{file}"))
        .map(|s| s.trim().to_string())
        .map_err(|e| interface_error(name, format!("cannot read {file}: {e}")))
}

/// Starts the service when `[dhcpv6] enabled`; `Ok(None)` when it is off. Every expiry is
/// on `clock`'s lease time; loaded leases follow the restart rule
/// (`Dhcpv6Server::restarted`, see `crate::clock::WallClock`).
pub async fn start(
    config: &Config,
    store: Store,
    clock: WallClock,
) -> Result<Option<Dhcpv6Service>, Dhcpv6StartError> {
    let c = &config.dhcpv6;
    if !c.enabled {
        return Ok(None);
    }
    // A named interface is taken as named (an IPv6-only segment has no IPv4 address);
    // "auto" means the v4 rule (the first up interface with an IPv4 address).
    let name = if !c.interface.is_empty() {
        c.interface.clone()
    } else if config.interface != "auto" {
        config.interface.clone()
    } else {
        iface::find(&config.interface)
            .map_err(|e| Dhcpv6StartError::Setting(error_chain(&e)))?
            .name
    };
    let (prefix, len) = c.prefix().map_err(Dhcpv6StartError::Setting)?;
    let address = address_in(&name, prefix, len)?;
    let mac: Option<[u8; 6]> = sys_value(&name, "address")?
        .parse::<MacAddr>()
        .ok()
        .map(|m| m.0);
    let index: u32 = sys_value(&name, "ifindex")?
        .parse()
        .map_err(|_| interface_error(&name, "unreadable ifindex"))?;
    let mut server_duid = vec![0, 3, 0, 1];
    server_duid.extend_from_slice(&mac.unwrap_or([2, 0, 0, 0, 0, 1]));
    let (Some(pool_start), Some(pool_end)) = (c.range_start, c.range_end) else {
        return Err(Dhcpv6StartError::Setting("no range configured".into()));
    };
    let core_cfg = dhcpv6::Config {
        server_duid,
        server_ip: address,
        prefix,
        prefix_len: len,
        pool_start,
        pool_end,
        preferred_secs: c.preferred_secs,
        valid_secs: c.valid_secs,
        dns: c.dns.clone(),
        boot: crate::net::dhcp::boot_config(config),
        boot_file_params: c.boot_file_params.clone(),
        decline_hold_secs: config.dhcp.decline_hold_secs,
    };
    let leases = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.dhcpv6_leases())
            .await
            .map_err(|e| Dhcpv6StartError::Setting(format!("lease load: {e}")))??
    };
    let (core, clamped) = Dhcpv6Server::restarted(core_cfg, leases, clock.steady_secs())?;
    if clamped > 0 {
        tracing::warn!(
            clamped,
            "dhcpv6: leases ending more than {} s from now (the wall clock was set back since \
             they were written) end {} s from now",
            core.config().longest_secs(),
            core.config().longest_secs()
        );
    }
    let bind_err = |source: std::io::Error| Dhcpv6StartError::Bind {
        port: c.listen_port,
        interface: name.clone(),
        source,
    };
    let udp = (|| -> std::io::Result<UdpSocket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.bind_device(Some(name.as_bytes()))?;
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, c.listen_port)).into())?;
        s.join_multicast_v6(&ALL_DHCP, index)?;
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s.into())
    })()
    .map_err(bind_err)?;
    let ra = if c.ra_interval_secs == 0 {
        None
    } else {
        match ra_socket(&name, index) {
            Ok(s) => Some((s, index)),
            Err(e) => {
                tracing::warn!(interface = %name, error = %e,
                    "dhcpv6: cannot open the ICMPv6 socket (needs CAP_NET_RAW): no router advertisements");
                None
            }
        }
    };
    let advert = ra::build(&Advert {
        prefix,
        prefix_len: len,
        router_lifetime_secs: c.ra_router_lifetime_secs,
        valid_secs: c.valid_secs,
        preferred_secs: c.preferred_secs,
        mac,
    });
    tracing::info!(interface = %name, %address, prefix = %c.prefix,
        range = %format!("{pool_start}-{pool_end}"), router_advertisements = ra.is_some(),
        "dhcpv6 serving");
    Ok(Some(Dhcpv6Service {
        interface: name,
        address,
        core,
        udp,
        ra,
        advert,
        interval: Duration::from_secs(c.ra_interval_secs.max(1)),
        store,
        timeline: Recorder::off(),
        clock,
    }))
}

/// A raw ICMPv6 socket on `name` that sends with hop limit 255 (RFC 4861 §6.1.2) and hears
/// solicitations to ff02::2. Read and written through tokio's UdpSocket, whose
/// `send_to`/`recv_from` are the same system calls.
fn ra_socket(name: &str, index: u32) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    s.bind_device(Some(name.as_bytes()))?;
    s.set_multicast_hops_v6(255)?;
    s.set_unicast_hops_v6(255)?;
    s.set_multicast_if_v6(index)?;
    s.set_multicast_loop_v6(false)?;
    s.join_multicast_v6(&ALL_ROUTERS, index)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

impl Dhcpv6Service {
    /// Records offers and acks in the boot timeline.
    pub fn record_to(&mut self, timeline: Recorder) {
        self.timeline = timeline;
    }

    /// Serves until `shutdown` turns true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let Dhcpv6Service {
            mut core,
            udp,
            ra,
            advert,
            interval,
            store,
            timeline,
            clock,
            ..
        } = self;
        let advert = Arc::new(advert);
        let ra_loop = async {
            let Some((sock, index)) = &ra else { return };
            let to = SocketAddr::V6(SocketAddrV6::new(ALL_NODES, 0, 0, *index));
            let mut tick = tokio::time::interval(interval);
            let mut shutdown = shutdown.clone();
            let mut buf = [0u8; 1500];
            let mut last = tokio::time::Instant::now() - Duration::from_secs(10);
            loop {
                let send = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    _ = tick.tick() => true,
                    got = sock.recv_from(&mut buf) => match got {
                        Ok((n, _)) => ra::is_solicitation(&buf[..n])
                            && last.elapsed() >= Duration::from_secs(1),
                        Err(e) => {
                            tracing::debug!(error = %e, "dhcpv6: ICMPv6 receive failed");
                            false
                        }
                    },
                };
                if send {
                    last = tokio::time::Instant::now();
                    if let Err(e) = sock.send_to(&advert, to).await {
                        tracing::debug!(error = %e, "dhcpv6: router advertisement not sent");
                    }
                }
            }
        };
        let dhcp_loop = async {
            let mut shutdown = shutdown.clone();
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, src) = tokio::select! {
                    _ = shutdown.wait_for(|s| *s) => break,
                    got = udp.recv_from(&mut buf) => match got {
                        Ok(x) => x,
                        Err(e) => {
                            tracing::debug!(error = %e, "dhcpv6: receive failed");
                            continue;
                        }
                    },
                };
                let decision = match core.handle(clock.steady_secs(), &buf[..n]) {
                    Ok(d) => d,
                    Err(reason) => {
                        tracing::debug!(%src, %reason, "dhcpv6: dropped");
                        continue;
                    }
                };
                if let Some(arch) = decision.no_boot_file {
                    tracing::info!(%src, arch, name = arch_name(arch),
                        "dhcpv6: no boot file for client architecture {arch} ({}): address only",
                        arch_name(arch));
                }
                if !decision.changes.is_empty() {
                    let store = store.clone();
                    let changes = decision.changes.clone();
                    let committed =
                        tokio::task::spawn_blocking(move || store.commit_lease6_changes(&changes))
                            .await;
                    match committed {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(error = %error_chain(&e), "dhcpv6: lease commit failed; no reply");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "dhcpv6: lease commit failed; no reply");
                            continue;
                        }
                    }
                }
                let Some(reply) = decision.reply.as_ref() else {
                    continue;
                };
                let client = wire::parse(&buf[..n]).ok();
                let mac = client
                    .as_ref()
                    .and_then(|m| m.client_id.as_deref())
                    .and_then(duid_mac);
                tracing::debug!(%src, reply = decision.reply_type, addrs = ?decision.addrs,
                    boot_url = decision.boot_url.as_deref().unwrap_or("-"), "dhcpv6: reply");
                record(&timeline, &decision, mac, client.as_ref());
                if let Err(e) = udp.send_to(reply, src).await {
                    tracing::debug!(%src, error = %e, "dhcpv6: send failed");
                }
            }
        };
        tokio::join!(ra_loop, dhcp_loop);
        tracing::info!("dhcpv6 stopped");
    }
}

/// An Advertise or a binding Reply in the boot timeline, under the client's MAC.
fn record(
    t: &Recorder,
    d: &dhcpv6::Decision,
    mac: Option<[u8; 6]>,
    client: Option<&wire::Message>,
) {
    let Some(&addr) = d.addrs.first() else { return };
    let step = match (d.reply_type, d.changes.is_empty()) {
        (wire::ADVERTISE, _) => Step::DhcpOffer,
        (wire::REPLY, false) => Step::DhcpAck,
        _ => return,
    };
    let who = Who {
        mac: mac.map(MacAddr),
        ip: (step == Step::DhcpAck).then_some(IpAddr::V6(addr)),
        leased: step == Step::DhcpAck,
        ..Default::default()
    };
    let mut detail = format!("{addr} (DHCPv6)");
    if let Some(url) = &d.boot_url {
        detail.push_str(&format!(", boot file {url}"));
    }
    if let Some(class) = client.and_then(|m| m.vendor_class.as_deref()) {
        let class: String = class.escape_ascii().to_string().chars().take(64).collect();
        detail.push_str(&format!("; client {class}"));
    }
    t.record(who, step, Outcome::Ok, detail);
}
