//! Site settings of a flashed box: the operator's file on the EFI system partition
//! (`appliance.conf`: management and provisioning ports, addresses, pool), turned into
//! systemd-networkd `.network` files and the config overlay `appliance serve` runs with.
//!
//! `parse`, `choose_ports` and `render` are pure; `apply` (run by `appliance setup network`
//! from `appliance-setup.service` on every boot) does the IO: on first boot it copies the ESP
//! file to the data partition, later boots read that copy, so an ESP edited after first boot
//! changes nothing.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Settings shipped when the operator left the ESP file out.
pub const DEFAULT_SETTINGS: &str = include_str!("../../rootfs/usr/share/appliance/appliance.conf");

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("line {line}: expected `key = value`")]
    Syntax { line: usize },
    #[error("line {line}: unknown key `{key}`")]
    UnknownKey { line: usize, key: String },
    #[error("line {line}: `{key}` given twice")]
    Duplicate { line: usize, key: String },
    #[error("`{key}`: `{value}` is not {expected}")]
    Value {
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("`provisioning_address` is required")]
    NoProvisioningAddress,
    #[error("`management_gateway` needs a static `management_address`")]
    GatewayWithDhcp,
    #[error(
        "the pool {start}-{end} is not inside {subnet}, or is empty, or holds the box's own address"
    )]
    BadPool {
        start: Ipv4Addr,
        end: Ipv4Addr,
        subnet: String,
    },
}

/// An IPv4 address with its prefix length, e.g. `10.8.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let prefix: u8 = p.parse().ok()?;
        (1..=30)
            .contains(&prefix)
            .then_some(())
            .and(a.parse().ok())
            .map(|addr| Cidr { addr, prefix })
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::MAX << (32 - u32::from(self.prefix)))
    }

    fn network(&self) -> u32 {
        u32::from(self.addr) & u32::from(self.netmask())
    }

    fn broadcast(&self) -> u32 {
        self.network() | !u32::from(self.netmask())
    }

    /// True for a host address of this subnet (not the network or broadcast address).
    fn holds_host(&self, a: Ipv4Addr) -> bool {
        let a = u32::from(a);
        a > self.network() && a < self.broadcast()
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// How a port is picked: the n-th Ethernet NIC by name, a name, or a MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    Auto,
    Name(String),
    Mac(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MgmtAddress {
    Dhcp,
    Static(Cidr),
}

/// The operator's settings, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub management_interface: PortSpec,
    pub management_address: MgmtAddress,
    pub management_gateway: Option<Ipv4Addr>,
    pub management_dns: Vec<Ipv4Addr>,
    pub provisioning_interface: PortSpec,
    pub provisioning_address: Cidr,
    pub pool_start: Ipv4Addr,
    pub pool_end: Ipv4Addr,
    pub ntp: Vec<String>,
}

const KEYS: &[&str] = &[
    "management_interface",
    "management_address",
    "management_gateway",
    "management_dns",
    "provisioning_interface",
    "provisioning_address",
    "provisioning_pool_start",
    "provisioning_pool_end",
    "ntp",
];

/// A port named by MAC (`:`-separated, as `ip link` shows it), lowercase.
fn port_mac(s: &str) -> Option<String> {
    s.contains(':')
        .then(|| s.parse::<crate::model::MacAddr>().ok())
        .flatten()
        .map(|m| m.to_string())
}

fn port_spec(key: &'static str, v: &str) -> Result<PortSpec, SettingsError> {
    if v.is_empty() || v == "auto" {
        Ok(PortSpec::Auto)
    } else if let Some(mac) = port_mac(v) {
        Ok(PortSpec::Mac(mac))
    } else if v.len() <= 15
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        Ok(PortSpec::Name(v.to_string()))
    } else {
        Err(SettingsError::Value {
            key,
            value: v.to_string(),
            expected: "`auto`, an interface name or a MAC address",
        })
    }
}

fn ipv4(key: &'static str, v: &str) -> Result<Ipv4Addr, SettingsError> {
    v.parse().map_err(|_| SettingsError::Value {
        key,
        value: v.to_string(),
        expected: "an IPv4 address",
    })
}

fn cidr(key: &'static str, v: &str) -> Result<Cidr, SettingsError> {
    Cidr::parse(v).ok_or_else(|| SettingsError::Value {
        key,
        value: v.to_string(),
        expected: "an IPv4 address with a prefix length 1-30, e.g. 10.8.0.1/24",
    })
}

