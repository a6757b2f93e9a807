//! The sync rule as pure functions over JSON: what the bridge writes to the cluster for a box
//! object (the box owns observation) and to the box for a cluster object (the cluster owns
//! intent). No IO; `sync.rs` does the writes. The who-wins table in `kube-bridge/README.md`
//! is this module's contract.

use crate::crd::capi::{ServerBindingSpec, ServerBindingStatus};
use crate::crd::common::HardwareInformation;
use crate::crd::metal::{
    Bmc, EnvironmentSpec, EnvironmentStatus, ServerClassSpec, ServerClassStatus, ServerSpec,
    ServerStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Label on every object a bridge mirrors from its box: the box id.
pub const BOX_LABEL: &str = "appliance.sidero.dev/box";
/// Prefix of the finalizer each box's bridge keeps on the cluster objects it mirrors, so a
/// delete in the cluster reaches the box even when the bridge was away when it happened.
pub const FINALIZER_PREFIX: &str = "box.appliance.sidero.dev/";
/// The marker the box shows instead of an inline BMC password.
pub const REDACTED: &str = "<redacted>";
/// Spec fields of a Server the cluster owns (intent); the rest of the spec is observed.
pub const SERVER_INTENT: [&str; 11] = [
    "accepted",
    "cordoned",
    "configPatches",
    "strategicPatches",
    "environmentRef",
    "bootFromDiskMethod",
    "pxeBootAlways",
    "pxeMode",
    "hostname",
    "managementApi",
    "bmc",
];

pub fn finalizer(box_id: &str) -> String {
    format!("{FINALIZER_PREFIX}{box_id}")
}

/// `value` read through the CRD type `T` and written back: drops what the CRD does not
/// have (the box's extra fields, such as `status.state`). `None` when it does not fit.
pub fn typed<T: DeserializeOwned + Serialize>(value: &Value) -> Option<Value> {
    let t: T = serde_json::from_value(value.clone()).ok()?;
    serde_json::to_value(t).ok()
}

/// For comparing specs written by different serialisers: drops nulls, `false`, empty
/// strings, arrays and objects (all mean "unset" in Sidero's types).
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let n = normalize(v);
                if !is_unset(&n) {
                    out.insert(k.clone(), n);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// The BMC as it may leave the box: endpoint, port, interface and secret references. An
/// inline user or password never does.
pub fn public_bmc(bmc: &Value) -> Option<Value> {
    let mut out = Map::new();
    for key in ["endpoint", "port", "interface", "userFrom", "passFrom"] {
        if let Some(v) = bmc.get(key).filter(|v| !v.is_null()) {
            out.insert(key.into(), v.clone());
        }
    }
    out.get("endpoint")?;
    let b: Bmc = serde_json::from_value(Value::Object(out)).ok()?;
    serde_json::to_value(b).ok()
}

fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// A Server the cluster does not have yet, as first created from the box: its labels, the
/// intent fields as the box has them (seeded once; the cluster owns them from then on) and
/// the public part of its BMC.
pub fn server_seed(box_server: &Value, box_id: &str) -> Value {
    let mut spec = box_server["spec"].clone();
    if let Some(m) = spec.as_object_mut() {
        match m.get("bmc").and_then(public_bmc) {
            Some(b) => m.insert("bmc".into(), b),
            None => m.remove("bmc"),
        };
    }
    let spec = typed::<ServerSpec>(&spec).unwrap_or_else(|| json!({}));
    let mut labels = labels_of(box_server);
    labels.insert(BOX_LABEL.into(), box_id.into());
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": "Server",
        "metadata": {
            "name": box_server["metadata"]["name"],
            "labels": labels,
            "finalizers": [finalizer(box_id)],
        },
        "spec": spec,
    })
}

/// The observed part of a Server's spec and metadata, applied by the bridge's field
/// manager on every change: the box label, the bridge's finalizer and the hardware.
pub fn server_observed(box_server: &Value, box_id: &str) -> Value {
    let hardware = typed::<HardwareInformation>(&box_server["spec"]["hardware"]);
    let mut spec = json!({});
    if let Some(h) = hardware {
        spec["hardware"] = h;
    }
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": "Server",
        "metadata": {
            "name": box_server["metadata"]["name"],
            "labels": { BOX_LABEL: box_id },
            "finalizers": [finalizer(box_id)],
        },
        "spec": spec,
    })
}

