//! The Linux OpenIPMI character device (`/dev/ipmi0`, from the `ipmi_devintf` +
//! `ipmi_si` kernel modules) as a blocking request/reply [`Transport`]: one IPMI request to
//! the local BMC over the system interface (KCS/SMIC/BT), its reply awaited with `poll`
//! under a timeout.
//!
//! This is glue only: the commands and reply parsing are `protocol::ipmi::command`, the
//! steps are `agent::bmc`. All `unsafe` of this room is in the `sys` module below (two
//! ioctls and one poll on a file we own, with `#[repr(C)]` mirrors of `linux/ipmi.h`).
//!
//! May touch: the device file it is given, nothing else.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use super::bmc::{InbandError, Reply, Transport};
use crate::clock;
use crate::protocol::ipmi::command::Command;

/// The device the agent uses.
pub const DEVICE: &str = "/dev/ipmi0";

/// `/dev/ipmi0`, open.
#[derive(Debug)]
pub struct IpmiDevice {
    file: File,
    timeout: Duration,
    next_msgid: libc::c_long,
}

impl IpmiDevice {
    /// Opens the device read/write; each request waits up to `timeout` for its reply.
    pub fn open(path: &Path, timeout: Duration) -> Result<IpmiDevice, InbandError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| InbandError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(IpmiDevice {
            file,
            timeout,
            next_msgid: 1,
        })
    }
}

impl Transport for IpmiDevice {
    fn call(&mut self, c: &Command) -> Result<Reply, InbandError> {
        let fd = self.file.as_raw_fd();
        let msgid = self.next_msgid;
        self.next_msgid = self.next_msgid.wrapping_add(1).max(1);
        sys::send(fd, msgid, c.netfn, c.cmd, &c.data).map_err(|source| InbandError::Send {
            command: c.name,
            source,
        })?;
        let deadline = clock::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(clock::now());
            if left.is_zero() {
                return Err(InbandError::Timeout {
                    command: c.name,
                    timeout: self.timeout,
                });
            }
            let ready = sys::poll_in(fd, left).map_err(|source| InbandError::Receive {
                command: c.name,
                source,
            })?;
            if !ready {
                continue;
            }
            let got = sys::receive(fd).map_err(|source| InbandError::Receive {
                command: c.name,
                source,
            })?;
            // Replies to earlier requests that timed out, and events, are dropped.
            if got.recv_type != sys::IPMI_RESPONSE_RECV_TYPE || got.msgid != msgid {
                continue;
            }
            return Reply::from_device(c, got.netfn, got.cmd, &got.data);
        }
    }
}

/// The only `unsafe` of the agent: the OpenIPMI ioctls and `poll(2)`.
#[allow(unsafe_code)]
mod sys {
    use std::io;
    use std::os::fd::RawFd;
    use std::time::Duration;

    use libc::{c_int, c_long, c_short, c_uchar, c_uint, c_ushort};

    /// `IPMI_SYSTEM_INTERFACE_ADDR_TYPE`: talk to the local BMC.
    const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: c_int = 0x0c;
    /// `IPMI_BMC_CHANNEL`.
    const IPMI_BMC_CHANNEL: c_short = 0x0f;
    pub const IPMI_RESPONSE_RECV_TYPE: c_int = 1;
    /// `IPMI_MAX_MSG_LENGTH`.
    const MAX_MSG: usize = 272;
    /// `sizeof(struct ipmi_addr)` is 40; room to spare.
    const MAX_ADDR: usize = 64;

    #[repr(C)]
    struct SystemInterfaceAddr {
        addr_type: c_int,
        channel: c_short,
        lun: c_uchar,
    }

    #[repr(C)]
    struct IpmiMsg {
        netfn: c_uchar,
        cmd: c_uchar,
        data_len: c_ushort,
        data: *mut c_uchar,
    }

    #[repr(C)]
    struct IpmiReq {
        addr: *mut c_uchar,
        addr_len: c_uint,
        msgid: c_long,
        msg: IpmiMsg,
    }

    #[repr(C)]
    struct IpmiRecv {
        recv_type: c_int,
        addr: *mut c_uchar,
        addr_len: c_uint,
        msgid: c_long,
        msg: IpmiMsg,
    }