/// Parses the settings file: `key = value` lines, `#` comments, empty values mean the
/// default. Unknown or repeated keys are errors, so a typo never passes silently.
pub fn parse(text: &str) -> Result<Settings, SettingsError> {
    let mut values: Vec<(&'static str, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or(SettingsError::Syntax { line: line_no })?;
        let k = k.trim();
        let key =
            *KEYS
                .iter()
                .find(|known| **known == k)
                .ok_or_else(|| SettingsError::UnknownKey {
                    line: line_no,
                    key: k.to_string(),
                })?;
        if values.iter().any(|(seen, _)| *seen == key) {
            return Err(SettingsError::Duplicate {
                line: line_no,
                key: key.to_string(),
            });
        }
        values.push((key, v.trim().trim_matches('"').to_string()));
    }
    let get = |key: &str| {
        values
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let list = |v: &str| -> Vec<String> {
        v.split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };

    let management_address = match get("management_address") {
        "" | "dhcp" => MgmtAddress::Dhcp,
        v => MgmtAddress::Static(cidr("management_address", v)?),
    };
    let management_gateway = match get("management_gateway") {
        "" => None,
        v => Some(ipv4("management_gateway", v)?),
    };
    if management_gateway.is_some() && management_address == MgmtAddress::Dhcp {
        return Err(SettingsError::GatewayWithDhcp);
    }
    let management_dns = list(get("management_dns"))
        .iter()
        .map(|d| ipv4("management_dns", d))
        .collect::<Result<_, _>>()?;
    let provisioning_address = match get("provisioning_address") {
        "" => return Err(SettingsError::NoProvisioningAddress),
        v => cidr("provisioning_address", v)?,
    };
    // Default pool: the upper half of the subnet, below the broadcast address.
    let half = (!u32::from(provisioning_address.netmask())).div_ceil(2);
    let pool_start = match get("provisioning_pool_start") {
        "" => Ipv4Addr::from(provisioning_address.network() + half),
        v => ipv4("provisioning_pool_start", v)?,
    };
    let pool_end = match get("provisioning_pool_end") {
        "" => Ipv4Addr::from(provisioning_address.broadcast() - 1),
        v => ipv4("provisioning_pool_end", v)?,
    };
    let own = provisioning_address.addr;
    if !provisioning_address.holds_host(own)
        || !provisioning_address.holds_host(pool_start)
        || !provisioning_address.holds_host(pool_end)
        || pool_start > pool_end
        || (pool_start..=pool_end).contains(&own)
    {
        return Err(SettingsError::BadPool {
            start: pool_start,
            end: pool_end,
            subnet: provisioning_address.to_string(),
        });
    }
    Ok(Settings {
        management_interface: port_spec("management_interface", get("management_interface"))?,
        management_address,
        management_gateway,
        management_dns,
        provisioning_interface: port_spec("provisioning_interface", get("provisioning_interface"))?,
        provisioning_address,
        pool_start,
        pool_end,
        ntp: list(get("ntp")),
    })
}

/// An Ethernet NIC as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("no Ethernet NIC matches {which}_interface = {spec}")]
    NoMatch { which: &'static str, spec: String },
    #[error(
        "{which}_interface = auto needs a free Ethernet NIC; found {found:?} (name the ports in appliance.conf)"
    )]
    NotEnough {
        which: &'static str,
        found: Vec<String>,
    },
    #[error("management and provisioning are both {0}")]
    Same(String),
}

/// The chosen management and provisioning NICs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub management: String,
    pub provisioning: String,
}

/// Picks the two ports: named ones first, then `auto` takes the free NICs in name order
/// (management before provisioning).
pub fn choose_ports(settings: &Settings, nics: &[Nic]) -> Result<Ports, PortError> {
    let mut sorted: Vec<&Nic> = nics.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let named = |which: &'static str, spec: &PortSpec| -> Result<Option<String>, PortError> {
        let found = match spec {
            PortSpec::Auto => return Ok(None),
            PortSpec::Name(n) => sorted.iter().find(|nic| &nic.name == n),
            PortSpec::Mac(m) => sorted.iter().find(|nic| &nic.mac == m),
        };
        let spec_text = match spec {
            PortSpec::Name(s) | PortSpec::Mac(s) => s.clone(),
            PortSpec::Auto => unreachable!(),
        };
        found
            .map(|n| Some(n.name.clone()))
            .ok_or(PortError::NoMatch {
                which,
                spec: spec_text,
            })
    };
    let mgmt = named("management", &settings.management_interface)?;
    let prov = named("provisioning", &settings.provisioning_interface)?;
    let free = |which: &'static str, other: &Option<String>| -> Result<String, PortError> {
        sorted
            .iter()
            .map(|n| n.name.clone())
            .find(|n| Some(n) != other.as_ref())
            .ok_or_else(|| PortError::NotEnough {
                which,
                found: sorted.iter().map(|n| n.name.clone()).collect(),
            })
    };
    let mgmt = match mgmt {
        Some(m) => m,
        None => free("management", &prov)?,
    };
    let prov = match prov {
        Some(p) => p,
        None => free("provisioning", &Some(mgmt.clone()))?,
    };
    let (management, provisioning) = (mgmt, prov);
    if management == provisioning {
        return Err(PortError::Same(management));
    }
    Ok(Ports {
        management,
        provisioning,
    })
}

