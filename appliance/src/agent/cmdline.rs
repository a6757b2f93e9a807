//! The agent's settings from the kernel command line, as the boot room renders them
//! (`boot::args::agent_args`): `sidero.endpoint=<host>:<port>` (required) and
//! `sidero.mac=<mac>` (the NIC the server PXE-booted from; optional) and `appliance.token=`
//! (the one-boot token of authenticated first contact; optional, 64 hex digits).
//!
//! Pure: parses a string; reading /proc/cmdline is the caller's job.

use thiserror::Error;

/// What the agent needs from the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCmdline {
    /// `host:port` of the box's gRPC/HTTP listener.
    pub endpoint: String,
    /// Lower-case colon form, when given.
    pub mac: Option<String>,
    /// The boot token `/ipxe` handed this boot, when given.
    pub token: Option<String>,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("no sidero.endpoint=<host>:<port> on the kernel command line")]
    NoEndpoint,
    #[error("sidero.endpoint `{0}` is not <host>:<port> with a port 1-65535")]
    BadEndpoint(String),
    #[error("sidero.mac `{0}` is not a MAC address")]
    BadMac(String),
    #[error("appliance.token is not 64 hex digits")]
    BadToken,
}

/// Parses the kernel command line. The last occurrence of a key wins (as the kernel does
/// for most parameters). Quoted values (`key="v"`) are unquoted.
pub fn parse(cmdline: &str) -> Result<AgentCmdline, CmdlineError> {
    let mut endpoint = None;
    let mut mac = None;
    let mut token = None;
    for arg in split_args(cmdline) {
        if let Some(v) = arg.strip_prefix("sidero.endpoint=") {
            endpoint = Some(v.to_string());
        } else if let Some(v) = arg.strip_prefix("sidero.mac=") {
            mac = Some(v.to_string());
        } else if let Some(v) = arg
            .strip_prefix(crate::protocol::first_contact::TOKEN_ARG)
            .and_then(|r| r.strip_prefix('='))
        {
            token = Some(v.to_string());
        }
    }
    let endpoint = endpoint.ok_or(CmdlineError::NoEndpoint)?;
    check_endpoint(&endpoint)?;
    let mac = match mac {
        None => None,
        Some(m) if m.is_empty() => None,
        Some(m) => {
            let parsed: crate::model::MacAddr =
                m.parse().map_err(|_| CmdlineError::BadMac(m.clone()))?;
            Some(parsed.to_string())
        }
    };
    if let Some(t) = &token
        && (t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(CmdlineError::BadToken);
    }
    Ok(AgentCmdline {
        endpoint,
        mac,
        token,
    })
}

/// `host:port` or `[v6]:port`, non-empty host without spaces or slashes, port 1-65535.
fn check_endpoint(ep: &str) -> Result<(), CmdlineError> {
    let bad = || CmdlineError::BadEndpoint(ep.chars().take(128).collect());
    let (host, port) = ep.rsplit_once(':').ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty()
        || host.contains(['/', ' ', '[', ']'])
        || (host.contains(':') && !ep.starts_with('['))
    {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(bad()),
    }
}

/// Splits a command line into arguments on whitespace, keeping double-quoted spans
/// together and removing the quotes.
fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_args_the_boot_room_renders() {
        let args = crate::boot::args::agent_args(
            crate::boot::Arch::Amd64,
            Some("52:54:00:AA:bb:01"),
            "10.77.0.1:8081",
            &[],
        )
        .join(" ");
        let got = parse(&format!("BOOT_IMAGE=vmlinuz {args}\n")).unwrap();
        assert_eq!(
            got,
            AgentCmdline {
                endpoint: "10.77.0.1:8081".into(),
                mac: Some("52:54:00:aa:bb:01".into()),
                token: None,
            }
        );
        let t = "0f".repeat(32);
        let got = parse(&format!("{args} appliance.token={t}")).unwrap();
        assert_eq!(got.token, Some(t));
        assert_eq!(
            parse(&format!("{args} appliance.token=abc")),
            Err(CmdlineError::BadToken)
        );
    }

    #[test]
    fn mac_is_optional_and_normalised() {
        let got = parse("quiet sidero.endpoint=box.example:8081").unwrap();
        assert_eq!(got.mac, None);
        let got = parse("sidero.mac=52-54-00-AA-BB-01 sidero.endpoint=box:1").unwrap();
        assert_eq!(got.mac.as_deref(), Some("52:54:00:aa:bb:01"));
    }

    #[test]
    fn last_occurrence_wins_and_quotes_are_removed() {
        let got =
            parse("sidero.endpoint=a:1 x=\"a b\" sidero.endpoint=\"[fd00::1]:8081\"").unwrap();
        assert_eq!(got.endpoint, "[fd00::1]:8081");
        assert_eq!(split_args(" a  \"b c\"d e= "), vec!["a", "b cd", "e="]);
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert_eq!(parse("quiet"), Err(CmdlineError::NoEndpoint));
        for ep in [
            "box",
            "box:",
            "box:0",
            "box:65536",
            ":80",
            "fd00::1:80",
            "a b:1",
            "h/x:1",
        ] {
            assert!(
                matches!(
                    parse(&format!("sidero.endpoint=\"{ep}\"")),
                    Err(CmdlineError::BadEndpoint(_))
                ),
                "{ep}"
            );
        }
        assert_eq!(
            parse("sidero.endpoint=b:1 sidero.mac=zz"),
            Err(CmdlineError::BadMac("zz".into()))
        );
    }
}
