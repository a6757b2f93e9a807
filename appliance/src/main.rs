//! `appliance`: parse arguments, run the chosen command, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 runtime failure (store, network, API error); 2 bad usage or
//! configuration. A command whose stdout reader went away (`ctl status | head -4`) stops
//! writing and exits 0 without a message (Rust ignores SIGPIPE, so the write fails with
//! EPIPE instead of killing the process; `print!` would panic on it).

use std::process::ExitCode;

use appliance::cli::{Cli, Command, ConfigCommand, SetupCommand, UpdateCommand};
use appliance::{agent, app, config, ctl, error_chain, logging, site};
use clap::Parser;

fn main() -> ExitCode {
    let cli = parse_cli();
    match cli.command {
        Command::Version => emit(format_args!("appliance {}\n", env!("CARGO_PKG_VERSION"))),
        Command::Config { command } => match command {
            ConfigCommand::Default => emit(format_args!("{}", config::DEFAULT_TOML)),
            ConfigCommand::Show(args) => match app::effective_config(&args) {
                Ok(c) => emit(format_args!("{}", c.to_toml())),
                Err(e) => fail(&e, 2),
            },
        },
        Command::Serve(args) => {
            let config = match app::effective_config(&args) {
                Ok(c) => c,
                Err(e) => return fail(&e, 2),
            };
            if let Some(w) = logging::init(config.log.format, &config.log.level) {
                tracing::warn!("{w}");
            }
            tune_malloc();
            let result = runtime().block_on(app::serve(config));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %error_chain(&e), "appliance stopped");
                    let code = if matches!(e, app::ServeError::Config(_)) {
                        2
                    } else {
                        1
                    };
                    fail(&e, code)
                }
            }
        }
        Command::Agent(args) => {
            agent::init_logging(&args.log_level);
            if let Some(iface) = &args.dhcp6 {
                return match runtime().block_on(agent::dhcp6::run(iface)) {
                    Ok(b) => emit(format_args!(
                        "AGENT-LEASE6 iface={iface} ip={} valid={} preferred={} dns={}\n",
                        b.addr,
                        b.valid_secs,
                        b.preferred_secs,
                        b.dns
                            .iter()
                            .map(|d| d.to_string())
                            .collect::<Vec<_>>()
                            .join(",")
                    )),
                    Err(e) => fail(&e, 1),
                };
            }
            if args.print_inventory {
                let addrs = agent::if_addresses();
                return match agent::inventory::read(&args.root, &addrs) {
                    Ok(inv) => emit(format_args!("{inv:#?}\n")),
                    Err(e) => fail(&e, 1),
                };
            }
            let opts = agent::AgentOptions {
                cmdline: args.cmdline,
                endpoint: args.endpoint,
                root: args.root,
                no_wipe: args.no_wipe,
                no_bmc_setup: args.no_bmc_setup,
            };
            match runtime().block_on(agent::run(opts)) {
                Ok(outcome) if args.no_power_action => {
                    println!("{outcome:?}");
                    ExitCode::SUCCESS
                }
                Ok(outcome) => fail(&agent::act(&outcome), 1),
                Err(e) => {
                    tracing::error!("AGENT-FAILED {}", error_chain(&e));
                    fail(&e, 1)
                }
            }
        }
        Command::Setup { command } => match command {
            SetupCommand::Network(a) => setup_network(&a),
            SetupCommand::Token { data_dir } => {
                match appliance::api::auth::load_or_create(&data_dir) {
                    Ok(t) if t.created => {
                        println!("{}", t.token);
                        ExitCode::SUCCESS
                    }
                    Ok(_) => ExitCode::SUCCESS,
                    Err(e) => fail(&e, 1),
                }
            }
        },
        Command::Update { command } => update(command),
        Command::Ctl(args) => match runtime().block_on(ctl::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.reader_gone() => ExitCode::SUCCESS,
            Err(e) => fail(&e, 1),
        },
    }
}

/// Parses the command line on a short-lived thread. clap's derive builds the whole command
/// tree (every subcommand and argument) in frames that take ~120 KiB of stack at opt-level
/// "z": on the main thread those pages would stay resident for the life of `serve` (issue 16,
/// the box's RSS), while a joined thread's stack is unmapped.
fn parse_cli() -> Cli {
    match std::thread::Builder::new()
        .name("cli".into())
        .spawn(Cli::parse)
    {
        Ok(parse) => parse
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        Err(_) => Cli::parse(),
    }
}