/// The Server status as the box observes it (the CRD's fields only).
pub fn server_status(box_server: &Value) -> Value {
    typed::<ServerStatus>(&box_server["status"]).unwrap_or_else(|| json!({}))
}

/// A status-subresource apply body.
pub fn status_body(api_version: &str, kind: &str, name: &str, status: Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "status": status})
}

/// Does the cluster Server already carry what [`server_observed`] and [`server_status`]
/// would write?
pub fn server_in_sync(cluster: &Value, box_server: &Value, box_id: &str) -> bool {
    let observed = server_observed(box_server, box_id);
    cluster["metadata"]["labels"][BOX_LABEL] == box_id
        && has_finalizer(cluster, &finalizer(box_id))
        && normalize(&cluster["spec"]["hardware"]) == normalize(&observed["spec"]["hardware"])
        && normalize(&typed::<ServerStatus>(&cluster["status"]).unwrap_or_default())
            == normalize(&server_status(box_server))
}

pub fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == f))
}

/// The spec fields the cluster sets on an existing Server that was mirrored without them
/// (a BMC the box learned after the Server was created): filled once, never overwritten.
pub fn server_fill(cluster: &Value, box_server: &Value) -> Option<Value> {
    let has = |k: &str| !is_unset(&normalize(&cluster["spec"][k]));
    if !has("bmc")
        && let Some(b) = box_server["spec"].get("bmc").and_then(public_bmc)
    {
        return Some(json!({"spec": {"bmc": b}}));
    }
    None
}

/// The box's Server with the cluster's intent: the intent fields and labels of the cluster
/// object over the box's object (status dropped: the box keeps it). `None` when the box
/// already has them. An inline BMC user or password from the cluster, and the redaction
/// marker above all, is never written: the box keeps its own.
pub fn server_intent(box_server: &Value, cluster: &Value) -> Option<Value> {
    let cluster_spec = typed::<ServerSpec>(&cluster["spec"]).unwrap_or_else(|| json!({}));
    let mut desired = box_server.clone();
    if let Some(m) = desired.as_object_mut() {
        m.remove("status");
    }
    let spec = desired["spec"].as_object_mut()?;
    for key in SERVER_INTENT {
        if key == "bmc" {
            continue;
        }
        match cluster_spec.get(key) {
            Some(v) if !v.is_null() => spec.insert(key.into(), v.clone()),
            _ => spec.remove(key),
        };
    }
    if let Some(cb) = cluster_spec.get("bmc").and_then(public_bmc) {
        let mut b = spec
            .get("bmc")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        for key in ["endpoint", "port", "interface", "userFrom", "passFrom"] {
            match cb.get(key) {
                Some(v) => b[key] = v.clone(),
                None => {
                    b.as_object_mut().map(|m| m.remove(key));
                }
            }
        }
        // Credentials by reference replace the box's inline ones; inline ones stay on the box.
        for (from, inline) in [("userFrom", "user"), ("passFrom", "pass")] {
            if cb.get(from).is_some() {
                b.as_object_mut().map(|m| m.remove(inline));
            }
        }
        spec.insert("bmc".into(), b);
    }
    let mut labels = labels_of(cluster);
    labels.remove(BOX_LABEL);
    desired["metadata"] = json!({"name": box_server["metadata"]["name"], "labels": labels});
    // The box's annotations are its own record (the agent's pinned key, the owner, the
    // junk-UUID mark): the document carries them unchanged, since an Apply replaces the
    // object and a Server without its pinned key would refuse its running agent.
    if let Some(a) = box_server["metadata"]
        .get("annotations")
        .filter(|a| a.is_object())
    {
        desired["metadata"]["annotations"] = a.clone();
    }
    if normalize(&desired["spec"]) == normalize(&box_server["spec"])
        && labels == labels_of(box_server)
    {
        return None;
    }
    Some(desired)
}

/// ServerClass or Environment: the cluster's spec as the box document, `None` when the box
/// already has it.
pub fn spec_intent(kind: &str, box_obj: Option<&Value>, cluster: &Value) -> Option<Value> {
    let spec = match kind {
        "ServerClass" => typed::<ServerClassSpec>(&cluster["spec"]),
        _ => typed::<EnvironmentSpec>(&cluster["spec"]),
    }
    .unwrap_or_else(|| json!({}));
    let mut labels = labels_of(cluster);
    labels.remove(BOX_LABEL);
    if let Some(b) = box_obj
        && normalize(&b["spec"]) == normalize(&spec)
        && labels_of(b) == labels
    {
        return None;
    }
    Some(json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": kind,
        "metadata": {"name": cluster["metadata"]["name"], "labels": labels},
        "spec": spec,
    }))
}

