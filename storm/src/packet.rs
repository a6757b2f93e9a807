//! A raw Linux packet socket (`AF_PACKET`, `SOCK_RAW`, every EtherType) on the generator's
//! interface: the simulated firmware clients send whole Ethernet frames with their own
//! source MAC (DHCP, TFTP, ARP answers) and read every frame arriving there.
//!
//! Needs CAP_NET_RAW. The frames are built and parsed by `wire`.
//!
//! May touch: the socket syscalls (in `mod sys`, the file's only `unsafe`).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

/// `ETH_P_ALL`: every protocol.
const ETH_P_ALL: u16 = 0x0003;

/// Classic BPF: accept ARP and IPv4 UDP, drop the rest (the clients' HTTP and gRPC run
/// through the kernel's TCP and need no copy here).
const ARP_OR_UDP: [libc::sock_filter; 7] = [
    bpf(0x28, 0, 0, 12),      // ldh [12]          (EtherType)
    bpf(0x15, 3, 0, 0x0806),  // jeq ARP → accept
    bpf(0x15, 0, 3, 0x0800),  // jne IPv4 → drop
    bpf(0x30, 0, 0, 23),      // ldb [23]          (IPv4 protocol)
    bpf(0x15, 0, 1, 17),      // jne UDP → drop
    bpf(0x06, 0, 0, 0x40000), // accept
    bpf(0x06, 0, 0, 0),       // drop
];

const fn bpf(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The socket's descriptor (registered with tokio by [`Link::open`]).
#[derive(Debug)]
struct Fd(OwnedFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// A packet socket bound to one interface.
#[derive(Debug)]
pub struct Link {
    fd: AsyncFd<Fd>,
    /// The interface's own hardware address (what the kernel's ARP answers name).
    pub mac: [u8; 6],
}

impl Link {
    /// Opens the socket on interface `name` with large buffers (a storm's worth of frames).
    pub fn open(name: &str) -> io::Result<Link> {
        let mac = appliance::net::packet::hardware_address(name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::Unsupported, format!("{name}: no MAC")))?;
        let ifindex = sys::ifindex(name)?;
        let fd = sys::open(ifindex)?;
        sys::set_buffers(&fd, 256 << 20, 16 << 20)?;
        sys::attach_filter(&fd, &ARP_OR_UDP)?;
        // The frames the clients send are not copied back to this socket (each would cost a
        // receive and be skipped); kernels before 4.20 lack the option, and `recv` still
        // skips them there.
        let _ = sys::ignore_outgoing(&fd);
        Ok(Link {
            fd: sys::register(Fd(fd))?,
            mac,
        })
    }

    /// Sends one whole Ethernet frame, waiting while the socket's send buffer is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| sys::send(&fd.get_ref().0, frame)) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    guard.clear_ready();
                    tokio::task::yield_now().await;
                }
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Receives the next incoming frame into `buf` (frames this host sent are skipped).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| sys::recv(&fd.get_ref().0, buf)) {
                Ok(Ok(Some(n))) => return Ok(n),
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends every frame of `frames` (in order, `sendmmsg`: one call for a batch), waiting
    /// while the socket's send buffer is full.
    pub async fn send_batch(&self, frames: &[Vec<u8>]) -> io::Result<()> {
        let mut sent = 0;
        while sent < frames.len() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| sys::send_batch(&fd.get_ref().0, &frames[sent..])) {
                Ok(Ok(n)) => sent += n,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    guard.clear_ready();
                    tokio::task::yield_now().await;
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Reads as many waiting frames as `batch` holds (`recvmmsg`: one call for a batch)
    /// without waiting; frames this host sent are left out. `None` when nothing waits,
    /// else how many frames `batch` now holds (0: all were outgoing).
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<Option<usize>> {
        match sys::recv_batch(&self.fd.get_ref().0, batch) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Frames the kernel dropped because this socket's receive buffer was full, since the
    /// last call (`PACKET_STATISTICS` resets on read).
    pub fn drops(&self) -> u64 {
        sys::drops(&self.fd.get_ref().0).unwrap_or(0)
    }
}

/// Buffers for [`Link::try_recv_batch`]: `frames` frames of up to `size` bytes each.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    held: usize,
}

impl RecvBatch {
    pub fn new(frames: usize, size: usize) -> RecvBatch {
        RecvBatch {
            bufs: vec![vec![0; size]; frames.max(1)],
            lens: vec![0; frames.max(1)],
            held: 0,
        }
    }

    /// The frames the last `try_recv_batch` read.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> {
        self.bufs
            .iter()
            .zip(&self.lens)
            .take(self.held)
            .map(|(b, n)| &b[..*n])
    }
}

