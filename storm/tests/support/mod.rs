//! What the storm's root tests share: the box binary built from this tree and the host's
//! neighbour-table limits raised for a thousand machines.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::netns::run;

/// The real `appliance` built from this tree (`$APPLIANCE_BIN`, else `cargo build -p
/// appliance`, as kube-bridge's tests do: a no-op when it is fresh, never a stale binary).
pub fn appliance_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("APPLIANCE_BIN") {
        return PathBuf::from(b);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut child = Command::new(cargo)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .args(["build", "-p", "appliance", "--bin", "appliance"])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cargo build -p appliance runs");
    let mut exe = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line.unwrap()) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "appliance"
            && let Some(p) = msg["executable"].as_str()
        {
            exe = Some(PathBuf::from(p));
        }
    }
    assert!(child.wait().unwrap().success(), "cargo build -p appliance");
    exe.expect("cargo reported the appliance executable")
}

/// Raises the host's neighbour-table limits (one table for all namespaces; the box's
/// namespace holds an entry per machine) and puts them back on drop.
pub struct NeighLimits(Vec<(String, String)>);

impl NeighLimits {
    pub fn raise() -> NeighLimits {
        let mut old = Vec::new();
        for (k, v) in [
            ("gc_thresh1", "32768"),
            ("gc_thresh2", "65536"),
            ("gc_thresh3", "131072"),
        ] {
            let key = format!("net.ipv4.neigh.default.{k}");
            old.push((key.clone(), run(&["sysctl", "-n", &key]).trim().to_string()));
            run(&["sysctl", "-qw", &format!("{key}={v}")]);
        }
        NeighLimits(old)
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        for (k, v) in &self.0 {
            let _ = Command::new("sysctl")
                .args(["-qw", &format!("{k}={v}")])
                .status();
        }
    }
}
