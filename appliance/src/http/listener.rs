//! The :8081 accept loop: one task per connection, in a `JoinSet` this room owns, served by
//! hyper (HTTP/1.1 and h2c) with the peer address as `ConnectInfo<SocketAddr>`.
//!
//! Dead peers are reaped without help (a server powered off mid-connection never sends a
//! FIN): HTTP/2 connections are pinged and closed when a ping goes unanswered, and every
//! accepted socket has TCP keepalive, which also covers HTTP/1.1 connections. Accepted
//! sockets are TCP_NODELAY (as tonic's own server sets them). On the
//! shutdown signal the listener closes, every connection is asked to finish (GOAWAY /
//! `Connection: close`), and whatever is still open after the drain bound is closed, so
//! shutdown ends in bounded time whatever the peers do.
//!
//! [`bind`] opens the listening socket by the rule TFTP shares (`net::listen`): `[::]` is one
//! dual-stack socket (IPV6_V6ONLY off, whatever `net.ipv6.bindv6only` says), falling back to
//! `0.0.0.0` on the same port with a warning when the host has no IPv6. Peers reached over
//! IPv4 on it (`::ffff:a.b.c.d`) are handed to the handlers as plain IPv4 addresses.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use crate::metrics::{Gauge, Held};

/// Keepalive and drain settings of the listener (`[http]` in the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerSettings {
    /// Idle time before a peer is probed: the HTTP/2 ping interval and the TCP keepalive
    /// idle time. An unanswered ping closes the connection after half of it more; TCP
    /// gives up after four unanswered probes a quarter of it apart. A dead peer is thus
    /// dropped within about twice this.
    pub keepalive: Duration,
    /// How long connections may take to finish after the shutdown signal.
    pub drain: Duration,
}

impl ListenerSettings {
    pub fn from_config(c: &crate::config::HttpConfig) -> ListenerSettings {
        ListenerSettings {
            keepalive: Duration::from_secs(c.keepalive_secs.max(1)),
            drain: Duration::from_secs(c.drain_secs),
        }
    }

    fn tcp_keepalive(&self) -> socket2::TcpKeepalive {
        // The kernel counts in whole seconds.
        let interval = (self.keepalive / 4).max(Duration::from_secs(1));
        socket2::TcpKeepalive::new()
            .with_time(self.keepalive)
            .with_interval(interval)
            .with_retries(4)
    }

    fn ping_timeout(&self) -> Duration {
        (self.keepalive / 2).max(Duration::from_secs(1))
    }
}

pub use crate::net::listen::{Fallback, canonical_peer};

