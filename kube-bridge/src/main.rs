//! `kube-bridge`: the same binary and flags in the management cluster (the provider's
//! Deployment, configured by env) and on the box (with a kubeconfig). Exit codes: 0 ok,
//! 1 runtime failure, 2 usage/config error.

use clap::{Parser, Subcommand};
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
    /// Run the bridge for one box (not built yet: checks its configuration and exits).
    Run(kube_bridge::config::RunArgs),
    /// Print the CRDs (config/crd/*.yaml, one YAML stream).
    Crds,
    /// Print clusterctl's infrastructure-components.yaml (with its ${VAR} placeholders).
    Components,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            for (i, c) in kube_bridge::crd::all().iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", kube_bridge::crd::render(c));
            }
            ExitCode::SUCCESS
        }
        Command::Components => {
            print!("{}", kube_bridge::manifests::infrastructure_components());
            ExitCode::SUCCESS
        }
        Command::Run(args) => match args.check() {
            Err(e) => {
                eprintln!("kube-bridge: {e}");
                ExitCode::from(2)
            }
            Ok(config) => {
                eprintln!(
                    "kube-bridge: configuration for box {} ({}) is valid; the sync itself is not built yet",
                    config.box_id, config.box_url
                );
                ExitCode::from(1)
            }
        },
    }
}
