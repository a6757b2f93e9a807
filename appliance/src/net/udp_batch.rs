//! Batched UDP reads for the DHCP service, and its receive buffer: `recvmmsg` reads every
//! datagram waiting on a socket, up to [`RecvBatch::SLOTS`], with their IPv4 sources, in
//! one call (one syscall per wake-up of a busy receive loop instead of one per datagram),
//! and [`set_recv_buffer`] asks for a receive buffer past `net.core.rmem_max` when the
//! process may (`SO_RCVBUFFORCE`, CAP_NET_ADMIN), else the capped `SO_RCVBUF`.
//!
//! May touch: the socket syscalls (in `mod sys`, the file's only `unsafe`).

use std::io;
use std::net::SocketAddrV4;
use std::os::fd::AsFd;

/// Datagrams one [`recv_batch`] read: up to [`RecvBatch::SLOTS`] of at most
/// [`RecvBatch::SIZE`] bytes each (longer ones are cut, as one `recv_from` into a buffer of
/// that size cuts them), each with its IPv4 source.
pub struct RecvBatch {
    /// `SLOTS` buffers of `SIZE` bytes, one after another (zeroed by the allocator, so a
    /// page is resident only once a datagram was written to it).
    bufs: Vec<u8>,
    lens: [usize; RecvBatch::SLOTS],
    srcs: [SocketAddrV4; RecvBatch::SLOTS],
    held: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: vec![0; RecvBatch::SLOTS * RecvBatch::SIZE],
            lens: [0; RecvBatch::SLOTS],
            srcs: [SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0); RecvBatch::SLOTS],
            held: 0,
        }
    }
}

impl std::fmt::Debug for RecvBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBatch")
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl RecvBatch {
    /// Datagrams read per call.
    pub const SLOTS: usize = 32;
    /// Bytes kept of each datagram.
    pub const SIZE: usize = 4096;

    /// The datagrams the last [`recv_batch`] read, in arrival order.
    pub fn datagrams(&self) -> impl Iterator<Item = (SocketAddrV4, &[u8])> {
        self.bufs
            .chunks(Self::SIZE)
            .zip(self.lens.iter().zip(&self.srcs))
            .take(self.held)
            .map(|(buf, (n, src))| (*src, &buf[..*n]))
    }

    /// How many datagrams the last [`recv_batch`] read.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// Whether the last read filled every slot (more may be waiting).
    pub fn is_full(&self) -> bool {
        self.held == Self::SLOTS
    }
}

/// Reads the datagrams waiting on the IPv4 UDP socket `sock` into `batch` without waiting
/// (`WouldBlock` when none waits). Datagrams from a non-IPv4 source are left out.
pub fn recv_batch(sock: &impl AsFd, batch: &mut RecvBatch) -> io::Result<usize> {
    sys::recv_batch(sock, batch)
}

/// Sets `sock`'s receive buffer to `bytes`: past `net.core.rmem_max` when the process has
/// CAP_NET_ADMIN (`SO_RCVBUFFORCE`), else as far as that cap allows (`SO_RCVBUF`). Returns
/// what the kernel gave (it doubles the size asked for its own bookkeeping).
pub fn set_recv_buffer(sock: &socket2::Socket, bytes: usize) -> io::Result<usize> {
    let asked = i32::try_from(bytes).unwrap_or(i32::MAX);
    if sys::set_recv_buffer_force(sock, asked).is_err() {
        sock.set_recv_buffer_size(bytes)?;
    }
    sock.recv_buffer_size()
}

#[allow(unsafe_code)]
mod sys {
    //! The raw calls: `recvmmsg` into `sockaddr_in` sources, `setsockopt(SO_RCVBUFFORCE)`.
    use std::io;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::os::fd::{AsFd, AsRawFd};

    use super::RecvBatch;

    pub fn recv_batch(sock: &impl AsFd, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.held = 0;
        // SAFETY: sockaddr_in, iovec and mmsghdr are plain old data; all zeros is valid.
        let mut names: [libc::sockaddr_in; RecvBatch::SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut iov: [libc::iovec; RecvBatch::SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; RecvBatch::SLOTS] = unsafe { std::mem::zeroed() };
        for ((buf, v), (m, name)) in batch
            .bufs
            .chunks_mut(RecvBatch::SIZE)
            .zip(iov.iter_mut())
            .zip(msgs.iter_mut().zip(names.iter_mut()))
        {
            v.iov_base = buf.as_mut_ptr().cast();
            v.iov_len = buf.len();
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at its own sockaddr_in of `names` and one iovec of
        // `iov` naming its own `SIZE` bytes of `batch.bufs`, all valid for writes of the
        // given lengths during the call; no timeout is passed.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_fd().as_raw_fd(),
                msgs.as_mut_ptr(),
                RecvBatch::SLOTS as u32,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut held = 0;
        for k in 0..n as usize {
            let name = &names[k];
            if msgs[k].msg_hdr.msg_namelen as usize != std::mem::size_of::<libc::sockaddr_in>()
                || name.sin_family != libc::AF_INET as libc::sa_family_t
            {
                continue;
            }
            if held != k {
                batch.bufs.copy_within(
                    k * RecvBatch::SIZE..k * RecvBatch::SIZE + msgs[k].msg_len as usize,
                    held * RecvBatch::SIZE,
                );
            }
            batch.lens[held] = msgs[k].msg_len as usize;
            batch.srcs[held] = SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(name.sin_addr.s_addr)),
                u16::from_be(name.sin_port),
            );
            held += 1;
        }
        batch.held = held;
        Ok(held)
    }

    pub fn set_recv_buffer_force(sock: &impl AsFd, bytes: i32) -> io::Result<()> {
        // SAFETY: `bytes` is a valid int for the duration of the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}
