//! `appliance ctl allocate | release | server wipe | server events`: the client side of the
//! lifecycle API.
//!
//! May touch: the admin endpoint (gRPC), stdin and the files given to `allocate`.

use std::path::Path;

use appliance_rpc::lifecycle::lifecycle_client::LifecycleClient;
use appliance_rpc::lifecycle::{AllocateRequest, EventsRequest, ReleaseRequest, WipeRequest};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::{AddToken, CtlArgs, CtlError, channel, outln, read_input};

type Client = LifecycleClient<InterceptedService<Channel, AddToken>>;

async fn connect(args: &CtlArgs) -> Result<Client, CtlError> {
    let (channel, add_token) = channel(args).await?;
    Ok(LifecycleClient::with_interceptor(channel, add_token))
}

/// The arguments of `ctl allocate`.
pub(super) struct Allocate<'a> {
    pub class: Option<&'a str>,
    pub server: Option<&'a str>,
    pub owner: &'a str,
    pub bootstrap: Option<&'a Path>,
    pub patches: Option<&'a Path>,
    pub environment: Option<&'a str>,
}

/// `ctl allocate (--class C | --server S) --owner O [--bootstrap F] [--patches F]`.
pub(super) async fn allocate(args: &CtlArgs, a: Allocate<'_>) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let bootstrap_data = a.bootstrap.map(read_input).transpose()?.unwrap_or_default();
    let config_patches = a.patches.map(read_input).transpose()?.unwrap_or_default();
    let r = client
        .allocate(AllocateRequest {
            server_class: a.class.unwrap_or_default().to_string(),
            server: a.server.unwrap_or_default().to_string(),
            owner: a.owner.to_string(),
            bootstrap_data,
            config_patches,
            environment: a.environment.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    outln!("server/{} allocated to {}", r.server, a.owner)?;
    Ok(())
}

/// `ctl release (--owner O | --server S)`.
pub(super) async fn release(
    args: &CtlArgs,
    owner: Option<&str>,
    server: Option<&str>,
) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let r = client
        .release(ReleaseRequest {
            owner: owner.unwrap_or_default().to_string(),
            server: server.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    outln!("server/{} released", r.server)?;
    Ok(())
}

/// `ctl server wipe NAME`.
pub(super) async fn wipe(args: &CtlArgs, name: &str) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let r = client
        .wipe(WipeRequest {
            server: name.to_string(),
        })
        .await?
        .into_inner();
    outln!(
        "server/{} wipe requested: now {}; its agent is told to wipe, then it is available again",
        r.server,
        r.state
    )?;
    Ok(())
}

/// `ctl server events [NAME] [--limit N]`.
pub(super) async fn events(args: &CtlArgs, name: Option<&str>, limit: u32) -> Result<(), CtlError> {
    let mut client = connect(args).await?;
    let r = client
        .events(EventsRequest {
            name: name.unwrap_or_default().to_string(),
            limit,
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
    Ok(())
}