/// A ServerClass or Environment created on the box that the cluster does not have: created
/// in the cluster with the box's spec (and the bridge's finalizer).
pub fn spec_seed(kind: &str, box_obj: &Value, box_id: &str) -> Value {
    let spec = match kind {
        "ServerClass" => typed::<ServerClassSpec>(&box_obj["spec"]),
        _ => typed::<EnvironmentSpec>(&box_obj["spec"]),
    }
    .unwrap_or_else(|| json!({}));
    json!({
        "apiVersion": "metal.sidero.dev/v1alpha2",
        "kind": kind,
        "metadata": {
            "name": box_obj["metadata"]["name"],
            "labels": labels_of(box_obj),
            "finalizers": [finalizer(box_id)],
        },
        "spec": spec,
    })
}

/// Environment status as the box observes it.
pub fn environment_status(box_env: &Value) -> Value {
    typed::<EnvironmentStatus>(&box_env["status"]).unwrap_or_else(|| json!({}))
}

/// A ServerClass's status when several boxes share the class: the names the other boxes
/// listed (servers the cluster knows under another box label) and this box's own lists.
pub fn class_status(
    cluster_status: &Value,
    box_status: &Value,
    other_boxes_servers: &BTreeSet<String>,
) -> Value {
    let list = |v: &Value, key: &str| -> BTreeSet<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = ServerClassStatus::default();
    for (key, field) in [
        ("serversAvailable", &mut out.servers_available),
        ("serversInUse", &mut out.servers_in_use),
    ] {
        let mut names: BTreeSet<String> = list(cluster_status, key)
            .into_iter()
            .filter(|n| other_boxes_servers.contains(n))
            .collect();
        names.extend(list(box_status, key));
        *field = names.into_iter().collect();
    }
    serde_json::to_value(out).unwrap_or_else(|_| json!({}))
}

/// A box ServerBinding as the cluster's: spec and status (CRD fields), the box label, the
/// bridge's finalizer and the MetalMachine's cluster-name label (as Sidero copies it).
pub fn binding(box_binding: &Value, box_id: &str, cluster_name: Option<&str>) -> Value {
    let spec = typed::<ServerBindingSpec>(&box_binding["spec"]).unwrap_or_else(|| json!({}));
    let mut labels = json!({ BOX_LABEL: box_id });
    if let Some(c) = cluster_name {
        labels["cluster.x-k8s.io/cluster-name"] = json!(c);
    }
    json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3",
        "kind": "ServerBinding",
        "metadata": {
            "name": box_binding["metadata"]["name"],
            "labels": labels,
            "finalizers": [finalizer(box_id)],
        },
        "spec": spec,
    })
}

pub fn binding_status(box_binding: &Value) -> Value {
    typed::<ServerBindingStatus>(&box_binding["status"]).unwrap_or_else(|| json!({}))
}

