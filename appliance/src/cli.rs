//! Command-line interface (clap): `serve`, `ctl`, `agent`, `config`, `setup`, `update`,
//! `version`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{DhcpMode, LogFormat};

/// A bare-metal provisioning appliance: it PXE-boots the servers of a rack, keeps their
/// inventory and lifecycle, and hands them to Cluster API clusters (Sidero-compatible).
///
/// Start the box with `appliance serve` (runs on its embedded default config; see
/// `appliance config default`). Drive a running box with `appliance ctl`.
#[derive(Debug, Parser)]
#[command(name = "appliance", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the box: HTTP + gRPC on :8081 (iPXE, metadata, admin API), and the PXE services.
    ///
    /// Settings come from the embedded default config, overlaid by --config FILE, then by
    /// the flags below (each also settable as an APPLIANCE_* environment variable).
    /// Needs root for DHCP (udp/67) and TFTP (udp/69); without it those are skipped with a
    /// warning and the rest serves. The admin token is created on first start in the data
    /// dir (admin.token, mode 0600) and printed once.
    Serve(ServeArgs),
    /// Talk to a running box over its admin API.
    Ctl(CtlArgs),
    /// Show configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run as the agent in the PXE-booted agent initramfs: register this server with the box
    /// named by `sidero.endpoint=` on the kernel command line, then wait/wipe/reboot as told.
    Agent(AgentArgs),
    /// Boot-time setup of a flashed box (run by its systemd units, not by hand).
    Setup {
        #[command(subcommand)]
        command: SetupCommand,
    },
    /// Signed A/B updates of a flashed box: apply a bundle to the other slot, the trial
    /// boot's health gate, and making/signing bundles.
    Update {
        #[command(subcommand)]
        command: UpdateCommand,
    },
    /// Print the version.
    Version,
}

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Verify a bundle (file or http(s) URL) and write it to the slot not booted, as the
    /// next boot, tried once: if that boot does not become healthy, the box falls back to
    /// this slot by itself. Nothing is written unless every check passes. Needs root.
    Apply(UpdateApplyArgs),
    /// The trial boot's health gate (appliance-healthy.service): wait for /readyz; fail
    /// when the deadline passes. Passes at once on a boot that is not a trial.
    Health {
        #[arg(long, default_value = "127.0.0.1:8081")]
        addr: SocketAddr,
        /// Seconds the trial boot has to answer /readyz. The unit takes it from the slot's
        /// `/etc/appliance/health-gate.env` when that file sets it.
        #[arg(long, env = "APPLIANCE_HEALTH_DEADLINE_SECS", default_value = "120")]
        deadline_secs: u64,
        /// efivarfs, where systemd-boot says whether this boot is counted.
        #[arg(long, default_value = "/sys/firmware/efi/efivars")]
        efivars: PathBuf,
    },
    /// Show the booted slot, the image version and the loader entries.
    Status,
    /// Make a signed bundle (scripts/sign-bundle).
    // `--version` here is the bundle's image version: no propagated binary --version flag
    // (clap refuses the clash: debug builds panicked on every `update create`).
    #[command(disable_version_flag = true)]
    Create(UpdateCreateArgs),
    /// Make a new ed25519 signing key: FILE (PKCS#8 PEM, 0600) and FILE.pub (to bake into
    /// images: scripts/build-image reads APPLIANCE_UPDATE_KEY).
    Keygen { out: PathBuf },
}

#[derive(Debug, Args, Clone)]
pub struct UpdateApplyArgs {
    /// Bundle file or http(s):// URL (downloaded to --download-dir first).
    #[arg(required_unless_present = "request")]
    pub source: Option<String>,
    /// Apply the console's request in DIR (DIR/request + DIR/bundle; result in
    /// DIR/result). Used by appliance-update.service.
    #[arg(long, conflicts_with = "source")]
    pub request: Option<PathBuf>,
    /// The public key bundles must be signed with.
    #[arg(long, default_value = crate::update::DEFAULT_PUBLIC_KEY)]
    pub key: PathBuf,
    /// Boots the new slot gets to become healthy before the loader falls back.
    #[arg(long, default_value = "1", value_parser = clap::value_parser!(u32).range(1..=9))]
    pub tries: u32,
    /// Reboot into the new slot when written.
    #[arg(long)]
    pub reboot: bool,
    #[arg(long, default_value = "/var/lib/appliance-update")]
    pub download_dir: PathBuf,
}