    /// `_IOC(dir, 'i', nr, size)` as in asm-generic/ioctl.h.
    const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
        (dir << 30) | ((size as u64) << 16) | ((b'i' as u64) << 8) | nr
    }
    /// `IPMICTL_SEND_COMMAND = _IOR('i', 13, struct ipmi_req)`.
    pub const SEND_COMMAND: u64 = ioc(2, 13, std::mem::size_of::<IpmiReq>());
    /// `IPMICTL_RECEIVE_MSG_TRUNC = _IOWR('i', 11, struct ipmi_recv)`.
    pub const RECEIVE_MSG_TRUNC: u64 = ioc(3, 11, std::mem::size_of::<IpmiRecv>());

    /// One message read from the device; `data[0]` is the completion code of a reply.
    pub struct Received {
        pub recv_type: c_int,
        pub msgid: c_long,
        pub netfn: u8,
        pub cmd: u8,
        pub data: Vec<u8>,
    }

    fn ioctl<T>(fd: RawFd, request: u64, arg: &mut T) -> io::Result<()> {
        // SAFETY: `request` is one of the two OpenIPMI ioctls above, whose argument is the
        // `#[repr(C)]` struct `T` we pass by exclusive reference; every pointer inside it
        // points into buffers the caller keeps alive (and does not move) for this call, with
        // the lengths stated next to them. The kernel writes only within those lengths.
        let rc = unsafe { libc::ioctl(fd, request as _, arg as *mut T) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sends one request to the BMC over the system interface.
    pub fn send(fd: RawFd, msgid: c_long, netfn: u8, cmd: u8, data: &[u8]) -> io::Result<()> {
        if data.len() > MAX_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "request longer than IPMI_MAX_MSG_LENGTH",
            ));
        }
        let mut addr = SystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        // The kernel copies the data in; it never writes through this pointer.
        let mut buf = data.to_vec();
        let mut req = IpmiReq {
            addr: (&mut addr as *mut SystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<SystemInterfaceAddr>() as c_uint,
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: buf.len() as c_ushort,
                data: buf.as_mut_ptr(),
            },
        };
        ioctl(fd, SEND_COMMAND, &mut req)
    }

    /// Reads one queued message (call after [`poll_in`] said ready).
    pub fn receive(fd: RawFd) -> io::Result<Received> {
        let mut addr = [0u8; MAX_ADDR];
        let mut buf = [0u8; MAX_MSG];
        let mut recv = IpmiRecv {
            recv_type: 0,
            addr: addr.as_mut_ptr(),
            addr_len: MAX_ADDR as c_uint,
            msgid: 0,
            msg: IpmiMsg {
                netfn: 0,
                cmd: 0,
                data_len: MAX_MSG as c_ushort,
                data: buf.as_mut_ptr(),
            },
        };
        ioctl(fd, RECEIVE_MSG_TRUNC, &mut recv)?;
        let len = usize::from(recv.msg.data_len).min(MAX_MSG);
        Ok(Received {
            recv_type: recv.recv_type,
            msgid: recv.msgid,
            netfn: recv.msg.netfn,
            cmd: recv.msg.cmd,
            data: buf[..len].to_vec(),
        })
    }

    /// Waits up to `timeout` for a message; false on timeout (or EINTR).
    pub fn poll_in(fd: RawFd, timeout: Duration) -> io::Result<bool> {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, c_int::MAX as u128) as c_int;
        // SAFETY: one valid `pollfd` on the stack, count 1; poll only writes `revents`.
        let rc = unsafe { libc::poll(&mut p, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e);
        }
        Ok(rc > 0 && p.revents & libc::POLLIN != 0)
    }

    #[cfg(all(test, target_arch = "x86_64"))]
    #[test]
    fn ioctl_numbers_match_linux_ipmi_h() {
        // From a C program including <linux/ipmi.h> on x86_64 (struct sizes 40 and 48).
        assert_eq!(SEND_COMMAND, 0x8028_690d);
        assert_eq!(RECEIVE_MSG_TRUNC, 0xc030_690b);
    }
}
