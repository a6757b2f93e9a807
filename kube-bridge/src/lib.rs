//! kube-bridge: mirrors Server/ServerClass/Environment/MetalMachine/ServerBinding objects
//! between the appliance (through its admin API, `appliance-rpc`) and a Cluster API cluster.
//!
//! [`crd`]: Sidero's CRDs as Rust types and the manifests generated from them; [`manifests`]:
//! the clusterctl provider artefacts; [`config`]: the flags of `kube-bridge run`;
//! [`boxapi`]: the box's admin/lifecycle gRPC client and its change feed; [`boxtls`]: its
//! mTLS connections (the enrolled client certificate, the box's CA as the only root); [`mirror`]: the
//! sync rule (who owns which field) as pure functions; [`sync`]: the loop.

pub mod boxapi;
pub mod boxtls;
pub mod config;
pub mod crd;
pub mod manifests;
pub mod mirror;
pub mod sync;

pub use appliance_rpc::admin;

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("reading the box token: {0}")]
    Token(std::io::Error),
    #[error(transparent)]
    Credentials(#[from] boxtls::TlsError),
    #[error(transparent)]
    Box(#[from] boxapi::BoxError),
    #[error(transparent)]
    Sync(#[from] sync::SyncError),
}

/// Connects to the cluster (the kubeconfig, or in the cluster its service account) and to
/// the box, then syncs until `shutdown`.
pub async fn run(
    config: config::Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let auth = match &config.auth {
        config::BoxAuth::TokenFile(f) => {
            boxapi::Auth::Token(std::fs::read_to_string(f).map_err(RunError::Token)?)
        }
        config::BoxAuth::Credentials { dir, server_name } => boxapi::Auth::Tls(
            std::sync::Arc::new(boxtls::Credentials::new(dir, server_name)?),
        ),
    };
    let kube_config = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| RunError::Kubeconfig(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| RunError::Kubeconfig(e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| RunError::Kubeconfig(e.to_string()))?,
    };
    let client =
        kube::Client::try_from(kube_config).map_err(|e| RunError::Kubeconfig(e.to_string()))?;
    let boxc = boxapi::BoxClient::new(&config.box_url, auth)?;
    tracing::info!(box_id = %config.box_id, box_url = %config.box_url, "kube-bridge syncing");
    sync::run(
        client,
        boxc,
        sync::Settings {
            box_id: config.box_id,
            poll: config.poll,
        },
        shutdown,
    )
    .await?;
    Ok(())
}
