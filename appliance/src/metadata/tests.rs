//! Config assembly: patch order (class, server, allocation), node label, errors.

use serde_json::json;

use super::*;

fn server(patches: Value) -> Server {
    let doc = json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server",
        "metadata": {"name": "4c4c4544-0042-3510-8052-b4c04f4e3132"},
        "spec": {"accepted": true, "configPatches": patches}});
    match Object::from_json(Kind::Server, &doc.to_string()).unwrap() {
        Object::Server(s) => s,
        _ => unreachable!(),
    }
}

fn class(patches: Value) -> ServerClass {
    let doc = json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass",
        "metadata": {"name": "workers"}, "spec": {"configPatches": patches}});
    match Object::from_json(Kind::ServerClass, &doc.to_string()).unwrap() {
        Object::ServerClass(c) => c,
        _ => unreachable!(),
    }
}

fn alloc(data: &str, patches: Vec<Value>) -> AllocationRecord {
    AllocationRecord {
        owner: "default/m1".into(),
        server_class: Some("workers".into()),
        bootstrap_data: data.into(),
        config_patches: patches,
        environment: None,
        time_ms: 0,
    }
}

const CONFIG: &str = "version: v1alpha1\nmachine:\n  type: worker\n  install:\n    disk: /dev/sda\ncluster:\n  name: c1\n";

fn yaml(s: &str) -> Value {
    yaml_serde::from_str(s).unwrap()
}

#[test]
fn class_then_server_then_allocation_patches_and_node_label() {
    let c = class(json!([
        {"op": "replace", "path": "/machine/install/disk", "value": "/dev/vda"},
        {"op": "add", "path": "/machine/install/wipe", "value": true}
    ]));
    // The server patch sees the class patch's result (replace of a path the class added).
    let s = server(json!([{"op": "replace", "path": "/machine/install/wipe", "value": false}]));
    let a = alloc(
        CONFIG,
        vec![json!({"op": "add", "path": "/cluster/id", "value": "abc"})],
    );
    let out = render(&s, Some(&c), &a).unwrap();
    assert_eq!(
        yaml(&out),
        json!({
            "version": "v1alpha1",
            "machine": {"type": "worker", "install": {"disk": "/dev/vda", "wipe": false},
                        "kubelet": {"extraArgs": {"node-labels": "metal.sidero.dev/uuid=4c4c4544-0042-3510-8052-b4c04f4e3132"}}},
            "cluster": {"name": "c1", "id": "abc"}
        })
    );
}

#[test]
fn node_label_is_appended_once() {
    let data = "version: v1alpha1\nmachine:\n  kubelet:\n    extraArgs:\n      node-labels: a=b\n";
    let out = render(&server(json!([])), None, &alloc(data, vec![])).unwrap();
    assert_eq!(
        yaml(&out)["machine"]["kubelet"]["extraArgs"]["node-labels"],
        json!("a=b,metal.sidero.dev/uuid=4c4c4544-0042-3510-8052-b4c04f4e3132")
    );
}

#[test]
fn multi_document_configs_patch_the_v1alpha1_document_only() {
    let data = "apiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: x\n---\nversion: v1alpha1\nmachine: {}\n";
    let s = server(json!([{"op": "add", "path": "/machine/type", "value": "controlplane"}]));
    let out = render(&s, None, &alloc(data, vec![])).unwrap();
    let docs: Vec<&str> = out.split("---\n").collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        yaml(docs[0]),
        json!({"apiVersion": "v1alpha1", "kind": "SideroLinkConfig", "apiUrl": "x"})
    );
    assert_eq!(yaml(docs[1])["machine"]["type"], json!("controlplane"));
}

#[test]
fn errors_are_clear() {
    let s = server(json!([]));
    let e = render(&s, None, &alloc("", vec![])).unwrap_err();
    assert!(matches!(e, RenderConfigError::NoBootstrapData(_)));
    assert_eq!(e.status(), StatusCode::NOT_FOUND);
    let e = render(&s, None, &alloc("machine: {}\n", vec![])).unwrap_err();
    assert!(e.to_string().contains("unknown config type"), "{e}");
    let e = render(&s, None, &alloc("version: v1alpha1\n: [\n", vec![])).unwrap_err();
    assert!(matches!(e, RenderConfigError::BadBootstrap { .. }), "{e}");
    // A patch on a missing path names its source and the operation.
    let bad = server(json!([{"op": "replace", "path": "/machine/nope", "value": 1}]));
    let e = render(&bad, None, &alloc(CONFIG, vec![])).unwrap_err();
    let msg = crate::error_chain(&e);
    assert!(
        msg.contains("Server 4c4c4544") && msg.contains("operation 0 (replace /machine/nope)"),
        "{msg}"
    );
    assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

fn with_strategic<T: serde::Serialize + serde::de::DeserializeOwned>(
    obj: &T,
    patches: &[&str],
) -> T {
    let mut v = serde_json::to_value(obj).unwrap();
    v["spec"]["strategicPatches"] = json!(patches);
    serde_json::from_value(v).unwrap()
}

#[test]
fn strategic_patches_follow_each_layers_json_patches() {
    // Class: JSON patch sets the disk, then a strategic patch adds a hostname and a document.
    let c = with_strategic(
        &class(json!([{"op": "replace", "path": "/machine/install/disk", "value": "/dev/vda"}])),
        &[
            "machine:\n  network:\n    hostname: from-class\n---\napiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: grpc://10.0.0.1:8081\n",
        ],
    );
    // Server: its strategic patch overrides the class's hostname and removes the document.
    let s = with_strategic(
        &server(json!([])),
        &[
            "machine:\n  network:\n    hostname: from-server\n",
            "apiVersion: v1alpha1\nkind: SideroLinkConfig\n$patch: delete\n",
        ],
    );
    let out = render(&s, Some(&c), &alloc(CONFIG, vec![])).unwrap();
    assert!(!out.contains("SideroLinkConfig"), "{out}");
    let doc = yaml(&out);
    assert_eq!(doc["machine"]["network"]["hostname"], json!("from-server"));
    assert_eq!(doc["machine"]["install"]["disk"], json!("/dev/vda"));
    assert_eq!(
        doc["machine"]["kubelet"]["extraArgs"]["node-labels"],
        json!("metal.sidero.dev/uuid=4c4c4544-0042-3510-8052-b4c04f4e3132")
    );
}

#[test]
fn a_bad_strategic_patch_names_its_source() {
    let s = with_strategic(
        &server(json!([])),
        &["machine: {}\n", "machine:\n  type: [x]\n"],
    );
    let e = render(&s, None, &alloc(CONFIG, vec![])).unwrap_err();
    let msg = crate::error_chain(&e);
    assert!(
        msg.contains("Server 4c4c4544-0042-3510-8052-b4c04f4e3132 strategicPatches[1]")
            && msg.contains("at machine.type: cannot merge a list into a string"),
        "{msg}"
    );
}
