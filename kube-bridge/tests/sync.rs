//! `kube-bridge run` between the real `appliance serve` (servers registered by the synthetic
//! agent) and the in-test API server, the test playing CAPI core (Cluster, Machine with its
//! bootstrap data Secret, MetalMachine owned by the Machine):
//! - box → cluster: Servers with the box label, hardware, status; BMC endpoint without the
//!   box's inline password; ServerClass status; the ServerBinding;
//! - cluster → box: a label edit on a Server and a new ServerClass reach the box;
//! - allocation: the MetalMachine is claimed, a server allocated on the box, `/configdata`
//!   serves the Machine's bootstrap data, and the MetalMachine gets providerID, serverRef,
//!   addresses and ready; MetalCluster gets ready; a paused Cluster is left alone until
//!   unpaused; deleting the MetalMachine releases the server (the agent is told to wipe) and
//!   the finalizer lets it go; `kubectl delete serverclass` deletes it on the box and it
//!   never comes back (the bridge's own box writes are waited for before its box view is
//!   trusted again);
//! - an outage longer than the API server's watch history while both sides change: the
//!   bridge's watches get 410 and re-list; afterwards no divergence and every MetalMachine
//!   allocated exactly once;
//! - the box's change stream: resumed from the last revision after the box restarts; listed
//!   again when the box compacted its history past it while away (a delete missed by the
//!   stream still reaches the cluster) or its store was restored from an older backup (the
//!   bridge stops waiting for its own writes the restore undid);
//! - initial sync of many Servers written through the admin API (300; `scripts/bench
//!   kube-bridge` runs 10,000): every one mirrored with its status, no divergence, the rate
//!   and the bridge's RSS printed;
//! - two boxes, one cluster: each bridge writes only its box's objects; every MetalMachine
//!   allocated exactly once across both boxes;
//! - the bridge reaches its box over the mTLS admin port with a certificate from `appliance
//!   ctl bridge enroll` (the outage test over the token port, the box-local case); a revoked
//!   certificate is reported once and retried, never a crash, and a re-enrolment written into
//!   the mounted Secret is picked up without a restart;
//! - talosconfigs: the Talos control-plane provider's Secret `<cluster>-talosconfig` of a
//!   cluster this box serves a MetalMachine of is handed to the box (`ctl talosconfig list`
//!   names it), again when it changes; another cluster's is not; no key in either log; the
//!   box keeps it when the Secret goes;
//! - an HA pair for one box: one Lease holder syncs, the standby never starts; the leader
//!   killed (SIGKILL, no release) mid-way through 100 MetalMachines, the standby takes the
//!   Lease over after it expires and every MetalMachine is allocated exactly once, with no
//!   divergence; the real kubectl reads the Lease's holder.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::apiserver::ApiServer;
use support::apiserver::store::{FieldValidation, Write};
use support::boxes::{self, Bridge, eventually};

const BOX_LABEL: &str = "appliance.sidero.dev/box";

fn ar(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural)
}

struct Cluster {
    client: kube::Client,
    _dir: tempfile::TempDir,
    kubeconfig: std::path::PathBuf,
}

fn server_ar() -> ApiResource {
    ar("metal.sidero.dev", "v1alpha2", "Server", "servers")
}
fn class_ar() -> ApiResource {
    ar(
        "metal.sidero.dev",
        "v1alpha2",
        "ServerClass",
        "serverclasses",
    )
}
fn mm_ar() -> ApiResource {
    ar(
        "infrastructure.cluster.x-k8s.io",
        "v1alpha3",
        "MetalMachine",
        "metalmachines",
    )
}
fn mc_ar() -> ApiResource {
    ar(
        "infrastructure.cluster.x-k8s.io",
        "v1alpha3",
        "MetalCluster",
        "metalclusters",
    )
}
fn binding_ar() -> ApiResource {
    ar(
        "infrastructure.cluster.x-k8s.io",
        "v1alpha3",
        "ServerBinding",
        "serverbindings",
    )
}
fn capi_cluster_ar() -> ApiResource {
    ar("cluster.x-k8s.io", "v1beta1", "Cluster", "clusters")
}
fn machine_ar() -> ApiResource {
    ar("cluster.x-k8s.io", "v1beta1", "Machine", "machines")
}
fn secret_ar() -> ApiResource {
    ar("", "v1", "Secret", "secrets")
}

