//! A management cluster in the lab namespace, for the kube-bridge scenario: kube-bridge's
//! in-test API server (`kube-test-apiserver`, crate `kube-bridge/apiserver`) as a process on
//! the namespace's loopback, the installed `kubectl` as the cluster's client (the real wire
//! format, as a user types it), and the real `kube-bridge run` reaching the box's mTLS admin
//! port with a certificate from `appliance ctl bridge enroll`. Both binaries are built from
//! this tree by cargo (like the appliance) and never linked; each process is killed on drop.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::appliance::workspace_bin;
use crate::netns::Netns;
use crate::process::{Guarded, run};
use crate::tail;

/// Where the API server listens inside the lab namespace.
pub const API_ADDR: &str = "127.0.0.1:6443";

/// The in-test API server and a kubeconfig for it.
#[derive(Debug)]
pub struct KubeCluster {
    process: Guarded,
    kubeconfig: PathBuf,
    cache: PathBuf,
    ns: String,
    dir: PathBuf,
}

impl KubeCluster {
    /// Starts the API server in `ns` and waits until `kubectl version` reaches it.
    pub fn start(ns: &Netns, dir: &Path) -> Result<KubeCluster> {
        if crate::which("kubectl").is_none() {
            bail!("kubectl not installed (run scripts/setup)");
        }
        let bin = workspace_bin("kube-test-apiserver", "kube-test-apiserver")?;
        let kubeconfig = dir.join("kubeconfig");
        let mut cmd = ns.command(bin.to_str().context("binary path is not UTF-8")?);
        cmd.args(["--listen", API_ADDR, "--kubeconfig"])
            .arg(&kubeconfig);
        let process = Guarded::spawn("kube-test-apiserver", cmd, &dir.join("apiserver.log"))?;
        let mut cluster = KubeCluster {
            process,
            kubeconfig,
            cache: dir.join("kubectl-cache"),
            ns: ns.name().to_string(),
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = cluster.process.exited() {
                bail!(
                    "kube-test-apiserver exited ({status})\n{}",
                    cluster.process.log()
                );
            }
            if cluster.process.log().contains("listening on")
                && cluster.kubectl(&["version", "-o", "json"]).is_ok()
            {
                return Ok(cluster);
            }
            if Instant::now() >= deadline {
                bail!(
                    "kube-test-apiserver not answering kubectl within 30s\n{}",
                    cluster.process.log()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `kubectl <args>` against this cluster, inside the namespace.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "kubectl", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args);
        run(&mut cmd)
    }

    /// `kubectl <verb> -f <file with yaml> [extra]`.
    pub fn kubectl_file(&self, verb: &str, yaml: &str, extra: &[&str]) -> Result<String> {
        let file = tempfile::Builder::new()
            .prefix("kubectl-")
            .suffix(".yaml")
            .tempfile_in(&self.dir)?;
        std::fs::write(file.path(), yaml)?;
        let path = file.path().to_str().context("utf-8 path")?.to_string();
        let mut args = vec![verb, "-f", &path];
        args.extend_from_slice(extra);
        self.kubectl(&args)
    }

    /// `kubectl get <resource> <name> -o json`; `None` when it does not exist.
    pub fn get(
        &self,
        resource: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>> {
        let mut args = vec!["get", resource, name, "-o", "json", "--ignore-not-found"];
        if let Some(ns) = namespace {
            args.extend_from_slice(&["-n", ns]);
        }
        let out = self.kubectl(&args)?;
        if out.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(serde_json::from_str(&out).with_context(|| {
            format!("kubectl get {resource} {name}: {out}")
        })?))
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// `kube-bridge run` for the lab's box.
#[derive(Debug)]
pub struct KubeBridge {
    process: Guarded,
}

impl KubeBridge {
    /// Starts the bridge in `ns` as box `box_id`: the box at `box_url` (its mTLS admin port)
    /// with the enrolled `credentials`, the cluster of `kubeconfig`.
    pub fn start(
        ns: &Netns,
        dir: &Path,
        box_id: &str,
        box_url: &str,
        credentials: &Path,
        kubeconfig: &Path,
    ) -> Result<KubeBridge> {
        let bin = workspace_bin("kube-bridge", "kube-bridge")?;
        let mut cmd = ns.command(bin.to_str().context("binary path is not UTF-8")?);
        cmd.args(["run", "--box-id", box_id, "--box", box_url, "--credentials"])
            .arg(credentials)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--log", "info,kube_bridge=debug"])
            .env("NO_COLOR", "1");
        let process = Guarded::spawn("kube-bridge", cmd, &dir.join("kube-bridge.log"))?;
        Ok(KubeBridge { process })
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Fails when the bridge is no longer running.
    pub fn check_alive(&mut self) -> Result<()> {
        match self.process.exited() {
            None => Ok(()),
            Some(status) => bail!("kube-bridge exited ({status})\n{}", tail(&self.log(), 4000)),
        }
    }
}
