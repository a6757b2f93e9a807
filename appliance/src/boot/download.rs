//! Environment asset downloads: `EnvSyncTask` follows the store's change feed, and for every
//! Environment whose kernel/initrd URL is not cached yet fetches it once (http, https or
//! file URLs), verifies its SHA-512 against the spec, moves it into
//! `<data_dir>/env/<name>/{vmlinuz,initramfs.xz}` by atomic rename, and records the outcome
//! as a `Ready` condition on the Environment (status `False` with reason and message on 404,
//! digest mismatch, timeout…). Failed assets are tried again after `retry_after`, or at once
//! when the spec changes.
//!
//! Spawned from `app.rs`; stops on the shared shutdown signal. Channels: the store change
//! feed in; store writes (one transaction per condition) out.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::assets::{self, Asset, AssetCondition, AssetDirs, EnvSpec};
use super::is_agent_environment;
use crate::model::{Kind, Object};
use crate::store::{ChangeOp, Store, StoreError};

/// Why one asset could not be fetched into the cache.
#[derive(Debug, thiserror::Error)]
pub enum FetchAssetError {
    #[error("unsupported URL {url} (http://, https:// and file:// are supported)")]
    UnsupportedUrl { url: String },
    #[error("GET {url}: HTTP {status}")]
    Status { url: String, status: String },
    #[error("GET {url} failed")]
    Request {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url}: no data for {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("spec sha512 {sha512:?} is not 128 hex digits")]
    BadSpecSha { sha512: String },
    #[error("sha512 of {url} is {actual}, the spec asks for {expected}")]
    Sha512Mismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("cannot read {path}")]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl FetchAssetError {
    /// The condition `reason` for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            FetchAssetError::UnsupportedUrl { .. } => "UnsupportedUrl",
            FetchAssetError::Status { .. } | FetchAssetError::Request { .. } => "DownloadFailed",
            FetchAssetError::Timeout { .. } => "DownloadTimeout",
            FetchAssetError::BadSpecSha { .. } | FetchAssetError::Sha512Mismatch { .. } => {
                "Sha512Mismatch"
            }
            FetchAssetError::ReadLocal { .. } => "DownloadFailed",
            FetchAssetError::Write { .. } => "CacheWriteFailed",
        }
    }
}

/// A file fetched into the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub sha512: String,
    pub bytes: u64,
}

fn is_sha512_hex(s: &str) -> bool {
    s.len() == 128 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

/// Streams `url` into `dest` (via a temp file in the same directory and an atomic rename),
/// hashing as it goes; a digest other than `expected` (when given) leaves `dest` untouched.
pub async fn fetch_to_cache(
    client: &reqwest::Client,
    url: &str,
    expected: &str,
    dest: &Path,
    idle: Duration,
) -> Result<Fetched, FetchAssetError> {
    if !expected.is_empty() && !is_sha512_hex(expected) {
        return Err(FetchAssetError::BadSpecSha {
            sha512: expected.to_string(),
        });
    }
    let dir = dest.parent().unwrap_or(Path::new("."));
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FetchAssetError::Write { path, source }
    };
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(write_err(dir))?;
    let file_name = dest
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.part"));
    let result = fetch_into(client, url, &tmp, idle).await;
    let fetched = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    if !expected.is_empty() && !fetched.sha512.eq_ignore_ascii_case(expected) {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(FetchAssetError::Sha512Mismatch {
            url: url.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual: fetched.sha512,
        });
    }
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(write_err(dest))?;
    Ok(fetched)
}

async fn fetch_into(
    client: &reqwest::Client,
    url: &str,
    tmp: &Path,
    idle: Duration,
) -> Result<Fetched, FetchAssetError> {
    let write_err = |source| FetchAssetError::Write {
        path: tmp.to_path_buf(),
        source,
    };
    let timeout = || FetchAssetError::Timeout {
        url: url.to_string(),
        secs: idle.as_secs(),
    };
    let mut out = tokio::fs::File::create(tmp).await.map_err(write_err)?;
    let mut hasher = Sha512::new();
    let mut bytes = 0u64;
    if let Some(path) = url.strip_prefix("file://") {
        let read_err = |source| FetchAssetError::ReadLocal {
            path: PathBuf::from(path),
            source,
        };
        let mut src = tokio::fs::File::open(path).await.map_err(read_err)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = src.read(&mut buf).await.map_err(read_err)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).await.map_err(write_err)?;
            bytes += n as u64;
        }
    } else if url.starts_with("http://") || url.starts_with("https://") {
        let request_err = |source| FetchAssetError::Request {
            url: url.to_string(),
            source,
        };
        let resp = tokio::time::timeout(idle, client.get(url).send())
            .await
            .map_err(|_| timeout())?
            .map_err(request_err)?;
        if !resp.status().is_success() {
            return Err(FetchAssetError::Status {
                url: url.to_string(),
                status: resp.status().to_string(),
            });
        }
        let mut resp = resp;
        loop {
            let chunk = tokio::time::timeout(idle, resp.chunk())
                .await
                .map_err(|_| timeout())?
                .map_err(request_err)?;
            let Some(chunk) = chunk else { break };
            hasher.update(&chunk);
            out.write_all(&chunk).await.map_err(write_err)?;
            bytes += chunk.len() as u64;
        }
    } else {
        return Err(FetchAssetError::UnsupportedUrl {
            url: url.to_string(),
        });
    }
    out.sync_all().await.map_err(write_err)?;
    Ok(Fetched {
        sha512: hex::encode(hasher.finalize()),
        bytes,
    })
}

