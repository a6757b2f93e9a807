//! The box's configuration: one typed TOML document. An embedded default (`default.toml`,
//! printed by `appliance config default`) is overlaid by `--config FILE`, then by flags and
//! `APPLIANCE_*` environment variables (see `cli.rs`).
//!
//! Pure: reads a string, returns a value or a typed error. The only file access is
//! `Config::load_file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::model::{BootFromDiskMethod, MacAddr};
use serde::{Deserialize, Serialize};

/// The embedded default configuration, also shipped as `rootfs/etc/appliance/config.toml`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the redb store, admin token and cached boot assets live.
    pub data_dir: PathBuf,
    /// The provisioning interface (PXE side). "auto" picks the first up, non-loopback IPv4
    /// interface.
    pub interface: String,
    pub http: HttpConfig,
    pub dhcp: DhcpConfig,
    pub tftp: TftpConfig,
    pub boot: BootConfig,
    pub log: LogConfig,
    pub bmc: BmcConfig,
    pub console: ConsoleConfig,
    pub lifecycle: LifecycleConfig,
    pub siderolink: SideroLinkConfig,
    pub watch: WatchConfig,
    pub update: UpdateConfig,
    pub admin_tls: AdminTlsConfig,
    pub agent: AgentConfig,
    pub timeline: TimelineConfig,
    pub dhcpv6: Dhcpv6Config,
}

/// IPv6 provisioning (`net/dhcpv6.rs`): router advertisements and a DHCPv6 server on the
/// provisioning interface. Off by default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dhcpv6Config {
    pub enabled: bool,
    /// Interface served; empty = the provisioning `interface`.
    pub interface: String,
    /// The segment's prefix, `fd00:77::/64`: announced on-link in router advertisements
    /// (Managed flag set, no SLAAC); the pool and the box's own address lie inside it.
    pub prefix: String,
    pub range_start: Option<std::net::Ipv6Addr>,
    pub range_end: Option<std::net::Ipv6Addr>,
    pub preferred_secs: u32,
    pub valid_secs: u32,
    pub dns: Vec<std::net::Ipv6Addr>,
    /// DHCPv6 option 60 items sent with the boot file URL (option 59); empty = none.
    pub boot_file_params: Vec<String>,
    /// Router advertisements: sent every this many seconds (and at once to a router
    /// solicitation); 0 = never (another router on the segment sends them).
    pub ra_interval_secs: u64,
    /// Router lifetime in the advertisements: 0 = the box is not a default router.
    pub ra_router_lifetime_secs: u16,
    pub listen_port: u16,
}

impl Dhcpv6Config {
    /// The prefix as (address, length).
    pub fn prefix(&self) -> Result<(std::net::Ipv6Addr, u8), String> {
        let (a, l) = self
            .prefix
            .split_once('/')
            .ok_or_else(|| format!("dhcpv6.prefix: `{}` is not ADDRESS/LENGTH", self.prefix))?;
        let a: std::net::Ipv6Addr = a
            .parse()
            .map_err(|_| format!("dhcpv6.prefix: `{a}` is not an IPv6 address"))?;
        let l: u8 = l
            .parse()
            .ok()
            .filter(|l| (1..=128).contains(l))
            .ok_or_else(|| format!("dhcpv6.prefix: length `{l}` is not 1..=128"))?;
        Ok((a, l))
    }

    /// Checks the section when enabled; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let (prefix, len) = self.prefix()?;
        let (Some(start), Some(end)) = (self.range_start, self.range_end) else {
            return Err("dhcpv6.range_start and dhcpv6.range_end are needed when enabled".into());
        };
        let m = u128::MAX << (128 - u32::from(len));
        let net = u128::from(prefix) & m;
        if u128::from(start) > u128::from(end)
            || u128::from(start) & m != net
            || u128::from(end) & m != net
        {
            return Err(format!(
                "dhcpv6.range_start/range_end: {start}-{end} is not a range inside {}",
                self.prefix
            ));
        }
        if self.valid_secs == 0 || self.valid_secs < self.preferred_secs {
            return Err("dhcpv6.valid_secs: positive and at least preferred_secs".into());
        }
        Ok(())
    }
}

