//! kube-bridge: mirrors Server/ServerClass/Environment/MetalMachine/ServerBinding objects
//! between the appliance (through its admin API, `appliance-rpc`) and a Cluster API cluster.
//!
//! [`crd`]: Sidero's CRDs as Rust types and the manifests generated from them; [`manifests`]:
//! the clusterctl provider artefacts; [`config`]: the flags of `kube-bridge run`; [`lease`]:
//! leader election of an HA pair (only the Lease holder syncs);
//! [`boxapi`]: the box's admin/lifecycle gRPC client and its change feed; [`boxtls`]: its
//! mTLS connections (the enrolled client certificate, the box's CA as the only root); [`mirror`]: the
//! sync rule (who owns which field) as pure functions; [`sync`]: the loop.

pub mod boxapi;
pub mod boxtls;
pub mod config;
pub mod crd;
pub mod lease;
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
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let stopping = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let elected = async {
        let mut elector = lease::Elector::new(
            client.clone(),
            lease::Settings {
                namespace: config.lease_namespace.clone(),
                name: config.box_id.clone(),
                identity: identity(),
                duration: config.lease_duration,
            },
        );
        loop {
            let mut s = stop.clone();
            tokio::select! {
                _ = s.wait_for(|s| *s) => return Ok(()),
                () = elector.acquire() => {}
            }
            tracing::info!(box_id = %config.box_id, box_url = %config.box_url, "kube-bridge syncing");
            // The sync runs beside the renewals (never inside them: a long pass must not
            // delay a renewal) and is dropped, writes in flight included, once the Lease is
            // lost.
            let sync = sync::run(
                client.clone(),
                boxc.clone(),
                sync::Settings {
                    box_id: config.box_id.clone(),
                    poll: config.poll,
                },
                async move {
                    let _ = s.wait_for(|s| *s).await;
                },
            );
            tokio::select! {
                r = sync => {
                    r?;
                    elector.release().await;
                    return Ok::<(), RunError>(());
                }
                () = elector.keep() => {}
            }
        }
    };
    tokio::pin!(stopping, elected);
    let mut stopped = false;
    loop {
        tokio::select! {
            r = &mut elected => return r,
            // Sends the stop; the election loop sees it, releases the Lease and returns.
            () = &mut stopping, if !stopped => stopped = true,
        }
    }
}

/// This bridge's identity in the Lease: the host (the pod's name in a cluster) and the pid.
fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "kube-bridge".into());
    format!("{host}_{}", std::process::id())
}
