//! Strategic merge: Talos's documented rules, directives, errors, and random inputs.

use proptest::prelude::*;
use serde_json::json;

use super::*;

fn yaml(s: &str) -> Value {
    yaml_serde::from_str(s).unwrap()
}

fn machine(s: &str) -> Vec<Value> {
    vec![yaml(s)]
}

fn one(docs: Vec<Value>) -> Value {
    assert_eq!(docs.len(), 1, "{docs:?}");
    docs.into_iter().next().unwrap()
}

#[test]
fn maps_merge_and_scalars_replace() {
    let config = machine(
        "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.2/24]\n  install:\n    disk: /dev/sda\n",
    );
    let out = one(apply(
        &config,
        "machine:\n  network:\n    hostname: worker1\n  install:\n    disk: /dev/vda\n",
    )
    .unwrap());
    assert_eq!(
        out,
        yaml(
            "version: v1alpha1\nmachine:\n  network:\n    hostname: worker1\n    interfaces:\n      - interface: eth0\n        addresses: [10.0.0.2/24]\n  install:\n    disk: /dev/vda\n"
        )
    );
}

#[test]
fn lists_append_except_the_replaced_ones() {
    let config = machine(
        "version: v1alpha1\nmachine:\n  certSANs: [a]\ncluster:\n  network:\n    podSubnets: [10.244.0.0/16]\n    serviceSubnets: [10.96.0.0/12]\n",
    );
    let out = one(apply(
        &config,
        "machine:\n  certSANs: [b]\ncluster:\n  network:\n    podSubnets: [10.10.0.0/16]\n",
    )
    .unwrap());
    assert_eq!(out["machine"]["certSANs"], json!(["a", "b"]));
    assert_eq!(
        out["cluster"]["network"]["podSubnets"],
        json!(["10.10.0.0/16"])
    );
    assert_eq!(
        out["cluster"]["network"]["serviceSubnets"],
        json!(["10.96.0.0/12"])
    );
}

#[test]
fn interfaces_merge_by_name_or_selector_and_vlans_by_id() {
    let config = machine(
        "version: v1alpha1\nmachine:\n  network:\n    interfaces:\n      - interface: eth0\n        mtu: 1500\n        addresses: [10.0.0.2/24]\n        vlans:\n          - vlanId: 10\n            mtu: 1500\n      - deviceSelector: {hardwareAddr: 'aa:*'}\n        dhcp: true\n",
    );
    let patch = "machine:\n  network:\n    interfaces:\n      - interface: eth0\n        mtu: 9000\n        addresses: [10.0.0.3/24]\n        vlans:\n          - vlanId: 10\n            mtu: 9000\n          - vlanId: 20\n      - deviceSelector: {hardwareAddr: 'aa:*'}\n        dhcp: false\n      - interface: eth1\n        dhcp: true\n";
    let out = one(apply(&config, patch).unwrap());
    let ifs = out["machine"]["network"]["interfaces"].as_array().unwrap();
    assert_eq!(ifs.len(), 3, "{ifs:?}");
    assert_eq!(ifs[0]["mtu"], json!(9000));
    assert_eq!(ifs[0]["addresses"], json!(["10.0.0.2/24", "10.0.0.3/24"]));
    assert_eq!(
        ifs[0]["vlans"],
        json!([{"vlanId": 10, "mtu": 9000}, {"vlanId": 20}])
    );
    assert_eq!(ifs[1]["dhcp"], json!(false));
    assert_eq!(ifs[2], json!({"interface": "eth1", "dhcp": true}));
}

#[test]
fn audit_policy_is_replaced_whole() {
    let config = machine(
        "version: v1alpha1\ncluster:\n  apiServer:\n    auditPolicy:\n      apiVersion: audit.k8s.io/v1\n      rules: [{level: Metadata}]\n",
    );
    let out = one(apply(&config, "cluster:\n  apiServer:\n    auditPolicy:\n      kind: Policy\n      rules: [{level: None}]\n").unwrap());
    assert_eq!(
        out["cluster"]["apiServer"]["auditPolicy"],
        json!({"kind": "Policy", "rules": [{"level": "None"}]})
    );
}

#[test]
fn zero_values_and_null_change_nothing_but_false_does() {
    let config = machine(
        "version: v1alpha1\nmachine:\n  type: worker\n  kubelet:\n    port: 10250\n  install:\n    wipe: true\n",
    );
    let out = one(apply(&config, "machine:\n  type: ''\n  kubelet:\n    port: 0\n  install:\n    wipe: false\n    disk: null\n  new: ''\n").unwrap());
    assert_eq!(
        out,
        yaml(
            "version: v1alpha1\nmachine:\n  type: worker\n  kubelet:\n    port: 10250\n  install:\n    wipe: false\n"
        )
    );
}

