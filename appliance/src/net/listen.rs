//! Opening the box's listening sockets, TCP (the :8081 and admin listeners, `http/listener.rs`)
//! and UDP (TFTP, `net/tftp.rs`), by one rule: the unspecified IPv6 address `[::]` is one
//! dual-stack socket (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says) serving IPv4 and
//! IPv6 clients, falling back to `0.0.0.0` on the same port (said once by the caller, from
//! the returned [`Fallback`]) when the host has no IPv6. A busy port is an error, never a
//! silent move to IPv4. Peers reached over IPv4 on such a socket (`::ffff:a.b.c.d`) are
//! turned back into the IPv4 addresses they are by [`canonical_peer`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use socket2::{Domain, Socket, Type};

/// Which kind of listening socket [`bind`] opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// A TCP listener (SO_REUSEADDR as tokio's, listen backlog 1024).
    Tcp,
    /// A UDP socket (no SO_REUSEADDR: a second server on the port is an error).
    Udp,
}

/// What [`bind`] did instead of what was asked (logged once by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    pub asked: SocketAddr,
    pub bound: SocketAddr,
    pub reason: String,
}

impl std::fmt::Display for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "this host has no IPv6 ({}): listening on {} instead of {} (IPv4 only)",
            self.reason, self.bound, self.asked
        )
    }
}

/// Whether a failure to open an IPv6 socket means the host has no IPv6 (kernel booted with
/// `ipv6.disable=1`, or no IPv6 address can be bound), rather than a problem of the port.
pub fn no_ipv6(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT | libc::EADDRNOTAVAIL)
    )
}

/// Opens a non-blocking listening socket for `addr`: the unspecified IPv6 address is one
/// dual-stack socket (IPv4 peers too), and falls back to `0.0.0.0` on the same port when the
/// host has no IPv6 (the second value says so). Any other address is bound as given.
pub fn bind(addr: SocketAddr, proto: Proto) -> std::io::Result<(Socket, Option<Fallback>)> {
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind_socket(addr, proto, true) {
            Ok(s) => Ok((s, None)),
            Err(e) if no_ipv6(&e) => {
                let bound = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
                let s = bind_socket(bound, proto, false)?;
                Ok((
                    s,
                    Some(Fallback {
                        asked: addr,
                        bound,
                        reason: e.to_string(),
                    }),
                ))
            }
            Err(e) => Err(e),
        },
        _ => Ok((bind_socket(addr, proto, false)?, None)),
    }
}

