//! The query string iPXE sends to `/ipxe` (`uuid=…&mac=…&domain=…&hostname=…&serial=…&arch=…`,
//! built by the `/boot.ipxe` chain script), read once here for the boot decision and the
//! timeline. Pure; the percent-decoding is the `form_urlencoded` crate's
//! (`application/x-www-form-urlencoded`, as iPXE's `${uuid:uristring}` encodes).
//!
//! A key given twice counts with its first value, as before; a MAC that does not parse is
//! absent (the decision then goes by UUID alone), never an error: iPXE always sends the
//! query, and a client that sends junk gets the answer for an unknown machine.

use crate::model::mac::MacAddr;

/// What `/ipxe` reads from its query string. `token` is never read from a query: the boot
/// token travels in the agent's kernel arguments, not back to `/ipxe`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpxeQuery {
    /// SMBIOS UUID, trimmed and lower-cased (iPXE prints it upper-case on some builds).
    pub uuid: String,
    /// The booting NIC, when `mac=` parses.
    pub mac: Option<MacAddr>,
    /// iPXE `${buildarch}` as sent (`x86_64`, `i386`, `arm64`…); `boot::Arch::from_query`
    /// maps it.
    pub arch: String,
    pub hostname: String,
    pub domain: String,
    pub serial: String,
}

impl IpxeQuery {
    /// Reads a raw query string (without the `?`); `None` is an empty query.
    pub fn parse(raw: Option<&str>) -> IpxeQuery {
        let mut q = IpxeQuery::default();
        let mut seen = [false; 6];
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let slot = match key.as_ref() {
                "uuid" => 0,
                "mac" => 1,
                "arch" => 2,
                "hostname" => 3,
                "domain" => 4,
                "serial" => 5,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                continue;
            }
            match slot {
                0 => q.uuid = value.trim().to_ascii_lowercase(),
                1 => q.mac = value.parse().ok(),
                2 => q.arch = value.into_owned(),
                3 => q.hostname = value.into_owned(),
                4 => q.domain = value.into_owned(),
                _ => q.serial = value.into_owned(),
            }
        }
        q
    }

    /// The query string that reads back as `self` (used by the fuzz property and tests).
    pub fn encode(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        out.append_pair("uuid", &self.uuid);
        if let Some(m) = self.mac {
            out.append_pair("mac", &m.to_string());
        }
        out.append_pair("arch", &self.arch)
            .append_pair("hostname", &self.hostname)
            .append_pair("domain", &self.domain)
            .append_pair("serial", &self.serial);
        out.finish()
    }
}

/// The fuzz property (cargo-fuzz target `ipxe_query`, corpus replay in `cargo test`): any
/// bytes as a query string never panic; the UUID read is trimmed and lower-case; what was
/// read encodes to a query that reads back the same.
pub fn check_query(data: &[u8]) {
    let raw = String::from_utf8_lossy(data);
    let q = IpxeQuery::parse(Some(&raw));
    assert_eq!(
        q.uuid,
        q.uuid.trim().to_ascii_lowercase(),
        "uuid not normalised"
    );
    let again = IpxeQuery::parse(Some(&q.encode()));
    assert_eq!(again, q, "query did not read back the same");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_chain_script_sends() {
        let q = IpxeQuery::parse(Some(
            "uuid=4C4C4544-0042-3510-8053-B7C04F563232%20&mac=52%3A54%3A00%3Aab%3Acd%3Aef&domain=&hostname=node%201&serial=SN+7&arch=arm64",
        ));
        assert_eq!(q.uuid, "4c4c4544-0042-3510-8053-b7c04f563232");
        assert_eq!(
            q.mac.map(|m| m.to_string()).as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(q.arch, "arm64");
        assert_eq!(q.hostname, "node 1");
        assert_eq!(q.serial, "SN 7");
        assert_eq!(q.domain, "");
    }

    #[test]
    fn first_value_wins_and_junk_mac_is_absent() {
        let q = IpxeQuery::parse(Some("uuid=a&uuid=b&mac=zz:zz&arch=x86_64&token=t"));
        assert_eq!(q.uuid, "a");
        assert_eq!(q.mac, None);
        assert_eq!(q.arch, "x86_64");
        assert_eq!(IpxeQuery::parse(None), IpxeQuery::default());
    }

    #[test]
    fn fuzz_smoke_round_trips() {
        for raw in [
            &b"uuid=%ff%fe&mac=%00"[..],
            b"&&==&uuid==&mac=52:54:00:00:00:01&mac=52:54:00:00:00:02",
            b"uuid=%20%09A%20",
            b"\xff\xfe=\x00",
            b"hostname=%E2%82%AC&serial=a+b%2Bc",
        ] {
            check_query(raw);
        }
    }
}
