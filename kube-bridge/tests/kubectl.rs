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
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("kubectl"))
                .find(|p| p.is_file())
        })
        .ok_or("kubectl not on PATH")?;
    let real = std::fs::canonicalize(&on_path).map_err(|e| e.to_string())?;
    let dir = real.parent().unwrap();
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let minor = p
                .file_name()?
                .to_str()?
                .strip_prefix("kubectl.1.")?
                .parse()
                .ok()?;
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
            .args(
                std::env::var("KUBECTL_VERBOSE")
                    .ok()
                    .map(|v| format!("-v={v}")),
            )
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
        assert!(
            !out.status.success(),
            "{args:?} should fail:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> String {
    crate_dir()
        .join("../appliance/tests/fixtures/sidero")
        .join(name)
        .display()
        .to_string()
}

fn each_kubectl(test: &str, f: impl Fn(&Kubectl, &ApiServer, &Path)) {
    let bins = match kubectl_binaries() {
        Ok(b) => b,
        Err(why) => return support::prereq::skip(test, &why),
    };
    for bin in bins {
        eprintln!("{test}: {}", bin.display());
        let server = ApiServer::start(10_000);
        let dir = tempfile::tempdir().unwrap();
        let k = Kubectl {
            bin: bin.clone(),
            kubeconfig: server.kubeconfig(dir.path()),
        };
        f(&k, &server, dir.path());
    }
}

#[test]
fn kubectl_applies_the_crds_and_sidero_objects_and_reads_them_back() {
    each_kubectl(
        "kubectl_applies_the_crds_and_sidero_objects_and_reads_them_back",
        |k, _server, _dir| {
            let crd_dir = crate_dir().join("config/crd").display().to_string();
            let out = k.ok(&["apply", "-f", &crd_dir]);
            assert_eq!(out.matches(" created").count(), 7, "{out}");
            k.ok(&[
                "wait",
                "--for=condition=Established",
                "--timeout=20s",
                "crd/servers.metal.sidero.dev",
                "crd/metalmachines.infrastructure.cluster.x-k8s.io",
            ]);
            for f in [
                "server-docs-v0.6.yaml",
                "server-bmc-docs-v0.6.yaml",
                "serverclass-docs-v0.6.yaml",
                "environment-docs-v0.6.yaml",
                "capi-objects.yaml",
            ] {
                let out = k.ok(&["apply", "-f", &fixture(f)]);
                assert!(out.contains("created"), "{f}: {out}");
            }
            let servers = k.ok(&["get", "servers"]);
            let header: Vec<&str> = servers.lines().next().unwrap().split_whitespace().collect();
            assert_eq!(
                header,
                [
                    "NAME",
                    "HOSTNAME",
                    "ACCEPTED",
                    "CORDONED",
                    "ALLOCATED",
                    "CLEAN",
                    "POWER",
                    "AGE"
                ],
                "{servers}"
            );
            assert!(
                servers.contains("00000000-0000-0000-0000-d05099d333e0"),
                "{servers}"
            );
            let wide = k.ok(&["get", "servers", "-o", "wide"]);
            assert!(wide.lines().next().unwrap().contains("BMC IP"), "{wide}");
            assert!(wide.contains("10.0.0.25"), "{wide}");
            let mm = k.ok(&["get", "metalmachines", "-n", "default", "-o", "wide"]);
            let line = mm.lines().nth(1).unwrap();
            assert!(
                line.contains("management-cluster-cp-rkx7q")
                    && line.contains("management-cluster-cp-8nqcz")
                    && line.contains("8d1b2f2a"),
                "{mm}"
            );
            // The category lists the CAPI kinds.
            let all = k.ok(&["get", "cluster-api", "-A"]);
            assert!(
                all.contains(
                    "metalmachine.infrastructure.cluster.x-k8s.io/management-cluster-cp-rkx7q"
                ),
                "{all}"
            );
            // -o yaml round-trips what was applied (defaults filled in).
            let yaml = k.ok(&[
                "get",
                "server",
                "4c4c4544-0039-4a10-8048-b7c04f4a3232",
                "-o",
                "yaml",
            ]);
            assert!(
                yaml.contains("accepted: false") && yaml.contains("endpoint: 10.0.0.25"),
                "{yaml}"
            );

            let err = k.fails(&["apply", "-f", &fixture("serverclass-stale-sample.yaml")]);
            assert!(err.contains("spec.qualifiers"), "{err}");
            let dir = tempfile::tempdir().unwrap();
            let bad = dir.path().join("bad.yaml");
            std::fs::write(&bad, "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: typo\nspec:\n  acceptd: true\n").unwrap();
            let err = k.fails(&["apply", "-f", &bad.display().to_string()]);
            assert!(
                err.contains("unknown field") && err.contains("spec.acceptd"),
                "{err}"
            );
            assert!(k.fails(&["get", "server", "typo"]).contains("NotFound"));
        },
    );
}

