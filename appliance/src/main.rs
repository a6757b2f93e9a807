//! `appliance`: parse arguments, run the chosen command, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 runtime failure (store, network, API error); 2 bad usage or
//! configuration. A command whose stdout reader went away (`ctl status | head -4`) stops
//! writing and exits 0 without a message (Rust ignores SIGPIPE, so the write fails with
//! EPIPE instead of killing the process; `print!` would panic on it).

use std::process::ExitCode;

use appliance::cli::{Cli, Command, ConfigCommand, SetupCommand};
use appliance::{agent, app, config, ctl, error_chain, logging, site};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
        Command::Ctl(args) => match runtime().block_on(ctl::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) if e.reader_gone() => ExitCode::SUCCESS,
            Err(e) => fail(&e, 1),
        },
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
