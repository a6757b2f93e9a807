//! `scripts/build-kube-bridge-image`: the OCI image layout it writes (without a Docker daemon)
//! loads with umoci (Debian's; scripts/setup installs it), holds only the binary, runs as user
//! 65532, and its entrypoint runs `kube-bridge --help`; two builds are byte-identical
//! (reproducible); a non-static binary is refused. The image is built here from the test's
//! own (dynamically linked debug) binary with KUBE_BRIDGE_IMAGE_ALLOW_DYNAMIC=1, which only
//! lifts the static check: building the static release binary is `scripts/build-kube-bridge-image
//! OUT_DIR` without `--binary` (too slow for the test suite).

#[path = "support/prereq.rs"]
mod prereq;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kube-bridge");

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-kube-bridge-image")
}

fn build(out: &Path, allow_dynamic: bool) -> Output {
    let mut c = Command::new(script());
    c.args(["--binary", BIN]).arg(out).arg("test");
    if allow_dynamic {
        c.env("KUBE_BRIDGE_IMAGE_ALLOW_DYNAMIC", "1");
    } else {
        c.env_remove("KUBE_BRIDGE_IMAGE_ALLOW_DYNAMIC");
    }
    c.output().unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_image_loads_with_umoci_and_its_entrypoint_runs_help() {
    for tool in ["umoci", "jq"] {
        if !have(tool) {
            return prereq::skip(
                "the_image_loads_with_umoci_and_its_entrypoint_runs_help",
                &format!("{tool} missing (scripts/setup installs it)"),
            );
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image");
    ok(build(&image, true));
    let stat = ok(Command::new("umoci")
        .args(["stat", "--image"])
        .arg(format!("{}:test", image.display()))
        .output()
        .unwrap());
    assert!(stat.contains("scripts/build-kube-bridge-image"), "{stat}");
    let bundle = dir.path().join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:test", image.display()))
        .arg(&bundle)
        .output()
        .unwrap());
    let spec: Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["user"]["uid"], 65532);
    let args: Vec<String> = spec["process"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(args, ["/kube-bridge"]);
    let rootfs = bundle.join("rootfs");
    let entries: Vec<String> = std::fs::read_dir(&rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries, ["kube-bridge"], "scratch: the binary alone");
    // The entrypoint, as a runtime would start it, with --help.
    let entry = rootfs.join(args[0].trim_start_matches('/'));
    let help = ok(Command::new(&entry).arg("--help").output().unwrap());
    assert!(help.contains("Usage: kube-bridge <COMMAND>"), "{help}");
    // Reproducible: a second build into a fresh layout is byte-identical.
    let again = dir.path().join("again");
    ok(build(&again, true));
    assert_eq!(
        std::fs::read(image.join("index.json")).unwrap(),
        std::fs::read(again.join("index.json")).unwrap()
    );
    // Not static → refused.
    let refused = build(&dir.path().join("refused"), false);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is not static"));
}
