//! The read side of TFTP as pure state machines: [`decide`] turns a datagram that arrived on
//! the listening port into "start a transfer" or "refuse with this ERROR", and
//! [`ReadTransfer`] drives one transfer: option negotiation (OACK), windows of DATA blocks
//! (RFC 7440), ACK handling, retransmission on deadline, block-number wrap-around, and
//! pacing ([`ReadTransfer::set_pace`]): under a boot storm a transfer waiting for a full-speed
//! slot is answered at once (OACK or block 1) and then gets one window per pace interval, so
//! its client sees steady progress and never runs out of retries while it waits.
//!
//! Sans-IO: the caller feeds `(now, packet)` and deadlines, and performs the returned
//! [`Transmit`]s. `now` is any monotonic time as a `Duration` since an arbitrary epoch.
//! The machine never touches file bytes: DATA is described by offset and length, so the
//! glue may serve from a memory cache or from disk.

use std::time::Duration;

use super::path::{self, ResolvePathError};
use super::wire::{
    self, DEFAULT_BLKSIZE, DecodePacketError, ErrorCode, MIN_BLKSIZE, Mode, OP_ERROR, Packet,
    RawOption, RequestedOptions,
};

/// Server-side limits and defaults for transfers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (a client asking more gets this in the OACK).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not negotiate one.
    pub default_timeout: Duration,
    /// How many retransmissions of the same window before the transfer is given up.
    pub max_retries: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: wire::MAX_BLKSIZE,
            max_windowsize: 64,
            default_timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// What to do with a datagram that arrived on the listening port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve `path` (relative to the root) with these options, in `mode` (octet, or
    /// netascii: the stream of [`super::netascii`]).
    Read {
        requested: String,
        path: std::path::PathBuf,
        mode: Mode,
        options: RequestedOptions,
    },
    /// Answer with this ERROR and do nothing else.
    Refuse {
        code: ErrorCode,
        message: String,
        /// For logs: what was asked, when known.
        requested: Option<String>,
    },
    /// Say nothing (an ERROR packet sent to us: answering could loop).
    Ignore,
}

/// Decides what a datagram on the listening port asks for. Never panics.
pub fn decide(buf: &[u8]) -> Decision {
    let refuse = |code, message: String, requested: Option<String>| Decision::Refuse {
        code,
        message,
        requested,
    };
    match wire::decode(buf) {
        Ok(Packet::Rrq(r)) => {
            if r.mode == Mode::Mail {
                // Obsolete since RFC 1350; refuse it clearly.
                return refuse(
                    ErrorCode::IllegalOperation,
                    "mail mode is not served; use octet or netascii".into(),
                    Some(r.filename),
                );
            }
            let mut options = RequestedOptions::parse(&r.options);
            if r.mode == Mode::Netascii && options.tsize {
                // The stream is longer than the file and the client stores neither length;
                // like tftpd-hpa, offer no size in netascii mode (RFC 2347: left out).
                options.tsize = false;
                options
                    .ignored
                    .push(("tsize".into(), "no size is offered in netascii mode"));
            }
            match path::resolve(&r.filename) {
                Ok(path) => Decision::Read {
                    options,
                    requested: r.filename,
                    mode: r.mode,
                    path,
                },
                Err(e) => refuse(
                    match e {
                        ResolvePathError::Empty => ErrorCode::FileNotFound,
                        _ => ErrorCode::AccessViolation,
                    },
                    e.to_string(),
                    Some(r.filename),
                ),
            }
        }
        Ok(Packet::Wrq(r)) => refuse(
            ErrorCode::AccessViolation,
            "read-only server: write requests are refused".into(),
            Some(r.filename),
        ),
        Ok(Packet::Error { .. }) => Decision::Ignore,
        Ok(p) => refuse(
            ErrorCode::IllegalOperation,
            format!("{} without a transfer; send a read request", p.kind()),
            None,
        ),
        // A broken ERROR packet is still not answered.
        Err(_) if buf.get(..2) == Some(&OP_ERROR.to_be_bytes()[..]) => Decision::Ignore,
        Err(e) => refuse(
            ErrorCode::IllegalOperation,
            format!("malformed packet: {e}"),
            None,
        ),
    }
}

