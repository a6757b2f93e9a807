//! A Linux packet socket (`AF_PACKET`, `SOCK_DGRAM`: the kernel adds and strips the
//! Ethernet header) on one interface, for what a UDP socket cannot do: send a DHCP reply to
//! a client's hardware address before it has an IPv4 address (no ARP entry to use), and
//! send ARP probes and read the ARP packets on the segment.
//!
//! Needs CAP_NET_RAW (the systemd unit grants it). The frames themselves are built and
//! parsed by `protocol::dhcp::link`.
//!
//! May touch: the socket syscalls (in `mod sys`, the file's only `unsafe`), and
//! `/sys/class/net/<name>/address` for the interface's own hardware address.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::protocol::dhcp::link::ETH_P_ARP;

/// A packet socket bound to one interface, receiving its ARP packets.
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
    /// The interface's own hardware address.
    pub mac: [u8; 6],
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Reads `/sys/class/net/<name>/address` (`52:54:00:12:34:56`); `None` for an interface
/// without a 6-byte hardware address (loopback has all zeros and no ARP: also `None`).
pub fn hardware_address(name: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let mac = text.trim().parse::<crate::model::mac::MacAddr>().ok()?.0;
    (mac != [0; 6]).then_some(mac)
}

impl PacketSocket {
    /// Opens a non-blocking packet socket on interface `name` that receives the ARP
    /// packets arriving there (not the ones the box sends).
    pub fn open(name: &str) -> io::Result<PacketSocket> {
        let mac = hardware_address(name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{name} has no Ethernet hardware address"),
            )
        })?;
        let ifindex = sys::ifindex(name)?;
        let fd = sys::open(ifindex, ETH_P_ARP)?;
        Ok(PacketSocket { fd, ifindex, mac })
    }

    /// Registers the socket with the tokio reactor (for `readable().await`; sends never wait
    /// on it).
    pub fn into_async(self) -> io::Result<AsyncFd<PacketSocket>> {
        sys::register(self)
    }

    /// Sends `payload` (an IPv4 datagram or an ARP packet, per `ethertype`) in one frame to
    /// `dst`.
    pub fn send(&self, ethertype: u16, dst: [u8; 6], payload: &[u8]) -> io::Result<()> {
        sys::send(&self.fd, self.ifindex, ethertype, dst, payload)
    }

    /// Sends each `(dst, payload)` of `frames` in a frame of its own (`sendmmsg`: one call
    /// for the lot, in order); how many went out before the first that failed. An error
    /// only when the first failed.
    pub fn send_many(&self, ethertype: u16, frames: &[([u8; 6], &[u8])]) -> io::Result<usize> {
        sys::send_many(&self.fd, self.ifindex, ethertype, frames)
    }

    /// Receives one incoming packet into `buf` (would-block when none is queued). Frames
    /// the box itself sent are skipped (`Ok(None)`).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        sys::recv(&self.fd, buf)
    }
}

#[allow(unsafe_code)]
mod sys {
    //! The raw calls: `socket`/`bind`/`sendto`/`sendmmsg`/`recvfrom` on `sockaddr_ll`.
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// Registers for readability only: the socket's writes are plain non-blocking sends,
    /// and an interest in writability would have every frame sent wake the reactor when
    /// the kernel frees it (the socket's write-space wake-up).
    pub fn register(
        sock: super::PacketSocket,
    ) -> io::Result<tokio::io::unix::AsyncFd<super::PacketSocket>> {
        // SAFETY: the socket owns its descriptor (an `OwnedFd` never handed out), so the fd
        // stays open exactly as long as the registration that holds the socket.
        Ok(unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(sock, tokio::io::Interest::READABLE)
        }?)
    }

    pub fn ifindex(name: &str) -> io::Result<i32> {
        let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
        let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if i == 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(i as i32)
    }

    fn address(ifindex: i32, ethertype: u16, dst: Option<[u8; 6]>) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain old data; all zeros is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = ethertype.to_be();
        sa.sll_ifindex = ifindex;
        if let Some(mac) = dst {
            sa.sll_halen = 6;
            sa.sll_addr[..6].copy_from_slice(&mac);
        }
        sa
    }

    pub fn open(ifindex: i32, ethertype: u16) -> io::Result<OwnedFd> {
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ethertype.to_be()),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let sa = address(ifindex, ethertype, None);
        // SAFETY: `sa` is a valid sockaddr_ll and its size is passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    pub fn send(
        fd: &OwnedFd,
        ifindex: i32,
        ethertype: u16,
        dst: [u8; 6],
        payload: &[u8],
    ) -> io::Result<()> {
        let sa = address(ifindex, ethertype, Some(dst));
        // SAFETY: `payload` and `sa` are valid for the given lengths during the call.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Frames handed to one `sendmmsg` at most (its headers live on the stack).
    const SEND_MANY: usize = 64;

    pub fn send_many(
        fd: &OwnedFd,
        ifindex: i32,
        ethertype: u16,
        frames: &[([u8; 6], &[u8])],
    ) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(SEND_MANY)];
        let mut names = [address(ifindex, ethertype, None); SEND_MANY];
        // SAFETY: iovec and mmsghdr are plain old data; all zeros is a valid value.
        let mut iov: [libc::iovec; SEND_MANY] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; SEND_MANY] = unsafe { std::mem::zeroed() };
        for (((dst, payload), v), (m, name)) in frames
            .iter()
            .zip(iov.iter_mut())
            .zip(msgs.iter_mut().zip(names.iter_mut()))
        {
            *name = address(ifindex, ethertype, Some(*dst));
            v.iov_base = payload.as_ptr().cast_mut().cast();
            v.iov_len = payload.len();
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_ll).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            m.msg_hdr.msg_iov = v;
            m.msg_hdr.msg_iovlen = 1;
        }
        // The syscall itself: musl's 64-bit `sendmmsg` is a loop of `sendmsg` calls (its
        // msghdr pads `msg_iovlen` to the kernel's size_t; the pads are zero here).
        // SAFETY: the first `frames.len()` headers each point at their own sockaddr_ll of
        // `names` and one iovec of `iov` naming a payload of `frames`; all outlive the call,
        // which only reads them (and writes each header's `msg_len`).
        let n = unsafe {
            libc::syscall(
                libc::SYS_sendmmsg,
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                frames.len() as libc::c_uint,
                0 as libc::c_uint,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    pub fn recv(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: all zeros is a valid sockaddr_ll.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: `buf` and `sa` are valid for writes of the given lengths.
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut sa as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if sa.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some(n as usize))
    }
}
