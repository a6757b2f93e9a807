//! The clusterctl provider artefacts under `config/`: the file layout of one release in a
//! clusterctl local repository, `metadata.yaml` covering this version, the variables of
//! `infrastructure-components.yaml` and `cluster-template.yaml` (the required ones and the
//! defaulted ones, each documented in the README), and what they expand to: parseable
//! objects, everything namespaced in the provider's namespace, the CRDs exactly the generated
//! ones with CAPI contract labels, the template's Metal* objects valid for our schemas.
//! clusterctl itself is not installed here (no registry ships it); `kubectl apply
//! --dry-run=client` of the expanded manifests runs in `tests/kubectl.rs`.

mod support;

use kube_bridge::{crd, manifests};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use support::clusterctl::{bare_dollars, required, sample_values, substitute, with_default};

fn config() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config")
}

fn docs(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    yaml_serde::Deserializer::from_str(text)
        .map(|d| {
            yaml_serde::from_value::<Value>(yaml_serde::Value::deserialize(d).unwrap()).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn local_repository_layout_and_generated_components() {
    let components = manifests::infrastructure_components();
    let path = config().join("infrastructure-components.yaml");
    if std::env::var_os("KUBE_BRIDGE_BLESS").is_some() {
        std::fs::write(&path, &components).unwrap();
    }
    // One release directory of a clusterctl repository holds exactly these three files
    // (plus our generator inputs: manager.yaml and crd/).
    for f in [
        "metadata.yaml",
        "infrastructure-components.yaml",
        "cluster-template.yaml",
    ] {
        assert!(config().join(f).is_file(), "config/{f} missing");
    }
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == components,
        "config/infrastructure-components.yaml is stale; regenerate with \
         KUBE_BRIDGE_BLESS=1 cargo test -p kube-bridge --test clusterctl"
    );
    assert_eq!(
        manifests::METADATA,
        std::fs::read_to_string(config().join("metadata.yaml")).unwrap()
    );
}

#[test]
fn metadata_covers_this_release_with_a_capi_contract() {
    let meta = &docs(manifests::METADATA)[0];
    assert_eq!(meta["apiVersion"], "clusterctl.cluster.x-k8s.io/v1alpha3");
    assert_eq!(meta["kind"], "Metadata");
    let series = meta["releaseSeries"].as_array().unwrap();
    let version: Vec<u64> = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let this = series
        .iter()
        .find(|s| s["major"] == version[0] && s["minor"] == version[1])
        .unwrap_or_else(|| panic!("no release series for {}", env!("CARGO_PKG_VERSION")));
    assert!(
        ["v1beta1", "v1beta2"].contains(&this["contract"].as_str().unwrap()),
        "{this}"
    );
    // The CRDs carry the contract label CAPI core looks up for that contract.
    let contract = this["contract"].as_str().unwrap();
    for c in crd::all()
        .iter()
        .filter(|c| c.spec.group == "infrastructure.cluster.x-k8s.io")
    {
        let labels = c.metadata.labels.as_ref().expect("contract labels");
        assert_eq!(
            labels
                .get(&format!("cluster.x-k8s.io/{contract}"))
                .map(String::as_str),
            Some("v1alpha3"),
            "{}",
            c.spec.names.kind
        );
    }
}

#[test]
fn variables_are_the_documented_ones() {
    let components = manifests::infrastructure_components();
    let template = manifests::CLUSTER_TEMPLATE;
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        required(&components),
        set(&[
            "KUBE_BRIDGE_BOX_ENDPOINT",
            "KUBE_BRIDGE_BOX_ID",
            "KUBE_BRIDGE_IMAGE"
        ])
    );
    assert_eq!(
        with_default(&components),
        set(&[
            "KUBE_BRIDGE_CREDENTIALS_SECRET",
            "KUBE_BRIDGE_LOG",
            "KUBE_BRIDGE_REPLICAS"
        ])
    );
    assert_eq!(
        required(template),
        set(&[
            "CLUSTER_NAME",
            "CONTROL_PLANE_ENDPOINT",
            "KUBERNETES_VERSION"
        ])
    );
    assert_eq!(
        with_default(template),
        set(&[
            "CONTROL_PLANE_MACHINE_COUNT",
            "CONTROL_PLANE_PORT",
            "CONTROL_PLANE_SERVERCLASS",
            "POD_CIDR",
            "SERVICE_CIDR",
            "TALOS_VERSION",
            "WORKER_MACHINE_COUNT",
            "WORKER_SERVERCLASS",
        ])
    );
    // A required name never also appears with a default (clusterctl would ask for it anyway).
    assert!(required(&components).is_disjoint(&with_default(&components)));
    assert!(required(template).is_disjoint(&with_default(template)));
    // No bare `$NAME` that envsubst would eat.
    assert_eq!(bare_dollars(&components), Vec::<&str>::new());
    assert_eq!(bare_dollars(template), Vec::<&str>::new());
    // The README documents every variable.
    let readme =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    for v in required(&components)
        .iter()
        .chain(&with_default(&components))
        .chain(&required(template))
        .chain(&with_default(template))
    {
        assert!(
            readme.contains(&format!("`{v}`")),
            "README does not document `{v}`"
        );
    }
    // Without the required values, substitution names each missing one.
    let missing = substitute(template, &BTreeMap::new()).unwrap_err();
    assert!(
        missing.contains(&"CLUSTER_NAME".to_owned())
            && missing.contains(&"KUBERNETES_VERSION".to_owned())
    );
}

#[test]
fn components_expand_to_the_namespace_rbac_deployment_and_generated_crds() {
    let text = substitute(&manifests::infrastructure_components(), &sample_values()).unwrap();
    let objs = docs(&text);
    let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds[..5],
        [
            "Namespace",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment"
        ]
    );
    let ns = objs[0]["metadata"]["name"].as_str().unwrap();
    for o in &objs {
        let namespaced = matches!(o["kind"].as_str().unwrap(), "ServiceAccount" | "Deployment");
        assert_eq!(
            o["metadata"]["namespace"].as_str(),
            namespaced.then_some(ns),
            "{}",
            o["kind"]
        );
    }
    let crds: Vec<Value> = crd::all()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    assert_eq!(objs[5..], crds[..], "the CRDs, exactly as generated");
    let deploy = &objs[4];
    assert_eq!(deploy["spec"]["replicas"], 1);
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example/kube-bridge:v0.1.0");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env["KUBE_BRIDGE_BOX"]["value"], "https://10.5.0.1:8443");
    assert_eq!(env["KUBE_BRIDGE_BOX_ID"]["value"], "rack-12");
    assert_eq!(env["KUBE_BRIDGE_LOG"]["value"], "info");
    // The box credentials: the Secret `appliance ctl bridge enroll` prints (its default name,
    // in this namespace), mounted where KUBE_BRIDGE_CREDENTIALS points, readable by the
    // non-root user (fsGroup).
    assert_eq!(ns, "kube-bridge-system");
    let pod = &deploy["spec"]["template"]["spec"];
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "kube-bridge-box")
        .expect("a volume of the kube-bridge-box Secret");
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == volume["name"])
        .expect("the Secret mounted");
    assert_eq!(mount["mountPath"], env["KUBE_BRIDGE_CREDENTIALS"]["value"]);
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        pod["securityContext"]["fsGroup"],
        pod["securityContext"]["runAsUser"]
    );
    // Every resource the ClusterRole grants on our groups is one of our CRDs (or its status).
    let plurals: BTreeSet<String> = crd::all()
        .iter()
        .map(|c| c.spec.names.plural.clone())
        .collect();
    for rule in objs[2]["rules"].as_array().unwrap() {
        let groups = rule["apiGroups"].as_array().unwrap();
        if groups
            .iter()
            .any(|g| g == "metal.sidero.dev" || g == "infrastructure.cluster.x-k8s.io")
        {
            for r in rule["resources"].as_array().unwrap() {
                let base = r.as_str().unwrap().trim_end_matches("/status");
                assert!(plurals.contains(base), "RBAC names unknown resource {r}");
            }
        }
    }
}