/// Records `cond` for `asset` on Environment `name` in one transaction. A failure never
/// replaces a ready condition for the same key whose file is in the cache (an upload may
/// have landed while a download failed).
pub fn record_condition(
    store: &Store,
    dirs: &AssetDirs,
    name: &str,
    asset: Asset,
    cond: &AssetCondition,
) -> Result<(), StoreError> {
    let present = dirs.present(name, asset);
    store.update(Kind::Environment, name, |obj| {
        let Object::Environment(env) = obj else {
            return Err("not an Environment".into());
        };
        if !cond.ready
            && present
            && assets::conditions(env)
                .iter()
                .any(|c| c.url == cond.url && c.ready)
        {
            return Ok(());
        }
        *env = assets::with_condition(env, asset, cond);
        Ok(())
    })?;
    Ok(())
}

/// Settings of the download task.
#[derive(Debug, Clone)]
pub struct EnvSyncConfig {
    pub dirs: AssetDirs,
    /// A download fails when no byte arrives for this long.
    pub idle_timeout: Duration,
    /// A failed asset is tried again after this long (or at once when its spec changes).
    pub retry_after: Duration,
    /// Downloads running at the same time.
    pub max_parallel: usize,
}

type Key = (String, Asset);

struct JobDone {
    name: String,
    asset: Asset,
    url: String,
    sha512: String,
    result: Result<Fetched, FetchAssetError>,
}

/// The download task: see the module doc.
pub struct EnvSyncTask {
    store: Store,
    /// Built by `make_client` for the first download, not at start: a box that downloads
    /// nothing never loads the system's CA certificates nor maps the HTTP client's code
    /// (issue 16, the box's RSS: ~1.1 MiB resident at start).
    client: Option<reqwest::Client>,
    make_client: fn() -> reqwest::Client,
    cfg: EnvSyncConfig,
    permits: Arc<Semaphore>,
    inflight: HashSet<Key>,
    /// Last failure per asset: (url, sha512, when).
    failed: HashMap<Key, (String, String, Instant)>,
    jobs: JoinSet<JobDone>,
}

impl EnvSyncTask {
    /// `make_client` builds the HTTP client, once, when the first asset is fetched.
    pub fn new(
        store: Store,
        make_client: fn() -> reqwest::Client,
        cfg: EnvSyncConfig,
    ) -> EnvSyncTask {
        EnvSyncTask {
            permits: Arc::new(Semaphore::new(cfg.max_parallel.max(1))),
            store,
            client: None,
            make_client,
            cfg,
            inflight: HashSet::new(),
            failed: HashMap::new(),
            jobs: JoinSet::new(),
        }
    }

