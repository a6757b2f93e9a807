//! `appliance`: parse arguments, run the chosen command, map errors to exit codes.
//!
//! Exit codes: 0 success; 1 runtime failure (store, network, API error); 2 bad usage or
//! configuration.

use std::process::ExitCode;

use appliance::cli::{Cli, Command, ConfigCommand};
use appliance::{agent, app, config, ctl, error_chain, logging};
use clap::Parser;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("appliance {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config { command } => match command {
            ConfigCommand::Default => {
                print!("{}", config::DEFAULT_TOML);
                ExitCode::SUCCESS
            }
            ConfigCommand::Show(args) => match app::effective_config(&args) {
                Ok(c) => {
                    print!("{}", c.to_toml());
                    ExitCode::SUCCESS
                }
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
                    Ok(inv) => {
                        println!("{inv:#?}");
                        ExitCode::SUCCESS
                    }
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
        Command::Ctl(args) => match runtime().block_on(ctl::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e, 1),
        },
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime starts")
}

fn fail(e: &dyn std::error::Error, code: u8) -> ExitCode {
    eprintln!("error: {}", error_chain(e));
    ExitCode::from(code)
}