/// How the agent API trusts an agent's first contact (`api/first_contact.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// "token" (default): a registration needs the one-boot token `/ipxe` handed out, and
    /// every agent call is signed with the key pinned at registration. "sidero-compatible":
    /// neither (Sidero's own agent); the agent API's source-address, BMC, wipe and lease
    /// rules stay on.
    pub first_contact: FirstContactMode,
    /// How long a boot token stays valid: "90s", "30m", "1h".
    #[serde(with = "duration_text")]
    pub token_ttl: std::time::Duration,
}

/// See [`AgentConfig::first_contact`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FirstContactMode {
    Token,
    SideroCompatible,
}

/// The boot timeline (`timeline/`): what the box saw of each server's boots.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineConfig {
    /// Events kept per server (a ring in the store: older ones are dropped).
    pub events_per_server: usize,
}

/// The mTLS admin port (`http/tls.rs`): the admin gRPC services for holders of a client
/// certificate from `appliance ctl bridge enroll`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Extra host names or addresses in the port's certificate (it always has
    /// `appliance-admin`, `localhost` and loopback).
    pub names: Vec<String>,
    /// Validity of enrolled client certificates, days.
    pub client_cert_days: u64,
}

/// The admin Watch API and the durable change log behind it (`store/changelog.rs`,
/// `api/watch.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Newest committed changes kept for watches to resume from (at least 1).
    pub retention_changes: u64,
    /// Changes older than this are dropped from the log too: "90s", "20m", "24h".
    #[serde(with = "duration_text")]
    pub retention_age: std::time::Duration,
    /// An idle watch stream gets a bookmark this often (unless the client asks otherwise).
    pub bookmark_secs: u64,
    /// Watch streams open at once, all clients together.
    pub max_watchers: usize,
}

/// Signed A/B updates through the console (see `update/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The ed25519 public key (PEM) bundles must be signed with; baked into the image. A
    /// box without it takes no updates from the console.
    pub public_key: PathBuf,
    /// Largest bundle the console accepts (MiB).
    pub max_bundle_mib: u64,
}

/// SideroLink: the WireGuard overlay installed nodes join (Talos logs and events), see
/// `siderolink/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideroLinkConfig {
    /// Run the WireGuard endpoint and the Provision API (and add the SideroLink kernel
    /// args to Environments).
    pub enabled: bool,
    /// UDP listener of the userspace WireGuard endpoint.
    pub listen: SocketAddr,
    /// "ip:port" that nodes send WireGuard to (Provision's `server_endpoint`). Unset: the
    /// host of `[boot] advertise`, else the provisioning interface's address, with the
    /// `listen` port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Longest Talos log object accepted, bytes (longer ones are dropped).
    pub max_log_line: usize,
    /// Talos log lines kept per server (a ring in the store: older lines are dropped, so
    /// the store holds at most servers × this × `max_log_line` bytes of logs).
    pub log_lines_per_server: usize,
    /// Log and event connections inside the overlay at once, all nodes together (two per
    /// Talos node; the default admits 10,240 nodes).
    pub max_connections: usize,
    /// Log and event connections one node (overlay address) may hold at once: a Talos node
    /// holds two, one more each while it reconnects; past it a connection is refused
    /// (counted), so one node cannot hold every slot.
    pub max_connections_per_node: usize,
    /// Node addresses never recorded from Talos AddressEvents, as CIDR prefixes (Sidero's
    /// `--negative-address-filter`).
    pub negative_address_filter: Vec<String>,
    /// Reset without BMC (Talos machine API over the overlay): attempts per release, the
    /// wait before the second (doubling after each), and the bound of one attempt, seconds.
    pub reset_attempts: u32,
    pub reset_backoff_secs: u64,
    pub reset_timeout_secs: u64,
}

