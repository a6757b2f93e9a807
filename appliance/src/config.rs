//! The box's configuration: one typed TOML document. An embedded default (`default.toml`,
//! printed by `appliance config default`) is overlaid by `--config FILE`, then by flags and
//! `APPLIANCE_*` environment variables (see `cli.rs`).
//!
//! Pure: reads a string, returns a value or a typed error. The only file access is
//! `Config::load_file`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
}

/// How installed servers leave the PXE path unless their Server/ServerClass says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiskBootMethod {
    IpxeExit,
    Http404,
    IpxeSanboot,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// "host:port" booting servers use to reach this box in absolute URLs (sidero.endpoint=,
    /// talos.config=, siderolink.api=). Unset: the Host header of each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise: Option<String>,
    /// Boot-from-disk method when neither Server nor ServerClass names one.
    pub boot_from_disk_method: DiskBootMethod,
    /// Extra kernel args for the agent environment, merged by key over the defaults.
    pub extra_agent_kernel_args: Vec<String>,
    /// Directory holding the built-in agent environments (agent-amd64/, agent-arm64/, each
    /// with vmlinuz and initramfs.xz). Unset: <data_dir>/env.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_dir: Option<PathBuf>,
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
    /// UDP port for DHCP (67) and for the PXE proxy (4011).
    pub listen_port: u16,
    pub proxy_port: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Directory holding the iPXE binaries (Debian's `ipxe` package: /usr/lib/ipxe).
    pub root: PathBuf,
    /// Transfers running at once; further read requests are dropped until a slot frees
    /// (clients retransmit them).
    pub max_transfers: usize,
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
        toml::from_str(text).map_err(|e| LoadConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })
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

fn merge(base: &mut toml::Table, overlay: toml::Table) {
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
        assert_eq!(c.http.listen.port(), 8081);
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
    fn overlay_rejects_malformed_toml() {
        assert!(Config::default().overlay("[http\n", "f.toml").is_err());
    }
}
