//! `appliance ctl env upload`: the client side of the upload API. Streams a local file to
//! `PUT <endpoint>/api/v1/environments/<name>/{kernel,initrd}` with the admin token (plain
//! HTTP, not gRPC).
//!
//! May touch: the admin endpoint (HTTP) and the files given to it.

use std::path::{Path, PathBuf};

use super::{CtlArgs, CtlError, outln, token};
use crate::boot::assets::Asset;
use crate::cli::EnvCommand;

#[derive(Debug, thiserror::Error)]
pub enum UploadAssetError {
    #[error("cannot open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot reach the appliance at {url}")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the appliance refused the {asset} upload (HTTP {status}): {message}")]
    Refused {
        asset: &'static str,
        status: u16,
        message: String,
    },
}

/// `ctl env upload NAME [--kernel FILE] [--initrd FILE]`.
pub(super) async fn env(args: &CtlArgs, command: &EnvCommand) -> Result<(), CtlError> {
    let EnvCommand::Upload {
        name,
        kernel,
        initrd,
    } = command;
    if kernel.is_none() && initrd.is_none() {
        return Err(CtlError::NothingToUpload);
    }
    let token = token(args)?;
    for (asset, path) in [(Asset::Kernel, kernel), (Asset::Initrd, initrd)] {
        if let Some(path) = path {
            let summary = upload(&args.endpoint, &token, name, asset, path).await?;
            outln!("{name}: {summary}")?;
        }
    }
    Ok(())
}

/// Uploads `path` as `asset` of environment `name`; returns the server's one-line summary
/// (`kernel <bytes> bytes sha512 <hex>`).
async fn upload(
    endpoint: &str,
    token: &str,
    name: &str,
    asset: Asset,
    path: &Path,
) -> Result<String, UploadAssetError> {
    crate::install_crypto_provider();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| UploadAssetError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let len = file
        .metadata()
        .await
        .map_err(|source| UploadAssetError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    let url = format!(
        "{}/api/v1/environments/{name}/{}",
        endpoint.trim_end_matches('/'),
        asset.as_str()
    );
    let request_err = |source| UploadAssetError::Request {
        url: url.clone(),
        source,
    };
    let client = reqwest::Client::new();
    // Ask first (same checks, no body): a refusal of the PUT itself can arrive while the
    // file is still streaming and surface as a reset connection instead of its message.
    let check = client
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(request_err)?;
    if !check.status().is_success() {
        let status = check.status().as_u16();
        return Err(UploadAssetError::Refused {
            asset: asset.as_str(),
            status,
            message: check.text().await.unwrap_or_default().trim().to_string(),
        });
    }
    let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let resp = client
        .put(&url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_LENGTH, len)
        .body(body)
        .send()
        .await
        .map_err(request_err)?;
    let status = resp.status();
    let text = resp.text().await.map_err(request_err)?;
    if !status.is_success() {
        return Err(UploadAssetError::Refused {
            asset: asset.as_str(),
            status: status.as_u16(),
            message: text.trim().to_string(),
        });
    }
    Ok(text.trim().to_string())
}