/// Something to send to the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// An encoded OACK or ERROR packet.
    Packet(Vec<u8>),
    /// A DATA packet with wire block number `block` carrying the file bytes
    /// `offset..offset + len`.
    Data { block: u16, offset: u64, len: usize },
}

/// Why a transfer ended without the client acknowledging the last block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadTransferError {
    #[error("no acknowledgement after {retries} retransmissions")]
    TimedOut { retries: u32 },
    #[error("client sent ERROR {code}: {message}", code = .code.to_u16())]
    Peer { code: ErrorCode, message: String },
    #[error("client sent {0} during a read transfer")]
    Illegal(&'static str),
    #[error("client sent a malformed packet")]
    Malformed(#[source] DecodePacketError),
    #[error("stopped by the server")]
    Aborted,
}

/// The state of a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Running,
    Complete,
    Failed(ReadTransferError),
}

/// What was agreed with the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    /// Whether an OACK was sent (the client asked for at least one option we accept).
    pub oack: bool,
}

/// One read transfer (server side).
#[derive(Debug)]
pub struct ReadTransfer {
    file_size: u64,
    negotiated: Negotiated,
    max_retries: u32,
    /// Absolute number of the final (short, possibly empty) block; blocks count from 1.
    last_block: u64,
    /// The encoded OACK while waiting for its ACK (block 0).
    pending_oack: Option<Vec<u8>>,
    /// First block not yet acknowledged.
    base: u64,
    /// Highest block sent so far in the current window.
    sent_upto: u64,
    deadline: Option<Duration>,
    retries: u32,
    status: Status,
    /// At most one window of new blocks per this interval (`None`: as fast as ACKs come).
    pace: Option<Duration>,
    /// When the last window holding a new block (or the first OACK) went out.
    last_new: Option<Duration>,
    /// The client acknowledged everything sent and the next window waits for the pace;
    /// `deadline` is then when it may go.
    held: bool,
    /// Counters for logs and tests.
    pub stats: TransferStats,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransferStats {
    /// DATA packets sent, retransmissions included.
    pub data_sent: u64,
    /// DATA packets for blocks that had been sent before.
    pub retransmits: u64,
    pub timeouts: u64,
    pub ignored_acks: u64,
}

impl ReadTransfer {
    /// Starts serving a file of `file_size` bytes; the first packets go into `out`.
    pub fn start(
        now: Duration,
        options: &RequestedOptions,
        file_size: u64,
        limits: &Limits,
        out: &mut Vec<Transmit>,
    ) -> ReadTransfer {
        let mut accepted = Vec::new();
        let mut push = |name: &str, value: String| {
            accepted.push(RawOption {
                name: name.to_string(),
                value,
            })
        };
        let mut blksize = DEFAULT_BLKSIZE;
        if let Some(b) = options.blksize {
            blksize = b.min(limits.max_blksize).max(MIN_BLKSIZE);
            push("blksize", blksize.to_string());
        }
        let mut timeout = limits.default_timeout;
        if let Some(t) = options.timeout {
            timeout = Duration::from_secs(u64::from(t));
            push("timeout", t.to_string());
        }
        if options.tsize {
            push("tsize", file_size.to_string());
        }
        let mut windowsize = 1;
        if let Some(w) = options.windowsize {
            windowsize = w.min(limits.max_windowsize).max(1);
            push("windowsize", windowsize.to_string());
        }
        let pending_oack = (!accepted.is_empty()).then(|| {
            let mut buf = Vec::new();
            wire::encode(&Packet::Oack { options: accepted }, &mut buf);
            buf
        });
        let mut t = ReadTransfer {
            file_size,
            negotiated: Negotiated {
                blksize,
                windowsize,
                timeout,
                oack: pending_oack.is_some(),
            },
            max_retries: limits.max_retries,
            last_block: file_size / u64::from(blksize) + 1,
            pending_oack,
            base: 1,
            sent_upto: 0,
            deadline: None,
            retries: 0,
            status: Status::Running,
            pace: None,
            last_new: None,
            held: false,
            stats: TransferStats::default(),
        };
        t.send_current(now, out);
        t
    }

