//! Overlay addressing, exactly as Sidero derives it (`SL:pkg/wireguard/address.go`, Talos
//! `network.ULAPrefix`): SHA-256 over the installation id string, the digest's last 16
//! bytes with byte 0 = `0xfd` (RFC 4193 ULA) and byte 7 = `0x03` (the SideroLink purpose),
//! masked to /64. The server is `<prefix>::1`; nodes get the prefix plus 8 random bytes.
//!
//! Unlike Sidero, allocation checks for collisions (with the server, the subnet-router
//! anycast address and every address already bound) and tries further random candidates.

use std::net::Ipv6Addr;

use sha2::{Digest, Sha256};

/// The prefix length of the overlay and of every node address.
pub const PREFIX_LEN: u8 = 64;

/// Byte 7 of the prefix: Talos's ULA purpose for SideroLink.
pub const ULA_PURPOSE_SIDEROLINK: u8 = 0x03;

/// A SideroLink /64 (the network address; the lower 64 bits are zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix(Ipv6Addr);

impl Prefix {
    /// `NetworkPrefix(installationID)`.
    pub fn derive(installation_id: &str) -> Prefix {
        let digest = Sha256::digest(installation_id.as_bytes());
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&digest[16..24]);
        b[0] = 0xfd;
        b[7] = ULA_PURPOSE_SIDEROLINK;
        Prefix(Ipv6Addr::from(b))
    }

    /// The network address (`<prefix>::`).
    pub fn network(self) -> Ipv6Addr {
        self.0
    }

    /// The server's tunnel address, the first host: `<prefix>::1`.
    pub fn server_address(self) -> Ipv6Addr {
        self.with_host(1)
    }

    /// Whether `addr` lies inside this /64.
    pub fn contains(self, addr: Ipv6Addr) -> bool {
        addr.octets()[..8] == self.0.octets()[..8]
    }

    /// The prefix with `host` as its lower 64 bits.
    pub fn with_host(self, host: u64) -> Ipv6Addr {
        let mut b = self.0.octets();
        b[8..].copy_from_slice(&host.to_be_bytes());
        Ipv6Addr::from(b)
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{PREFIX_LEN}", self.0)
    }
}

/// Why no node address could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// Every candidate collided (with the supplied random bytes this means they were not
    /// random, or the /64 is impossibly full).
    #[error("all {tried} random candidates collide with addresses in use")]
    Exhausted { tried: usize },
}

/// Why a stored node address (`"<ipv6>/64"`) is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeAddressError {
    #[error("`{0}` is not `<ipv6>/64`")]
    Syntax(String),
    #[error("`{addr}` is outside the overlay {prefix}")]
    OutsidePrefix { addr: Ipv6Addr, prefix: Prefix },
}

/// Picks a node address: the prefix plus the first candidate (8 random bytes each) that is
/// neither reserved (`::0` router anycast, `::1` the server) nor `in_use`.
pub fn allocate<I>(
    prefix: Prefix,
    candidates: I,
    mut in_use: impl FnMut(Ipv6Addr) -> bool,
) -> Result<Ipv6Addr, AllocateError>
where
    I: IntoIterator<Item = [u8; 8]>,
{
    let mut tried = 0;
    for bytes in candidates {
        tried += 1;
        let host = u64::from_be_bytes(bytes);
        if host <= 1 {
            continue;
        }
        let addr = prefix.with_host(host);
        if !in_use(addr) {
            return Ok(addr);
        }
    }
    Err(AllocateError::Exhausted { tried })
}

/// The stored form of a node address, as Sidero writes `spec.siderolink.address`.
pub fn format_node_address(addr: Ipv6Addr) -> String {
    format!("{addr}/{PREFIX_LEN}")
}

/// Reads a stored `"<ipv6>/64"` and checks that it is a host inside `prefix`, so that a
/// binding written under another installation id is re-allocated rather than reused.
pub fn parse_node_address(s: &str, prefix: Prefix) -> Result<Ipv6Addr, NodeAddressError> {
    let syntax = || NodeAddressError::Syntax(s.to_string());
    let (addr, len) = s.split_once('/').ok_or_else(syntax)?;
    if len != "64" {
        return Err(syntax());
    }
    let addr: Ipv6Addr = addr.parse().map_err(|_| syntax())?;
    let host = u64::from_be_bytes(addr.octets()[8..].try_into().unwrap_or([0; 8]));
    if !prefix.contains(addr) || host <= 1 {
        return Err(NodeAddressError::OutsidePrefix { addr, prefix });
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_matches_sidero_derivation() {
        // Vectors computed independently (Python hashlib) from the Go definition.
        let p = Prefix::derive("kVSbHn0mXI6qZXZCMNr1sR2qBQ3AUiVTTbHOqSv9+XE=");
        assert_eq!(p.to_string(), "fd0b:4902:8b54:2503::/64");
        assert_eq!(
            p.server_address(),
            "fd0b:4902:8b54:2503::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(Prefix::derive("").to_string(), "fdae:41e4:649b:9303::/64");
    }

    #[test]
    fn allocate_skips_reserved_and_taken() {
        let p = Prefix::derive("x");
        let taken = p.with_host(0x0102_0304_0506_0708);
        let got = allocate(
            p,
            [
                [0; 8],
                [0, 0, 0, 0, 0, 0, 0, 1],
                taken.octets()[8..].try_into().unwrap(),
                [9; 8],
            ],
            |a| a == taken,
        )
        .unwrap();
        assert_eq!(got, p.with_host(u64::from_be_bytes([9; 8])));
        assert!(p.contains(got));
        assert_eq!(
            allocate(p, [[7; 8]], |_| true),
            Err(AllocateError::Exhausted { tried: 1 })
        );
        assert_eq!(
            allocate(p, std::iter::empty(), |_| false),
            Err(AllocateError::Exhausted { tried: 0 })
        );
    }

    #[test]
    fn node_address_round_trip_and_refusals() {
        let p = Prefix::derive("x");
        let a = p.with_host(0xdead_beef);
        assert_eq!(parse_node_address(&format_node_address(a), p), Ok(a));
        for bad in ["", "fd00::5", "fd00::5/128", "nonsense/64", "/64"] {
            assert!(
                matches!(parse_node_address(bad, p), Err(NodeAddressError::Syntax(_))),
                "{bad}"
            );
        }
        let other = Prefix::derive("y").with_host(5);
        assert!(matches!(
            parse_node_address(&format_node_address(other), p),
            Err(NodeAddressError::OutsidePrefix { .. })
        ));
        assert!(matches!(
            parse_node_address(&format_node_address(p.server_address()), p),
            Err(NodeAddressError::OutsidePrefix { .. })
        ));
    }
}