/// `appliance setup network`: retries while the NICs are still showing up, then reports
/// what it chose on stderr (the journal).
fn setup_network(a: &appliance::cli::SetupNetworkArgs) -> ExitCode {
    let paths = site::ApplyPaths {
        esp_settings: a.settings.clone(),
        state_settings: a.state.clone(),
        sys_class_net: a.sys_class_net.clone(),
        network_dir: a.network_dir.clone(),
        base_config: a.base_config.clone(),
        config_out: a.config_out.clone(),
    };
    let deadline = appliance::clock::now() + std::time::Duration::from_secs(a.wait_secs);
    loop {
        match site::apply(&paths) {
            Ok(done) => {
                eprintln!(
                    "setup: {}management port {}, provisioning port {}",
                    if done.first_boot { "first boot: " } else { "" },
                    done.ports.management,
                    done.ports.provisioning
                );
                return ExitCode::SUCCESS;
            }
            Err(site::ApplyError::Ports(_)) if appliance::clock::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => return fail(&e, 2),
        }
    }
}

/// `appliance update …`.
fn update(command: UpdateCommand) -> ExitCode {
    use appliance::update::{health, install};
    let arch = std::env::consts::ARCH;
    match command {
        UpdateCommand::Apply(a) => {
            let key = match install::read_public_key(&a.key) {
                Ok(k) => k,
                Err(e) => return fail(&e, 2),
            };
            let layout = install::Layout::default();
            let done = if let Some(dir) = &a.request {
                install::apply_request(dir, &layout, &key, arch, a.tries)
            } else {
                let source = a.source.as_deref().unwrap_or_default();
                let path = if source.starts_with("http://") || source.starts_with("https://") {
                    let out = a.download_dir.join("download.bundle");
                    eprintln!("update: downloading {source}");
                    if let Err(e) = runtime().block_on(download(source, &out)) {
                        return fail(&*e, 1);
                    }
                    out
                } else {
                    std::path::PathBuf::from(source)
                };
                install::install(&path, &layout, &key, arch, a.tries)
            };
            match done {
                Ok(i) => {
                    eprintln!(
                        "update: version {} written to slot {} ({}), tried {} time(s) at the next boot",
                        i.version, i.slot, i.entry, a.tries
                    );
                    if a.reboot {
                        let st = std::process::Command::new("systemctl")
                            .arg("reboot")
                            .status();
                        if !st.is_ok_and(|s| s.success()) {
                            eprintln!(
                                "update: reboot failed; the new slot is tried at the next boot"
                            );
                            return ExitCode::from(1);
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, 1),
            }
        }
        UpdateCommand::Health {
            addr,
            deadline_secs,
            efivars,
        } => {
            if !health::is_trial_boot(&efivars) {
                eprintln!("health: not a trial boot (no boot counter); nothing to decide");
                return ExitCode::SUCCESS;
            }
            let deadline = std::time::Duration::from_secs(deadline_secs);
            match health::wait_ready(addr, deadline, std::time::Duration::from_secs(1)) {
                Some(t) => {
                    eprintln!(
                        "health: /readyz answered after {:.1} s: marking this slot good",
                        t.as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                None => {
                    eprintln!(
                        "health: no /readyz within {deadline_secs} s: this slot failed its trial"
                    );
                    ExitCode::from(1)
                }
            }
        }
        UpdateCommand::Status => {
            let layout = install::Layout::default();
            let st = install::status(&layout);
            let mut out = format!(
                "booted slot: {}\nimage version: {}\nbinary version: {}\n",
                st.booted
                    .map_or("none (not an A/B boot)".to_string(), |s| s.to_string()),
                st.image_version.as_deref().unwrap_or("unknown"),
                env!("CARGO_PKG_VERSION")
            );
            match layout.entries() {
                Ok(entries) => {
                    let next =
                        appliance::update::slots::next_boot(&entries).map(|e| e.file.clone());
                    for e in &entries {
                        let state = if e.is_bad() {
                            "failed its trial"
                        } else if e.on_trial() {
                            "on trial"
                        } else {
                            "good"
                        };
                        let mark = if Some(&e.file) == next.as_ref() {
                            " (next boot)"
                        } else {
                            ""
                        };
                        out.push_str(&format!(
                            "entry {}: slot {}, {state}{mark}\n",
                            e.file, e.slot
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("entries: {}\n", error_chain(&e))),
            }
            emit(format_args!("{out}"))
        }
        UpdateCommand::Create(c) => {
            match install::create(
                &c.out,
                &c.key,
                &c.arch,
                &c.version,
                [&c.root, &c.kernel, &c.initrd],
            ) {
                Ok(m) => {
                    eprintln!(
                        "bundle {}: {} {} ({} payload bytes)",
                        c.out.display(),
                        m.arch,
                        m.version,
                        m.payload_len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e, 1),
            }
        }
        UpdateCommand::Keygen { out } => {
            use appliance::update::keys;
            let made = keys::generate_private_pem()
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    let key = keys::private_from_pem(&pem).map_err(|e| e.to_string())?;
                    appliance::secrets::files::write_private(&out, pem.as_bytes(), true)
                        .map_err(|e| format!("{}: {e}", out.display()))?;
                    let mut pub_path = out.clone().into_os_string();
                    pub_path.push(".pub");
                    std::fs::write(&pub_path, keys::public_pem(&key))
                        .map_err(|e| format!("{}: {e}", pub_path.to_string_lossy()))?;
                    Ok(pub_path)
                });
            match made {
                Ok(p) => {
                    eprintln!(
                        "keygen: private key {} (keep it), public key {}",
                        out.display(),
                        p.to_string_lossy()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

/// Downloads `url` to `out` (for `update apply URL`).
async fn download(
    url: &str,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::AsyncWriteExt;
    appliance::install_crypto_provider();
    if let Some(dir) = out.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut resp = reqwest::get(url).await?.error_for_status()?;
    let mut f = tokio::fs::File::create(out).await?;
    while let Some(chunk) = resp.chunk().await? {
        f.write_all(&chunk).await?;
    }
    f.sync_all().await?;
    Ok(())
}

/// `serve` with glibc: at most two malloc arenas, as `MALLOC_ARENA_MAX=2` would set (an
/// operator's own `MALLOC_ARENA_MAX` is left as it is). glibc gives threads that allocate at
/// once arenas of their own, up to eight per core, and an arena keeps what was freed in it:
/// tokio's blocking pool (store transactions) and worker threads held about 30 MiB more
/// with 10,000 registered servers (`scripts/bench agents`, 101 vs 69 MiB RSS).
///
/// And the `heap-trim` thread: glibc gives back to the kernel only the free top of a heap,
/// so what a boot storm's transfers and connections freed in its middle stayed resident
/// for good (about 160 MiB after a 10,000-machine storm). Every [`TRIM_EVERY`] the thread
/// asks how much is free, and when [`TRIM_MIN`] more than the least since its last trim
/// is ([`trim_due`]), `malloc_trim(0)` returns the free pages. musl, which the shipped
/// static build links, has neither arenas nor this.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // mallopt, mallinfo2, malloc_trim: no safe form; ARCHITECTURE.md lists it.
fn tune_malloc() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; called before the runtime starts any
        // thread, and M_ARENA_MAX takes any positive value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
    let trim = move || {
        let mut low = usize::MAX;
        loop {
            std::thread::sleep(TRIM_EVERY);
            // SAFETY: mallinfo2 reads glibc's allocator statistics under its own locks.
            let free = unsafe { libc::mallinfo2() }.fordblks;
            if trim_due(free, &mut low) {
                // SAFETY: malloc_trim walks glibc's own free lists under its arena locks and
                // releases whole free pages; no memory in use is touched.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("heap-trim".into())
        .spawn(trim)
    {
        tracing::warn!(error = %e, "cannot start the heap-trim thread; freed memory stays resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

/// How often the `heap-trim` thread looks (see [`tune_malloc`]).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Bytes freed since the last trim (over the least free seen since) that make a trim due.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
const TRIM_MIN: usize = 8 << 20;

/// Whether a trim is due with `free` bytes free in the heap now; `low` is the least free
/// seen since the last trim (a trim leaves glibc's count of free bytes as it was).
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn trim_due(free: usize, low: &mut usize) -> bool {
    *low = (*low).min(free);
    if free >= low.saturating_add(TRIM_MIN) {
        *low = free;
        return true;
    }
    false
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

/// Prints command output; a reader that went away (a closed pipe) is a quiet success.
fn emit(text: std::fmt::Arguments<'_>) -> ExitCode {
    match appliance::write_stdout(text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if appliance::reader_gone(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: cannot write to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

fn fail(e: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_once_enough_more_is_free_than_since_the_last() {
        let mib = 1 << 20;
        let mut low = usize::MAX;
        // A quiet heap: never.
        assert!(!trim_due(2 * mib, &mut low));
        assert!(!trim_due(9 * mib, &mut low));
        // A storm's frees: 8 MiB more free than the least seen.
        assert!(trim_due(10 * mib, &mut low));
        // The count stays as it was after the trim: not again until more is freed.
        assert!(!trim_due(10 * mib, &mut low));
        assert!(!trim_due(17 * mib, &mut low));
        // Reused, then freed again.
        assert!(!trim_due(4 * mib, &mut low));
        assert!(trim_due(12 * mib, &mut low));
    }
}