/// What `render` makes: networkd files (name, text) and the `appliance serve` overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub network_files: Vec<(String, String)>,
    pub overlay: toml::Table,
}

/// Renders the networkd files and the config overlay for `settings` on `ports`.
pub fn render(settings: &Settings, ports: &Ports) -> Rendered {
    let mut mgmt = format!(
        "# Written by appliance-setup.service from appliance.conf; do not edit.\n\
         [Match]\nName={}\n\n[Network]\n",
        ports.management
    );
    match settings.management_address {
        MgmtAddress::Dhcp => mgmt.push_str("DHCP=ipv4\n"),
        MgmtAddress::Static(c) => mgmt.push_str(&format!("Address={c}\n")),
    }
    if let Some(gw) = settings.management_gateway {
        mgmt.push_str(&format!("Gateway={gw}\n"));
    }
    for dns in &settings.management_dns {
        mgmt.push_str(&format!("DNS={dns}\n"));
    }
    if !settings.ntp.is_empty() {
        mgmt.push_str(&format!("NTP={}\n", settings.ntp.join(" ")));
    }
    let prov = format!(
        "# Written by appliance-setup.service from appliance.conf; do not edit.\n\
         # The PXE segment: static address; the appliance itself answers DHCP here.\n\
         [Match]\nName={}\n\n[Link]\nRequiredForOnline=no-carrier\n\n\
         [Network]\nAddress={}\nConfigureWithoutCarrier=yes\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        ports.provisioning, settings.provisioning_address
    );
    let mut pool = toml::Table::new();
    pool.insert("range_start".into(), settings.pool_start.to_string().into());
    pool.insert("range_end".into(), settings.pool_end.to_string().into());
    pool.insert(
        "netmask".into(),
        settings.provisioning_address.netmask().to_string().into(),
    );
    let mut dhcp = toml::Table::new();
    dhcp.insert("mode".into(), "server".into());
    dhcp.insert(
        "pools".into(),
        toml::Value::Array(vec![toml::Value::Table(pool)]),
    );
    let mut boot = toml::Table::new();
    boot.insert(
        "advertise".into(),
        format!("{}:8081", settings.provisioning_address.addr).into(),
    );
    let mut overlay = toml::Table::new();
    overlay.insert("interface".into(), ports.provisioning.clone().into());
    overlay.insert("dhcp".into(), dhcp.into());
    overlay.insert("boot".into(), boot.into());
    Rendered {
        network_files: vec![
            ("10-appliance-management.network".into(), mgmt),
            ("20-appliance-provisioning.network".into(), prov),
        ],
        overlay,
    }
}

/// Where `apply` reads and writes.
#[derive(Debug, Clone)]
pub struct ApplyPaths {
    /// The operator's file on the ESP (may be missing: the shipped defaults are used).
    pub esp_settings: PathBuf,
    /// The copy taken on first boot (data partition); read on every later boot.
    pub state_settings: PathBuf,
    /// `/sys/class/net`.
    pub sys_class_net: PathBuf,
    /// `/run/systemd/network`.
    pub network_dir: PathBuf,
    /// The box's own config file (`/etc/appliance/config.toml`), overlaid by the site.
    pub base_config: PathBuf,
    /// The config `appliance serve` runs with (`/run/appliance/config.toml`).
    pub config_out: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings {path}")]
    Settings {
        path: PathBuf,
        #[source]
        source: SettingsError,
    },
    #[error("network ports")]
    Ports(#[source] PortError),
    #[error("config {path} with the site overlay")]
    Config {
        path: PathBuf,
        #[source]
        source: crate::config::LoadConfigError,
    },
}

/// What `apply` did, for its one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub first_boot: bool,
    pub ports: Ports,
}