#[test]
fn delete_directive_removes_maps_keyed_elements_and_documents() {
    let config = vec![
        yaml("apiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: grpc://x\n"),
        yaml(
            "version: v1alpha1\nmachine:\n  network:\n    hostname: a\n    interfaces:\n      - interface: eth0\n      - interface: eth1\n  install:\n    disk: /dev/sda\n",
        ),
    ];
    let out = apply(
        &config,
        "machine:\n  install:\n    $patch: delete\n  network:\n    interfaces:\n      - interface: eth0\n        $patch: delete\n      - interface: eth9\n        $patch: delete\n---\napiVersion: v1alpha1\nkind: SideroLinkConfig\n$patch: delete\n",
    )
    .unwrap();
    assert_eq!(
        one(out),
        yaml(
            "version: v1alpha1\nmachine:\n  network:\n    hostname: a\n    interfaces:\n      - interface: eth1\n"
        )
    );
}

#[test]
fn typed_documents_merge_by_kind_and_name_or_are_appended() {
    let config = vec![
        yaml("version: v1alpha1\nmachine: {}\n"),
        yaml(
            "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: nut\nconfigFiles:\n  - mountPath: /a\n    content: old\nenvironment: [A=1]\n",
        ),
    ];
    let patch = "apiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: nut\nconfigFiles:\n  - mountPath: /a\n    content: new\n  - mountPath: /b\n    content: b\nenvironment: [B=2]\n---\napiVersion: v1alpha1\nkind: ExtensionServiceConfig\nname: other\nenvironment: [C=3]\n";
    let out = apply(&config, patch).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(
        out[1]["configFiles"],
        json!([{"mountPath": "/a", "content": "new"}, {"mountPath": "/b", "content": "b"}])
    );
    assert_eq!(out[1]["environment"], json!(["A=1", "B=2"]));
    assert_eq!(
        out[2],
        json!({"apiVersion": "v1alpha1", "kind": "ExtensionServiceConfig", "name": "other", "environment": ["C=3"]})
    );
}

#[test]
fn errors_name_the_document_and_path() {
    let config = machine("version: v1alpha1\nmachine:\n  certSANs: [a]\n  type: worker\n");
    let err = |patch: &str| apply(&config, patch).unwrap_err().to_string();
    assert_eq!(
        err("machine:\n  certSANs:\n    x: 1\n"),
        "patch document 1: at machine.certSANs: cannot merge a mapping into a list"
    );
    assert_eq!(
        err("machine:\n  type: 3\n"),
        "patch document 1: at machine.type: cannot merge a number into a string"
    );
    assert_eq!(
        err("---\nmachine: {}\n---\n- a\n"),
        "patch document 2: a patch document must be a YAML mapping"
    );
    assert_eq!(
        err("machine:\n  certSANs:\n    - $patch: delete\n"),
        "patch document 1: at machine.certSANs: `$patch: delete` in a list that is not merged by key"
    );
    assert_eq!(
        err("machine:\n  $patch: replace\n"),
        "patch document 1: at machine: unsupported directive `$patch: replace` (only `delete`)"
    );
    assert_eq!(
        err("$patch: delete\n"),
        "patch document 1: `$patch: delete` of the whole v1alpha1 document"
    );
    assert!(err("machine: [\n").starts_with("not valid YAML"));
    let no_machine = vec![yaml("apiVersion: v1alpha1\nkind: SideroLinkConfig\n")];
    assert_eq!(
        apply(&no_machine, "machine: {}\n").unwrap_err().to_string(),
        "patch document 1: the config has no `version: v1alpha1` document to patch"
    );
}

#[test]
fn empty_patch_is_identity() {
    let config = machine("version: v1alpha1\nmachine: {type: worker}\n");
    assert_eq!(apply(&config, "").unwrap(), config);
    assert_eq!(apply(&config, "---\n---\n").unwrap(), config);
}

fn arb_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..3).prop_map(|n| json!(n)),
        "[a-c$]{0,2}".prop_map(Value::String),
    ]
}

fn arb_value() -> impl Strategy<Value = Value> {
    arb_scalar().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("machine".to_string()),
                    Just("network".to_string()),
                    Just("interfaces".to_string()),
                    Just("interface".to_string()),
                    Just("$patch".to_string()),
                    "[a-c]".prop_map(String::from),
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Maps of non-zero scalars only: merging them twice is the same as once.
fn arb_scalar_tree() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        (1i64..5).prop_map(|n| json!(n)),
        "[a-c]{1,2}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop::collection::btree_map("[a-c]", inner, 1..3)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    })
}

proptest! {
    /// Random configs and patches (directives included) never panic.
    #[test]
    fn random_inputs_never_panic(config in arb_value(), patch in arb_value()) {
        let mut doc = json!({"version": "v1alpha1"});
        if let Value::Object(m) = config {
            doc.as_object_mut().unwrap().extend(m);
        }
        let text = yaml_serde::to_string(&patch).unwrap();
        let _ = apply(&[doc], &text);
    }

    #[test]
    fn scalar_merges_are_idempotent(config in arb_scalar_tree(), patch in arb_scalar_tree()) {
        let doc = json!({"version": "v1alpha1", "c": config});
        let text = yaml_serde::to_string(&json!({"c": patch})).unwrap();
        if let Ok(once) = apply(std::slice::from_ref(&doc), &text) {
            prop_assert_eq!(apply(&once, &text).unwrap(), once);
        }
    }
}
