//! MAC addresses as the box reads them everywhere (config reservations, site ports, the
//! `mac=` of `/ipxe`, the agent's `sidero.mac=`, NICs in a Server's hardware): six two-digit
//! hex octets separated by `:` or `-`, shown lowercase with `:`.

use std::fmt;
use std::str::FromStr;

/// A parsed MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

/// Not a MAC address; names the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a MAC address like 52:54:00:12:34:56")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<MacAddr, BadMac> {
        let bad = || BadMac(s.to_string());
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for octet in &mut mac {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(mac))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_separators_any_case_shown_lowercase_with_colons() {
        for (text, want) in [
            ("52-54-00-12-34-56", "52:54:00:12:34:56"),
            ("52:54:00:AB:cd:EF", "52:54:00:ab:cd:ef"),
        ] {
            let m: MacAddr = text.parse().unwrap();
            assert_eq!(m.to_string(), want);
        }
        assert_eq!(
            "52:54:00:12:34:56".parse(),
            Ok(MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]))
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_text() {
        for bad in [
            "",
            "52-54-00-12-34",
            "52-54-00-12-34-5g",
            "525400123456",
            "52-54-00-12-34-56-78",
            "52:54:00:12:34:+f",
            "52:54:00:12:34:5",
        ] {
            assert_eq!(bad.parse::<MacAddr>(), Err(BadMac(bad.into())), "{bad}");
        }
        assert_eq!(
            BadMac("x".into()).to_string(),
            "`x` is not a MAC address like 52:54:00:12:34:56"
        );
    }
}