fn read_opt(path: &Path) -> Result<Option<String>, ApplyError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ApplyError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes `text` to `path` through a temp file and rename (mode 0644).
fn write_atomic(path: &Path, text: &str) -> Result<(), ApplyError> {
    let err = |source| ApplyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Lists the Ethernet NICs below `sys_class_net`: ARP type 1 with a `device` link (real or
/// virtual hardware, not bridges, veths or loopback).
pub fn ethernet_nics(sys_class_net: &Path) -> Result<Vec<Nic>, ApplyError> {
    let read_err = |source| ApplyError::Read {
        path: sys_class_net.to_path_buf(),
        source,
    };
    let mut nics = Vec::new();
    for entry in std::fs::read_dir(sys_class_net).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let dir = entry.path();
        let kind = std::fs::read_to_string(dir.join("type")).unwrap_or_default();
        if kind.trim() != "1" || !dir.join("device").exists() {
            continue;
        }
        let mac = std::fs::read_to_string(dir.join("address")).unwrap_or_default();
        nics.push(Nic {
            name: entry.file_name().to_string_lossy().into_owned(),
            mac: mac.trim().to_ascii_lowercase(),
        });
    }
    Ok(nics)
}

/// Takes the first-boot copy if there is none, then renders and writes the network files
/// and the serve config. Everything is checked before the first write.
pub fn apply(p: &ApplyPaths) -> Result<Applied, ApplyError> {
    let (text, origin, first_boot) = match read_opt(&p.state_settings)? {
        Some(t) => (t, p.state_settings.clone(), false),
        None => match read_opt(&p.esp_settings)? {
            Some(t) => (t, p.esp_settings.clone(), true),
            None => (
                DEFAULT_SETTINGS.to_string(),
                PathBuf::from("(defaults)"),
                true,
            ),
        },
    };
    let settings = parse(&text).map_err(|source| ApplyError::Settings {
        path: origin,
        source,
    })?;
    let nics = ethernet_nics(&p.sys_class_net)?;
    let ports = choose_ports(&settings, &nics).map_err(ApplyError::Ports)?;
    let rendered = render(&settings, &ports);

    let base_text = read_opt(&p.base_config)?.unwrap_or_default();
    let mut merged: toml::Table = toml::from_str(&base_text).map_err(|e| ApplyError::Config {
        path: p.base_config.clone(),
        source: crate::config::LoadConfigError::Parse {
            origin: p.base_config.display().to_string(),
            message: e.to_string(),
        },
    })?;
    crate::config::merge(&mut merged, rendered.overlay);
    let merged_text = toml::to_string(&merged).expect("a TOML table serialises");
    crate::config::Config::default()
        .overlay(&merged_text, &p.config_out.display().to_string())
        .map_err(|source| ApplyError::Config {
            path: p.base_config.clone(),
            source,
        })?;

    if first_boot {
        write_atomic(&p.state_settings, &text)?;
    }
    for (name, body) in &rendered.network_files {
        write_atomic(&p.network_dir.join(name), body)?;
    }
    write_atomic(
        &p.config_out,
        &format!(
            "# Written by appliance-setup.service: {} overlaid with the site settings.\n{merged_text}",
            p.base_config.display()
        ),
    )?;
    Ok(Applied { first_boot, ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nics(names: &[&str]) -> Vec<Nic> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Nic {
                name: n.to_string(),
                mac: format!("52:54:00:00:00:{i:02x}"),
            })
            .collect()
    }

    #[test]
    fn shipped_defaults_parse() {
        let s = parse(DEFAULT_SETTINGS).unwrap();
        assert_eq!(s.management_address, MgmtAddress::Dhcp);
        assert_eq!(s.provisioning_address.to_string(), "10.8.0.1/24");
        assert_eq!(s.pool_start, Ipv4Addr::new(10, 8, 0, 100));
        assert_eq!(s.pool_end, Ipv4Addr::new(10, 8, 0, 250));
    }

    #[test]
    fn default_pool_is_upper_half() {
        let s = parse("provisioning_address = 192.168.50.1/24\n").unwrap();
        assert_eq!(s.pool_start, Ipv4Addr::new(192, 168, 50, 128));
        assert_eq!(s.pool_end, Ipv4Addr::new(192, 168, 50, 254));
        let s = parse("provisioning_address = 10.0.0.1/16").unwrap();
        assert_eq!(s.pool_start, Ipv4Addr::new(10, 0, 128, 0));
        assert_eq!(s.pool_end, Ipv4Addr::new(10, 0, 255, 254));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            parse("provisoning_address = 10.8.0.1/24"),
            Err(SettingsError::UnknownKey {
                line: 1,
                key: "provisoning_address".into()
            })
        );
        assert_eq!(
            parse("# only a comment\n"),
            Err(SettingsError::NoProvisioningAddress)
        );
        assert!(matches!(
            parse("provisioning_address = 10.8.0.1"),
            Err(SettingsError::Value {
                key: "provisioning_address",
                ..
            })
        ));
        assert!(matches!(
            parse("provisioning_address = 10.8.0.1/24\nprovisioning_address = 10.9.0.1/24"),
            Err(SettingsError::Duplicate { line: 2, .. })
        ));
        assert_eq!(
            parse("provisioning_address = 10.8.0.1/24\nmanagement_gateway = 1.2.3.4"),
            Err(SettingsError::GatewayWithDhcp)
        );
        assert!(matches!(
            parse("just words"),
            Err(SettingsError::Syntax { line: 1 })
        ));
        // The pool must be inside the subnet and must not hold the box's address.
        for pool in [
            "provisioning_pool_start = 10.9.0.10\nprovisioning_pool_end = 10.9.0.20",
            "provisioning_pool_start = 10.8.0.1\nprovisioning_pool_end = 10.8.0.20",
            "provisioning_pool_start = 10.8.0.30\nprovisioning_pool_end = 10.8.0.20",
            "provisioning_pool_start = 10.8.0.30\nprovisioning_pool_end = 10.8.0.255",
        ] {
            let text = format!("provisioning_address = 10.8.0.1/24\n{pool}");
            assert!(
                matches!(parse(&text), Err(SettingsError::BadPool { .. })),
                "{pool}"
            );
        }
    }

    #[test]
    fn ports_auto_named_and_by_mac() {
        let s = parse("provisioning_address = 10.8.0.1/24").unwrap();
        let p = choose_ports(&s, &nics(&["enp0s4", "enp0s3"])).unwrap();
        assert_eq!(
            (p.management.as_str(), p.provisioning.as_str()),
            ("enp0s3", "enp0s4")
        );

        let s =
            parse("provisioning_address = 10.8.0.1/24\nprovisioning_interface = enp0s3").unwrap();
        let p = choose_ports(&s, &nics(&["enp0s3", "enp0s4", "enp0s5"])).unwrap();
        assert_eq!(
            (p.management.as_str(), p.provisioning.as_str()),
            ("enp0s4", "enp0s3")
        );

        let s =
            parse("provisioning_address = 10.8.0.1/24\nmanagement_interface = 52:54:00:00:00:01")
                .unwrap();
        let p = choose_ports(&s, &nics(&["eth0", "eth1"])).unwrap();
        assert_eq!(
            (p.management.as_str(), p.provisioning.as_str()),
            ("eth1", "eth0")
        );

        assert!(matches!(
            choose_ports(&s, &nics(&["eth0"])),
            Err(PortError::NoMatch { .. })
        ));
        let s = parse("provisioning_address = 10.8.0.1/24").unwrap();
        assert!(matches!(
            choose_ports(&s, &nics(&["eth0"])),
            Err(PortError::NotEnough {
                which: "provisioning",
                ..
            })
        ));
        let s = parse(
            "provisioning_address = 10.8.0.1/24\nmanagement_interface = eth0\nprovisioning_interface = eth0",
        )
        .unwrap();
        assert_eq!(
            choose_ports(&s, &nics(&["eth0", "eth1"])),
            Err(PortError::Same("eth0".into()))
        );
    }

    #[test]
    fn render_static_management_and_overlay() {
        let s = parse(
            "management_address = 192.0.2.10/24\nmanagement_gateway = 192.0.2.1\n\
             management_dns = 192.0.2.53, 192.0.2.54\nntp = ntp1.example ntp2.example\n\
             provisioning_address = 10.8.0.1/24\nprovisioning_pool_start = 10.8.0.10\n\
             provisioning_pool_end = 10.8.0.20\n",
        )
        .unwrap();
        let ports = Ports {
            management: "eno1".into(),
            provisioning: "eno2".into(),
        };
        let r = render(&s, &ports);
        let mgmt = &r.network_files[0].1;
        assert!(mgmt.contains("Name=eno1\n"), "{mgmt}");
        assert!(mgmt.contains("Address=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\nDNS=192.0.2.54\nNTP=ntp1.example ntp2.example\n"), "{mgmt}");
        assert!(!mgmt.contains("DHCP="));
        let prov = &r.network_files[1].1;
        assert!(
            prov.contains("Name=eno2\n") && prov.contains("Address=10.8.0.1/24\n"),
            "{prov}"
        );
        // The overlay is a valid serve config with DHCP on the provisioning port.
        let text = toml::to_string(&r.overlay).unwrap();
        let c = crate::config::Config::default()
            .overlay(&text, "site")
            .unwrap();
        assert_eq!(c.interface, "eno2");
        assert_eq!(c.dhcp.pools.len(), 1);
        assert_eq!(c.dhcp.pools[0].range_start, Ipv4Addr::new(10, 8, 0, 10));
        assert_eq!(c.dhcp.pools[0].netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.boot.advertise.as_deref(), Some("10.8.0.1:8081"));
    }

    fn fake_sys(dir: &Path, nics: &[(&str, &str, bool)]) {
        for (name, kind, device) in nics {
            let d = dir.join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("address"), "52:54:00:AA:BB:CC\n").unwrap();
            if *device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
        }
    }

    fn paths(root: &Path) -> ApplyPaths {
        ApplyPaths {
            esp_settings: root.join("efi/appliance.conf"),
            state_settings: root.join("var/lib/appliance-setup/appliance.conf"),
            sys_class_net: root.join("sys/class/net"),
            network_dir: root.join("run/systemd/network"),
            base_config: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../rootfs/etc/appliance/config.toml"
            )),
            config_out: root.join("run/appliance/config.toml"),
        }
    }

    #[test]
    fn apply_first_boot_then_keeps_its_copy() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        // lo (type 772), a bridge (no device link) and two NICs.
        fake_sys(
            &p.sys_class_net,
            &[
                ("lo", "772", false),
                ("br0", "1", false),
                ("ens4", "1", true),
                ("ens3", "1", true),
            ],
        );
        std::fs::create_dir_all(p.esp_settings.parent().unwrap()).unwrap();
        std::fs::write(&p.esp_settings, "provisioning_address = 10.20.0.1/24\n").unwrap();

        let a = apply(&p).unwrap();
        assert!(a.first_boot);
        assert_eq!(a.ports.management, "ens3");
        assert_eq!(a.ports.provisioning, "ens4");
        let conf = std::fs::read_to_string(&p.config_out).unwrap();
        let c = crate::config::Config::default()
            .overlay_file(&p.config_out)
            .unwrap();
        assert_eq!(c.interface, "ens4", "{conf}");
        assert_eq!(c.dhcp.pools[0].range_start, Ipv4Addr::new(10, 20, 0, 128));
        let prov = std::fs::read_to_string(p.network_dir.join("20-appliance-provisioning.network"))
            .unwrap();
        assert!(prov.contains("Address=10.20.0.1/24"));

        // An ESP edited after first boot changes nothing: the data partition's copy rules.
        std::fs::write(&p.esp_settings, "provisioning_address = 10.30.0.1/24\n").unwrap();
        let a = apply(&p).unwrap();
        assert!(!a.first_boot);
        let c = crate::config::Config::default()
            .overlay_file(&p.config_out)
            .unwrap();
        assert_eq!(c.dhcp.pools[0].netmask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.boot.advertise.as_deref(), Some("10.20.0.1:8081"));
    }

    #[test]
    fn apply_bad_settings_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        fake_sys(
            &p.sys_class_net,
            &[("eth0", "1", true), ("eth1", "1", true)],
        );
        std::fs::create_dir_all(p.esp_settings.parent().unwrap()).unwrap();
        std::fs::write(&p.esp_settings, "provisioning_address = 10.20.0.1/33\n").unwrap();
        let e = apply(&p).unwrap_err();
        assert!(
            crate::error_chain(&e).contains("prefix length"),
            "{}",
            crate::error_chain(&e)
        );
        assert!(!p.state_settings.exists());
        assert!(!p.network_dir.exists());
        assert!(!p.config_out.exists());
    }

    #[test]
    fn apply_without_esp_file_uses_shipped_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        let p = paths(tmp.path());
        fake_sys(
            &p.sys_class_net,
            &[("eth0", "1", true), ("eth1", "1", true)],
        );
        apply(&p).unwrap();
        assert_eq!(
            std::fs::read_to_string(&p.state_settings).unwrap(),
            DEFAULT_SETTINGS
        );
    }
}