/// Opens the TCP listener for `addr` by the box's one listening rule (`net::listen::bind`):
/// `[::]` is one dual-stack socket, falling back to `0.0.0.0` on the same port when the host
/// has no IPv6 (the second value says so). Any other address is bound as given.
pub fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, Option<Fallback>)> {
    let (socket, fallback) = crate::net::listen::bind(addr, crate::net::listen::Proto::Tcp)?;
    Ok((TcpListener::from_std(socket.into())?, fallback))
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains (see the module
/// doc). `open` counts the open connections (for `/metrics`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ListenerSettings,
    open: Gauge,
) -> std::io::Result<()> {
    serve_tls(listener, router, shutdown, settings, open, None).await
}

/// [`serve`], with each connection first accepted by `tls` when given (the mTLS admin
/// port: a handshake that fails or takes longer than the keepalive time closes it, and a
/// connection whose client certificate is revoked meanwhile is closed).
pub async fn serve_tls(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    settings: ListenerSettings,
    open: Gauge,
    tls: Option<super::tls::AdminTls>,
) -> std::io::Result<()> {
    let (close_tx, close_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let peer = canonical_peer(peer);
                    if let Err(e) = socket2::SockRef::from(&stream)
                        .set_tcp_keepalive(&settings.tcp_keepalive())
                    {
                        tracing::debug!(%peer, error = %e, "http: cannot set TCP keepalive");
                    }
                    // A reply is several small writes (h2 HEADERS, DATA, trailers): with
                    // Nagle the last waits for the peer's delayed ACK (~40 ms).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "http: cannot set TCP_NODELAY");
                    }
                    let guard = Held::new(&open);
                    let (router, close) = (router.clone(), close_rx.clone());
                    match tls.clone() {
                        None => {
                            connections.spawn(connection(
                                stream, peer, router, settings, close, guard,
                            ));
                        }
                        Some(tls) => {
                            connections.spawn(async move {
                                let handshake = tokio::time::timeout(
                                    settings.keepalive,
                                    tls.acceptor().accept(stream),
                                );
                                match handshake.await {
                                    Ok(Ok(stream)) => {
                                        let cert = stream
                                            .get_ref()
                                            .1
                                            .peer_certificates()
                                            .and_then(|c| c.first())
                                            .map(|c| c.to_vec())
                                            .unwrap_or_default();
                                        let mut changes = tls.changes();
                                        let revoked = async {
                                            if !tls.admits(&cert) {
                                                return;
                                            }
                                            while changes.changed().await.is_ok() {
                                                if !tls.admits(&cert) {
                                                    return;
                                                }
                                            }
                                            std::future::pending().await
                                        };
                                        tokio::select! {
                                            () = connection(stream, peer, router, settings, close, guard) => {}
                                            () = revoked => tracing::info!(%peer, "admin TLS: client certificate revoked; connection closed"),
                                        }
                                    }
                                    Ok(Err(e)) => {
                                        tracing::info!(%peer, error = %e, "admin TLS: handshake refused");
                                    }
                                    Err(_) => tracing::info!(%peer, "admin TLS: handshake timed out"),
                                }
                            });
                        }
                    }
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin
                    // (as axum::serve and hyper do).
                    tracing::error!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let drained = tokio::time::timeout(settings.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            drain_secs = settings.drain.as_secs(),
            "http: connections still open after the drain; closing them"
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
    Ok(())
}

/// Serves one connection until it ends or, after `close` turned true, finishes gracefully.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    router: Router,
    settings: ListenerSettings,
    mut close: watch::Receiver<bool>,
    _open: Held,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = router.map_request(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        req.map(axum::body::Body::new)
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http2()
        // As axum::serve: the CONNECT protocol (HTTP/2 websockets).
        .enable_connect_protocol()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.keepalive)
        .keep_alive_timeout(settings.ping_timeout());
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(%peer, error = %e, "http: connection ended");
                }
                return;
            }
            _ = close.wait_for(|c| *c), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Errors of one incoming connection (the listener itself is fine).
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_unspecified_ipv6_address_is_one_dual_stack_socket() {
        let (l, fallback) = bind("[::]:0".parse().unwrap()).unwrap();
        let local = l.local_addr().unwrap();
        if let Some(f) = fallback {
            // A host without IPv6: the same port on 0.0.0.0, said once.
            assert_eq!(local.ip(), std::net::Ipv4Addr::UNSPECIFIED);
            assert!(f.to_string().contains("no IPv6"), "{f}");
            return;
        }
        assert!(local.is_ipv6(), "{local}");
        let sock = socket2::SockRef::from(&l);
        assert!(!sock.only_v6().unwrap(), "IPV6_V6ONLY is on");
        for peer in ["127.0.0.1", "::1"] {
            let ip: std::net::IpAddr = peer.parse().unwrap();
            let c = tokio::net::TcpStream::connect((ip, local.port()))
                .await
                .unwrap();
            let (_, seen) = l.accept().await.unwrap();
            // An IPv4 peer is handed on as IPv4, not ::ffff:127.0.0.1.
            assert_eq!(canonical_peer(seen).ip(), ip);
            assert_eq!(canonical_peer(seen).port(), c.local_addr().unwrap().port());
        }
    }

    #[test]
    fn a_dead_peer_is_dropped_within_about_twice_the_keepalive() {
        let s = ListenerSettings {
            keepalive: Duration::from_secs(20),
            drain: Duration::from_secs(10),
        };
        // TCP: 20 s idle, then 4 probes 5 s apart.
        let tcp = s.tcp_keepalive();
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_tcp_keepalive(&tcp).unwrap();
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(20));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
        // HTTP/2: a ping after 20 s idle, closed 10 s later without its ack.
        assert_eq!(s.ping_timeout(), Duration::from_secs(10));
        // A short setting (tests) stays within the kernel's one-second granularity.
        let short = ListenerSettings {
            keepalive: Duration::from_secs(2),
            ..s
        };
        sock.set_tcp_keepalive(&short.tcp_keepalive()).unwrap();
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(1)
        );
        assert_eq!(short.ping_timeout(), Duration::from_secs(1));
    }
}
