//! `kube-bridge run`'s configuration: flags, each also read from a `KUBE_BRIDGE_*` variable
//! (the provider's Deployment sets those; on the box, flags and a kubeconfig), and the
//! checks done before anything connects.

use clap::Args;
use std::path::PathBuf;

/// Flags of `kube-bridge run`.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The box's admin API: its mTLS port (https://10.5.0.1:8443, with --credentials) or
    /// its token-authenticated plain port (http://10.5.0.1:8081, with --token-file).
    #[arg(
        long = "box",
        visible_alias = "box-endpoint",
        env = "KUBE_BRIDGE_BOX",
        value_name = "URL"
    )]
    pub box_url: String,
    /// The box's id: the label on its Servers and the name of the leader-election Lease.
    #[arg(long, env = "KUBE_BRIDGE_BOX_ID", value_name = "ID")]
    pub box_id: String,
    /// Directory with ca.crt, tls.crt and tls.key from `appliance ctl bridge enroll --out`,
    /// or the mounted Secret it prints (re-read on every new connection to the box).
    #[arg(long, env = "KUBE_BRIDGE_CREDENTIALS", value_name = "DIR")]
    pub credentials: Option<PathBuf>,
    /// The name the box's TLS certificate must carry (every box's names `appliance-admin`;
    /// others come from the box's `[admin_tls] names`).
    #[arg(
        long,
        env = "KUBE_BRIDGE_BOX_SERVER_NAME",
        default_value = crate::boxtls::DEFAULT_SERVER_NAME,
        value_name = "NAME"
    )]
    pub box_server_name: String,
    /// File holding the box's admin token (for an http:// --box).
    #[arg(long, env = "KUBE_BRIDGE_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// How often a sync pass runs when neither side changed, and an unreachable box is retried
    /// (milliseconds); changes themselves arrive on both sides' watches at once.
    #[arg(
        long,
        env = "KUBE_BRIDGE_POLL_MS",
        default_value_t = 500,
        value_name = "MS"
    )]
    pub poll_ms: u64,
    /// Kubeconfig of the management cluster; without it, the in-cluster service account.
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace of the leader-election Lease.
    #[arg(
        long,
        env = "KUBE_BRIDGE_LEASE_NAMESPACE",
        default_value = "kube-bridge-system",
        value_name = "NS"
    )]
    pub lease_namespace: String,
    /// How long the Lease holds without renewal before a partner bridge takes over (seconds).
    #[arg(
        long,
        env = "KUBE_BRIDGE_LEASE_DURATION_SECS",
        default_value_t = 15,
        value_name = "SECS"
    )]
    pub lease_duration_secs: u64,
    /// Log filter (tracing env-filter syntax).
    #[arg(
        long,
        env = "KUBE_BRIDGE_LOG",
        default_value = "info",
        value_name = "FILTER"
    )]
    pub log: String,
}

/// How the bridge proves itself to the box.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BoxAuth {
    /// mTLS client certificate (`appliance ctl bridge enroll`): ca.crt, tls.crt, tls.key in
    /// the directory; the box's certificate must name `server_name`.
    Credentials { dir: PathBuf, server_name: String },
    /// The admin token, read from this file.
    TokenFile(PathBuf),
}

/// A checked configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub box_url: String,
    pub box_id: String,
    pub auth: BoxAuth,
    pub kubeconfig: Option<PathBuf>,
    pub lease_namespace: String,
    pub lease_duration: std::time::Duration,
    pub poll: std::time::Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--box must be an https:// URL (the box's mTLS admin port, with --credentials) or an http:// URL (its plain admin port, with --token-file), got {0:?}"
    )]
    BoxUrl(String),
    #[error("--box {0}: an https:// box needs --credentials (an http:// one --token-file)")]
    NoCredentials(String),
    #[error("--box {0}: an http:// box needs --token-file (the token never goes in a flag)")]
    NoToken(String),
    #[error("--token-file {0}: no such file")]
    TokenFile(PathBuf),
    #[error("--poll-ms must be between 10 and 600000")]
    Poll,
    #[error("--lease-duration-secs must be between 1 and 3600")]
    LeaseDuration,
    #[error(
        "--box-id {0:?} is not a valid label value (1-63 of [A-Za-z0-9._-], alphanumeric at both ends)"
    )]
    BoxId(String),
    #[error("--credentials {dir}: {file} is missing (expected ca.crt, tls.crt, tls.key)")]
    Credentials { dir: PathBuf, file: &'static str },
    #[error("--kubeconfig {0}: no such file")]
    Kubeconfig(PathBuf),
}

impl RunArgs {
    /// Checks the flags without connecting anywhere.
    pub fn check(self) -> Result<Config, ConfigError> {
        let tls = match self.box_url.split_once("://") {
            Some(("https", rest)) if !rest.is_empty() => true,
            Some(("http", rest)) if !rest.is_empty() => false,
            _ => return Err(ConfigError::BoxUrl(self.box_url)),
        };
        if !is_label_value(&self.box_id) {
            return Err(ConfigError::BoxId(self.box_id));
        }
        if !(1..=3600).contains(&self.lease_duration_secs) {
            return Err(ConfigError::LeaseDuration);
        }
        if !(10..=600_000).contains(&self.poll_ms) {
            return Err(ConfigError::Poll);
        }
        let auth = if tls {
            let Some(dir) = self.credentials else {
                return Err(ConfigError::NoCredentials(self.box_url));
            };
            for file in ["ca.crt", "tls.crt", "tls.key"] {
                if !dir.join(file).is_file() {
                    return Err(ConfigError::Credentials { dir, file });
                }
            }
            BoxAuth::Credentials {
                dir,
                server_name: self.box_server_name,
            }
        } else {
            let Some(file) = self.token_file else {
                return Err(ConfigError::NoToken(self.box_url));
            };
            if !file.is_file() {
                return Err(ConfigError::TokenFile(file));
            }
            BoxAuth::TokenFile(file)
        };
        if let Some(k) = &self.kubeconfig
            && !k.is_file()
        {
            return Err(ConfigError::Kubeconfig(k.clone()));
        }
        Ok(Config {
            box_url: self.box_url,
            box_id: self.box_id,
            auth,
            kubeconfig: self.kubeconfig,
            lease_namespace: self.lease_namespace,
            lease_duration: std::time::Duration::from_secs(self.lease_duration_secs),
            poll: std::time::Duration::from_millis(self.poll_ms),
        })
    }
}

/// A Kubernetes label value: at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    !s.is_empty()
        && s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values() {
        for ok in ["rack-12", "a", "box.1_x", &"a".repeat(63)] {
            assert!(is_label_value(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a b", "ä", &"a".repeat(64)] {
            assert!(!is_label_value(bad), "{bad}");
        }
    }
}