impl Cluster {
    async fn new(server: &ApiServer) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = server.kubeconfig(dir.path());
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config).unwrap();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for c in kube_bridge::crd::all() {
            let name = c.metadata.name.clone().unwrap();
            crds.patch(&name, &PatchParams::apply("test"), &Patch::Apply(&c))
                .await
                .unwrap();
        }
        // The provider's namespace (infrastructure-components.yaml makes it): the Leases.
        let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "kube-bridge-system"}})).unwrap(),
        )
        .await
        .unwrap();
        Cluster {
            client,
            _dir: dir,
            kubeconfig,
        }
    }

    fn api(&self, ar: &ApiResource, ns: &str) -> Api<DynamicObject> {
        if ns.is_empty() {
            Api::all_with(self.client.clone(), ar)
        } else {
            Api::namespaced_with(self.client.clone(), ns, ar)
        }
    }

    async fn get(&self, ar: &ApiResource, ns: &str, name: &str) -> Option<Value> {
        self.api(ar, ns)
            .get_opt(name)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap())
    }

    async fn list(&self, ar: &ApiResource) -> BTreeMap<String, Value> {
        self.api(ar, "")
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| {
                let v = serde_json::to_value(&o).unwrap();
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let name = o.metadata.name.clone().unwrap_or_default();
                (
                    if ns.is_empty() {
                        name
                    } else {
                        format!("{ns}/{name}")
                    },
                    v,
                )
            })
            .collect()
    }

    async fn create(&self, ar: &ApiResource, ns: &str, obj: Value) -> Value {
        let o: DynamicObject = serde_json::from_value(obj).unwrap();
        serde_json::to_value(
            self.api(ar, ns)
                .create(&PostParams::default(), &o)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    async fn merge(&self, ar: &ApiResource, ns: &str, name: &str, patch: Value) {
        self.api(ar, ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete(&self, ar: &ApiResource, ns: &str, name: &str) {
        self.api(ar, ns)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// CAPI core's part for one machine: the Machine with its bootstrap data Secret, and the
    /// MetalMachine owned by it.
    async fn machine(&self, cluster: &str, name: &str, class: &str, bootstrap: &str) {
        let ns = "default";
        self.create(&secret_ar(), ns, secret_json(name, bootstrap))
            .await;
        let machine = self
            .create(&machine_ar(), ns, machine_json(cluster, name))
            .await;
        self.create(
            &mm_ar(),
            ns,
            mm_json(cluster, name, class, &machine["metadata"]["uid"]),
        )
        .await;
    }

    async fn capi_cluster(&self, name: &str, paused: bool) {
        let ns = "default";
        let c = self
            .create(
                &capi_cluster_ar(),
                ns,
                json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
                       "metadata": {"name": name, "namespace": ns},
                       "spec": {"paused": paused, "controlPlaneEndpoint": {"host": "10.5.255.1", "port": 6443},
                                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalCluster", "name": name}}}),
            )
            .await;
        self.create(
            &mc_ar(),
            ns,
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalCluster",
                   "metadata": {"name": name, "namespace": ns, "labels": {"cluster.x-k8s.io/cluster-name": name},
                                "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "name": name, "uid": c["metadata"]["uid"]}]},
                   "spec": {}}),
        )
        .await;
    }
}

fn secret_json(name: &str, bootstrap: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-bootstrap"), "namespace": "default"},
           "data": {"value": b64(bootstrap)}})
}

fn machine_json(cluster: &str, name: &str) -> Value {
    json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine",
           "metadata": {"name": name, "namespace": "default", "labels": {"cluster.x-k8s.io/cluster-name": cluster}},
           "spec": {"clusterName": cluster, "bootstrap": {"dataSecretName": format!("{name}-bootstrap")},
                    "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine", "name": name}}})
}