    /// Paces the transfer: with `Some(interval)` at most one window of new blocks goes out
    /// per `interval` (an acknowledged window's successor is held until then; a lost block
    /// is still retransmitted on the normal deadline); with `None` it runs at the client's
    /// speed again and a held window goes out at once (into `out`).
    ///
    /// A transfer waiting for a slot under a boot storm runs paced: its client got its OACK
    /// (or block 1) at once and then sees a block every `interval`, so a firmware retry
    /// timer that gives up after ~16 s of silence (iPXE: 0.25 s doubling, fail past 10 s)
    /// never expires for good, however long the wait for a full-speed slot.
    pub fn set_pace(&mut self, now: Duration, pace: Option<Duration>, out: &mut Vec<Transmit>) {
        self.pace = pace.filter(|p| !p.is_zero());
        if self.held && !self.is_finished() {
            self.advance(now, out);
        }
    }

    /// Whether the transfer is paced ([`ReadTransfer::set_pace`]).
    pub fn paced(&self) -> bool {
        self.pace.is_some()
    }

    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn is_finished(&self) -> bool {
        self.status != Status::Running
    }

    /// When [`ReadTransfer::handle_timeout`] must be called next; `None` when finished.
    pub fn poll_at(&self) -> Option<Duration> {
        self.deadline
    }

    /// Feeds a packet received from the client (on the transfer's own port).
    pub fn handle_packet(&mut self, now: Duration, packet: &Packet<'_>, out: &mut Vec<Transmit>) {
        if self.is_finished() {
            return;
        }
        match packet {
            Packet::Ack { block } => self.handle_ack(now, *block, out),
            Packet::Error { code, message } => {
                self.finish(Status::Failed(ReadTransferError::Peer {
                    code: *code,
                    message: message.clone(),
                }))
            }
            other => {
                let kind = other.kind();
                out.push(error_packet(
                    ErrorCode::IllegalOperation,
                    &format!("unexpected {kind} during a read transfer"),
                ));
                self.finish(Status::Failed(ReadTransferError::Illegal(kind)));
            }
        }
    }

    /// Feeds a datagram from the client that did not decode.
    pub fn handle_malformed(&mut self, error: DecodePacketError, out: &mut Vec<Transmit>) {
        if self.is_finished() {
            return;
        }
        out.push(error_packet(
            ErrorCode::IllegalOperation,
            &format!("malformed packet: {error}"),
        ));
        self.finish(Status::Failed(ReadTransferError::Malformed(error)));
    }

    /// Retransmits (or gives up) when the deadline from [`ReadTransfer::poll_at`] passed;
    /// for a paced transfer whose window was held, sends the next window. Calling it early
    /// does nothing.
    pub fn handle_timeout(&mut self, now: Duration, out: &mut Vec<Transmit>) {
        match self.deadline {
            Some(d) if now >= d && !self.is_finished() => {}
            _ => return,
        }
        if self.held {
            self.held = false;
            self.send_current(now, out);
            return;
        }
        self.stats.timeouts += 1;
        if self.retries >= self.max_retries {
            out.push(error_packet(
                ErrorCode::NotDefined,
                "timed out waiting for acknowledgement",
            ));
            self.finish(Status::Failed(ReadTransferError::TimedOut {
                retries: self.retries,
            }));
            return;
        }
        self.retries += 1;
        self.send_current(now, out);
    }