#[test]
fn cluster_template_expands_to_talos_cluster_objects_our_schemas_accept() {
    let text = substitute(manifests::CLUSTER_TEMPLATE, &sample_values()).unwrap();
    let mut objs = docs(&text);
    let kinds: BTreeSet<(String, String)> = objs
        .iter()
        .map(|o| {
            (
                o["apiVersion"].as_str().unwrap().to_owned(),
                o["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (api, kind) in [
        ("cluster.x-k8s.io/v1beta1", "Cluster"),
        ("cluster.x-k8s.io/v1beta1", "MachineDeployment"),
        (
            "controlplane.cluster.x-k8s.io/v1alpha3",
            "TalosControlPlane",
        ),
        ("bootstrap.cluster.x-k8s.io/v1alpha3", "TalosConfigTemplate"),
        ("infrastructure.cluster.x-k8s.io/v1alpha3", "MetalCluster"),
        (
            "infrastructure.cluster.x-k8s.io/v1alpha3",
            "MetalMachineTemplate",
        ),
    ] {
        assert!(
            kinds.contains(&(api.into(), kind.into())),
            "{api} {kind} missing"
        );
    }
    let ours: BTreeMap<String, Value> = crd::all()
        .into_iter()
        .map(|c| {
            let v = serde_json::to_value(&c).unwrap();
            (
                c.spec.names.kind.clone(),
                v["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone(),
            )
        })
        .collect();
    let mut checked = 0;
    for o in objs.iter_mut() {
        assert!(
            o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("management-cluster"))
        );
        assert!(
            o["metadata"].get("namespace").is_none(),
            "clusterctl sets the namespace"
        );
        if let Some(schema) = ours.get(o["kind"].as_str().unwrap()) {
            let errors = support::schema::admit(schema, o);
            assert!(errors.is_empty(), "{}: {errors:?}", o["kind"]);
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "MetalCluster + two MetalMachineTemplates");
    let cluster = objs.iter().find(|o| o["kind"] == "MetalCluster").unwrap();
    assert_eq!(
        cluster["spec"]["controlPlaneEndpoint"],
        serde_json::json!({"host": "10.5.0.10", "port": 6443})
    );
}