/// Installs the CRDs and the composed CAPI fixture.
fn install(k: &Kubectl) {
    k.ok(&[
        "apply",
        "-f",
        &crate_dir().join("config/crd").display().to_string(),
    ]);
    k.ok(&["apply", "-f", &fixture("capi-objects.yaml")]);
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Waits until the server has a watch open (kubectl wait is listening).
fn until_watched(server: &ApiServer) {
    for _ in 0..200 {
        if server.with(|s| s.feed.receiver_count()) > 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    panic!("no watch opened");
}

#[test]
fn kubectl_wait_for_condition_sees_a_status_write() {
    each_kubectl(
        "kubectl_wait_for_condition_sees_a_status_write",
        |k, server, _dir| {
            install(k);
            let mm = "metalmachine/management-cluster-cp-rkx7q";
            // TalosInstalled is False in the fixture: waiting for it times out.
            let err = k.fails(&[
                "wait",
                "-n",
                "default",
                "--for=condition=TalosInstalled",
                "--timeout=1s",
                mm,
            ]);
            assert!(err.contains("timed out"), "{err}");
            let waiter = Command::new(&k.bin)
                .arg("--kubeconfig")
                .arg(&k.kubeconfig)
                .args([
                    "wait",
                    "-n",
                    "default",
                    "--for=condition=Ready",
                    "--timeout=30s",
                    mm,
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            until_watched(server);
            // The bridge's write, through the status subresource: the whole condition list.
            let patch = r#"{"status":{"ready":true,"conditions":[{"type":"Ready","status":"True","lastTransitionTime":"2025-12-05T16:00:00Z"},{"type":"TalosInstalled","status":"True","lastTransitionTime":"2025-12-05T16:00:00Z"}]}}"#;
            let out = k.ok(&[
                "patch",
                "-n",
                "default",
                mm,
                "--subresource=status",
                "--type=merge",
                "-p",
                patch,
            ]);
            assert!(out.contains("patched"), "{out}");
            let done = waiter.wait_with_output().unwrap();
            assert!(
                done.status.success(),
                "{}",
                String::from_utf8_lossy(&done.stderr)
            );
            assert!(String::from_utf8_lossy(&done.stdout).contains("condition met"));
            // A status write through the main resource is ignored (status subresource), a spec
            // write through /status too.
            k.ok(&[
                "patch",
                "-n",
                "default",
                mm,
                "--type=merge",
                "-p",
                r#"{"status":{"ready":false},"spec":{"providerID":"sidero://x"}}"#,
            ]);
            let got = k.ok(&[
                "get",
                "-n",
                "default",
                mm,
                "-o",
                "jsonpath={.status.ready} {.spec.providerID} {.metadata.generation}",
            ]);
            assert_eq!(got, "true sidero://x 2");
            k.ok(&[
                "patch",
                "-n",
                "default",
                mm,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"spec":{"providerID":"sidero://y"}}"#,
            ]);
            let got = k.ok(&[
                "get",
                "-n",
                "default",
                mm,
                "-o",
                "jsonpath={.spec.providerID} {.metadata.generation}",
            ]);
            assert_eq!(got, "sidero://x 2");
            // A status write the schema refuses is refused, naming the field.
            let err = k.fails(&[
                "patch",
                "-n",
                "default",
                mm,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"addresses":[{"type":"PublicIP","address":"1.2.3.4"}]}}"#,
            ]);
            assert!(err.contains("status.addresses[0].type"), "{err}");
        },
    );
}

#[test]
fn kubectl_server_side_apply_conflicts_and_force() {
    each_kubectl(
        "kubectl_server_side_apply_conflicts_and_force",
        |k, server, dir| {
            install(k);
            let server_yaml = |hostname: &str| {
                format!(
                    "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: ssa-1\n  labels:\n    rack: r1\nspec:\n  accepted: true\n  hostname: {hostname}\n"
                )
            };
            let alice = write(dir, "alice.yaml", &server_yaml("node-a"));
            let out = k.ok(&[
                "apply",
                "--server-side",
                "--field-manager=alice",
                "-f",
                &alice,
            ]);
            assert!(out.contains("serverside-applied"), "{out}");
            let bob = write(dir, "bob.yaml", &server_yaml("node-b"));
            let err = k.fails(&["apply", "--server-side", "--field-manager=bob", "-f", &bob]);
            assert!(
                err.contains("conflict") && err.contains("alice") && err.contains(".spec.hostname"),
                "{err}"
            );
            // Same values: shared ownership, no conflict.
            let carol = write(dir, "carol.yaml", &server_yaml("node-a"));
            k.ok(&[
                "apply",
                "--server-side",
                "--field-manager=carol",
                "-f",
                &carol,
            ]);
            k.ok(&[
                "apply",
                "--server-side",
                "--field-manager=bob",
                "--force-conflicts",
                "-f",
                &bob,
            ]);
            assert_eq!(
                k.ok(&["get", "server", "ssa-1", "-o", "jsonpath={.spec.hostname}"]),
                "node-b"
            );
            // bob now owns spec.hostname alone.
            let owners = server.with(|s| {
                let t = s.find("metal.sidero.dev", "v1alpha2", "servers").unwrap();
                let (_, owners) = s.owners(&t, "", "ssa-1").unwrap();
                owners
                    .sets
                    .iter()
                    .filter(|(_, (paths, _, _))| {
                        paths.contains(&vec!["f:spec".to_string(), "f:hostname".to_string()])
                    })
                    .map(|(m, _)| m.name.clone())
                    .collect::<Vec<_>>()
            });
            assert_eq!(owners, ["bob"]);
            // A field leaves when the last manager applying it stops: alice, carol and bob all
            // applied the label; it stays until all three drop it.
            let no_label = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: ssa-1\nspec:\n  accepted: true\n";
            let p = write(dir, "nolabel.yaml", no_label);
            k.ok(&["apply", "--server-side", "--field-manager=alice", "-f", &p]);
            k.ok(&["apply", "--server-side", "--field-manager=carol", "-f", &p]);
            assert_eq!(
                k.ok(&[
                    "get",
                    "server",
                    "ssa-1",
                    "-o",
                    "jsonpath={.metadata.labels.rack}"
                ]),
                "r1"
            );
            let bob_no_label = write(dir, "bob2.yaml", &format!("{no_label}  hostname: node-b\n"));
            k.ok(&[
                "apply",
                "--server-side",
                "--field-manager=bob",
                "-f",
                &bob_no_label,
            ]);
            assert_eq!(
                k.ok(&[
                    "get",
                    "server",
                    "ssa-1",
                    "-o",
                    "jsonpath={.metadata.labels.rack}/{.spec.hostname}"
                ]),
                "/node-b"
            );
            let fields = k.ok(&[
                "get",
                "server",
                "ssa-1",
                "-o",
                "jsonpath={.metadata.managedFields[*].manager}",
                "--show-managed-fields",
            ]);
            assert!(fields.contains("bob"), "{fields}");
        },
    );
}

#[test]
fn kubectl_delete_waits_for_finalizers() {
    each_kubectl("kubectl_delete_waits_for_finalizers", |k, _server, dir| {
        install(k);
        let p = write(
            dir,
            "fin.yaml",
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: fin-1\n  finalizers: [storage.finalizers.server.k8s.io]\nspec:\n  accepted: false\n",
        );
        k.ok(&["apply", "-f", &p]);
        let out = k.ok(&["delete", "server", "fin-1", "--wait=false"]);
        assert!(out.contains("deleted"), "{out}");
        let ts = k.ok(&[
            "get",
            "server",
            "fin-1",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ]);
        assert!(ts.ends_with('Z'), "deletionTimestamp {ts:?}");
        // No new finalizers on a deleting object.
        let err = k.fails(&[
            "patch",
            "server",
            "fin-1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":["storage.finalizers.server.k8s.io","other"]}}"#,
        ]);
        assert!(err.contains("no new finalizers"), "{err}");
        k.ok(&[
            "patch",
            "server",
            "fin-1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ]);
        let err = k.fails(&["get", "server", "fin-1"]);
        assert!(err.contains("NotFound"), "{err}");
    });
}

#[test]
fn every_generated_manifest_passes_kubectl_dry_run_client() {
    let values = support::clusterctl::sample_values();
    each_kubectl(
        "every_generated_manifest_passes_kubectl_dry_run_client",
        |k, server, dir| {
            let crds = crate_dir().join("config/crd").display().to_string();
            let out = k.ok(&["apply", "--dry-run=client", "-f", &crds]);
            assert_eq!(out.matches("created (dry run)").count(), 7, "{out}");
            // The template's kinds are known once the CRDs are installed (really).
            k.ok(&["apply", "-f", &crds]);
            let objects = server.with(|s| s.objects.len());
            let components = support::clusterctl::substitute(
                &kube_bridge::manifests::infrastructure_components(),
                &values,
            )
            .unwrap();
            let out = k.ok(&[
                "apply",
                "--dry-run=client",
                "-f",
                &write(dir, "components.yaml", &components),
            ]);
            // Namespace, ServiceAccount, ClusterRole, ClusterRoleBinding, Deployment; the CRDs exist.
            assert_eq!(out.matches("created (dry run)").count(), 5, "{out}");
            assert_eq!(out.matches("(dry run)").count(), 12, "{out}");
            let template =
                support::clusterctl::substitute(kube_bridge::manifests::CLUSTER_TEMPLATE, &values)
                    .unwrap();
            let out = k.ok(&[
                "apply",
                "--dry-run=client",
                "-n",
                "default",
                "-f",
                &write(dir, "cluster.yaml", &template),
            ]);
            assert_eq!(out.matches("created (dry run)").count(), 7, "{out}");
            assert_eq!(
                server.with(|s| s.objects.len()),
                objects,
                "a dry run creates nothing"
            );
        },
    );
}