    /// Stops the transfer, telling the client (server shutdown).
    pub fn abort(&mut self, message: &str, out: &mut Vec<Transmit>) {
        if self.is_finished() {
            return;
        }
        out.push(error_packet(ErrorCode::NotDefined, message));
        self.finish(Status::Failed(ReadTransferError::Aborted));
    }

    fn handle_ack(&mut self, now: Duration, block: u16, out: &mut Vec<Transmit>) {
        if self.pending_oack.is_some() {
            if block == 0 {
                self.pending_oack = None;
                self.retries = 0;
                self.advance(now, out);
            } else {
                self.stats.ignored_acks += 1;
            }
            return;
        }
        // Map the 16-bit block number onto the blocks this ACK can be about:
        // base - 1 (already acknowledged: a duplicate) ..= sent_upto.
        let prev = self.base - 1;
        // Truncation to the wire's 16 bits is the point here.
        #[allow(clippy::cast_possible_truncation)]
        let delta = u64::from(block.wrapping_sub(prev as u16));
        if delta == 0 || delta > self.sent_upto - prev {
            // A duplicate or stale ACK, or one for a block never sent. Never retransmit on
            // it (Sorcerer's Apprentice); the deadline covers real loss.
            self.stats.ignored_acks += 1;
            return;
        }
        let acked = prev + delta;
        if acked == self.last_block {
            self.finish(Status::Complete);
            return;
        }
        // RFC 7440: continue with the block after the acknowledged one, even when that
        // was in the middle of the window (the client saw a gap).
        self.base = acked + 1;
        self.retries = 0;
        self.advance(now, out);
    }

    /// Everything sent is acknowledged: the next window now, or held until the pace allows.
    fn advance(&mut self, now: Duration, out: &mut Vec<Transmit>) {
        if let (Some(pace), Some(last)) = (self.pace, self.last_new)
            && now < last + pace
        {
            self.held = true;
            self.deadline = Some(last + pace);
            return;
        }
        self.held = false;
        self.send_current(now, out);
    }

    /// Sends the OACK if still unacknowledged, else the window starting at `base`.
    fn send_current(&mut self, now: Duration, out: &mut Vec<Transmit>) {
        if let Some(oack) = &self.pending_oack {
            if self.last_new.is_none() {
                self.last_new = Some(now);
            }
            out.push(Transmit::Packet(oack.clone()));
        } else {
            let blksize = u64::from(self.negotiated.blksize);
            let end = (self.base + u64::from(self.negotiated.windowsize) - 1).min(self.last_block);
            for abs in self.base..=end {
                if abs <= self.sent_upto {
                    self.stats.retransmits += 1;
                }
                let offset = (abs - 1) * blksize;
                let len = self.file_size.saturating_sub(offset).min(blksize);
                out.push(Transmit::Data {
                    // Block numbers wrap to 0 after 65535 (what tftp-hpa, curl, atftp
                    // and iPXE expect); the truncation is the wrap.
                    #[allow(clippy::cast_possible_truncation)]
                    block: abs as u16,
                    offset,
                    // len <= blksize <= 65464.
                    len: usize::try_from(len).unwrap_or(0),
                });
                self.stats.data_sent += 1;
            }
            if end > self.sent_upto {
                self.last_new = Some(now);
            }
            self.sent_upto = self.sent_upto.max(end);
        }
        self.deadline = Some(now + self.negotiated.timeout);
    }

    fn finish(&mut self, status: Status) {
        self.status = status;
        self.deadline = None;
        self.held = false;
    }
}

/// An encoded ERROR packet.
pub fn error_packet(code: ErrorCode, message: &str) -> Transmit {
    let mut buf = Vec::new();
    wire::encode_error(code, message, &mut buf);
    Transmit::Packet(buf)
}

#[cfg(test)]
mod tests;
