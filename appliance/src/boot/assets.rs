//! Environment assets: where the kernel and initrd of each Environment live in the data dir,
//! what the spec asks for, what the status records about them, and whether an Environment
//! is ready to boot.
//!
//! Pure except `AssetDirs::present`, which stats the cached files. The one reader of asset
//! readiness: the boot routes, the download task and the console all read it here, from the
//! typed model (`model::Environment`).
//!
//! Status shape (Sidero's Environment conditions, plus `reason`/`message` when not ready):
//! one condition per asset, `{type: Ready, status: "True"|"False", url, sha512, reason,
//! message}`, keyed by `url`. An asset uploaded for an Environment whose spec has no URL for
//! it is keyed `upload:<file>` (`upload:vmlinuz`, `upload:initramfs.xz`).

use std::path::{Path, PathBuf};

use super::is_agent_environment;
use crate::model::{self, Environment};

/// One of the two files of an Environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Asset {
    Kernel,
    Initrd,
}

impl Asset {
    pub const ALL: [Asset; 2] = [Asset::Kernel, Asset::Initrd];

    /// Name in the spec and in the upload API: `kernel`, `initrd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Asset::Kernel => "kernel",
            Asset::Initrd => "initrd",
        }
    }

    /// File name in the cache and in `/env/<name>/<file>`.
    pub fn file_name(self) -> &'static str {
        match self {
            Asset::Kernel => "vmlinuz",
            Asset::Initrd => "initramfs.xz",
        }
    }

    /// `kernel` / `initrd`, as the upload API names them.
    pub fn parse(s: &str) -> Option<Asset> {
        match s {
            "kernel" => Some(Asset::Kernel),
            "initrd" => Some(Asset::Initrd),
            _ => None,
        }
    }

    /// The file part of `/env/<name>/<file>`: `vmlinuz`, `initramfs.xz`, or `initrd` (alias).
    pub fn from_file_name(s: &str) -> Option<Asset> {
        match s {
            "vmlinuz" => Some(Asset::Kernel),
            "initramfs.xz" | "initrd" => Some(Asset::Initrd),
            _ => None,
        }
    }
}

/// `spec.kernel` / `spec.initrd`: where to fetch the file and its expected SHA-512.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetSpec {
    pub url: String,
    /// Lower-case hex as written in the spec (may be empty: then the download is recorded
    /// with its computed digest but not verified against anything).
    pub sha512: String,
}

/// What an Environment's spec says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvSpec {
    pub kernel: AssetSpec,
    pub initrd: AssetSpec,
    pub args: Vec<String>,
}

fn trimmed(v: Option<&String>) -> String {
    v.map(|s| s.trim().to_string()).unwrap_or_default()
}

impl EnvSpec {
    /// Reads `spec.kernel.{url,sha512,args}` and `spec.initrd.{url,sha512}` of the typed
    /// model (URLs trimmed, digests trimmed and lower-cased).
    pub fn from_environment(env: &Environment) -> EnvSpec {
        let k = env.spec.kernel.as_ref();
        let i = env.spec.initrd.as_ref();
        EnvSpec {
            kernel: AssetSpec {
                url: trimmed(k.and_then(|k| k.url.as_ref())),
                sha512: trimmed(k.and_then(|k| k.sha512.as_ref())).to_ascii_lowercase(),
            },
            initrd: AssetSpec {
                url: trimmed(i.and_then(|i| i.url.as_ref())),
                sha512: trimmed(i.and_then(|i| i.sha512.as_ref())).to_ascii_lowercase(),
            },
            args: k.map(|k| k.args.clone()).unwrap_or_default(),
        }
    }

    pub fn asset(&self, asset: Asset) -> &AssetSpec {
        match asset {
            Asset::Kernel => &self.kernel,
            Asset::Initrd => &self.initrd,
        }
    }
}

/// The status key of an asset: its URL, or `upload:<file>` when the spec has none.
pub fn condition_key(asset: Asset, spec: &AssetSpec) -> String {
    if spec.url.is_empty() {
        format!("upload:{}", asset.file_name())
    } else {
        spec.url.clone()
    }
}

/// One `Ready` condition of an Environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetCondition {
    pub url: String,
    pub sha512: String,
    pub ready: bool,
    pub reason: String,
    pub message: String,
}

impl AssetCondition {
    /// The stored form (`status.conditions[]` of the typed model): `reason` and `message`
    /// left out when empty.
    pub fn to_model(&self) -> model::AssetCondition {
        let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
        model::AssetCondition {
            url: Some(self.url.clone()),
            sha512: Some(self.sha512.clone()),
            status: if self.ready { "True" } else { "False" }.into(),
            type_: READY.into(),
            reason: opt(&self.reason),
            message: opt(&self.message),
        }
    }

