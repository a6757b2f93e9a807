//! A TCP connection inside the overlay as a tokio `AsyncRead + AsyncWrite`, so that tonic
//! (hyper) can serve gRPC over smoltcp sockets. The endpoint task owns the smoltcp socket
//! and moves bytes between it and a bounded [`Pipe`]; the stream side reads and writes the
//! pipe and wakes the endpoint through a shared `Notify`. Backpressure both ways: a full
//! pipe stops reading from smoltcp (the TCP window closes) or makes writers wait.

use std::collections::VecDeque;
use std::io;
use std::net::Ipv6Addr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// Bytes buffered per direction per connection.
pub const PIPE_CAP: usize = 64 * 1024;

/// The bytes between one smoltcp socket and its stream.
#[derive(Debug, Default)]
pub struct Pipe {
    /// From the node, not read yet.
    pub inbound: VecDeque<u8>,
    /// To the node, not handed to smoltcp yet.
    pub outbound: VecDeque<u8>,
    pub read_waker: Option<Waker>,
    pub write_waker: Option<Waker>,
    /// The node sent FIN (reads end after `inbound`) or the socket is gone.
    pub peer_closed: bool,
    /// The socket is gone: writes fail.
    pub reset: bool,
    /// The stream side shut down or was dropped: close the socket once `outbound` is sent.
    pub app_closed: bool,
}

impl Pipe {
    pub fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    pub fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }
}

/// Who is on the other end: the node's overlay address (tonic puts it in each request's
/// extensions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayPeer(pub Ipv6Addr);

/// The stream side of one overlay TCP connection.
#[derive(Debug)]
pub struct OverlayStream {
    pipe: Arc<Mutex<Pipe>>,
    peer: Ipv6Addr,
    wake_endpoint: Arc<Notify>,
}

impl OverlayStream {
    pub fn new(pipe: Arc<Mutex<Pipe>>, peer: Ipv6Addr, wake_endpoint: Arc<Notify>) -> Self {
        OverlayStream {
            pipe,
            peer,
            wake_endpoint,
        }
    }

    pub fn peer(&self) -> Ipv6Addr {
        self.peer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pipe> {
        self.pipe.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl AsyncRead for OverlayStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut p = self.lock();
        if !p.inbound.is_empty() {
            let n = p.inbound.len().min(buf.remaining());
            let (a, b) = p.inbound.as_slices();
            let first = a.len().min(n);
            buf.put_slice(&a[..first]);
            buf.put_slice(&b[..n - first]);
            p.inbound.drain(..n);
            drop(p);
            // Room again: the endpoint may read more from the socket.
            self.wake_endpoint.notify_one();
            return Poll::Ready(Ok(()));
        }
        if p.peer_closed {
            return Poll::Ready(Ok(()));
        }
        p.read_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncWrite for OverlayStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut p = self.lock();
        if p.reset || p.app_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let room = PIPE_CAP.saturating_sub(p.outbound.len());
        if room == 0 {
            p.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = room.min(data.len());
        p.outbound.extend(&data[..n]);
        drop(p);
        self.wake_endpoint.notify_one();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.lock().app_closed = true;
        self.wake_endpoint.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl Drop for OverlayStream {
    fn drop(&mut self) {
        self.lock().app_closed = true;
        self.wake_endpoint.notify_one();
    }
}

impl tonic::transport::server::Connected for OverlayStream {
    type ConnectInfo = OverlayPeer;

    fn connect_info(&self) -> OverlayPeer {
        OverlayPeer(self.peer)
    }
}
