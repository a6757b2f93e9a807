//! The box as a Cluster API infrastructure provider, end to end with a real PXE client (issue
//! 14): the real `appliance serve`, kube-bridge's in-test API server (a process in the lab
//! namespace, `kube-test-apiserver`), the real `kube-bridge run` over the box's mTLS admin
//! port (enrolled by `appliance ctl bridge enroll`), the installed `kubectl` as the user and
//! as CAPI core, and one VM, two boots:
//!
//! - the cluster holds the intent: Sidero's CRDs applied from `kube-bridge/config/crd/`, an
//!   Environment (the test Environment's kernel and initramfs from a static HTTP server in
//!   the lab, sha512-checked, with a kernel argument naming it) and a ServerClass using it;
//!   the bridge writes both to the box, which downloads the assets;
//! - boot 1: SeaBIOS + iPXE → the box → the agent environment → the real agent registers the
//!   VM → the bridge mirrors its Server into the cluster (box label, not accepted) →
//!   `kubectl patch server … accepted=true` in the cluster → the bridge accepts it on the box
//!   → the agent wipes → the class lists it available (in the cluster, from the box's status);
//! - CAPI core, played with kubectl: a Cluster, its MetalCluster, a Secret with the bootstrap
//!   data (`kubectl create secret generic --dry-run=client` → `kubectl apply`), a Machine naming it, a MetalMachine owned by the
//!   Machine → the bridge claims it and allocates the VM's server on the box (timed) → the
//!   parked agent is told to reboot;
//! - boot 2: the VM PXE boots its Environment (the marker line carries the Environment's own
//!   kernel argument and the box's `talos.config=` URL; the box logs the decision); the box's
//!   `/configdata` for the VM serves the Machine's bootstrap data; the MetalMachine gets
//!   `spec.providerID` = `sidero://<uuid>`, `status.ready` and the ServerBinding is mirrored;
//! - `kubectl delete metalmachine`: the bridge releases the server on the box (no binding,
//!   not in use, dirty: its next agent boot wipes it) before the finalizer lets the object go.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use qemu_tests::appliance::ApplianceConfig;
use qemu_tests::env::{MARKER, agent_env, test_env};
use qemu_tests::kube::{KubeBridge, KubeCluster};
use qemu_tests::netns::BRIDGE_ADDR;
use qemu_tests::{Firmware, Lab, Needs, VmSpec, require_lab, tail, workspace_root};
use serde_json::Value;

/// Generous: TCG on 2 shared cores, with builds running beside.
const TIMEOUT: Duration = Duration::from_secs(300);
const UUID: &str = "6b1d0e14-4b1d-4000-8000-00000000b14d";
const BOX_ID: &str = "rack-1";
/// The static HTTP server in the lab holding the Environment's assets.
const WWW_PORT: u16 = 8090;
const BOX_LABEL: &str = "appliance.sidero.dev/box";
/// The Environment's own kernel argument: the marker line proves this Environment booted.
const PROOF_ARG: &str = "kube-bridge.proof=kb-env";