fn mm_json(cluster: &str, name: &str, class: &str, machine_uid: &Value) -> Value {
    json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine",
           "metadata": {"name": name, "namespace": "default", "labels": {"cluster.x-k8s.io/cluster-name": cluster},
                        "ownerReferences": [{"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Machine", "name": name,
                                             "uid": machine_uid, "controller": true, "blockOwnerDeletion": true}]},
           "spec": {"serverClassRef": {"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "name": class}}})
}

/// Writes straight into the API server's state (it is down for clients): CAPI core's
/// writes during an outage of the bridge's view.
fn direct(
    api: &ApiServer,
    ar: &ApiResource,
    ns: &str,
    obj: Option<Value>,
    delete: Option<&str>,
) -> Value {
    api.with(|st| {
        let t = st.find(&ar.group, &ar.version, &ar.plural).unwrap();
        let w = Write {
            manager: "capi-test",
            validation: FieldValidation::Strict,
            dry_run: false,
        };
        match (obj, delete) {
            (Some(o), _) => st.create(&t, ns, o, w, None).unwrap().0,
            (None, Some(name)) => st.delete(&t, ns, name, false).unwrap().1,
            _ => unreachable!(),
        }
    })
}

fn direct_machine(api: &ApiServer, cluster: &str, name: &str) {
    direct(
        api,
        &secret_ar(),
        "default",
        Some(secret_json(name, &bootstrap(name))),
        None,
    );
    let m = direct(
        api,
        &machine_ar(),
        "default",
        Some(machine_json(cluster, name)),
        None,
    );
    direct(
        api,
        &mm_ar(),
        "default",
        Some(mm_json(cluster, name, "any", &m["metadata"]["uid"])),
        None,
    );
}

/// Every MetalMachine holds exactly one server, each server at most one MetalMachine, and
/// the boxes' bindings are exactly these: (name → server) for the ready ones.
async fn allocations(
    cluster: &Cluster,
    boxes: &[&boxes::Box],
) -> Result<BTreeMap<String, String>, String> {
    let mut by_owner: BTreeMap<String, String> = BTreeMap::new();
    for b in boxes {
        for (server, binding) in b.list("ServerBinding").await {
            let owner = binding["metadata"]["annotations"]["appliance.sidero.dev/owner"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if let Some(other) = by_owner.insert(owner.clone(), server.clone()) {
                return Err(format!("{owner} holds {other} and {server}"));
            }
        }
    }
    let mms = cluster.list(&mm_ar()).await;
    for (key, m) in &mms {
        let Some(server) = by_owner.get(key) else {
            return Err(format!("{key} has no server on any box"));
        };
        if m["spec"]["providerID"] != format!("sidero://{server}") || m["status"]["ready"] != true {
            return Err(format!(
                "{key}: not yet provisioned with {server}: {}",
                m["spec"]
            ));
        }
    }
    if by_owner.len() != mms.len() {
        return Err(format!(
            "{} allocations for {} MetalMachines",
            by_owner.len(),
            mms.len()
        ));
    }
    let servers: BTreeSet<&String> = by_owner.values().collect();
    if servers.len() != by_owner.len() {
        return Err("a server is allocated twice".into());
    }
    Ok(by_owner.into_iter().collect())
}

fn b64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bootstrap(name: &str) -> String {
    format!(
        "version: v1alpha1\nmachine:\n  type: worker\n  token: token-of-{name}\ncluster:\n  id: test\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_intent_allocate_configdata_release() {
    let api = ApiServer::start(100_000);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    let mut agents = Vec::new();
    for i in 1..=2 {
        agents.push(b.available_server(i).await);
    }
    let (u1, u2) = (agents[0].uuid.clone(), agents[1].uuid.clone());
    // An inline BMC password on the box (u2): it must never reach the cluster.
    let mut s2 = b.list("Server").await[&u2].clone();
    s2["spec"]["bmc"] =
        json!({"endpoint": "10.9.0.2", "port": 623, "user": "admin", "pass": "hunter2-secret"});
    s2.as_object_mut().unwrap().remove("status");
    b.apply(&s2.to_string()).await;

    // The bridge sees the box's change stream 300 ms late, as on a loaded box: its view of
    // the box trails its own writes there.
    let bridge = Bridge::start_lagging(&b, "rack-1", &cluster.kubeconfig, 300);
    let ctx = || format!("bridge log:\n{}\nbox log:\n{}", bridge.log(), b.log());

    // Box → cluster.
    let s = eventually(30, "Servers mirrored with status", ctx, || async {
        let s = cluster.get(&server_ar(), "", &u2).await?;
        (s["status"]["isClean"] == true && s["spec"]["bmc"]["endpoint"] == "10.9.0.2").then_some(s)
    })
    .await;
    assert_eq!(s["metadata"]["labels"][BOX_LABEL], "rack-1");
    assert_eq!(s["spec"]["accepted"], true);
    assert_eq!(s["spec"]["hardware"]["system"]["manufacturer"], "Dell Inc.");
    assert_eq!(s["status"]["addresses"][0]["address"], "10.5.0.3");
    assert!(s["spec"]["bmc"].get("pass").is_none() && s["spec"]["bmc"].get("user").is_none());
    let everything = cluster.list(&server_ar()).await;
    assert!(
        !serde_json::to_string(&everything)
            .unwrap()
            .contains("hunter2")
    );
    assert!(
        !serde_json::to_string(&everything)
            .unwrap()
            .contains("<redacted>")
    );
    eventually(30, "class any lists both servers", ctx, || async {
        let c = cluster.get(&class_ar(), "", "any").await?;
        (c["status"]["serversAvailable"] == json!([u1.clone(), u2.clone()])).then_some(())
    })
    .await;

    // Cluster → box: a label on u1 and a class selecting it.
    cluster
        .merge(
            &server_ar(),
            "",
            &u1,
            json!({"metadata": {"labels": {"zone": "a"}}}),
        )
        .await;
    cluster
        .create(
            &class_ar(),
            "",
            json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "metadata": {"name": "zone-a"},
                   "spec": {"selector": {"matchLabels": {"zone": "a"}}}}),
        )
        .await;
    eventually(30, "label and class on the box", ctx, || async {
        let s = b.list("Server").await;
        let c = b.list("ServerClass").await;
        (s[&u1]["metadata"]["labels"]["zone"] == "a" && c.contains_key("zone-a")).then_some(())
    })
    .await;
    // The box still has u2's password (the bridge wrote u2 back only with its own marker).
    let s2 = b.list("Server").await[&u2].clone();
    assert_eq!(
        s2["spec"]["bmc"]["pass"], "<redacted>",
        "the box keeps an inline password"
    );

    // CAPI: a paused Cluster's machine is left alone.
    cluster.capi_cluster("c1", true).await;
    cluster
        .machine("c1", "m1", "zone-a", &bootstrap("m1"))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = cluster.get(&mm_ar(), "default", "m1").await.unwrap();
    assert!(m["spec"].get("providerID").is_none(), "paused: {m}");
    assert!(b.list("ServerBinding").await.is_empty());
    cluster
        .merge(
            &capi_cluster_ar(),
            "default",
            "c1",
            json!({"spec": {"paused": false}}),
        )
        .await;
    let m = eventually(30, "MetalMachine provisioned", ctx, || async {
        let m = cluster.get(&mm_ar(), "default", "m1").await?;
        (m["status"]["ready"] == true).then_some(m)
    })
    .await;
    assert_eq!(m["spec"]["providerID"], format!("sidero://{u1}"));
    assert_eq!(m["spec"]["serverRef"]["name"], u1.as_str());
    assert_eq!(m["status"]["initialization"]["provisioned"], true);
    assert!(
        m["status"]["addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"type": "InternalIP", "address": "10.5.0.2"})),
        "{m}"
    );
    assert_eq!(m["metadata"]["annotations"][BOX_LABEL], "rack-1");
    // The box serves the Machine's bootstrap data for that server.
    let (code, body) = boxes::http_get(b.addr, &format!("/configdata?uuid={u1}")).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("token-of-m1"), "{body}");
    let binding = eventually(30, "ServerBinding mirrored", ctx, || async {
        cluster.get(&binding_ar(), "", &u1).await
    })
    .await;
    assert_eq!(binding["spec"]["metalMachineRef"]["name"], "m1");
    assert_eq!(
        binding["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
        "c1"
    );
    let mc = eventually(30, "MetalCluster ready", ctx, || async {
        let mc = cluster.get(&mc_ar(), "default", "c1").await?;
        (mc["status"]["ready"] == true).then_some(mc)
    })
    .await;
    assert_eq!(mc["spec"]["controlPlaneEndpoint"]["host"], "10.5.255.1");
    eventually(30, "class status in use", ctx, || async {
        let c = cluster.get(&class_ar(), "", "any").await?;
        (c["status"]["serversInUse"] == json!([u1.clone()])).then_some(())
    })
    .await;

    // Delete → the server is released (the agent is told to wipe), then the object goes.
    cluster.delete(&mm_ar(), "default", "m1").await;
    eventually(30, "MetalMachine gone", ctx, || async {
        cluster
            .get(&mm_ar(), "default", "m1")
            .await
            .is_none()
            .then_some(())
    })
    .await;
    assert!(b.list("ServerBinding").await.is_empty());
    // Its next agent boot registers and is told to wipe.
    agents[0].register("node-1").await.unwrap();
    agents[0].wipe_if_told().await.unwrap();
    eventually(30, "binding gone from the cluster", ctx, || async {
        cluster
            .get(&binding_ar(), "", &u1)
            .await
            .is_none()
            .then_some(())
    })
    .await;

    // `kubectl delete serverclass`: gone on the box, then in the cluster, and never back
    // (the bridge's view of the box trails its own deletes by the lag; a pass on that stale
    // view would take each class for a box-only one and create it in the cluster again).
    let mut doomed = vec!["zone-a".to_string()];
    for i in 0..12 {
        let name = format!("doomed-{i}");
        cluster
            .create(
                &class_ar(),
                "",
                json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "metadata": {"name": name},
                       "spec": {"selector": {"matchLabels": {"zone": "b"}}}}),
            )
            .await;
        doomed.push(name);
    }
    eventually(30, "classes on the box", ctx, || async {
        let c = b.list("ServerClass").await;
        doomed.iter().all(|d| c.contains_key(d)).then_some(())
    })
    .await;
    for d in &doomed {
        cluster.delete(&class_ar(), "", d).await;
    }
    let gone = || async {
        let on_box = b.list("ServerClass").await;
        let in_cluster = cluster.list(&class_ar()).await;
        doomed
            .iter()
            .filter(|d| on_box.contains_key(*d) || in_cluster.contains_key(*d))
            .cloned()
            .collect::<Vec<_>>()
    };
    eventually(30, "classes deleted on both sides", ctx, || async {
        gone().await.is_empty().then_some(())
    })
    .await;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let back = gone().await;
        assert!(
            back.is_empty(),
            "deleted classes came back: {back:?}\n{}",
            ctx()
        );
    }
}