    /// A stored `Ready` condition; `None` for any other type.
    pub fn from_model(c: &model::AssetCondition) -> Option<AssetCondition> {
        if c.type_ != READY {
            return None;
        }
        let s = |v: &Option<String>| v.clone().unwrap_or_default();
        Some(AssetCondition {
            url: s(&c.url),
            sha512: s(&c.sha512),
            ready: c.status == "True",
            reason: s(&c.reason),
            message: s(&c.message),
        })
    }
}

/// The condition type of every Environment asset condition.
const READY: &str = "Ready";

/// The `Ready` conditions of an Environment.
pub fn conditions(env: &Environment) -> Vec<AssetCondition> {
    env.status
        .iter()
        .flat_map(|s| &s.conditions)
        .filter_map(AssetCondition::from_model)
        .collect()
}

/// Returns `env` with `cond` recorded for `asset`: the condition with the same key is
/// replaced, and conditions for keys the spec no longer names are dropped. A condition whose
/// key is no longer the asset's (the spec changed meanwhile) is not recorded.
pub fn with_condition(env: &Environment, asset: Asset, cond: &AssetCondition) -> Environment {
    let spec = EnvSpec::from_environment(env);
    let keep: Vec<String> = Asset::ALL
        .iter()
        .map(|a| condition_key(*a, spec.asset(*a)))
        .collect();
    if cond.url != condition_key(asset, spec.asset(asset)) {
        // The spec moved on while this asset was fetched: the result is stale.
        return env.clone();
    }
    let mut out = env.clone();
    let status = out.status.get_or_insert_with(Default::default);
    status.conditions.retain(|c| {
        let url = c.url.as_deref().unwrap_or_default();
        url != cond.url && keep.iter().any(|k| k == url)
    });
    status.conditions.push(cond.to_model());
    out
}

/// Whether one asset can be served: a `True` condition for its key whose digest matches the
/// spec's (when the spec has one), and the file in the cache.
pub fn asset_readiness(
    asset: Asset,
    spec: &AssetSpec,
    conds: &[AssetCondition],
    file_present: bool,
) -> Result<(), String> {
    let key = condition_key(asset, spec);
    let what = asset.as_str();
    let Some(c) = conds.iter().find(|c| c.url == key) else {
        return Err(if spec.url.is_empty() {
            format!(
                "{what} has no url and was not uploaded (appliance ctl env upload NAME --{what} FILE)"
            )
        } else {
            format!("{what} from {} is not downloaded yet", spec.url)
        });
    };
    if !c.ready {
        return Err(format!("{what} {}: {}", c.reason, c.message));
    }
    if !spec.sha512.is_empty() && c.sha512 != spec.sha512 {
        return Err(format!(
            "{what} in the cache has sha512 {}, the spec asks for {}; it is fetched again",
            short(&c.sha512),
            short(&spec.sha512)
        ));
    }
    if !file_present {
        return Err(format!("{what} file is missing from the cache"));
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    sha.get(..16).unwrap_or(sha)
}

/// Whether a stored Environment can be booted; `Err` carries the reason for the 412.
pub fn readiness(
    spec: &EnvSpec,
    conds: &[AssetCondition],
    present: impl Fn(Asset) -> bool,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for a in Asset::ALL {
        if let Err(e) = asset_readiness(a, spec.asset(a), conds, present(a)) {
            problems.push(e);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Where Environment files live: `<data_dir>/env/<name>/{vmlinuz,initramfs.xz}`; the
/// built-in agent environments under the agent root (default the same `<data_dir>/env`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetDirs {
    pub env_root: PathBuf,
    pub agent_root: PathBuf,
}

impl AssetDirs {
    pub fn new(data_dir: &Path, agent_root: Option<&Path>) -> AssetDirs {
        let env_root = data_dir.join("env");
        AssetDirs {
            agent_root: agent_root.map_or_else(|| env_root.clone(), Path::to_path_buf),
            env_root,
        }
    }

    /// Directory of one environment. `name` must already be a valid object name or an
    /// agent environment name (no `/`).
    pub fn dir(&self, name: &str) -> PathBuf {
        if is_agent_environment(name) {
            self.agent_root.join(name)
        } else {
            self.env_root.join(name)
        }
    }

    pub fn file(&self, name: &str, asset: Asset) -> PathBuf {
        self.dir(name).join(asset.file_name())
    }

    /// Whether the cached file exists and is a regular file.
    pub fn present(&self, name: &str, asset: Asset) -> bool {
        std::fs::metadata(self.file(name, asset)).is_ok_and(|m| m.is_file())
    }
}
