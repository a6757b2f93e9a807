//! `kube-bridge`: the same binary and flags in the management cluster (the provider's
//! Deployment, configured by env) and on the box (with a kubeconfig). Exit codes: 0 ok,
//! 1 runtime failure, 2 usage/config error.

use clap::{Parser, Subcommand};
use std::io::Write;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kube-bridge",
    version,
    about = "Mirrors appliance boxes to a Cluster API management cluster (Sidero-compatible infrastructure provider)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge for one box: the two-way sync, until SIGINT/SIGTERM.
    Run(Box<kube_bridge::config::RunArgs>),
    /// Print the CRDs (config/crd/*.yaml, one YAML stream).
    Crds,
    /// Print clusterctl's infrastructure-components.yaml (with its ${VAR} placeholders).
    Components,
}

/// Writes `text` to stdout. A reader that went away (`kube-bridge crds | head`) ends the
/// command quietly with 0; any other write error is a runtime failure (1).
fn print_out(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-bridge: writing to stdout: {e}");
            ExitCode::from(1)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            let crds: Vec<String> = kube_bridge::crd::all()
                .iter()
                .map(kube_bridge::crd::render)
                .collect();
            print_out(&crds.join("---\n"))
        }
        Command::Components => print_out(&kube_bridge::manifests::infrastructure_components()),
        Command::Run(args) => {
            let log = args.log.clone();
            match (*args).check() {
                Err(e) => {
                    eprintln!("kube-bridge: {e}");
                    ExitCode::from(2)
                }
                Ok(config) => run(config, &log),
            }
        }
    }
}

fn run(config: kube_bridge::config::Config, log: &str) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kube-bridge: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(kube_bridge::run(config, shutdown())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-bridge: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