/// Power control through server BMCs (IPMI/Redfish), see `bmc/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmcConfig {
    /// When the agent reports a BMC, create a dedicated `sidero` user on it (generated
    /// password, administrator) and store the credentials, as Sidero's auto BMC setup does.
    /// Off: the credentials the agent reports are stored (as a secret) and used as they are.
    pub auto_setup: bool,
    /// Overall deadline of one BMC operation (session setup included), seconds.
    pub call_timeout_secs: u64,
    /// BMC operations in flight at once, across all BMCs (one per BMC at most).
    pub max_concurrent: usize,
    /// How often each server's power state is read into `status.power`, seconds.
    pub poll_interval_secs: u64,
    /// Boot mode for "PXE next boot" when the Server has no `spec.pxeMode`: "uefi" or "bios".
    pub default_pxe_mode: String,
    /// IPMI: wait for one reply before retransmitting, milliseconds; and retransmissions.
    pub ipmi_attempt_ms: u64,
    pub ipmi_retries: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Mark the console session cookie `Secure`. Only for a box reached over HTTPS (a TLS
    /// proxy in front of :8081): browsers drop Secure cookies on plain HTTP (except to
    /// localhost), which would make login impossible.
    pub secure_cookie: bool,
    /// The TLS proxies in front of :8081 whose `X-Forwarded-For` (last hop) names the
    /// client of a login (throttling); nobody else's is believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// "host:port" booting servers use to reach this box in absolute URLs (sidero.endpoint=,
    /// talos.config=, siderolink.api=). Unset: the Host header of each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Boot-from-disk method when neither Server nor ServerClass names one.
    pub boot_from_disk_method: BootFromDiskMethod,
    /// Extra kernel args for the agent environment, merged by key over the defaults.
    pub extra_agent_kernel_args: Vec<String>,
    /// Directory holding the built-in agent environments (agent-amd64/, agent-arm64/, each
    /// with vmlinuz and initramfs.xz). Unset: <data_dir>/env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_dir: Option<PathBuf>,
    /// Fetch Environment kernels/initrds from their URLs. false: no outbound fetches at all
    /// (air-gapped sites put files in with `appliance ctl env upload`).
    pub download_assets: bool,
    /// An asset download fails when no byte arrives for this many seconds.
    pub download_idle_timeout_secs: u64,
    /// A failed asset download is tried again after this many seconds.
    pub download_retry_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// HTTP + gRPC listener (iPXE scripts, assets, metadata, console, admin and agent APIs).
    pub listen: SocketAddr,
    /// Idle time before a connection is probed (HTTP/2 ping, TCP keepalive); a dead peer is
    /// dropped within about twice this.
    pub keepalive_secs: u64,
    /// How long open connections may take to finish after the shutdown signal.
    pub drain_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DhcpMode {
    /// Full DHCP server with IPAM for the provisioning network.
    Server,
    /// proxyDHCP beside an existing DHCP server: boot information only.
    Proxy,
    /// No DHCP at all.
    Off,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    pub mode: DhcpMode,
    /// Provisioning interfaces DHCP answers on, each for the pool of its own subnet (one box
    /// serving several VLANs or segments). Empty: the box's `interface`.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// UDP port for DHCP (67) and for the PXE proxy (4011).
    pub listen_port: u16,
    pub proxy_port: u16,
    /// Lease time for pools that do not set their own.
    pub lease_time_secs: u32,
    /// How long an address a client DECLINEd (found in use) stays out of the pool.
    pub decline_hold_secs: u32,
    /// Boot file names handed to network-booting clients.
    pub boot: DhcpBootConfig,
    /// Address pools (server mode). With none, server mode does not start (so a default
    /// install never answers DHCP on a network it was not told about).
    pub pools: Vec<DhcpPoolConfig>,
    /// Fixed addresses by MAC (server mode); each must lie in a pool's subnet.
    pub reservations: Vec<DhcpReservationConfig>,
    /// Rogue DHCP detection: the box sends its own DISCOVER at start and then every this
    /// many seconds while DHCP runs (0 = never; at least 10 otherwise).
    pub probe_interval_secs: u64,
    /// DHCP servers expected on the provisioning segment (server identifier or source
    /// address): the site's server in proxy mode. Any other server that offers is a rogue.
    pub expected_servers: Vec<std::net::Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpBootConfig {
    /// BIOS PXE (arch 0), over TFTP.
    pub bios: String,
    /// UEFI x86-64 (arch 6, 7, 9 over TFTP; 15, 16 over HTTP at /tftp/<file>).
    pub uefi_x64: String,
    /// UEFI arm64 (arch 11 over TFTP; 19 over HTTP). Default: GRUB's arm64 network image
    /// (`grubaa64.efi`, a `tftp.files` name), which reads the box's `grub/grub.cfg`.
    pub uefi_arm64: String,
    /// Secure Boot: every UEFI x86-64 client (arch 7, 9 over TFTP; 16 over HTTP) gets
    /// `uefi_x64_shim` (Debian's signed shim, which loads the signed GRUB network image
    /// `grubx64.efi` from beside itself) instead of `uefi_x64` (iPXE, unsigned).
    #[serde(default)]
    pub secure_boot: bool,
    /// The first stage for UEFI x86-64 clients when `secure_boot` is on.
    #[serde(default = "default_shim")]
    pub uefi_x64_shim: String,
    /// iPXE script on the HTTP listener, for clients already running iPXE.
    pub ipxe_script: String,
}

fn default_shim() -> String {
    "shimx64.efi".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpPoolConfig {
    /// First and last address handed out (inclusive), in one subnet.
    pub range_start: std::net::Ipv4Addr,
    pub range_end: std::net::Ipv4Addr,
    pub netmask: std::net::Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<std::net::Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<std::net::Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Overrides `dhcp.lease_time_secs` for this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_time_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpReservationConfig {
    /// `52:54:00:12:34:56` (or with `-`).
    pub mac: String,
    pub ip: std::net::Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

impl DhcpConfig {
    /// Checks pools and reservations; the error names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        use std::net::Ipv4Addr;
        if self.lease_time_secs == 0 {
            return Err("dhcp.lease_time_secs: must be positive".into());
        }
        if (1..10).contains(&self.probe_interval_secs) {
            return Err("dhcp.probe_interval_secs: 0 (no rogue DHCP probe) or at least 10".into());
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            if name.is_empty() || name == "auto" {
                return Err(format!(
                    "dhcp.interfaces[{i}]: `{name}` is not an interface name"
                ));
            }
            if self.interfaces[..i].contains(name) {
                return Err(format!("dhcp.interfaces[{i}]: `{name}` is listed twice"));
            }
        }
        let mut subnets = Vec::new();
        for (i, p) in self.pools.iter().enumerate() {
            let key = format!("dhcp.pools[{i}]");
            let mask = u32::from(p.netmask);
            if mask.leading_ones() + mask.trailing_zeros() != 32 || mask == 0 || mask == u32::MAX {
                return Err(format!(
                    "{key}.netmask: {} is not a usable subnet mask",
                    p.netmask
                ));
            }
            let (start, end) = (u32::from(p.range_start), u32::from(p.range_end));
            if start > end {
                return Err(format!(
                    "{key}.range_start: {} is after range_end {}",
                    p.range_start, p.range_end
                ));
            }
            let network = start & mask;
            let subnet = format!("{}/{}", Ipv4Addr::from(network), mask.leading_ones());
            if end & mask != network {
                return Err(format!(
                    "{key}.range_end: {} is outside subnet {subnet} of range_start",
                    p.range_end
                ));
            }
            if start == network || end == network | !mask {
                return Err(format!(
                    "{key}: range {}-{} includes the network or broadcast address of {subnet}",
                    p.range_start, p.range_end
                ));
            }
            if let Some(r) = p.router
                && u32::from(r) & mask != network
            {
                return Err(format!("{key}.router: {r} is outside subnet {subnet}"));
            }
            if p.lease_time_secs == Some(0) {
                return Err(format!("{key}.lease_time_secs: must be positive"));
            }
            if subnets.contains(&(network, mask)) {
                return Err(format!("{key}: a second pool in subnet {subnet}"));
            }
            subnets.push((network, mask));
        }
        for (i, r) in self.reservations.iter().enumerate() {
            let key = format!("dhcp.reservations[{i}]");
            r.mac
                .parse::<MacAddr>()
                .map_err(|e| format!("{key}.mac: {e}"))?;
            if !subnets
                .iter()
                .any(|(net, mask)| u32::from(r.ip) & mask == *net)
            {
                return Err(format!("{key}.ip: {} is in no pool's subnet", r.ip));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Directory holding the iPXE binaries (Debian's `ipxe` package: /usr/lib/ipxe).
    pub root: PathBuf,
    /// Symbolic links in the root are followed only to regular files inside the root or
    /// below one of these paths (a directory allows every file below it, a file itself);
    /// links used as directories are never followed. See `net::tftp_root`.
    pub link_targets: Vec<PathBuf>,
    /// Files served under a name beside the root (`"shimx64.efi" = "/usr/lib/shim/…"`), over
    /// TFTP and HTTP `/tftp/`: Debian's signed shim and GRUB network images, which live
    /// outside the iPXE root. See `net::tftp_root`.
    #[serde(default)]
    pub files: std::collections::BTreeMap<String, PathBuf>,
    /// Transfers running at full speed at once; further read requests are answered at once
    /// and paced (one block a second) until a slot frees, oldest first (`net::tftp`).
    pub max_transfers: usize,
    /// Transfers one client (source address) may run at once, so one client cannot take
    /// every slot; its further requests are dropped until one of its transfers ends.
    pub max_transfers_per_client: usize,
    /// Retransmission timeout when the client does not negotiate `timeout` (RFC 2349).
    pub retransmit_ms: u64,
    /// Retransmissions of one window before a transfer is given up.
    pub max_retries: u32,
    /// Largest block size granted (RFC 2348, 8..=65464).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Memory for caching served files (MiB); larger files are read from disk.
    pub cache_mib: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines on stderr.
    Human,
    /// One JSON object per line on stderr.
    Json,
    /// The systemd journal (chosen automatically when JOURNAL_STREAM is set).
    Journald,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter: "info", "appliance=debug,info", …
    pub level: String,
}

/// How a wipe is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WipeMode {
    /// First and last MiB of every disk (partition tables incl. backup GPT), as Sidero's
    /// default `insecure_wipe`.
    Fast,
    /// Every byte of every disk, with progress reported.
    Full,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Accept newly registered servers at once (they WILL be wiped).
    pub auto_accept: bool,
    /// "fast" or "full".
    pub wipe: WipeMode,
    /// How long to wait for a server to come back after a power cycle (agent heartbeat,
    /// wipe report or boot) before retrying: "90s", "20m", "1h".
    #[serde(with = "duration_text")]
    pub reboot_timeout: std::time::Duration,
    /// Power-cycle retries (with doubling backoff) before condition `PowerCycle=False`
    /// (reason `RebootTimeout`) is raised.
    pub reboot_retries: u32,
    /// How often a waiting agent asks for its next action.
    pub agent_poll_seconds: u32,
}

/// Durations as text (`crate::clock`'s form: "90s", "20m", "1h", "1h30m", "1d"), positive.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let d = crate::clock::parse_duration(s).ok_or_else(|| {
            format!("duration `{s}`: expected <number><s|m|h|d>..., e.g. \"20m\" or \"1h30m\"")
        })?;
        if d.is_zero() {
            return Err(format!("duration `{s}` must be positive"));
        }
        Ok(d)
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::duration_text(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config {origin}: {message}")]
    Parse { origin: String, message: String },
}

impl Default for Config {
    fn default() -> Self {
        Config::parse(DEFAULT_TOML, "embedded default").expect("embedded default config is valid")
    }
}

impl Config {
    /// Parses a complete config document.
    pub fn parse(text: &str, origin: &str) -> Result<Config, LoadConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| LoadConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config
            .dhcp
            .validate()
            .and_then(|()| config.dhcpv6.validate())
            .and_then(|()| {
                if config.watch.retention_changes == 0 {
                    return Err("watch.retention_changes must be at least 1".into());
                }
                if config.watch.max_watchers == 0 || config.watch.bookmark_secs == 0 {
                    return Err(
                        "watch.max_watchers and watch.bookmark_secs must be positive".into(),
                    );
                }
                for p in &config.siderolink.negative_address_filter {
                    p.parse::<crate::protocol::siderolink::events::IpPrefix>()
                        .map_err(|e| format!("siderolink.negative_address_filter: {e}"))?;
                }
                Ok(())
            })
            .map_err(|message| LoadConfigError::Parse {
                origin: origin.to_string(),
                message,
            })?;
        Ok(config)
    }

    /// Overlays a (possibly partial) TOML document on this config: keys present in `text`
    /// replace ours; unknown keys and wrong types are errors naming the key.
    pub fn overlay(&self, text: &str, origin: &str) -> Result<Config, LoadConfigError> {
        let parse_err = |message: String| LoadConfigError::Parse {
            origin: origin.to_string(),
            message,
        };
        let overlay: toml::Table = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut base = toml::Table::try_from(self).map_err(|e| parse_err(e.to_string()))?;
        merge(&mut base, overlay);
        let merged = toml::to_string(&base).map_err(|e| parse_err(e.to_string()))?;
        Config::parse(&merged, origin)
    }

    /// Overlays the TOML file at `path`.
    pub fn overlay_file(&self, path: &Path) -> Result<Config, LoadConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.overlay(&text, &path.display().to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serialises")
    }
}

pub(crate) fn merge(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let c = Config::default();
        assert_eq!(c.http.listen, "[::]:8081".parse().unwrap());
        assert_eq!(c.tftp.listen, "[::]:69".parse().unwrap());
        assert_eq!(c.dhcp.mode, DhcpMode::Server);
    }

    #[test]
    fn shipped_rootfs_config_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../rootfs/etc/appliance/config.toml"
        );
        let c = Config::default().overlay_file(Path::new(path)).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/appliance"));
    }

    #[test]
    fn overlay_replaces_only_given_keys() {
        let c = Config::default()
            .overlay("[http]\nlisten = \"127.0.0.1:9000\"\n", "test")
            .unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(c.tftp, Config::default().tftp);
    }

    #[test]
    fn boot_from_disk_methods_use_sidero_names() {
        for (name, want) in [
            ("ipxe-exit", BootFromDiskMethod::IpxeExit),
            ("http-404", BootFromDiskMethod::Http404),
            ("ipxe-sanboot", BootFromDiskMethod::IpxeSanboot),
        ] {
            let c = Config::default()
                .overlay(
                    &format!("[boot]\nboot_from_disk_method = \"{name}\"\n"),
                    "t",
                )
                .unwrap();
            assert_eq!(c.boot.boot_from_disk_method, want, "{name}");
        }
        assert!(
            Config::default()
                .overlay("[boot]\nboot_from_disk_method = \"http404\"\n", "t")
                .is_err()
        );
    }

    #[test]
    fn overlay_rejects_unknown_key_by_name() {
        let err = Config::default()
            .overlay("[http]\nlisten = \"127.0.0.1:9000\"\nport = 1\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `port`"), "{err}");
        assert!(err.contains("f.toml"), "{err}");
    }

    #[test]
    fn overlay_rejects_wrong_type() {
        let err = Config::default()
            .overlay("[tftp]\nenabled = \"yes\"\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("enabled"), "{err}");
    }

    #[test]
    fn dhcp_interfaces_are_distinct_names() {
        let c = Config::default()
            .overlay("[dhcp]\ninterfaces = [\"eno2\", \"eno2.20\"]\n", "f.toml")
            .unwrap();
        assert_eq!(c.dhcp.interfaces, ["eno2", "eno2.20"]);
        for (list, want) in [
            (
                "[\"eno2\", \"eno2\"]",
                "dhcp.interfaces[1]: `eno2` is listed twice",
            ),
            (
                "[\"auto\"]",
                "dhcp.interfaces[0]: `auto` is not an interface name",
            ),
        ] {
            let err = Config::default()
                .overlay(&format!("[dhcp]\ninterfaces = {list}\n"), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{list}: {err}");
        }
    }

    #[test]
    fn dhcp_pool_and_reservation_errors_name_the_key() {
        let pool = |body: &str| {
            format!(
                "[[dhcp.pools]]\nnetmask = \"255.255.255.0\"\n{body}\n\
                 [[dhcp.reservations]]\nmac = \"52:54:00:00:00:01\"\nip = \"10.9.0.20\"\n"
            )
        };
        let ok = pool("range_start = \"10.9.0.100\"\nrange_end = \"10.9.0.200\"");
        let c = Config::default().overlay(&ok, "f.toml").unwrap();
        assert_eq!(c.dhcp.pools.len(), 1);
        assert_eq!(
            c.dhcp.reservations[0].ip,
            "10.9.0.20".parse::<std::net::Ipv4Addr>().unwrap()
        );
        for (body, want) in [
            (
                "range_start = \"10.9.0.200\"\nrange_end = \"10.9.0.100\"",
                "dhcp.pools[0].range_start: 10.9.0.200 is after range_end 10.9.0.100",
            ),
            (
                "range_start = \"10.9.0.100\"\nrange_end = \"10.9.1.5\"",
                "dhcp.pools[0].range_end: 10.9.1.5 is outside subnet 10.9.0.0/24",
            ),
            (
                "range_start = \"10.9.0.100\"\nrange_end = \"10.9.0.200\"\nrouter = \"10.8.0.1\"",
                "dhcp.pools[0].router: 10.8.0.1 is outside subnet 10.9.0.0/24",
            ),
            (
                "range_start = \"10.9.0.0\"\nrange_end = \"10.9.0.200\"",
                "includes the network or broadcast address",
            ),
            (
                "range_start = \"10.8.0.100\"\nrange_end = \"10.8.0.200\"",
                "dhcp.reservations[0].ip: 10.9.0.20 is in no pool's subnet",
            ),
        ] {
            let err = Config::default()
                .overlay(&pool(body), "f.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let bad_mac = ok.replace("52:54:00:00:00:01", "52:54:00:00:01");
        let err = Config::default()
            .overlay(&bad_mac, "f.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("dhcp.reservations[0].mac"), "{err}");
    }

    #[test]
    fn lifecycle_defaults_and_durations() {
        let c = Config::default();
        assert!(!c.lifecycle.auto_accept);
        assert_eq!(c.lifecycle.wipe, WipeMode::Fast);
        assert_eq!(
            c.lifecycle.reboot_timeout,
            std::time::Duration::from_secs(1200)
        );
        let c = c
            .overlay("[lifecycle]\nreboot_timeout = \"90s\"\n", "t")
            .unwrap();
        assert_eq!(
            c.lifecycle.reboot_timeout,
            std::time::Duration::from_secs(90)
        );
        // Round-trips through TOML (overlay serialises the base).
        let c = c.overlay("", "t").unwrap();
        assert_eq!(
            c.lifecycle.reboot_timeout,
            std::time::Duration::from_secs(90)
        );
        // crate::clock's duration text: compound and day units; written back in minutes.
        let c = c
            .overlay("[lifecycle]\nreboot_timeout = \"1h30m\"\n", "t")
            .unwrap();
        assert_eq!(c.lifecycle.reboot_timeout.as_secs(), 5400);
        assert!(c.to_toml().contains("reboot_timeout = \"90m\""));
        let c = c.overlay("[watch]\nretention_age = \"1d\"\n", "t").unwrap();
        assert_eq!(c.watch.retention_age.as_secs(), 86_400);
        for bad in ["\"20\"", "\"0m\"", "\"5w\"", "\"m\"", "20"] {
            let err = Config::default()
                .overlay(&format!("[lifecycle]\nreboot_timeout = {bad}\n"), "t")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("reboot_timeout") || err.contains("duration"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn overlay_rejects_malformed_toml() {
        assert!(Config::default().overlay("[http\n", "f.toml").is_err());
    }
}
