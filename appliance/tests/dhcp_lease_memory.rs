//! The DHCP core's memory per lease, measured by counting the heap it holds: the box keeps
//! every lease of its pools in memory (`protocol::dhcp::LeaseTable`), so this is what a
//! pool's worth of clients costs it. 45,000 clients (as in `scripts/bench dhcp`) each do a
//! DISCOVER/REQUEST exchange through the real core from wire bytes; the heap the core then
//! holds must stay within [`MAX_BYTES_PER_LEASE`]. A second round of the same exchanges
//! (renewals of the same addresses) must leave nothing behind: no per-packet allocation is
//! kept.
//!
//! One test in this binary: the counting allocator sees every thread's allocations.

use std::net::{Ipv4Addr, SocketAddrV4};

use appliance::protocol::dhcp::{BootConfig, DhcpServer, Mode, Pool, Port, ServerConfig};
use dhcproto::Encodable;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};

/// A global allocator that counts the bytes currently allocated.
mod counting {
    #![allow(unsafe_code)] // GlobalAlloc is an unsafe trait; this only forwards to System.

    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicIsize, Ordering};

    pub struct Counting;

    static LIVE: AtomicIsize = AtomicIsize::new(0);
    static ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

    // SAFETY: every call is forwarded unchanged to the system allocator.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller's contract is the system allocator's.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
            ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: as above; `ptr` came from `alloc` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    /// Bytes allocated and not yet freed, and how many allocations hold them.
    pub fn live() -> (isize, isize) {
        (
            LIVE.load(Ordering::Relaxed),
            ALLOCATIONS.load(Ordering::Relaxed),
        )
    }
}

#[global_allocator]
static ALLOC: counting::Counting = counting::Counting;

const BOX: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
const CLIENTS: u32 = 45_000;
/// One 24-byte record per address in a vector, and two indexes of slot numbers (by
/// address, by client identifier), with the vector's and the indexes' spare room (powers of
/// two): 55 bytes measured. Hash maps of records keyed by address and by client identifier
/// took 177 bytes; before that, with an allocation of its own for each identifier, 209.
const MAX_BYTES_PER_LEASE: isize = 64;
/// Allocations the core may hold whatever the number of leases (its maps, its config): a
/// lease has none of its own.
const MAX_ALLOCATIONS: isize = 64;

fn request(ty: MessageType, i: u32, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mac = [0x52, 0x54, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8];
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(i, zero, zero, zero, zero, &mac);
    m.set_opcode(Opcode::BootRequest);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(ty));
    // As iPXE and most clients send it: hardware type 1 + MAC.
    let mut id = vec![1];
    id.extend_from_slice(&mac);
    o.insert(DhcpOption::ClientIdentifier(id));
    if let Some(r) = requested {
        o.insert(DhcpOption::RequestedIpAddress(r));
        o.insert(DhcpOption::ServerIdentifier(BOX));
    }
    m.to_vec().expect("encodes")
}

/// Every client DISCOVERs and REQUESTs the offered address; returns how many were ACKed.
fn dora_round(s: &mut DhcpServer, now: u64) -> u32 {
    let src = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let mut acked = 0;
    for i in 0..CLIENTS {
        let offer = s
            .handle(
                now,
                Port::Dhcp,
                src,
                &request(MessageType::Discover, i, None),
            )
            .expect("offered");
        let yiaddr = offer.reply.expect("an OFFER").yiaddr;
        let ack = s
            .handle(
                now,
                Port::Dhcp,
                src,
                &request(MessageType::Request, i, Some(yiaddr)),
            )
            .expect("acked");
        let reply = ack.reply.expect("an ACK");
        assert_eq!(
            (reply.msg_type, reply.yiaddr),
            (MessageType::Ack, yiaddr),
            "client {i}"
        );
        acked += 1;
    }
    acked
}

#[test]
fn a_lease_costs_the_core_at_most_64_bytes_and_no_allocation_and_packets_leave_nothing() {
    let config = ServerConfig {
        mode: Mode::Server,
        server_ips: vec![BOX],
        pools: vec![Pool {
            start: Ipv4Addr::new(10, 252, 1, 0),
            end: Ipv4Addr::new(10, 252, 250, 255),
            netmask: Ipv4Addr::new(255, 255, 0, 0),
            router: None,
            dns: vec![],
            domain: None,
            lease_time_secs: 3600,
        }],
        reservations: vec![],
        boot: BootConfig::default(),
        decline_hold_secs: 600,
    };
    let (before, allocs_before) = counting::live();
    let mut s = DhcpServer::new(config, Vec::new()).expect("valid config");
    assert_eq!(dora_round(&mut s, 1_000), CLIENTS);
    assert_eq!(s.leases().len(), CLIENTS as usize);
    let (now, allocs_now) = counting::live();
    let (held, allocations) = (now - before, allocs_now - allocs_before);
    let per_lease = held / CLIENTS as isize;
    println!(
        "core holds {held} bytes in {allocations} allocations for {CLIENTS} leases: \
         {per_lease} bytes per lease"
    );
    assert!(
        per_lease <= MAX_BYTES_PER_LEASE,
        "{per_lease} bytes per lease (at most {MAX_BYTES_PER_LEASE})"
    );
    assert!(
        allocations <= MAX_ALLOCATIONS,
        "{allocations} allocations held for {CLIENTS} leases (at most {MAX_ALLOCATIONS})"
    );

    // The same clients again, a minute later: same addresses, new expiry, nothing kept.
    assert_eq!(dora_round(&mut s, 1_060), CLIENTS);
    assert_eq!(s.leases().len(), CLIENTS as usize);
    let grown = counting::live().0 - before - held;
    println!("a second round of {CLIENTS} exchanges left {grown} bytes");
    assert!(
        grown <= 4096,
        "a second round of the same exchanges kept {grown} bytes"
    );
}
