//! Finding the provisioning interface: its name, IPv4 address and netmask, read from the
//! kernel (`getifaddrs` via the `if-addrs` crate). `interface = "auto"` picks the first
//! interface that is up (running), not loopback and has an IPv4 address.

use std::net::Ipv4Addr;

/// The box's side of the PXE network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
}

/// One IPv4 address of one interface, as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub up: bool,
    pub loopback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FindInterfaceError {
    #[error("cannot list network interfaces")]
    List(#[source] std::io::Error),
    #[error("interface = \"auto\": no interface is up, non-loopback and has an IPv4 address")]
    NoAuto,
    #[error("interface `{0}` does not exist or has no IPv4 address")]
    NotFound(String),
}

/// Picks the interface for `spec` ("auto" or a name) from `candidates` (kernel order).
pub fn pick(spec: &str, candidates: &[Candidate]) -> Result<Interface, FindInterfaceError> {
    let found = if spec == "auto" {
        candidates
            .iter()
            .find(|c| c.up && !c.loopback)
            .ok_or(FindInterfaceError::NoAuto)?
    } else {
        candidates
            .iter()
            .find(|c| c.name == spec)
            .ok_or_else(|| FindInterfaceError::NotFound(spec.to_string()))?
    };
    Ok(Interface {
        name: found.name.clone(),
        addr: found.addr,
        netmask: found.netmask,
    })
}

/// Reads the kernel's interface list and picks the interface for `spec`.
pub fn find(spec: &str) -> Result<Interface, FindInterfaceError> {
    let list = if_addrs::get_if_addrs().map_err(FindInterfaceError::List)?;
    let candidates: Vec<Candidate> = list
        .iter()
        .filter_map(|i| match &i.addr {
            if_addrs::IfAddr::V4(v4) => Some(Candidate {
                name: i.name.clone(),
                addr: v4.ip,
                netmask: v4.netmask,
                up: i.is_oper_up(),
                loopback: i.is_loopback(),
            }),
            _ => None,
        })
        .collect();
    pick(spec, &candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(name: &str, addr: [u8; 4], up: bool, loopback: bool) -> Candidate {
        Candidate {
            name: name.into(),
            addr: addr.into(),
            netmask: [255, 255, 255, 0].into(),
            up,
            loopback,
        }
    }

    #[test]
    fn auto_skips_loopback_and_down_interfaces() {
        let list = [
            c("lo", [127, 0, 0, 1], true, true),
            c("eth0", [10, 0, 0, 2], false, false),
            c("eth1", [10, 8, 0, 1], true, false),
        ];
        assert_eq!(pick("auto", &list).unwrap().name, "eth1");
        assert_eq!(
            pick("eth0", &list).unwrap().addr,
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert!(matches!(
            pick("eth9", &list),
            Err(FindInterfaceError::NotFound(_))
        ));
        assert!(matches!(
            pick("auto", &list[..2]),
            Err(FindInterfaceError::NoAuto)
        ));
    }

    #[test]
    fn kernel_list_is_readable() {
        // Loopback always exists; asking for it by name must work on any Linux box.
        let lo = find("lo").unwrap();
        assert_eq!(lo.addr, Ipv4Addr::LOCALHOST);
    }
}