fn bind_socket(addr: SocketAddr, proto: Proto, dual_stack: bool) -> std::io::Result<Socket> {
    let ty = match proto {
        Proto::Tcp => Type::STREAM,
        Proto::Udp => Type::DGRAM,
    };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if dual_stack {
        socket.set_only_v6(false)?;
    }
    if proto == Proto::Tcp {
        // As tokio's TcpListener::bind: a restarted box rebinds while old connections linger.
        socket.set_reuse_address(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    if proto == Proto::Tcp {
        socket.listen(1024)?;
    }
    Ok(socket)
}

/// A peer reached over IPv4 on a dual-stack socket, as the IPv4 address it is.
pub fn canonical_peer(peer: SocketAddr) -> SocketAddr {
    match peer {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => peer,
        },
        v4 => v4,
    }
}

/// The local address of a socket that talks to one (canonical) `peer` only, for a service
/// listening on `listen`: the listener's own address when it names one, else the unspecified
/// address of the peer's family, so an IPv4 client is answered from an IPv4 socket and an
/// IPv6 client from an IPv6 one whatever the listener is.
pub fn local_for(listen: SocketAddr, peer: SocketAddr) -> IpAddr {
    match (listen.ip(), peer) {
        (ip, _) if !ip.is_unspecified() => ip,
        (_, SocketAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (_, SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds `[::]:0`; `None` (after checking the fallback) on a host without IPv6.
    fn dual(proto: Proto) -> Option<Socket> {
        let (s, fallback) = bind("[::]:0".parse().unwrap(), proto).unwrap();
        let local = s.local_addr().unwrap().as_socket().unwrap();
        if let Some(f) = fallback {
            // A host without IPv6: the same port on 0.0.0.0, said once.
            assert_eq!(local.ip(), Ipv4Addr::UNSPECIFIED);
            assert!(f.to_string().contains("no IPv6"), "{f}");
            return None;
        }
        assert!(local.is_ipv6(), "{local}");
        assert!(!s.only_v6().unwrap(), "IPV6_V6ONLY is on");
        assert!(s.nonblocking().unwrap());
        Some(s)
    }

    #[test]
    fn tcp_on_the_unspecified_ipv6_address_is_dual_stack_and_listening() {
        let Some(s) = dual(Proto::Tcp) else { return };
        assert_eq!(s.r#type().unwrap(), Type::STREAM);
        assert!(s.reuse_address().unwrap());
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let l = std::net::TcpListener::from(s);
        l.set_nonblocking(false).unwrap();
        for ip in ["127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let c = std::net::TcpStream::connect((ip, port)).unwrap();
            let (_, seen) = l.accept().unwrap();
            // An IPv4 peer is handed on as IPv4, not ::ffff:127.0.0.1.
            assert_eq!(canonical_peer(seen), c.local_addr().unwrap());
        }
    }

    #[test]
    fn udp_on_the_unspecified_ipv6_address_is_dual_stack() {
        let Some(s) = dual(Proto::Udp) else { return };
        assert_eq!(s.r#type().unwrap(), Type::DGRAM);
        // No SO_REUSEADDR on UDP: it would let a second server share the port.
        assert!(!s.reuse_address().unwrap());
        let port = s.local_addr().unwrap().as_socket().unwrap().port();
        let server = std::net::UdpSocket::from(s);
        server.set_nonblocking(false).unwrap();
        server
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        for ip in ["127.0.0.1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            let client = std::net::UdpSocket::bind((ip, 0)).unwrap();
            client.send_to(b"hello", (ip, port)).unwrap();
            let mut buf = [0u8; 16];
            let (n, seen) = server.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(canonical_peer(seen), client.local_addr().unwrap());
            // Answered on the socket it came from, the peer as received.
            server.send_to(b"back", seen).unwrap();
            client
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from.port()), (&b"back"[..], port));
        }
    }

    #[test]
    fn only_a_missing_ipv6_falls_back_not_a_busy_port() {
        let os = std::io::Error::from_raw_os_error;
        assert!(no_ipv6(&os(libc::EAFNOSUPPORT)));
        assert!(no_ipv6(&os(libc::EADDRNOTAVAIL)));
        assert!(!no_ipv6(&os(libc::EADDRINUSE)));
        assert!(!no_ipv6(&os(libc::EACCES)));
        for proto in [Proto::Tcp, Proto::Udp] {
            // A busy port is an error, never a silent move to IPv4.
            let (held, _) = bind("[::]:0".parse().unwrap(), proto).unwrap();
            let port = held.local_addr().unwrap().as_socket().unwrap().port();
            let e = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), proto).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{proto:?}");
            // Explicit addresses are bound as given.
            let (s, f) = bind("127.0.0.1:0".parse().unwrap(), proto).unwrap();
            assert!(f.is_none());
            assert!(s.local_addr().unwrap().as_socket().unwrap().is_ipv4());
        }
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let p: SocketAddr = "[::ffff:10.0.0.7]:4000".parse().unwrap();
        assert_eq!(canonical_peer(p), "10.0.0.7:4000".parse().unwrap());
        let p: SocketAddr = "[fd00::7]:4000".parse().unwrap();
        assert_eq!(canonical_peer(p), p);
    }

    #[test]
    fn a_per_peer_socket_takes_the_peer_family_unless_the_listener_names_an_address() {
        let any6: SocketAddr = "[::]:69".parse().unwrap();
        let any4: SocketAddr = "0.0.0.0:69".parse().unwrap();
        let v4: SocketAddr = "10.0.0.7:2000".parse().unwrap();
        let v6: SocketAddr = "[fd00::7]:2000".parse().unwrap();
        assert_eq!(local_for(any6, v4), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(local_for(any6, v6), IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(local_for(any4, v4), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let own: SocketAddr = "10.0.0.1:69".parse().unwrap();
        assert_eq!(local_for(own, v4), own.ip());
        let own6: SocketAddr = "[fd00::1]:69".parse().unwrap();
        assert_eq!(local_for(own6, v6), own6.ip());
    }
}
