//! The in-test API server checked with the real kubectl, oldest and newest of the versioned
//! binaries beside `/usr/bin/kubectl`'s real path, with default flags (client-side apply with
//! server-side field validation): CRDs from `config/crd/` apply and become Established; the
//! appliance's Sidero YAML fixtures apply to them; `get` prints Sidero's printer columns; a
//! refused document (v1alpha1 qualifiers, an unknown field) fails with the field named;
//! `wait --for=condition` returns once a status write adds the condition; server-side apply
//! conflicts between field managers and `--force-conflicts`; delete with a finalizer leaves
//! the object with a deletionTimestamp until the finalizer goes; every generated manifest
//! (components, cluster template, CRDs) passes `kubectl apply --dry-run=client`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::apiserver::ApiServer;

/// The oldest and newest `kubectl.1.NN` beside the real path of `kubectl` on PATH.
fn kubectl_binaries() -> Result<Vec<PathBuf>, String> {
    let on_path = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("kubectl")).find(|p| p.is_file()))
        .ok_or("kubectl not on PATH")?;
    let real = std::fs::canonicalize(&on_path).map_err(|e| e.to_string())?;
    let dir = real.parent().unwrap();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let minor = p.file_name()?.to_str()?.strip_prefix("kubectl.1.")?.parse().ok()?;
            Some((minor, p))
        })
        .collect();
    versioned.sort();
    match versioned.as_slice() {
        [] => Ok(vec![real]),
        [only] => Ok(vec![only.1.clone()]),
        [first, .., last] => Ok(vec![first.1.clone(), last.1.clone()]),
    }
}

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            // KUBECTL_VERBOSE=8 shows kubectl's requests when a test fails.
            .args(std::env::var("KUBECTL_VERBOSE").ok().map(|v| format!("-v={v}")))
            .env_remove("KUBECONFIG")
            .output()
            .unwrap()
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {args:?} failed:\n{}{}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and requires failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    crate_dir().join("../appliance/tests/fixtures/sidero").join(name).display().to_string()
}

fn each_kubectl(test: &str, f: impl Fn(&Kubectl, &ApiServer, &Path)) {
    let bins = match kubectl_binaries() {
        Ok(b) => b,
        Err(why) => {
            eprintln!("SKIP {test}: {why}");
            return;
        }
    };
    for bin in bins {
        eprintln!("{test}: {}", bin.display());
        let server = ApiServer::start(10_000);
        let dir = tempfile::tempdir().unwrap();
        let k = Kubectl { bin: bin.clone(), kubeconfig: server.kubeconfig(dir.path()) };
        f(&k, &server, dir.path());
    }
}

#[test]
fn kubectl_applies_the_crds_and_sidero_objects_and_reads_them_back() {
    each_kubectl("kubectl_applies_the_crds_and_sidero_objects_and_reads_them_back", |k, _server, _dir| {
        let crd_dir = crate_dir().join("config/crd").display().to_string();
        let out = k.ok(&["apply", "-f", &crd_dir]);
        assert_eq!(out.matches(" created").count(), 7, "{out}");
        k.ok(&["wait", "--for=condition=Established", "--timeout=20s", "crd/servers.metal.sidero.dev", "crd/metalmachines.infrastructure.cluster.x-k8s.io"]);
        for f in ["server-docs-v0.6.yaml", "server-bmc-docs-v0.6.yaml", "serverclass-docs-v0.6.yaml", "environment-docs-v0.6.yaml", "capi-objects.yaml"] {
            let out = k.ok(&["apply", "-f", &fixture(f)]);
            assert!(out.contains("created"), "{f}: {out}");
        }
        let servers = k.ok(&["get", "servers"]);
        let header: Vec<&str> = servers.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["NAME", "HOSTNAME", "ACCEPTED", "CORDONED", "ALLOCATED", "CLEAN", "POWER", "AGE"], "{servers}");
        assert!(servers.contains("00000000-0000-0000-0000-d05099d333e0"), "{servers}");
        let wide = k.ok(&["get", "servers", "-o", "wide"]);
        assert!(wide.lines().next().unwrap().contains("BMC IP"), "{wide}");
        assert!(wide.contains("10.0.0.25"), "{wide}");
        let mm = k.ok(&["get", "metalmachines", "-n", "default", "-o", "wide"]);
        let line = mm.lines().nth(1).unwrap();
        assert!(line.contains("management-cluster-cp-rkx7q") && line.contains("management-cluster-cp-8nqcz") && line.contains("8d1b2f2a"), "{mm}");
        // The category lists the CAPI kinds.
        let all = k.ok(&["get", "cluster-api", "-A"]);
        assert!(all.contains("metalmachine.infrastructure.cluster.x-k8s.io/management-cluster-cp-rkx7q"), "{all}");
        // -o yaml round-trips what was applied (defaults filled in).
        let yaml = k.ok(&["get", "server", "4c4c4544-0039-4a10-8048-b7c04f4a3232", "-o", "yaml"]);
        assert!(yaml.contains("accepted: false") && yaml.contains("endpoint: 10.0.0.25"), "{yaml}");

        let err = k.fails(&["apply", "-f", &fixture("serverclass-stale-sample.yaml")]);
        assert!(err.contains("spec.qualifiers"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: typo\nspec:\n  acceptd: true\n").unwrap();
        let err = k.fails(&["apply", "-f", &bad.display().to_string()]);
        assert!(err.contains("unknown field") && err.contains("spec.acceptd"), "{err}");
        assert!(k.fails(&["get", "server", "typo"]).contains("NotFound"));
    });
}