    /// Runs until `shutdown` turns true; running downloads are then dropped (their temp
    /// files are left as `.<file>.part` and overwritten by the next attempt).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let mut changes = self.store.subscribe();
        self.check_all();
        let mut retry = tokio::time::interval(self.cfg.retry_after.max(Duration::from_secs(1)));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                change = changes.recv() => match change {
                    Ok(c) if c.kind == Kind::Environment => {
                        if c.op == ChangeOp::Delete {
                            self.forget(&c.name).await;
                        } else {
                            self.check(&c.name);
                        }
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "environment sync lagged behind the change feed; rescanning");
                        self.check_all();
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                Some(done) = self.jobs.join_next(), if !self.jobs.is_empty() => {
                    match done {
                        Ok(done) => self.finish(done).await,
                        Err(e) => tracing::error!(error = %e, "environment download task failed"),
                    }
                }
                _ = retry.tick() => {
                    let due: Vec<String> = self
                        .failed
                        .iter()
                        .filter(|(_, (_, _, at))| at.elapsed() >= self.cfg.retry_after)
                        .map(|((name, _), _)| name.clone())
                        .collect();
                    for name in due {
                        self.check(&name);
                    }
                }
            }
        }
        self.jobs.shutdown().await;
    }

    fn check_all(&mut self) {
        match self.store.list(Kind::Environment) {
            Ok(envs) => {
                for e in envs {
                    self.check(e.object.name());
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::error_chain(&e), "cannot list environments")
            }
        }
    }

    async fn forget(&mut self, name: &str) {
        self.failed.retain(|(n, _), _| n != name);
        if is_agent_environment(name) {
            return;
        }
        let dir = self.cfg.dirs.dir(name);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {
                tracing::info!(environment = name, dir = %dir.display(), "environment deleted; cache removed")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(environment = name, error = %e, "cannot remove environment cache")
            }
        }
    }

    /// Starts downloads for every asset of `name` that needs one.
    fn check(&mut self, name: &str) {
        let env = match self.store.get(Kind::Environment, name) {
            Ok(Some(s)) => match s.object {
                Object::Environment(e) => e,
                _ => return,
            },
            Ok(None) => return,
            Err(e) => {
                tracing::error!(environment = name, error = %crate::error_chain(&e), "cannot read environment");
                return;
            }
        };
        if is_agent_environment(name) {
            tracing::warn!(
                environment = name,
                "Environment objects named like a built-in agent environment are ignored"
            );
            return;
        }
        let spec = EnvSpec::from_environment(&env);
        let conds = assets::conditions(&env);
        for asset in Asset::ALL {
            let a = spec.asset(asset);
            if a.url.is_empty() {
                continue;
            }
            let key = (name.to_string(), asset);
            if self.inflight.contains(&key) {
                continue;
            }
            let cached = conds.iter().any(|c| {
                c.url == a.url && c.ready && (a.sha512.is_empty() || c.sha512 == a.sha512)
            }) && self.cfg.dirs.present(name, asset);
            if cached {
                self.failed.remove(&key);
                continue;
            }
            if let Some((url, sha, at)) = self.failed.get(&key)
                && *url == a.url
                && *sha == a.sha512
                && at.elapsed() < self.cfg.retry_after
            {
                continue;
            }
            self.inflight.insert(key);
            let client = self.client.get_or_insert_with(self.make_client).clone();
            let permits = self.permits.clone();
            let dest = self.cfg.dirs.file(name, asset);
            let idle = self.cfg.idle_timeout;
            let (name, url, sha512) = (name.to_string(), a.url.clone(), a.sha512.clone());
            tracing::info!(environment = %name, asset = asset.as_str(), url = %url, "downloading environment asset");
            self.jobs.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let result = fetch_to_cache(&client, &url, &sha512, &dest, idle).await;
                JobDone {
                    name,
                    asset,
                    url,
                    sha512,
                    result,
                }
            });
        }
    }

    async fn finish(&mut self, done: JobDone) {
        let key = (done.name.clone(), done.asset);
        self.inflight.remove(&key);
        let what = done.asset.as_str();
        let cond = match &done.result {
            Ok(f) => {
                self.failed.remove(&key);
                tracing::info!(environment = %done.name, asset = what, bytes = f.bytes, sha512 = %f.sha512, "environment asset cached");
                AssetCondition {
                    url: done.url.clone(),
                    sha512: f.sha512.clone(),
                    ready: true,
                    reason: "Downloaded".into(),
                    message: if done.sha512.is_empty() {
                        format!(
                            "{} bytes; the spec gives no sha512, so it was not verified",
                            f.bytes
                        )
                    } else {
                        format!("{} bytes, sha512 verified", f.bytes)
                    },
                }
            }
            Err(e) => {
                let message = crate::error_chain(e);
                tracing::warn!(environment = %done.name, asset = what, error = %message, "environment asset download failed");
                self.failed
                    .insert(key, (done.url.clone(), done.sha512.clone(), Instant::now()));
                AssetCondition {
                    url: done.url.clone(),
                    sha512: String::new(),
                    ready: false,
                    reason: e.reason().into(),
                    message,
                }
            }
        };
        let (store, dirs, name, asset) = (
            self.store.clone(),
            self.cfg.dirs.clone(),
            done.name.clone(),
            done.asset,
        );
        let written = tokio::task::spawn_blocking(move || {
            record_condition(&store, &dirs, &name, asset, &cond)
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(StoreError::NotFound { .. })) => {}
            Ok(Err(e)) => {
                tracing::error!(environment = %done.name, error = %crate::error_chain(&e), "cannot record environment status")
            }
            Err(e) => tracing::error!(error = %e, "status write task failed"),
        }
        // The spec may have moved on while this ran.
        self.check(&done.name);
    }
}