#[derive(Debug, Args, Clone)]
pub struct UpdateCreateArgs {
    /// Private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes).
    #[arg(long)]
    pub key: PathBuf,
    /// Architecture of the box it is for (x86_64, aarch64).
    #[arg(long)]
    pub arch: String,
    /// The image version it installs.
    #[arg(long)]
    pub version: String,
    #[arg(long)]
    pub root: PathBuf,
    #[arg(long)]
    pub kernel: PathBuf,
    #[arg(long)]
    pub initrd: PathBuf,
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum SetupCommand {
    /// Render the site settings (appliance.conf on the ESP, copied to the data partition on
    /// first boot) into systemd-networkd files and the config `appliance serve` runs with.
    Network(SetupNetworkArgs),
    /// Create the admin token if it is missing, printing it to stdout only when created
    /// (the first-boot unit shows it on the local console; it is never logged).
    Token {
        #[arg(long, default_value = "/var/lib/appliance")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Args, Clone)]
pub struct SetupNetworkArgs {
    /// The operator's settings file on the EFI system partition.
    #[arg(long, default_value = "/efi/appliance.conf")]
    pub settings: PathBuf,
    /// The first-boot copy on the data partition, read on every later boot.
    #[arg(long, default_value = "/var/lib/appliance-setup/appliance.conf")]
    pub state: PathBuf,
    #[arg(long, default_value = "/sys/class/net")]
    pub sys_class_net: PathBuf,
    #[arg(long, default_value = "/run/systemd/network")]
    pub network_dir: PathBuf,
    /// The box's config, overlaid with the site settings.
    #[arg(long, default_value = "/etc/appliance/config.toml")]
    pub base_config: PathBuf,
    #[arg(long, default_value = "/run/appliance/config.toml")]
    pub config_out: PathBuf,
    /// How long to wait for the NICs to show up.
    #[arg(long, default_value = "20")]
    pub wait_secs: u64,
}

#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// File holding the kernel command line (`sidero.endpoint=`, `sidero.mac=`).
    #[arg(long, default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    /// Box endpoint `host:port`, overriding `sidero.endpoint=`.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Root under which sys/ and proc/ are read.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Never wipe (a wipe request ends the agent with an error).
    #[arg(long)]
    pub no_wipe: bool,
    /// Never touch the local BMC (a `setup_bmc` request is logged and skipped).
    #[arg(long)]
    pub no_bmc_setup: bool,
    /// Print the hardware inventory this machine would register, and exit.
    #[arg(long)]
    pub print_inventory: bool,
    /// Get an IPv6 address on IFACE by DHCPv6 (Solicit/Advertise/Request/Reply, DUID-LL of
    /// its MAC), configure it (with the on-link prefix route from the router advertisement),
    /// print an `AGENT-LEASE6` line and exit: the agent initramfs's DHCPv6 client.
    #[arg(long, value_name = "IFACE")]
    pub dhcp6: Option<String>,
    /// Print the final reboot/poweroff instead of doing it.
    #[arg(long)]
    pub no_power_action: bool,
    /// Log filter.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServeArgs {
    /// TOML file overlaid on the embedded default (any subset of its keys).
    #[arg(long, env = "APPLIANCE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory: redb store, admin token, boot asset cache.
    #[arg(long, env = "APPLIANCE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// HTTP + gRPC listen address.
    #[arg(long, env = "APPLIANCE_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// Provisioning (PXE) interface, or "auto".
    #[arg(long, env = "APPLIANCE_INTERFACE")]
    pub interface: Option<String>,
    /// DHCP mode: own the network, proxy beside an existing server, or off.
    #[arg(long, env = "APPLIANCE_DHCP_MODE", value_enum)]
    pub dhcp_mode: Option<DhcpMode>,
    /// Log format (journald is picked automatically under systemd).
    #[arg(long = "log", env = "APPLIANCE_LOG", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. "info" or "appliance=debug,info".
    #[arg(long, env = "APPLIANCE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the embedded default configuration (a valid --config file).
    Default,
    /// Print the effective configuration after --config, flags and environment.
    Show(ServeArgs),
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// Admin API endpoint of the box.
    #[arg(
        long,
        env = "APPLIANCE_ENDPOINT",
        default_value = "http://127.0.0.1:8081"
    )]
    pub endpoint: String,
    /// Admin token. Default: read from <data-dir>/admin.token on the box.
    #[arg(long, env = "APPLIANCE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Data directory to read the admin token from.
    #[arg(long, env = "APPLIANCE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use the box's mTLS admin port instead of the token: a directory with ca.crt, tls.crt
    /// and tls.key from `ctl bridge enroll NAME --out DIR`, with an https:// --endpoint
    /// (e.g. https://10.5.0.1:8443). That port serves the admin, lifecycle and power
    /// commands only.
    #[arg(long, env = "APPLIANCE_CERT_DIR", value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// The name the box's TLS certificate must carry (with --cert-dir).
    #[arg(long, env = "APPLIANCE_SERVER_NAME", default_value = crate::secrets::ca::SERVER_NAME)]
    pub server_name: String,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// Version, uptime and object counts of the box.
    Status,
    /// Servers: list, inspect, accept, cordon, delete.
    Server {
        #[command(subcommand)]
        command: ServerCommand,
    },
    /// Create or update objects from a YAML file (multi-document; "-" reads stdin).
    /// All documents are validated first; either all are written or none.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Validate only; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print objects of a kind (server, serverclass, environment, metalmachine,
    /// serverbinding); all of them, or one by name.
    Get {
        kind: String,
        name: Option<String>,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
        /// After printing, keep printing every change (put/delete) as it is committed,
        /// from the revision the list was read at; stops on Ctrl-C.
        #[arg(short = 'w', long)]
        watch: bool,
        /// With --watch: print no list, only the changes after this store revision
        /// (resuming an earlier watch). Refused when the box no longer keeps it.
        #[arg(long, requires = "watch")]
        since_revision: Option<u64>,
    },
    /// Delete one object.
    Delete { kind: String, name: String },
    /// Web console administration.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Talos credentials for resetting released servers without a BMC (the Talos machine
    /// API over SideroLink).
    Talosconfig {
        #[command(subcommand)]
        command: TalosconfigCommand,
    },
    /// Environments' boot files (for air-gapped sites).
    Env {
        #[command(subcommand)]
        command: EnvCommand,
    },
    /// Client certificates for the box's mTLS admin port (kube-bridge).
    Bridge {
        #[command(subcommand)]
        command: BridgeCommand,
    },
    /// Bind a clean, accepted, uncordoned server to an owner: the first available in a
    /// class (ascending name), or a named server. Prints the server's name.
    Allocate {
        /// Pick from this ServerClass (e.g. "any").
        #[arg(
            long = "class",
            conflicts_with = "server",
            required_unless_present = "server"
        )]
        class: Option<String>,
        /// Take this server.
        #[arg(long)]
        server: Option<String>,
        /// Who holds it (e.g. a MetalMachine "namespace/name"); one server per owner.
        #[arg(long)]
        owner: String,
        /// Machine config (Talos YAML) served by /configdata ("-" reads stdin).
        #[arg(long)]
        bootstrap: Option<PathBuf>,
        /// JSON file with an array of RFC 6902 operations applied after class and server
        /// patches.
        #[arg(long)]
        patches: Option<PathBuf>,
        /// Environment to boot (default: Server > ServerClass > "default").
        #[arg(long)]
        environment: Option<String>,
    },
    /// Release a server (by owner or by name): its binding is deleted and it is wiped
    /// before it is available again.
    Release {
        #[arg(long, conflicts_with = "server", required_unless_present = "server")]
        owner: Option<String>,
        #[arg(long)]
        server: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set the web console password (at least 12 characters). Reads it from stdin: typed
    /// twice without echo on a terminal, or the first line of piped input. Stored on the box
    /// as an argon2id hash; every console session ends. The admin token keeps working.
    SetPassword,
}