/// Does the cluster's ServerBinding carry what [`binding`] and [`binding_status`] write?
pub fn binding_in_sync(cluster: &Value, desired: &Value, status: &Value) -> bool {
    let labels_ok = desired["metadata"]["labels"].as_object().is_some_and(|m| {
        m.iter()
            .all(|(k, v)| &cluster["metadata"]["labels"][k] == v)
    });
    labels_ok
        && has_finalizer(
            cluster,
            desired["metadata"]["finalizers"][0].as_str().unwrap_or(""),
        )
        && normalize(&typed::<ServerBindingSpec>(&cluster["spec"]).unwrap_or_default())
            == normalize(&desired["spec"])
        && normalize(&typed::<ServerBindingStatus>(&cluster["status"]).unwrap_or_default())
            == normalize(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn box_server() -> Value {
        json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
            "metadata": {"name": "u1", "labels": {"rack": "r1"}},
            "spec": {
                "accepted": true, "cordoned": false, "hostname": "n1",
                "hardware": {"system": {"uuid": "u1", "manufacturer": "Dell Inc."}},
                "bmc": {"endpoint": "10.0.0.9", "port": 623, "interface": "lanplus",
                        "user": "root", "pass": REDACTED},
            },
            "status": {"ready": true, "inUse": false, "isClean": true, "power": "off",
                       "state": "available", "conditions": [], "addresses": []},
        })
    }

    #[test]
    fn seed_carries_intent_and_only_the_public_bmc() {
        let s = server_seed(&box_server(), "rack-1");
        assert_eq!(s["metadata"]["labels"][BOX_LABEL], "rack-1");
        assert_eq!(s["metadata"]["labels"]["rack"], "r1");
        assert_eq!(s["spec"]["accepted"], true);
        assert_eq!(s["spec"]["bmc"]["endpoint"], "10.0.0.9");
        assert_eq!(s["spec"]["bmc"]["port"], 623);
        assert!(s["spec"]["bmc"].get("pass").is_none());
        assert!(s["spec"]["bmc"].get("user").is_none());
        assert!(!s.to_string().contains(REDACTED));
        let st = server_status(&box_server());
        assert!(st.get("state").is_none(), "the box's own fields stay home");
        assert_eq!(st["isClean"], true);
    }

    #[test]
    fn observed_state_in_sync_after_writing_it() {
        let b = box_server();
        let mut cluster = server_seed(&b, "rack-1");
        assert!(!server_in_sync(&cluster, &b, "rack-1"), "no status yet");
        cluster["status"] = server_status(&b);
        assert!(server_in_sync(&cluster, &b, "rack-1"));
        cluster["status"]["power"] = json!("on");
        assert!(!server_in_sync(&cluster, &b, "rack-1"));
    }

    #[test]
    fn cluster_intent_reaches_the_box_without_secrets_or_markers() {
        let b = box_server();
        let mut cluster = server_seed(&b, "rack-1");
        assert_eq!(server_intent(&b, &cluster), None, "nothing to write");
        cluster["spec"]["cordoned"] = json!(true);
        cluster["spec"]["bmc"]["pass"] = json!(REDACTED);
        cluster["spec"]["bmc"]["user"] = json!("stolen");
        cluster["metadata"]["labels"]["zone"] = json!("a");
        let mut b = b;
        b["metadata"]["annotations"] = json!({"appliance.sidero.dev/agent-key": "k1"});
        let d = server_intent(&b, &cluster).unwrap();
        assert_eq!(
            d["metadata"]["annotations"],
            json!({"appliance.sidero.dev/agent-key": "k1"}),
            "the box's annotations (the agent's pinned key) go back unchanged"
        );
        assert_eq!(d["spec"]["cordoned"], true);
        assert_eq!(d["metadata"]["labels"]["zone"], "a");
        assert!(d["metadata"]["labels"].get(BOX_LABEL).is_none());
        assert!(d.get("status").is_none());
        // The box's own inline credentials are kept (its marker echoed means "keep"); the
        // cluster's never replace them.
        assert_eq!(d["spec"]["bmc"]["user"], "root");
        assert_eq!(d["spec"]["hardware"], b["spec"]["hardware"]);
        // Secret references from the cluster replace inline credentials on the box.
        cluster["spec"]["bmc"]["passFrom"] =
            json!({"secretKeyRef": {"name": "bmc", "key": "pass", "namespace": "default"}});
        let d = server_intent(&b, &cluster).unwrap();
        assert!(d["spec"]["bmc"].get("pass").is_none());
        assert_eq!(d["spec"]["bmc"]["passFrom"]["secretKeyRef"]["name"], "bmc");
    }

    #[test]
    fn class_status_keeps_other_boxes_names() {
        let cluster = json!({"serversAvailable": ["a1", "b1", "gone"], "serversInUse": ["b2"]});
        let mine = json!({"serversAvailable": ["a2"], "serversInUse": []});
        let others: BTreeSet<String> = ["b1", "b2"].map(String::from).into();
        let s = class_status(&cluster, &mine, &others);
        assert_eq!(
            s,
            json!({"serversAvailable": ["a2", "b1"], "serversInUse": ["b2"]})
        );
    }

    #[test]
    fn spec_intent_only_when_different() {
        let cluster = json!({"metadata": {"name": "gpu"}, "spec": {"selector": {"matchLabels": {"gpu": "yes"}}}});
        let d = spec_intent("ServerClass", None, &cluster).unwrap();
        assert_eq!(d["spec"]["selector"]["matchLabels"]["gpu"], "yes");
        assert_eq!(spec_intent("ServerClass", Some(&d), &cluster), None);
    }
}
