//! `appliance ctl allocate | release | server wipe | server events`: the client side of the lifecycle
//! API. Returns `None` for commands that are not lifecycle commands.

use std::io::Read;
use std::path::Path;

use appliance_rpc::lifecycle::lifecycle_client::LifecycleClient;
use appliance_rpc::lifecycle::{AllocateRequest, EventsRequest, ReleaseRequest, WipeRequest};

use crate::cli::{CtlArgs, CtlCommand, ServerCommand};
use crate::ctl::{CtlError, channel, outln};

fn read(path: &Path) -> Result<String, CtlError> {
    let err = |source| CtlError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(err)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).map_err(err)
    }
}

/// Runs a lifecycle command, or returns `None` if `args` is not one.
pub async fn run(args: &CtlArgs) -> Option<Result<(), CtlError>> {
    match &args.command {
        CtlCommand::Allocate { .. }
        | CtlCommand::Release { .. }
        | CtlCommand::Server {
            command: ServerCommand::Events { .. } | ServerCommand::Wipe { .. },
        } => Some(run_lifecycle(args).await),
        _ => None,
    }
}

async fn run_lifecycle(args: &CtlArgs) -> Result<(), CtlError> {
    let (channel, add_token) = channel(args).await?;
    let mut client = LifecycleClient::with_interceptor(channel, add_token);
    match &args.command {
        CtlCommand::Allocate {
            class,
            server,
            owner,
            bootstrap,
            patches,
            environment,
        } => {
            let bootstrap_data = bootstrap
                .as_deref()
                .map(read)
                .transpose()?
                .unwrap_or_default();
            let config_patches = patches
                .as_deref()
                .map(read)
                .transpose()?
                .unwrap_or_default();
            let r = client
                .allocate(AllocateRequest {
                    server_class: class.clone().unwrap_or_default(),
                    server: server.clone().unwrap_or_default(),
                    owner: owner.clone(),
                    bootstrap_data,
                    config_patches,
                    environment: environment.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            outln!("server/{} allocated to {owner}", r.server)?;
        }
        CtlCommand::Release { owner, server } => {
            let r = client
                .release(ReleaseRequest {
                    owner: owner.clone().unwrap_or_default(),
                    server: server.clone().unwrap_or_default(),
                })
                .await?
                .into_inner();
            outln!("server/{} released", r.server)?;
        }
        CtlCommand::Server {
            command: ServerCommand::Wipe { name },
        } => {
            let r = client
                .wipe(WipeRequest {
                    server: name.clone(),
                })
                .await?
                .into_inner();
            outln!(
                "server/{} wipe requested: now {}; its agent is told to wipe, then it is available again",
                r.server,
                r.state
            )?;
        }
        CtlCommand::Server {
            command: ServerCommand::Events { name, limit },
        } => {
            let r = client
                .events(EventsRequest {
                    name: name.clone().unwrap_or_default(),
                    limit: *limit,
                })
                .await?
                .into_inner();
            outln!(
                "{:<6} {:<20} {:<36} {:<20} {:<11} {:<11} MESSAGE",
                "SEQ",
                "TIME",
                "SERVER",
                "EVENT",
                "FROM",
                "TO"
            )?;
            for e in r.events {
                outln!(
                    "{:<6} {:<20} {:<36} {:<20} {:<11} {:<11} {}",
                    e.seq,
                    e.time,
                    e.server,
                    e.event,
                    if e.from.is_empty() { "-" } else { &e.from },
                    e.to,
                    e.message
                )?;
            }
        }
        _ => {}
    }
    Ok(())
}