#[derive(Debug, Subcommand)]
pub enum TalosconfigCommand {
    /// Give the box a cluster's talosconfig (the file talosctl reads; "-" reads stdin). It is
    /// checked, then stored sealed with the box's secrets key and never shown again.
    /// Without --cluster it is the `default` one, used for every cluster without its own.
    Set {
        file: PathBuf,
        /// The cluster (the ServerBindings' `cluster.x-k8s.io/cluster-name` label).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// The clusters the box holds a talosconfig for (names only).
    List,
    /// Forget a cluster's talosconfig.
    Delete {
        #[arg(long)]
        cluster: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BridgeCommand {
    /// Issue a client certificate for NAME (replacing NAME's earlier one). With --out, writes
    /// ca.crt, tls.crt and tls.key (0600) there, the files `kube-bridge --credentials`
    /// reads; without, prints them as a Kubernetes Secret for the provider's Deployment.
    Enroll {
        name: String,
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Secret name and namespace of the printed Secret.
        #[arg(long, default_value = "kube-bridge-box")]
        secret: String,
        #[arg(long, default_value = "kube-bridge-system")]
        namespace: String,
    },
    /// Revoke NAME's certificate: new connections with it are refused.
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Put a kernel and/or initrd into the box's cache for Environment NAME (apply the
    /// Environment first), or for a built-in agent environment (agent-amd64, agent-arm64).
    /// Checked against the spec's sha512; the Environment becomes ready when both are there.
    Upload {
        name: String,
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        initrd: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// Table of all servers.
    List,
    /// One server as YAML.
    Get {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Yaml)]
        output: Output,
    },
    /// Accept a discovered server: from now on the box may wipe and allocate it.
    Accept { name: String },
    /// Exclude a server from allocation (an existing allocation is kept).
    Cordon { name: String },
    /// Make a cordoned server allocatable again.
    Uncordon { name: String },
    /// Approve a new agent key: the server's pinned key is removed, so its next agent boot
    /// with a fresh /ipxe token pins its own (README "Security").
    Rekey { name: String },
    /// Forget a server.
    Delete { name: String },
    /// Power through the server's BMC (IPMI or Redfish): on, off, cycle (powers on a server
    /// that is off), reset, soft (ACPI shutdown), or status.
    Power {
        #[arg(value_enum)]
        action: PowerArg,
        name: String,
    },
    /// Boot device override through the BMC: pxe or disk, for the next boot only unless
    /// --persistent. Mode: --uefi or --bios (default: the server's spec.pxeMode, else the
    /// box's [bmc] default_pxe_mode).
    Bootdev {
        #[arg(value_enum)]
        device: BootdevArg,
        name: String,
        #[arg(long, conflicts_with = "bios")]
        uefi: bool,
        #[arg(long)]
        bios: bool,
        #[arg(long)]
        persistent: bool,
    },
    /// Point a server at its BMC. The password is read from --password-file or
    /// APPLIANCE_BMC_PASSWORD (never from the command line) and kept in the box's secret
    /// store; the Server's spec.bmc refers to it.
    Bmc {
        name: String,
        /// BMC host or IP (IPMI), or host / https:// URL (Redfish).
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        port: Option<u16>,
        /// lanplus (suite 17, falling back to 3), lanplus-3, lanplus-17 or redfish.
        #[arg(long, default_value = "lanplus")]
        interface: String,
        #[arg(long)]
        user: String,
        #[arg(long, env = "APPLIANCE_BMC_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// File holding the password (first line).
        #[arg(long, conflicts_with = "password")]
        password_file: Option<PathBuf>,
        /// Redfish: accept a self-signed certificate; it is pinned on first contact.
        #[arg(long)]
        insecure_tls: bool,
        /// Redfish: forget the pinned certificate (the BMC was re-keyed on purpose).
        #[arg(long)]
        clear_pin: bool,
    },
    /// Wipe an available (accepted, clean, free) server again: it becomes dirty, its agent
    /// is told to wipe, and a server with a BMC is PXE booted + power cycled into the agent.
    /// Refused for a server that is not accepted, allocated, or already waiting for a wipe.
    Wipe { name: String },
    /// Talos log lines the server sent over SideroLink (a bounded ring per server, oldest
    /// first): TIME LEVEL MESSAGE, or one JSON object per line with Sidero's fields plus
    /// `server` (-o json).
    Logs {
        name: String,
        /// Keep printing new lines as the box stores them.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only lines received since then: a duration ago (`90s`, `10m`, `2h`, `1d`) or an
        /// RFC 3339 time (`2026-12-05T20:00:00Z`).
        #[arg(long)]
        since: Option<String>,
        /// Only the newest N stored lines.
        #[arg(long, default_value_t = 0)]
        tail: u32,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = LinesFormat::Text)]
        output: LinesFormat,
    },
    /// The server's boot timeline: DHCP offer/ack, TFTP file, /boot.ipxe, the /ipxe
    /// decision, kernel/initrd fetch (bytes, duration), registration, wipe, SideroLink up,
    /// config fetched, install done, boot from disk, each with its time and outcome, in the
    /// order they began; then the time to registered / installed. -o json: one object.
    Timeline {
        name: String,
        #[arg(short = 'o', long = "output", value_enum, default_value_t = LinesFormat::Text)]
        output: LinesFormat,
    },
    /// Lifecycle events of a server (or of all servers), oldest first.
    Events {
        name: Option<String>,
        /// Only the newest N.
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PowerArg {
    On,
    Off,
    Cycle,
    Reset,
    Soft,
    Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BootdevArg {
    Pxe,
    Disk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinesFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Yaml,
    Json,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// clap's own consistency checks over every subcommand (they run only in debug
    /// builds, on first use: a clash there made `appliance update create` panic).
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn update_create_takes_the_bundle_version() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(
            "appliance update create --key k --arch aarch64 --version 1.2 --root r --kernel k \
             --initrd i --out o"
                .split_whitespace(),
        )
        .unwrap();
        let super::Command::Update {
            command: super::UpdateCommand::Create(a),
        } = &cli.command
        else {
            panic!("not update create: {:?}", cli.command);
        };
        assert_eq!(a.version, "1.2");
    }
}