fn sha512(path: &Path) -> String {
    let out = Command::new("sha512sum")
        .arg(path)
        .output()
        .expect("sha512sum");
    assert!(out.status.success(), "sha512sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Everything the parts logged, for failure messages.
fn report(lab: &Lab, cluster: &KubeCluster, bridge: &KubeBridge) -> String {
    format!(
        "{}--- kube-bridge log ---\n{}\n--- apiserver log ---\n{}\n",
        lab.report(),
        tail(&bridge.log(), 8000),
        tail(&cluster.log(), 2000)
    )
}

/// Polls `probe` until it returns `Some` (≤ [`TIMEOUT`]).
fn wait<T>(what: &str, ctx: impl Fn() -> String, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(t) = probe() {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not reached within {TIMEOUT:?}\n{}",
            ctx()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `appliance ctl get <kind> <name> -o json` on the box; `None` when it is not there.
fn box_get(lab: &Lab, kind: &str, name: &str) -> Option<Value> {
    match lab.appliance_ref().ctl(&["get", kind, name, "-o", "json"]) {
        Ok(out) => Some(
            serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("ctl get {kind} {name}: {e}: {out}")),
        ),
        Err(e) if format!("{e:#}").contains("not found") => None,
        Err(e) => panic!("ctl get {kind} {name}: {e:#}"),
    }
}

#[test]
fn metal_machine_allocates_the_vm_which_pxe_boots_its_environment_then_releases_it() {
    require_lab!(Needs::Bios);
    let started = Instant::now();
    let agent = agent_env().expect("agent environment");
    let env = test_env().expect("test Environment");
    let mut lab = Lab::new().expect("lab");
    let www = lab.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::copy(&env.kernel, www.join("vmlinuz")).unwrap();
    std::fs::copy(&env.initrd, www.join("initramfs.xz")).unwrap();
    lab.start_static_http(&www, WWW_PORT).expect("httpd");
    lab.start_appliance(&ApplianceConfig::server().agent_env(&agent))
        .expect("appliance");

    // The management cluster, and the bridge enrolled on the box.
    let credentials = lab.path("bridge-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    let enrolled = lab
        .appliance()
        .ctl(&[
            "bridge",
            "enroll",
            BOX_ID,
            "--out",
            credentials.to_str().unwrap(),
        ])
        .expect("ctl bridge enroll");
    assert!(enrolled.contains("appliance-admin"), "{enrolled}");
    let cluster = KubeCluster::start(lab.ns(), lab.dir()).expect("API server");
    let crds = workspace_root().join("kube-bridge/config/crd");
    cluster
        .kubectl(&["apply", "-f", crds.to_str().unwrap()])
        .expect("kubectl apply the CRDs");
    // Built-in kinds through `apply` (JSON): `kubectl create <builtin>` speaks protobuf,
    // which the in-test API server does not.
    cluster
        .kubectl_file(
            "apply",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: kube-bridge-system}\n",
            &[],
        )
        .expect("the provider's namespace");
    let mut bridge = KubeBridge::start(
        lab.ns(),
        lab.dir(),
        BOX_ID,
        &format!("https://{BRIDGE_ADDR}:8443"),
        &credentials,
        cluster.kubeconfig(),
    )
    .expect("kube-bridge");
    let setup = started.elapsed();

    // The cluster's intent: an Environment and a class using it, written to the box.
    let base = format!("http://{BRIDGE_ADDR}:{WWW_PORT}");
    cluster
        .kubectl_file(
            "apply",
            &format!(
                "apiVersion: metal.sidero.dev/v1alpha2
kind: Environment
metadata: {{name: kb-env}}
spec:
  kernel:
    url: {base}/vmlinuz
    sha512: {ksha}
    args: [console=ttyS0, loglevel=4, {PROOF_ARG}]
  initrd:
    url: {base}/initramfs.xz
    sha512: {isha}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {{name: kb}}
spec:
  qualifiers: {{}}
  environmentRef: {{name: kb-env}}
",
                ksha = sha512(&www.join("vmlinuz")),
                isha = sha512(&www.join("initramfs.xz")),
            ),
            &[],
        )
        .expect("kubectl apply Environment and ServerClass");
    wait(
        "the Environment on the box with its assets",
        || report(&lab, &cluster, &bridge),
        || {
            let e = box_get(&lab, "environment", "kb-env")?;
            e["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.len() == 2 && cs.iter().all(|c| c["status"] == "True"))
                .then_some(())
        },
    );

    // Boot 1: the agent registers the VM; the bridge mirrors it.
    let disk = lab.path("disk.img");
    std::fs::write(&disk, vec![0x5au8; 16 << 20]).unwrap();
    let mut vm = lab
        .start_vm(
            &VmSpec::new(Firmware::Bios)
                .uuid(UUID)
                .memory(1024)
                .data_disk(&disk)
                .reboot_keeps_running(),
        )
        .expect("vm");
    let registered = vm
        .wait_for("AGENT-REGISTERED", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", report(&lab, &cluster, &bridge)));
    let boot1 = vm.elapsed();
    assert!(registered.contains(&format!("uuid={UUID}")), "{registered}");
    let s = wait(
        "the Server mirrored into the cluster",
        || report(&lab, &cluster, &bridge),
        || cluster.get("server", None, UUID).ok().flatten(),
    );
    assert_eq!(s["metadata"]["labels"][BOX_LABEL], BOX_ID, "{s:#}");
    assert_ne!(s["spec"]["accepted"], true, "{s:#}");
    assert!(
        s["spec"]["hardware"]["network"]["interfaces"]
            .as_array()
            .is_some_and(|nics| nics.iter().any(|n| n["mac"] == vm.mac())),
        "the VM's NIC in the mirrored hardware: {s:#}"
    );

    // Accepted in the cluster → on the box → the agent wipes → available.
    cluster
        .kubectl(&[
            "patch",
            "server",
            UUID,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"accepted":true}}"#,
        ])
        .expect("kubectl patch server accepted");
    let wiped = vm
        .wait_for("AGENT-WIPED", TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", report(&lab, &cluster, &bridge)));
    assert!(wiped.contains("disks=1"), "{wiped}");
    wait(
        "class kb lists the VM available in the cluster",
        || report(&lab, &cluster, &bridge),
        || {
            let c = cluster.get("serverclass", None, "kb").ok().flatten()?;
            c["status"]["serversAvailable"]
                .as_array()?
                .iter()
                .any(|s| s == UUID)
                .then_some(())
        },
    );

    // CAPI core's part: Cluster + MetalCluster, the bootstrap Secret, Machine, MetalMachine.
    let c = cluster
        .kubectl_file(
            "create",
            "apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata: {name: c1, namespace: default}
spec:
  controlPlaneEndpoint: {host: 10.77.0.250, port: 6443}
  infrastructureRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3, kind: MetalCluster, name: c1}
",
            &["-o", "json"],
        )
        .expect("kubectl create cluster");
    let c: Value = serde_json::from_str(&c).unwrap();
    cluster
        .kubectl_file(
            "create",
            &format!(
                "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalCluster
metadata:
  name: c1
  namespace: default
  labels: {{cluster.x-k8s.io/cluster-name: c1}}
  ownerReferences:
  - {{apiVersion: cluster.x-k8s.io/v1beta1, kind: Cluster, name: c1, uid: {uid}}}
spec: {{}}
",
                uid = c["metadata"]["uid"].as_str().unwrap()
            ),
            &[],
        )
        .expect("kubectl create metalcluster");
    let bootstrap = lab.path("bootstrap.yaml");
    std::fs::write(
        &bootstrap,
        "version: v1alpha1\nmachine:\n  type: controlplane\n  token: token-of-m1\ncluster:\n  clusterName: c1\n",
    )
    .unwrap();
    let secret = cluster
        .kubectl(&[
            "create",
            "secret",
            "generic",
            "m1-bootstrap",
            "-n",
            "default",
            &format!("--from-file=value={}", bootstrap.display()),
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .expect("kubectl create secret --dry-run=client");
    cluster
        .kubectl_file("apply", &secret, &[])
        .expect("kubectl apply the bootstrap Secret");
    let m = cluster
        .kubectl_file(
            "create",
            "apiVersion: cluster.x-k8s.io/v1beta1
kind: Machine
metadata:
  name: m1
  namespace: default
  labels: {cluster.x-k8s.io/cluster-name: c1}
spec:
  clusterName: c1
  bootstrap: {dataSecretName: m1-bootstrap}
  infrastructureRef: {apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3, kind: MetalMachine, name: m1}
",
            &["-o", "json"],
        )
        .expect("kubectl create machine");
    let m: Value = serde_json::from_str(&m).unwrap();
    cluster
        .kubectl_file(
            "create",
            &format!(
                "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: MetalMachine
metadata:
  name: m1
  namespace: default
  labels: {{cluster.x-k8s.io/cluster-name: c1}}
  ownerReferences:
  - {{apiVersion: cluster.x-k8s.io/v1beta1, kind: Machine, name: m1, uid: {uid}, controller: true, blockOwnerDeletion: true}}
spec:
  serverClassRef: {{apiVersion: metal.sidero.dev/v1alpha2, kind: ServerClass, name: kb}}
",
                uid = m["metadata"]["uid"].as_str().unwrap()
            ),
            &[],
        )
        .expect("kubectl create metalmachine");
    let created = Instant::now();

    // Allocated on the box for default/m1.
    let binding = wait(
        "the VM's server allocated on the box",
        || report(&lab, &cluster, &bridge),
        || box_get(&lab, "serverbinding", UUID),
    );
    let allocated = created.elapsed();
    assert_eq!(
        binding["metadata"]["annotations"]["appliance.sidero.dev/owner"], "default/m1",
        "{binding:#}"
    );

    // Boot 2: the parked agent was told to reboot; the VM PXE boots its Environment.
    let line = vm
        .wait_for(MARKER, TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", report(&lab, &cluster, &bridge)));
    let env_booted = created.elapsed();
    let cmdline = line.split_once("cmdline=").map(|(_, c)| c).unwrap_or("");
    assert!(cmdline.contains(PROOF_ARG), "{line}");
    assert!(
        cmdline.contains(&format!(
            "talos.config=http://{BRIDGE_ADDR}:8081/configdata?uuid="
        )),
        "{line}"
    );
    let log = lab.appliance_ref().log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("boot decision uuid={UUID} "))
                && l.contains("plan=Environment")),
        "no Environment boot decision for {UUID}\n{}",
        report(&lab, &cluster, &bridge)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("HTTP GET /env/kb-env/vmlinuz ") && l.contains("-> 200")),
        "the Environment's kernel was not served by the box\n{}",
        report(&lab, &cluster, &bridge)
    );
    // The box's metadata service serves the Machine's bootstrap data for the VM.
    let (code, body) = lab
        .http_get(&format!("/configdata?uuid={UUID}"))
        .expect("GET /configdata");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("token-of-m1"), "{body}");

    // The infrastructure provider contract on the MetalMachine.
    let mm = wait(
        "MetalMachine provisioned",
        || report(&lab, &cluster, &bridge),
        || {
            let mm = cluster.get("metalmachine", Some("default"), "m1").ok()??;
            (mm["status"]["ready"] == true).then_some(mm)
        },
    );
    assert_eq!(
        mm["spec"]["providerID"],
        format!("sidero://{UUID}"),
        "{mm:#}"
    );
    assert_eq!(mm["spec"]["serverRef"]["name"], UUID, "{mm:#}");
    let b = wait(
        "the ServerBinding mirrored",
        || report(&lab, &cluster, &bridge),
        || cluster.get("serverbinding", None, UUID).ok().flatten(),
    );
    assert_eq!(b["spec"]["metalMachineRef"]["name"], "m1", "{b:#}");
    vm.wait_exit(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", report(&lab, &cluster, &bridge)));

    // Delete → released on the box, then the finalizer lets the MetalMachine go.
    cluster
        .kubectl(&[
            "delete",
            "metalmachine",
            "m1",
            "-n",
            "default",
            "--wait=false",
        ])
        .expect("kubectl delete metalmachine");
    wait(
        "MetalMachine gone",
        || report(&lab, &cluster, &bridge),
        || {
            cluster
                .get("metalmachine", Some("default"), "m1")
                .ok()?
                .is_none()
                .then_some(())
        },
    );
    assert!(
        box_get(&lab, "serverbinding", UUID).is_none(),
        "the binding outlived the MetalMachine\n{}",
        report(&lab, &cluster, &bridge)
    );
    let s = box_get(&lab, "server", UUID).expect("server on the box");
    assert_ne!(s["status"]["inUse"], true, "{s:#}");
    assert_ne!(s["status"]["isClean"], true, "released means dirty: {s:#}");
    wait(
        "the binding gone from the cluster",
        || report(&lab, &cluster, &bridge),
        || {
            cluster
                .get("serverbinding", None, UUID)
                .ok()?
                .is_none()
                .then_some(())
        },
    );
    bridge.check_alive().expect("kube-bridge still up");
    lab.appliance().check_alive().expect("appliance still up");
    eprintln!(
        "kube_bridge: setup {:.1}s; boot 1 registered at {:.1}s; MetalMachine created → \
         allocated {:.1}s, → Environment booted {:.1}s; test {:.1}s",
        setup.as_secs_f64(),
        boot1.as_secs_f64(),
        allocated.as_secs_f64(),
        env_booted.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
