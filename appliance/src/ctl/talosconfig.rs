//! `appliance ctl talosconfig set|list|delete`: a cluster's talosconfig for resets without
//! a BMC (the Admin service's `SetTalosconfig`/`ListTalosconfigs`/`DeleteTalosconfig`).
//! The file's content goes to the box once and is never printed.
//!
//! May touch: the admin endpoint (gRPC) and the named file (or stdin).

use appliance_rpc::admin::admin_client::AdminClient;
use appliance_rpc::admin::{
    DeleteTalosconfigRequest, ListTalosconfigsRequest, SetTalosconfigRequest,
};

use super::{CtlArgs, CtlError, channel, outln, read_input};
use crate::cli::TalosconfigCommand;

/// `ctl talosconfig …`.
pub(super) async fn run(args: &CtlArgs, command: &TalosconfigCommand) -> Result<(), CtlError> {
    // Read the file before connecting: a missing file changes nothing on the box.
    let input = match command {
        TalosconfigCommand::Set { file, .. } => Some(read_input(file)?),
        _ => None,
    };
    let (channel, add_token) = channel(args).await?;
    let mut client = AdminClient::with_interceptor(channel, add_token);
    match command {
        TalosconfigCommand::Set { cluster, .. } => {
            let reply = client
                .set_talosconfig(SetTalosconfigRequest {
                    cluster: cluster.clone().unwrap_or_default(),
                    talosconfig: input.unwrap_or_default().into_bytes(),
                })
                .await?
                .into_inner();
            outln!(
                "talosconfig for cluster {} stored (context {}); released servers without a BMC are reset with it",
                reply.cluster,
                reply.context
            )?;
        }
        TalosconfigCommand::List => {
            let reply = client
                .list_talosconfigs(ListTalosconfigsRequest {})
                .await?
                .into_inner();
            for c in reply.clusters {
                outln!("{c}")?;
            }
        }
        TalosconfigCommand::Delete { cluster } => {
            client
                .delete_talosconfig(DeleteTalosconfigRequest {
                    cluster: cluster.clone().unwrap_or_default(),
                })
                .await?;
            outln!(
                "talosconfig for cluster {} removed",
                cluster.as_deref().unwrap_or("default")
            )?;
        }
    }
    Ok(())
}
