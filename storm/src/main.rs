//! `storm`: runs one boot storm and prints its report (human text on stdout; with `--json
//! FILE` one JSON line appended to FILE). Run inside the clients' network namespace, as
//! root (packet socket, addresses). Exit status 3 when a boot failed.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use storm::storm::{Options, Stages};

#[derive(Clone, Copy, ValueEnum)]
enum StagesArg {
    Dhcp,
    Http,
    Full,
}

#[derive(Parser)]
#[command(about = "Boot-storm load generator: N simulated firmware clients")]
struct Args {
    /// The interface towards the server (in this namespace).
    #[arg(long)]
    iface: String,
    /// Number of machines.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Index of the first machine (MACs and UUIDs derive from it).
    #[arg(long, default_value_t = 0)]
    first: usize,
    /// Power-on spread in seconds (machine k powers on at ramp * k / N).
    #[arg(long, default_value_t = 5.0)]
    ramp_secs: f64,
    /// How far each machine boots.
    #[arg(long, value_enum, default_value = "full")]
    stages: StagesArg,
    /// The server's pid (RSS and CPU from /proc).
    #[arg(long)]
    box_pid: Option<u32>,
    /// Label of the server in the report.
    #[arg(long, default_value = "appliance")]
    server: String,
    /// Append the report as one JSON line to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// PXE DHCP transmissions before a machine gives up (1–4; real firmware: 4).
    #[arg(long, default_value_t = 4)]
    pxe_dhcp_tries: usize,
    /// Write every machine's account (its DHCP ACKs and registration, wall-clock times) to
    /// this file, one JSON line per machine.
    #[arg(long)]
    outcomes: Option<std::path::PathBuf>,
    /// DHCP-only rate mode: DISCOVER and REQUEST sent once each, this many seconds' wait
    /// for each answer, no retransmission (offered rate = clients / ramp-secs).
    #[arg(long)]
    dora_once: Option<u64>,
    /// Distinct machine identities, reused in turn (as perfdhcp's -R).
    #[arg(long)]
    macs: Option<usize>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let opts = Options {
        iface: a.iface,
        clients: a.clients,
        first: a.first,
        ramp: Duration::from_secs_f64(a.ramp_secs.max(0.0)),
        stages: match a.stages {
            StagesArg::Dhcp => Stages::Dhcp,
            StagesArg::Http => Stages::Http,
            StagesArg::Full => Stages::Full,
        },
        box_pid: a.box_pid,
        server: a.server,
        outcomes: a.outcomes,
        dora_once: a.dora_once.map(Duration::from_secs),
        macs: a.macs,
        pxe_dhcp_tries: a.pxe_dhcp_tries,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()?;
    let report = rt.block_on(storm::storm::run(opts))?;
    print!("{}", report.text());
    if let Some(path) = a.json {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        writeln!(f, "{}", report.json())?;
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    if report.failed > 0 {
        std::process::exit(3);
    }
    Ok(())
}
