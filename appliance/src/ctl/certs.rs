//! `appliance ctl bridge enroll|revoke`: the client side of the `AdminCerts` service (client
//! certificates for the box's mTLS admin port, used by kube-bridge).
//!
//! May touch: the admin endpoint (gRPC) and, for `enroll --out DIR`, the three files there
//! (written 0600).

use appliance_rpc::admin::admin_certs_client::AdminCertsClient;
use appliance_rpc::admin::{EnrollRequest, RevokeRequest};

use super::{CtlArgs, CtlError, channel, outln};
use crate::cli::BridgeCommand;

/// `ctl bridge enroll|revoke`: the `AdminCerts` service (token, :8081).
pub(super) async fn bridge(args: &CtlArgs, command: &BridgeCommand) -> Result<(), CtlError> {
    let (channel, add_token) = channel(args).await?;
    let mut client = AdminCertsClient::with_interceptor(channel, add_token);
    match command {
        BridgeCommand::Enroll {
            name,
            out,
            secret,
            namespace,
        } => {
            let reply = client
                .enroll(EnrollRequest { name: name.clone() })
                .await?
                .into_inner();
            let files = [
                ("ca.crt", &reply.ca_pem),
                ("tls.crt", &reply.cert_pem),
                ("tls.key", &reply.key_pem),
            ];
            match out {
                Some(dir) => {
                    for (file, text) in files {
                        let path = dir.join(file);
                        crate::secrets::files::write_private(&path, text.as_bytes(), false)
                            .map_err(|source| CtlError::WriteFile { path, source })?;
                    }
                    outln!(
                        "{name}: ca.crt, tls.crt, tls.key written to {} (server name {})",
                        dir.display(),
                        reply.server_name
                    )?;
                }
                None => {
                    use base64::Engine;
                    let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
                    outln!(
                        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {secret}\n  namespace: {namespace}\n  annotations:\n    appliance.sidero.dev/client: {name}\n    appliance.sidero.dev/server-name: {}\ntype: Opaque\ndata:",
                        reply.server_name
                    )?;
                    for (file, text) in files {
                        outln!("  {file}: {}", b64(text))?;
                    }
                }
            }
        }
        BridgeCommand::Revoke { name } => {
            client.revoke(RevokeRequest { name: name.clone() }).await?;
            outln!("{name}: certificate revoked")?;
        }
    }
    Ok(())
}