#[allow(unsafe_code)]
mod sys {
    //! The raw calls: `socket`/`bind`/`setsockopt`/`send`/`recvfrom` on `sockaddr_ll`.
    use std::ffi::CString;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    pub fn register(fd: super::Fd) -> io::Result<tokio::io::unix::AsyncFd<super::Fd>> {
        let interest = tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE;
        // SAFETY: `Fd` owns its descriptor (an `OwnedFd` never handed out), so the fd stays
        // open exactly as long as the registration that holds it.
        Ok(unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) }?)
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

    pub fn open(ifindex: i32) -> io::Result<OwnedFd> {
        let proto = super::ETH_P_ALL.to_be();
        // SAFETY: plain syscall; the returned descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain old data; all zeros is a valid value.
        let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex;
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

    fn set_int(fd: &OwnedFd, level: i32, name: i32, v: i32) -> io::Result<()> {
        // SAFETY: `v` is a valid int for the duration of the call and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                (&v as *const i32).cast(),
                std::mem::size_of::<i32>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn set_buffers(fd: &OwnedFd, rcv: i32, snd: i32) -> io::Result<()> {
        // The FORCE variants pass the rmem_max/wmem_max caps (CAP_NET_ADMIN; root here).
        set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, rcv)
            .or_else(|_| set_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, rcv))?;
        set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, snd)
            .or_else(|_| set_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, snd))
    }

    pub fn attach_filter(fd: &OwnedFd, prog: &[libc::sock_filter]) -> io::Result<()> {
        let fprog = libc::sock_fprog {
            len: prog.len() as u16,
            filter: prog.as_ptr().cast_mut(),
        };
        // SAFETY: `fprog` points at `prog`, valid for the call (the kernel copies it).
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&fprog as *const libc::sock_fprog).cast(),
                std::mem::size_of::<libc::sock_fprog>() as u32,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn send(fd: &OwnedFd, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length during the call.
        let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
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

    pub fn ignore_outgoing(fd: &OwnedFd) -> io::Result<()> {
        set_int(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, 1)
    }

    /// `sendmmsg` of `frames` (at most 1024 in one call); how many went out.
    pub fn send_batch(fd: &OwnedFd, frames: &[Vec<u8>]) -> io::Result<usize> {
        let frames = &frames[..frames.len().min(1024)];
        let mut iov: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: mmsghdr is plain old data; all zeros is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: every header points at one iovec of `iov`, each naming a frame of
        // `frames`; all of them outlive the call, which only reads the frames.
        let n = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                msgs.len() as u32,
                Default::default(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// `recvmmsg` into `batch` without waiting; frames sent by this host are dropped from
    /// it. The number of frames it holds (0: all read were outgoing).
    pub fn recv_batch(fd: &OwnedFd, batch: &mut super::RecvBatch) -> io::Result<usize> {
        let count = batch.bufs.len();
        // SAFETY: all zeros is a valid sockaddr_ll.
        let mut names: Vec<libc::sockaddr_ll> = vec![unsafe { std::mem::zeroed() }; count];
        let mut iov: Vec<libc::iovec> = batch
            .bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .zip(names.iter_mut())
            .map(|(v, name)| {
                // SAFETY: mmsghdr is plain old data; all zeros is a valid value.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = (name as *mut libc::sockaddr_ll).cast();
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                m.msg_hdr.msg_iov = v;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        // SAFETY: every header points at its own sockaddr_ll of `names` and one iovec of
        // `iov` naming a buffer of `batch`, all valid for writes of the given lengths for
        // the call; no timeout is passed.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                msgs.as_mut_ptr(),
                count as u32,
                libc::MSG_DONTWAIT as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut held = 0;
        for k in 0..n as usize {
            if names[k].sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            let len = msgs[k].msg_len as usize;
            batch.bufs.swap(held, k);
            batch.lens[held] = len;
            held += 1;
        }
        batch.held = held;
        Ok(held)
    }

    pub fn drops(fd: &OwnedFd) -> io::Result<u64> {
        // SAFETY: tpacket_stats is plain old data; all zeros is a valid value.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as u32;
        // SAFETY: `st` is valid for writes of `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(u64::from(st.tp_drops))
    }
}