/// No divergence: the cluster's Servers are exactly the box's, each with the box's status.
async fn diverging(cluster: &Cluster, b: &boxes::Box) -> Vec<String> {
    let on_box = b.list("Server").await;
    let in_cluster = cluster.list(&server_ar()).await;
    let mut out = Vec::new();
    if on_box.keys().collect::<Vec<_>>() != in_cluster.keys().collect::<Vec<_>>() {
        out.push(format!(
            "names: box {:?} cluster {:?}",
            on_box.keys().collect::<Vec<_>>(),
            in_cluster.keys().collect::<Vec<_>>()
        ));
    }
    for (name, s) in &on_box {
        let want = kube_bridge::mirror::normalize(&kube_bridge::mirror::server_status(s));
        let got = in_cluster
            .get(name)
            .map(|c| kube_bridge::mirror::normalize(&c["status"]));
        if got.as_ref() != Some(&want) {
            out.push(format!("{name}: status {got:?} != {want}"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_longer_than_watch_history_relists_without_divergence_or_double_allocation() {
    // The API server keeps 200 events of history; the outage makes over 1,000 changes.
    let api = ApiServer::start(200);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    for i in 1..=6 {
        b.available_server(i).await;
    }
    cluster.capi_cluster("c1", false).await;
    // The box-local case: the plain admin port with the token.
    let bridge = Bridge::start_via(&b, "rack-1", &cluster.kubeconfig, boxes::Via::Token, &[]);
    let ctx = || format!("bridge log:\n{}", bridge.log());
    for i in 0..3 {
        cluster
            .machine("c1", &format!("m{i}"), "any", &bootstrap(&format!("m{i}")))
            .await;
    }
    eventually(60, "three machines allocated", ctx, || async {
        allocations(&cluster, &[&b])
            .await
            .ok()
            .filter(|a| a.len() == 3)
    })
    .await;

    // Outage: the bridge sees neither watches nor writes succeed.
    api.set_down(true);
    let gone_before = api.with(|st| st.gone_answers);
    // The box keeps working: four more servers become available.
    for i in 7..=10 {
        b.available_server(i).await;
    }
    // CAPI keeps working: m0 is deleted (its finalizer holds it), m3..m5 are created, and a
    // flood of unrelated writes pushes the bridge's last revision out of the history.
    direct(&api, &mm_ar(), "default", None, Some("m0"));
    for i in 3..6 {
        direct_machine(&api, "c1", &format!("m{i}"));
    }
    for i in 0..1000 {
        direct(
            &api,
            &ar("", "v1", "ConfigMap", "configmaps"),
            "default",
            Some(
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("noise-{i}"), "namespace": "default"}, "data": {"i": i.to_string()}}),
            ),
            None,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    api.set_down(false);

    let allocated = eventually(90, "converged after the outage", ctx, || async {
        let a = allocations(&cluster, &[&b]).await.ok()?;
        (a.len() == 5 && diverging(&cluster, &b).await.is_empty()).then_some(a)
    })
    .await;
    assert_eq!(
        allocated.keys().cloned().collect::<Vec<_>>(),
        [
            "default/m1",
            "default/m2",
            "default/m3",
            "default/m4",
            "default/m5"
        ]
    );
    assert!(
        cluster.get(&mm_ar(), "default", "m0").await.is_none(),
        "m0 released and gone"
    );
    assert!(
        api.with(|st| st.gone_answers) > gone_before,
        "the bridge's resumed watches were answered 410 Gone and re-listed"
    );
}

fn class_doc(name: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: {name}\nspec:\n  qualifiers: {{}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn box_restart_resumes_the_change_stream_and_compaction_relists() {
    let api = ApiServer::start(1_000_000);
    let cluster = Cluster::new(&api).await;
    // The box keeps only 20 changes of history.
    let mut b =
        tokio::task::spawn_blocking(|| boxes::Box::start_with("[watch]\nretention_changes = 20\n"))
            .await
            .unwrap();
    for i in 1..=3 {
        b.available_server(i).await;
    }
    let bridge = Bridge::start(&b, "rack-1", &cluster.kubeconfig);
    let box_log = b.log_path();
    let ctx = || {
        format!(
            "bridge log:\n{}\nbox log:\n{}",
            bridge.log(),
            std::fs::read_to_string(&box_log).unwrap_or_default()
        )
    };
    let listed = || bridge.log().matches("listed the box").count();
    let followed = || {
        bridge
            .log()
            .matches("following the box's change stream")
            .count()
    };
    async fn in_sync(cluster: &Cluster, b: &boxes::Box, n: usize) -> Option<()> {
        (cluster.list(&server_ar()).await.len() == n && diverging(cluster, b).await.is_empty())
            .then_some(())
    }
    eventually(60, "three servers mirrored", ctx, || {
        in_sync(&cluster, &b, 3)
    })
    .await;
    assert_eq!(listed(), 1, "{}", ctx());
    let followed_before = followed();
    assert!(followed_before >= 1, "{}", ctx());

    // The box restarts: the bridge resumes its stream from the last revision it saw.
    let home = b.addr;
    tokio::task::block_in_place(|| b.restart_on(home));
    b.apply(&class_doc("after-restart")).await;
    eventually(
        60,
        "a class made after the restart mirrored",
        ctx,
        || async {
            in_sync(&cluster, &b, 3).await?;
            cluster
                .get(&class_ar(), "", "after-restart")
                .await
                .map(|_| ())
        },
    )
    .await;
    assert_eq!(listed(), 1, "resumed, not listed again: {}", ctx());
    assert!(followed() > followed_before, "{}", ctx());

    // Away from the bridge (another address), the box deletes a server and makes 30
    // classes: its history no longer reaches the bridge's revision, so the bridge's resume
    // is refused with OUT_OF_RANGE and it lists again, deletes included.
    tokio::task::block_in_place(|| b.restart_on(boxes::Box::other_addr()));
    let victim = b.list("Server").await.into_keys().next().unwrap();
    b.admin()
        .await
        .delete(appliance_rpc::admin::DeleteRequest {
            kind: "Server".into(),
            name: victim.clone(),
        })
        .await
        .unwrap();
    for i in 0..30 {
        b.apply(&class_doc(&format!("away-{i}"))).await;
    }
    tokio::task::block_in_place(|| b.restart_on(home));
    eventually(60, "caught up after the compaction", ctx, || async {
        in_sync(&cluster, &b, 2).await?;
        let classes = cluster.list(&class_ar()).await;
        (0..30)
            .all(|i| classes.contains_key(&format!("away-{i}")))
            .then_some(())
    })
    .await;
    assert!(cluster.get(&server_ar(), "", &victim).await.is_none());
    assert!(
        !b.list("Server").await.contains_key(&victim),
        "the bridge never writes back a Server the box deleted while it was away: {}",
        ctx()
    );
    assert_eq!(listed(), 2, "listed again once: {}", ctx());
    assert!(
        bridge.log().contains("no longer reaches our revision"),
        "{}",
        ctx()
    );

    // The box's store restored from a backup taken before the bridge's last writes (30
    // classes deleted from the cluster, so deleted on the box by the bridge): the box is
    // back at an older revision than the bridge's own writes. The bridge lists again and
    // goes on (the restored box has the classes again and, as for any class only the box
    // has, they are created in the cluster); it does not wait for revisions that are gone.
    b.stop();
    let backup = tempfile::tempdir().unwrap();
    copy_dir(&b.data_dir, backup.path());
    tokio::task::block_in_place(|| b.restart_on(home));
    for i in 0..30 {
        cluster.delete(&class_ar(), "", &format!("away-{i}")).await;
    }
    eventually(60, "the 30 classes deleted on both sides", ctx, || async {
        let on_box = b.list("ServerClass").await;
        let in_cluster = cluster.list(&class_ar()).await;
        (0..30)
            .all(|i| {
                let n = format!("away-{i}");
                !on_box.contains_key(&n) && !in_cluster.contains_key(&n)
            })
            .then_some(())
    })
    .await;
    b.stop();
    std::fs::remove_dir_all(&b.data_dir).unwrap();
    copy_dir(backup.path(), &b.data_dir);
    tokio::task::block_in_place(|| b.restart_on(home));
    eventually(
        60,
        "the restored box's classes in the cluster",
        ctx,
        || async {
            let in_cluster = cluster.list(&class_ar()).await;
            (0..30)
                .all(|i| in_cluster.contains_key(&format!("away-{i}")))
                .then_some(())
        },
    )
    .await;
    assert!(bridge.log().contains("restored from a backup"), "{}", ctx());
}

/// `from`'s files and directories copied into `to` (created).
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `field` of /proc/PID/status in KiB (VmRSS, VmHWM).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// User + system CPU time of PID in clock ticks.
fn proc_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields 14 and 15 (utime, stime); `after` starts at field 3, and field 3 is a letter.
    f[10] + f[11]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_of_many_servers() {
    let n: usize = std::env::var("KUBE_BRIDGE_TEST_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let api = ApiServer::start(1_000_000);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    // One server registered by the agent; n - 1 more like it written through the admin API
    // (up to 500 per transaction, within the box's 1 MiB per apply).
    let model = b.available_server(1).await;
    let mut doc = b.list("Server").await[&model.uuid].clone();
    doc.as_object_mut().unwrap().remove("status");
    let mut batch: Vec<String> = Vec::new();
    let mut bytes = 0;
    for i in 1..n {
        let mut d = doc.clone();
        let name = format!("00000000-0000-4000-8000-{i:012x}");
        d["metadata"]["name"] = json!(name);
        d["spec"]["hostname"] = json!(format!("node-{i}"));
        let d = d.to_string();
        if bytes + d.len() + 5 > 900 << 10 || batch.len() == 500 {
            b.apply(&batch.join("\n---\n")).await;
            batch.clear();
            bytes = 0;
        }
        bytes += d.len() + 5;
        batch.push(d);
    }
    if !batch.is_empty() {
        b.apply(&batch.join("\n---\n")).await;
    }
    assert_eq!(b.list("Server").await.len(), n);
    let mirrored = || {
        api.with(|st| {
            st.objects
                .iter()
                .filter(|(k, (v, _))| {
                    k.1 == "servers"
                        && v["metadata"]["labels"][BOX_LABEL] == "rack-1"
                        && v["status"].as_object().is_some_and(|s| !s.is_empty())
                })
                .count()
        })
    };
    let started = tokio::time::Instant::now();
    let bridge = Bridge::start(&b, "rack-1", &cluster.kubeconfig);
    let ctx = || format!("bridge log:\n{}", bridge.log());
    eventually(
        600,
        "every Server mirrored with its status",
        ctx,
        || async { (mirrored() == n).then_some(()) },
    )
    .await;
    let took = started.elapsed();
    let rss_synced = proc_kib(bridge.pid(), "VmRSS");
    // Steady state: nothing changes; the bridge's passes still compare every object.
    let ticks = proc_ticks(bridge.pid());
    let idle = Duration::from_secs(5);
    tokio::time::sleep(idle).await;
    let cpu = (proc_ticks(bridge.pid()) - ticks) as f64 / 100.0 / idle.as_secs_f64();
    let rss = proc_kib(bridge.pid(), "VmRSS");
    let peak = proc_kib(bridge.pid(), "VmHWM");
    assert!(diverging(&cluster, &b).await.is_empty());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "kube-bridge: initial sync of {n} Servers {took:?} ({:.0} objects/s); bridge RSS {:.1} MiB when synced, {:.1} MiB after {idle:?} idle (peak {:.1} MiB), idle CPU {:.0}%; load {}",
        n as f64 / took.as_secs_f64(),
        rss_synced as f64 / 1024.0,
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        cpu * 100.0,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_boxes_one_cluster_each_machine_allocated_once() {
    let machines: usize = std::env::var("KUBE_BRIDGE_TEST_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let per_box = machines / 2 + 5;
    let api = ApiServer::start(1_000_000);
    let cluster = Cluster::new(&api).await;
    let a = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    for i in 0..per_box {
        a.available_server(1 + i).await;
        b.available_server(1001 + i).await;
    }
    cluster.capi_cluster("c1", false).await;
    let started = tokio::time::Instant::now();
    let bridge_a = Bridge::start(&a, "rack-a", &cluster.kubeconfig);
    let bridge_b = Bridge::start(&b, "rack-b", &cluster.kubeconfig);
    let ctx = || {
        format!(
            "bridge a:\n{}\nbridge b:\n{}",
            bridge_a.log(),
            bridge_b.log()
        )
    };
    eventually(120, "both boxes mirrored", ctx, || async {
        (cluster.list(&server_ar()).await.len() == 2 * per_box).then_some(())
    })
    .await;
    let initial_sync = started.elapsed();
    let mut created = BTreeMap::new();
    for i in 0..machines {
        let name = format!("m{i:03}");
        cluster.machine("c1", &name, "any", &bootstrap(&name)).await;
        created.insert(format!("default/{name}"), tokio::time::Instant::now());
    }
    // When each machine's allocation appeared on a box.
    let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while seen.len() < machines {
        for bx in [&a, &b] {
            for (_, binding) in bx.list("ServerBinding").await {
                let owner = binding["metadata"]["annotations"]["appliance.sidero.dev/owner"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                if let Some(t0) = created.get(&owner) {
                    seen.entry(owner).or_insert_with(|| t0.elapsed());
                }
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all allocated: {}",
            ctx()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let allocated = eventually(120, "every machine provisioned once", ctx, || async {
        allocations(&cluster, &[&a, &b])
            .await
            .ok()
            .filter(|x| x.len() == machines)
    })
    .await;
    let on_a: BTreeSet<String> = a.list("Server").await.into_keys().collect();
    let mut per_rack = (0, 0);
    for (owner, server) in &allocated {
        let m = cluster
            .get(&mm_ar(), "default", owner.trim_start_matches("default/"))
            .await
            .unwrap();
        let rack = if on_a.contains(server) {
            "rack-a"
        } else {
            "rack-b"
        };
        assert_eq!(
            m["metadata"]["annotations"][BOX_LABEL], rack,
            "{owner} claimed by the box that holds {server}"
        );
        if rack == "rack-a" {
            per_rack.0 += 1
        } else {
            per_rack.1 += 1
        }
    }
    // Neither bridge wrote the other's Servers.
    for (name, s) in cluster.list(&server_ar()).await {
        let rack = if on_a.contains(&name) {
            "rack-a"
        } else {
            "rack-b"
        };
        assert_eq!(s["metadata"]["labels"][BOX_LABEL], rack);
        for f in s["metadata"]["managedFields"].as_array().unwrap() {
            let m = f["manager"].as_str().unwrap();
            assert!(
                m.ends_with(&format!("/{rack}")),
                "{name} of {rack} written by {m}"
            );
        }
    }
    let mut times: Vec<Duration> = seen.into_values().collect();
    times.sort();
    let pct = |p: usize| times[(times.len() * p / 100).min(times.len() - 1)];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "kube-bridge: {machines} MetalMachines over 2 boxes ({} / {}): created → allocated on a box p50 {:?} p99 {:?}; initial sync of {} Servers {:?} ({:.0} objects/s); load {}",
        per_rack.0,
        per_rack.1,
        pct(50),
        pct(99),
        2 * per_box,
        initial_sync,
        (2 * per_box) as f64 / initial_sync.as_secs_f64(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Writes a Secret as the kubelet projects it into a volume: the keys in a fresh timestamped
/// directory, `..data` pointing at it (swapped by a rename, atomically), each key a link
/// through `..data`; the previous generation is removed.
fn project_secret(dir: &std::path::Path, secret_yaml: &str, generation: u32) {
    use std::os::unix::fs::symlink;
    let secret: k8s_openapi::api::core::v1::Secret = yaml_serde::from_str(secret_yaml).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let ts = format!("..2026_12_06_00_00_0{generation}.000000001");
    std::fs::create_dir(dir.join(&ts)).unwrap();
    for (key, value) in secret.data.unwrap() {
        std::fs::write(dir.join(&ts).join(&key), &value.0).unwrap();
        let link = dir.join(&key);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{key}"), &link).unwrap();
        }
    }
    let old = std::fs::read_link(dir.join("..data")).ok();
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_certificate_reported_and_retried_until_enrolled_again_from_a_mounted_secret() {
    let api = ApiServer::start(100_000);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    let u1 = b.available_server(1).await.uuid;
    // The credentials as the provider's Deployment gets them: the Secret `ctl bridge enroll`
    // prints, mounted as a volume.
    let tmp = tempfile::tempdir().unwrap();
    let mounted = tmp.path().join("box");
    let secret = b.ctl(&["bridge", "enroll", "rack-1"]).unwrap();
    assert!(secret.contains("name: kube-bridge-box"), "{secret}");
    assert!(secret.contains("namespace: kube-bridge-system"), "{secret}");
    project_secret(&mounted, &secret, 1);
    let mut bridge = Bridge::start_via(
        &b,
        "rack-1",
        &cluster.kubeconfig,
        boxes::Via::Credentials(mounted.clone()),
        &[],
    );
    let log = |bridge: &Bridge| format!("bridge log:\n{}\nbox log:\n{}", bridge.log(), b.log());
    eventually(
        30,
        "u1 mirrored over mTLS",
        || log(&bridge),
        || async { cluster.get(&server_ar(), "", &u1).await.map(|_| ()) },
    )
    .await;

    // Revoked: the box drops the bridge's connection and refuses the next handshakes; the
    // bridge says why and keeps trying, and nothing new of the box reaches the cluster.
    b.ctl(&["bridge", "revoke", "rack-1"]).unwrap();
    let u2 = b.available_server(2).await.uuid;
    let want = "the box refused this bridge's client certificate at TLS";
    eventually(
        30,
        "the refusal reported",
        || log(&bridge),
        || async { bridge.log().contains(want).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(bridge.alive(), "the bridge exited: {}", bridge.log());
    assert!(
        cluster.get(&server_ar(), "", &u2).await.is_none(),
        "mirrored with a revoked certificate"
    );
    assert_eq!(
        bridge.log().matches(want).count(),
        1,
        "reported once, not per retry: {}",
        bridge.log()
    );

    // Enrolled again and the Secret updated in place: picked up without a restart.
    let secret = b.ctl(&["bridge", "enroll", "rack-1"]).unwrap();
    project_secret(&mounted, &secret, 2);
    eventually(
        30,
        "u2 mirrored after re-enrolment",
        || log(&bridge),
        || async { cluster.get(&server_ar(), "", &u2).await.map(|_| ()) },
    )
    .await;
    assert!(bridge.alive());
    assert!(
        bridge.log().contains("box reachable again"),
        "{}",
        bridge.log()
    );
}

/// The box's Lease: (holder identity, transitions).
async fn lease_holder(cluster: &Cluster, box_id: &str) -> Option<(String, i64)> {
    let l = cluster
        .get(
            &ar("coordination.k8s.io", "v1", "Lease", "leases"),
            "kube-bridge-system",
            box_id,
        )
        .await?;
    Some((
        l["spec"]["holderIdentity"].as_str()?.to_string(),
        l["spec"]["leaseTransitions"].as_i64().unwrap_or(0),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_elects_one_leader_and_a_takeover_loses_nothing() {
    let machines: usize = std::env::var("KUBE_BRIDGE_TEST_HA_MACHINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let api = ApiServer::start(1_000_000);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    for i in 0..machines + 2 {
        b.available_server(1 + i).await;
    }
    cluster.capi_cluster("c1", false).await;
    // Two bridges for one box, each with its own enrolled certificate.
    let mut first = Bridge::start(&b, "rack-1", &cluster.kubeconfig);
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("second");
    b.enroll("rack-1-second", &creds);
    let mut second = Bridge::start_via(
        &b,
        "rack-1",
        &cluster.kubeconfig,
        boxes::Via::Credentials(creds),
        &[],
    );
    let logs = |a: &Bridge, c: &Bridge| format!("first:\n{}\nsecond:\n{}", a.log(), c.log());
    let (holder, _) = eventually(
        30,
        "a leader",
        || logs(&first, &second),
        || async { lease_holder(&cluster, "rack-1").await },
    )
    .await;
    let first_leads = holder.ends_with(&format!("_{}", first.pid()));
    assert!(
        first_leads || holder.ends_with(&format!("_{}", second.pid())),
        "{holder}"
    );
    let half = machines / 2;
    for i in 0..half {
        let name = format!("m{i:03}");
        cluster.machine("c1", &name, "any", &bootstrap(&name)).await;
    }
    eventually(
        120,
        "a quarter allocated",
        || logs(&first, &second),
        || async { (b.list("ServerBinding").await.len() >= machines / 4).then_some(()) },
    )
    .await;
    // Only the leader syncs: the standby never started.
    let standby_log = if first_leads {
        second.log()
    } else {
        first.log()
    };
    assert!(!standby_log.contains("holding the lease"), "{standby_log}");
    // The leader dies mid-way (SIGKILL: no release); the rest of the machines arrive.
    let (leader, standby) = if first_leads {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };
    leader.stop();
    for i in half..machines {
        let name = format!("m{i:03}");
        cluster.machine("c1", &name, "any", &bootstrap(&name)).await;
    }
    let standby_pid = standby.pid();
    let standby: &Bridge = standby;
    eventually(
        180,
        "every machine allocated once, no divergence",
        || standby.log(),
        || async {
            let a = allocations(&cluster, &[&b]).await.ok()?;
            (a.len() == machines && diverging(&cluster, &b).await.is_empty()).then_some(())
        },
    )
    .await;
    let (holder, transitions) = lease_holder(&cluster, "rack-1").await.unwrap();
    assert!(holder.ends_with(&format!("_{standby_pid}")), "{holder}");
    assert!(transitions >= 1, "{transitions}");
    assert!(
        standby.log().contains("taking over the lease"),
        "{}",
        standby.log()
    );
    // Real kubectl reads the Lease from the in-test API server.
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .args(["get", "lease", "-n", "kube-bridge-system", "rack-1"])
        .args(["-o", "jsonpath={.spec.holderIdentity}"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), holder);
}

/// A talosconfig as talosctl shapes it, context `context`, with a client identity from the
/// box's own CA (`ctl bridge enroll` under `name`: any key type rustls knows is accepted).
fn talosconfig(b: &boxes::Box, name: &str, context: &str, dir: &std::path::Path) -> String {
    let creds = dir.join(name);
    b.enroll(name, &creds);
    let read = |f: &str| b64(&std::fs::read_to_string(creds.join(f)).unwrap());
    format!(
        "context: {context}\ncontexts:\n  {context}:\n    endpoints: [10.5.0.2]\n    ca: {}\n    crt: {}\n    key: {}\n",
        read("ca.crt"),
        read("tls.crt"),
        read("tls.key")
    )
}

/// The box's clusters with a talosconfig (`ctl talosconfig list`, one per line).
fn talosconfigs_on(b: &boxes::Box) -> Vec<String> {
    b.ctl(&["talosconfig", "list"])
        .unwrap()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn talosconfig_of_a_served_cluster_handed_to_the_box() {
    let api = ApiServer::start(100_000);
    let cluster = Cluster::new(&api).await;
    let b = tokio::task::spawn_blocking(boxes::Box::start)
        .await
        .unwrap();
    b.available_server(1).await;
    let tmp = tempfile::tempdir().unwrap();
    let bridge = Bridge::start(&b, "rack-1", &cluster.kubeconfig);
    let ctx = || format!("bridge log:\n{}\nbox log:\n{}", bridge.log(), b.log());
    // c1 has a MetalMachine this box serves; c2 only a Secret (the Talos control-plane
    // provider's shape: `<cluster>-talosconfig`, key `talosconfig`).
    cluster.capi_cluster("c1", false).await;
    cluster.capi_cluster("c2", false).await;
    let first = talosconfig(&b, "talos-c1", "admin@c1", tmp.path());
    let other = talosconfig(&b, "talos-c2", "admin@c2", tmp.path());
    for (c, t) in [("c1", &first), ("c2", &other)] {
        cluster
            .create(
                &secret_ar(),
                "default",
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": format!("{c}-talosconfig"), "namespace": "default"},
                       "data": {"talosconfig": b64(t)}}),
            )
            .await;
    }
    cluster.machine("c1", "m1", "any", &bootstrap("m1")).await;
    eventually(30, "MetalMachine provisioned", ctx, || async {
        let m = cluster.get(&mm_ar(), "default", "m1").await?;
        (m["status"]["ready"] == true).then_some(())
    })
    .await;
    eventually(30, "c1's talosconfig on the box", ctx, || async {
        talosconfigs_on(&b)
            .contains(&"c1".to_string())
            .then_some(())
    })
    .await;
    assert!(
        bridge
            .log()
            .lines()
            .any(|l| l.contains("talosconfig handed to the box") && l.contains("admin@c1")),
        "{}",
        ctx()
    );
    // A new talosconfig in the Secret (another context) replaces the box's.
    let second = talosconfig(&b, "talos-c1-new", "admin2@c1", tmp.path());
    cluster
        .merge(
            &secret_ar(),
            "default",
            "c1-talosconfig",
            json!({"data": {"talosconfig": b64(&second)}}),
        )
        .await;
    eventually(30, "the changed talosconfig handed again", ctx, || async {
        bridge
            .log()
            .lines()
            .any(|l| l.contains("talosconfig handed to the box") && l.contains("admin2@c1"))
            .then_some(())
    })
    .await;
    // A cluster this box serves no machine of never gets its talosconfig here.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let list = talosconfigs_on(&b);
    assert_eq!(list, ["c1"], "{}", ctx());
    // Never in a log: no key of either talosconfig in the bridge's or the box's.
    let logs = format!("{}{}", bridge.log(), b.log());
    for t in [&first, &second, &other] {
        let key = t
            .lines()
            .find_map(|l| l.trim().strip_prefix("key: "))
            .unwrap();
        assert!(!logs.contains(key), "a talosconfig key in a log");
    }
    // The Secret gone: the box keeps it (a released server still needs the reset).
    cluster
        .delete(&secret_ar(), "default", "c1-talosconfig")
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(talosconfigs_on(&b), ["c1"], "{}", ctx());
}
