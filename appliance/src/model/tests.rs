//! Boundary tests for the model: Sidero YAML in, the same YAML out; bad YAML refused with the
//! path of the offending field; nothing panics on arbitrary input.
//!
//! Fixtures live in `appliance/tests/fixtures/sidero/`, each naming its source.

use proptest::prelude::*;
use serde::Deserialize;
use serde::de::DeserializeSeed;

use super::*;

const SERVER_DOCS: &str = include_str!("../../tests/fixtures/sidero/server-docs-v0.6.yaml");
const SERVER_BMC_DOCS: &str = include_str!("../../tests/fixtures/sidero/server-bmc-docs-v0.6.yaml");
const SERVER_KUBECTL: &str = include_str!("../../tests/fixtures/sidero/server-kubectl-get.yaml");
const SERVERCLASS_DOCS: &str =
    include_str!("../../tests/fixtures/sidero/serverclass-docs-v0.6.yaml");
const SERVERCLASS_STALE: &str =
    include_str!("../../tests/fixtures/sidero/serverclass-stale-sample.yaml");
const ENVIRONMENT_DOCS: &str =
    include_str!("../../tests/fixtures/sidero/environment-docs-v0.6.yaml");
const ENVIRONMENT_SAMPLE: &str =
    include_str!("../../tests/fixtures/sidero/environment-sample.yaml");
const CAPI_OBJECTS: &str = include_str!("../../tests/fixtures/sidero/capi-objects.yaml");

const ALL_FIXTURES: [&str; 7] = [
    SERVER_DOCS,
    SERVER_BMC_DOCS,
    SERVER_KUBECTL,
    SERVERCLASS_DOCS,
    ENVIRONMENT_DOCS,
    ENVIRONMENT_SAMPLE,
    CAPI_OBJECTS,
];

/// Every non-empty YAML document of `text` as plain JSON values (what the user wrote).
fn raw_documents(text: &str) -> Vec<serde_json::Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|de| serde_json::Value::deserialize(de).expect("fixture is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// Adds what Sidero prints even when the user did not write it, so "reads back as
/// written" can be compared exactly: `spec.accepted`, the Server status booleans, the
/// ServerClass member lists, ServerBinding `metalMachineRef` and `status.ready`.
fn with_sidero_defaults(mut v: serde_json::Value) -> serde_json::Value {
    use serde_json::json;
    let kind = v["kind"].as_str().unwrap_or_default().to_string();
    let obj = v.as_object_mut().unwrap();
    let spec = obj.entry("spec").or_insert(json!({}));
    let fill = |m: &mut serde_json::Value, defaults: serde_json::Value| {
        for (k, d) in defaults.as_object().unwrap() {
            m.as_object_mut()
                .unwrap()
                .entry(k.clone())
                .or_insert(d.clone());
        }
    };
    match kind.as_str() {
        "Server" => fill(spec, json!({"accepted": false})),
        "ServerBinding" => fill(spec, json!({"metalMachineRef": {}})),
        _ => {}
    }
    if let Some(status) = obj.get_mut("status") {
        match kind.as_str() {
            "Server" => fill(
                status,
                json!({"ready": false, "inUse": false, "isClean": false}),
            ),
            "ServerClass" => fill(status, json!({"serversAvailable": [], "serversInUse": []})),
            "ServerBinding" => fill(status, json!({"ready": false})),
            _ => {}
        }
    }
    v
}

/// The round-trip property: parse → to_yaml → parse gives the same objects, the printed
/// object is exactly what the user wrote (as JSON values), and the stored JSON reads back.
/// Returns the kinds seen, in order.
fn check_round_trip(text: &str) -> Vec<Kind> {
    let objects = parse_documents(text).unwrap_or_else(|e| panic!("fixture refused: {e}"));
    let raw: Vec<_> = raw_documents(text)
        .into_iter()
        .map(with_sidero_defaults)
        .collect();
    assert_eq!(objects.len(), raw.len());
    for (obj, written) in objects.iter().zip(&raw) {
        let printed = serde_json::to_value(obj).unwrap();
        assert_eq!(
            &printed,
            written,
            "{} {} does not read back as written",
            obj.kind(),
            obj.name()
        );
        let again = parse_documents(&obj.to_yaml()).unwrap();
        assert_eq!(again, vec![obj.clone()], "to_yaml does not parse back");
        let stored = Object::from_json(obj.kind(), &obj.to_json()).unwrap();
        assert_eq!(&stored, obj, "to_json does not parse back");
    }
    objects.iter().map(Object::kind).collect()
}

#[test]
fn sidero_yaml_round_trips() {
    let cases: [(&str, &[Kind]); 7] = [
        (SERVER_DOCS, &[Kind::Server]),
        (SERVER_BMC_DOCS, &[Kind::Server, Kind::Server]),
        (SERVER_KUBECTL, &[Kind::Server]),
        (SERVERCLASS_DOCS, &[Kind::ServerClass]),
        (ENVIRONMENT_DOCS, &[Kind::Environment]),
        (ENVIRONMENT_SAMPLE, &[Kind::Environment]),
        (
            CAPI_OBJECTS,
            &[
                Kind::MetalMachine,
                Kind::ServerBinding,
                Kind::ServerClass,
                Kind::Environment,
            ],
        ),
    ];
    for (text, kinds) in cases {
        assert_eq!(check_round_trip(text), kinds);
    }
}

#[test]
fn typed_fields_carry_sidero_values() {
    let objs = parse_documents(SERVER_DOCS).unwrap();
    let Object::Server(s) = &objs[0] else {
        panic!("not a server")
    };
    let hw = s.spec.hardware.as_ref().unwrap();
    let cpu = &hw.compute.as_ref().unwrap().processors[0];
    assert_eq!(cpu.core_count, Some(8));
    assert_eq!(cpu.speed, Some(2400));
    assert_eq!(
        hw.memory.as_ref().unwrap().total_size.as_deref(),
        Some("32 GB")
    );
    let disk = &hw.storage.as_ref().unwrap().devices[0];
    assert_eq!(disk.size, Some(1_199_101_181_952));
    assert_eq!(disk.product_name.as_deref(), Some("PERC H730 Mini"));
    assert_eq!(s.spec.config_patches[0].op, PatchOp::Replace);
    assert!(!s.spec.accepted);
    assert_eq!(s.status, None);

    let objs = parse_documents(SERVER_KUBECTL).unwrap();
    let Object::Server(s) = &objs[0] else {
        panic!("not a server")
    };
    assert_eq!(
        s.spec.boot_from_disk_method,
        Some(BootFromDiskMethod::IpxeExit)
    );
    assert_eq!(s.spec.pxe_mode, Some(PxeMode::Uefi));
    let st = s.status.as_ref().unwrap();
    assert!(st.ready && st.in_use && !st.is_clean);
    assert_eq!(st.power, Some(PowerState::On));
    assert_eq!(st.conditions[1].status, ConditionStatus::False);
    assert_eq!(st.addresses[0].type_, AddressType::InternalIP);

    let objs = parse_documents(SERVERCLASS_DOCS).unwrap();
    let Object::ServerClass(c) = &objs[0] else {
        panic!("not a class")
    };
    assert_eq!(c.spec.qualifiers.hardware.len(), 2);
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sel = &c.spec.selector;
    assert!(sel.matches(&labels(&[("common-label", "true"), ("zone", "east")])));
    assert!(!sel.matches(&labels(&[("common-label", "true"), ("zone", "west")])));
    assert!(!sel.matches(&labels(&[
        ("common-label", "true"),
        ("zone", "east"),
        ("environment", "prod")
    ])));
}

#[test]
fn always_serialised_fields_are_printed() {
    // What Sidero prints even when unset: spec.accepted, Server status booleans,
    // ServerClass member lists, ServerBinding status.ready and metalMachineRef.
    let text = "\
apiVersion: metal.sidero.dev/v1alpha2
kind: Server
metadata: {name: s1}
status: {}
---
apiVersion: metal.sidero.dev/v1alpha2
kind: ServerClass
metadata: {name: c1}
status: {serversAvailable: null}
---
apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3
kind: ServerBinding
metadata: {name: b1}
status: {}
";
    let printed: Vec<serde_json::Value> = parse_documents(text)
        .unwrap()
        .iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    let expect = serde_json::json!([
        {"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "s1"},
         "spec": {"accepted": false}, "status": {"ready": false, "inUse": false, "isClean": false}},
        {"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "ServerClass", "metadata": {"name": "c1"},
         "spec": {}, "status": {"serversAvailable": [], "serversInUse": []}},
        {"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "ServerBinding",
         "metadata": {"name": "b1"}, "spec": {"metalMachineRef": {}}, "status": {"ready": false}},
    ]);
    assert_eq!(serde_json::Value::Array(printed), expect);
}

#[test]
fn empty_enum_strings_mean_unset() {
    // Sidero's webhook accepts "" for bootFromDiskMethod and pxeMode (= controller default).
    let text = "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\n\
                spec: {bootFromDiskMethod: '', pxeMode: ''}\n";
    let objs = parse_documents(text).unwrap();
    let Object::Server(s) = &objs[0] else {
        panic!("not a server")
    };
    assert_eq!(s.spec.boot_from_disk_method, None);
    assert_eq!(s.spec.pxe_mode, None);
}

/// A Server document whose `spec` is `spec` (YAML flow or block, indented by two).
fn server_with_spec(spec: &str) -> String {
    format!(
        "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n{spec}"
    )
}

/// Error table: each input must be refused and the message must contain every fragment.
#[test]
fn bad_input_is_refused_with_its_path() {
    let processors = |extra: &str| {
        server_with_spec(&format!(
            "  hardware:\n    compute:\n      processors:\n        - manufacturer: Intel\n          {extra}\n"
        ))
    };
    let cases: Vec<(String, &[&str])> = vec![
        // Unknown fields, at depth.
        (
            processors("coreCont: 8"),
            &[
                "document 1 (Server)",
                "spec.hardware.compute.processors[0].coreCont",
                "unknown field `coreCont`",
            ],
        ),
        (
            server_with_spec("  bmc:\n    endpoint: 10.0.0.1\n    passFrom:\n      secretKeyRef: {name: a, key: b, nmespace: c}\n"),
            &["spec.bmc.passFrom.secretKeyRef.nmespace", "unknown field"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1, lables: {a: b}}\n".into(),
            &["metadata.lables", "unknown field"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\nsepc: {}\n".into(),
            &["`sepc`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: c}\nspec:\n  qualifiers:\n    cpu: []\n".into(),
            &["spec.qualifiers.cpu", "unknown field `cpu`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Environment\nmetadata: {name: e}\nspec:\n  kernel: {url: 'http://x/k', cmdline: [a]}\n".into(),
            &["spec.kernel.cmdline"],
        ),
        // Wrong types.
        (
            processors("speed: fast"),
            &["spec.hardware.compute.processors[0].speed", "invalid type: string \"fast\""],
        ),
        (
            server_with_spec("  hardware:\n    storage:\n      devices:\n        - size: -1\n"),
            &["spec.hardware.storage.devices[0].size", "invalid value"],
        ),
        (
            server_with_spec("  hardware:\n    memory:\n      totalSize: 32\n"),
            &["spec.hardware.memory.totalSize", "expected a string"],
        ),
        (server_with_spec("  accepted: yes\n"), &["spec.accepted", "invalid type"]),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\n  labels: {enabled: true}\n".into(),
            &["metadata.labels.enabled", "expected a string"],
        ),
        (SERVERCLASS_STALE.into(), &["spec.qualifiers[0]", "expected a sequence"]),
        (server_with_spec("  bmc: [10.0.0.1]\n"), &["spec.bmc", "invalid type: sequence, expected a mapping"]),
        (
            server_with_spec("  hardware:\n    compute:\n      processors: [[Intel]]\n"),
            &["spec.hardware.compute.processors[0]", "expected a mapping"],
        ),
        // Enum values.
        (
            server_with_spec("  bootFromDiskMethod: pxe-exit\n"),
            &["spec.bootFromDiskMethod", "unknown variant `pxe-exit`", "ipxe-sanboot"],
        ),
        (server_with_spec("  pxeMode: efi\n"), &["spec.pxeMode", "unknown variant `efi`"]),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: c}\nspec: {bootFromDiskMethod: exit}\n".into(),
            &["spec.bootFromDiskMethod", "unknown variant"],
        ),
        (
            server_with_spec("  configPatches:\n    - {op: replace, path: /a, value: 1}\n    - {op: merge, path: /b}\n"),
            &["spec.configPatches[1].op", "unknown variant `merge`"],
        ),
        (
            server_with_spec("  configPatches:\n    - {op: add, path: machine/install, value: x}\n"),
            &["spec.configPatches[0].path", "must start with '/'"],
        ),
        (
            server_with_spec("  configPatches:\n    - {path: /a}\n"),
            &["spec.configPatches[0]", "missing field `op`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: c}\nspec:\n  selector:\n    matchExpressions:\n      - {key: zone, operator: Within, values: [a]}\n".into(),
            &["spec.selector.matchExpressions[0].operator", "unknown variant `Within`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: c}\nspec:\n  selector:\n    matchExpressions:\n      - {key: zone, operator: In}\n".into(),
            &["spec.selector.matchExpressions[0].values", "non-empty"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\nstatus:\n  power: maybe\n".into(),
            &["status.power", "unknown variant `maybe`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\nstatus:\n  conditions:\n    - {type: PXEBooted, status: yes, lastTransitionTime: '2024-01-01T00:00:00Z'}\n".into(),
            &["status.conditions[0].status"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\nstatus:\n  conditions:\n    - {type: PXEBooted, status: 'True', lastTransitionTime: yesterday}\n".into(),
            &["status.conditions[0].lastTransitionTime", "RFC 3339"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: s1}\nstatus:\n  addresses:\n    - {type: PublicIP, address: 1.2.3.4}\n".into(),
            &["status.addresses[0].type", "unknown variant `PublicIP`"],
        ),
        // Cross-field and range rules.
        (server_with_spec("  bmc: {endpoint: 10.0.0.1, port: 70000}\n"), &["spec.bmc.port", "70000"]),
        (server_with_spec("  bmc: {user: admin}\n"), &["spec.bmc", "missing field `endpoint`"]),
        (
            server_with_spec("  bmc:\n    endpoint: 10.0.0.1\n    user: admin\n    userFrom: {secretKeyRef: {name: a, key: b}}\n"),
            &["spec.bmc.userFrom", "cannot be used together with `user`"],
        ),
        (
            "apiVersion: infrastructure.cluster.x-k8s.io/v1alpha3\nkind: ServerBinding\nmetadata: {name: b}\nspec:\n  siderolink: {address: 'fd00::1/64'}\n".into(),
            &["spec.siderolink", "missing field `publicKey`"],
        ),
        // Envelope.
        ("apiVersion: metal.sidero.dev/v1alpha2\nmetadata: {name: s1}\n".into(), &["document 1", "missing `kind`"]),
        ("kind: Server\nmetadata: {name: s1}\n".into(), &["missing `apiVersion`"]),
        ("apiVersion: metal.sidero.dev/v1alpha2\nkind: 7\nmetadata: {name: s1}\n".into(), &["missing `kind`"]),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Machine\nmetadata: {name: s1}\n".into(),
            &["unknown kind `Machine`"],
        ),
        (
            "apiVersion: metal.example.com/v1alpha2\nkind: Server\nmetadata: {name: s1}\n".into(),
            &["apiVersion `metal.example.com/v1alpha2` is not served for Server", "metal.sidero.dev/v1alpha2"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha1\nkind: Server\nmetadata: {name: s1}\n".into(),
            &["apiVersion `metal.sidero.dev/v1alpha1`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: MetalMachine\nmetadata: {name: m}\n".into(),
            &["infrastructure.cluster.x-k8s.io/v1alpha3"],
        ),
        ("apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\n".into(), &["missing field `metadata`"]),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {labels: {}}\n".into(),
            &["metadata", "missing field `name`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: node_1}\n".into(),
            &["metadata.name", "`_`"],
        ),
        (
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {name: -a}\n".into(),
            &["metadata.name", "start and end"],
        ),
        (
            format!("apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata: {{name: {}}}\n", "a".repeat(254)),
            &["metadata.name", "254 characters"],
        ),
        // Several documents.
        (
            format!("{SERVER_DOCS}---\n{ENVIRONMENT_DOCS}---\n{SERVER_DOCS}"),
            &["documents 1 and 3 both define Server `00000000-0000-0000-0000-d05099d333e0`"],
        ),
        (
            format!("{ENVIRONMENT_DOCS}---\n{}", processors("coreCont: 8")),
            &["document 2 (Server)", "coreCont"],
        ),
        // Not YAML / not an object.
        ("kind: Server\n  bad: indent\n- x".into(), &["document 1: not valid YAML"]),
        ("a: 1\na: 2\n".into(), &["not valid YAML", "duplicate"]),
        ("- 1\n- 2\n".into(), &["expected a mapping", "found a list"]),
        ("just text\n".into(), &["found a string"]),
        ("---\n---\n42\n".into(), &["document 2", "found a number"]),
        (
            format!("{}{}", "[".repeat(100), "]".repeat(100)),
            &["nesting deeper than 64 levels"],
        ),
        (
            server_with_spec("  accepted: false\n  accepted: true\n"),
            &["not valid YAML", "duplicate"],
        ),
        ("{1: a}\n".into(), &["mapping key 1 is not a string"]),
        // Aliases expanding to 10^9 nodes ("billion laughs"): the YAML reader's repetition
        // limit stops it, long before the nesting or size caps would.
        (billion_laughs(), &["not valid YAML", "repetition limit exceeded"]),
        ("{\"kind\": \"Server\", \"apiVersion\": ".into(), &["not valid YAML"]),
    ];
    let mut failures = Vec::new();
    for (input, fragments) in &cases {
        match parse_documents(input) {
            Ok(objs) => failures.push(format!("accepted {} objects from:\n{input}", objs.len())),
            Err(e) => {
                let msg = e.to_string();
                for f in *fragments {
                    if !msg.contains(f) {
                        failures.push(format!("`{msg}` lacks `{f}`"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_variants_carry_path_and_document() {
    let text = format!(
        "{ENVIRONMENT_DOCS}---\n{}",
        server_with_spec("  pxeMode: efi\n")
    );
    assert_eq!(
        parse_documents(&text).unwrap_err(),
        ParseObjectError::Field {
            document: 2,
            kind: Kind::Server,
            path: "spec.pxeMode".into(),
            message: "unknown variant `efi`, expected `uefi` or `bios`".into(),
        }
    );
}

#[test]
fn empty_input_and_empty_documents_are_nothing() {
    for text in ["", "\n", "---\n", "# only a comment\n", "---\n---\n"] {
        assert_eq!(parse_documents(text).unwrap(), vec![], "{text:?}");
    }
}

#[test]
fn stored_json_of_another_kind_is_refused() {
    let obj = &parse_documents(ENVIRONMENT_DOCS).unwrap()[0];
    let err = Object::from_json(Kind::Server, &obj.to_json()).unwrap_err();
    assert!(
        err.to_string().contains("stored object is a Environment"),
        "{err}"
    );
}

/// Nine levels of aliases, each repeating the one before ten times.
fn billion_laughs() -> String {
    let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        s.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 10].join(", ")));
    }
    s
}

/// Mutations applied to fixture text: YAML-significant characters and fragments.
const MUTATION_ALPHABET: &[&str] = &[
    " ",
    "\n",
    ":",
    "-",
    "[",
    "]",
    "{",
    "}",
    "'",
    "\"",
    "#",
    "&a",
    "*a",
    "!",
    "|",
    ">",
    "0",
    "-1",
    "1e999",
    "null",
    "~",
    "true",
    "---\n",
    "\t",
    "é",
    "coreCount",
    "op",
    "?",
    ",",
    "%",
    "@",
    "`",
    "\\",
    "\u{0}",
];

fn mutate(base: &str, edits: &[(usize, usize, bool)]) -> String {
    let mut s: Vec<char> = base.chars().collect();
    for &(pos, pick, delete) in edits {
        if s.is_empty() {
            break;
        }
        let at = pos % s.len();
        if delete {
            let end = (at + 1 + pick % 8).min(s.len());
            s.drain(at..end);
        } else {
            let frag = MUTATION_ALPHABET[pick % MUTATION_ALPHABET.len()];
            for (i, c) in frag.chars().enumerate() {
                s.insert(at + i, c);
            }
        }
    }
    s.into_iter().collect()
}

/// Whatever parses must also round-trip; nothing may panic.
fn parse_never_panics_and_round_trips(text: &str) {
    if let Ok(objects) = parse_documents(text) {
        for obj in &objects {
            let again = parse_documents(&obj.to_yaml()).expect("printed YAML parses");
            assert_eq!(again, vec![obj.clone()]);
            assert_eq!(&Object::from_json(obj.kind(), &obj.to_json()).unwrap(), obj);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_never_panics_and_round_trips(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..ALL_FIXTURES.len(),
        edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<bool>()), 1..6),
    ) {
        parse_never_panics_and_round_trips(&mutate(ALL_FIXTURES[which], &edits));
    }
}

/// Reads YAML text back into a JSON value the way `parse_documents` does.
fn read_yaml(text: &str) -> serde_json::Value {
    let de = yaml_serde::Deserializer::from_str(text);
    yaml::StrictValue::new()
        .deserialize(de)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[test]
fn printed_yaml_quotes_what_yaml_readers_could_misread() {
    use serde_json::json;
    // (value, exact printed line)
    let cases = [
        (json!("Dell Inc."), "k: Dell Inc.\n"),
        (json!("/dev/sda"), "k: /dev/sda\n"),
        (json!("on"), "k: \"on\"\n"),
        (json!("Off"), "k: \"Off\"\n"),
        (json!("y"), "k: \"y\"\n"),
        (json!("null"), "k: \"null\"\n"),
        (json!("0001"), "k: \"0001\"\n"),
        (json!("10.0.0.1"), "k: \"10.0.0.1\"\n"),
        (json!("52:54:00:12:34:56"), "k: \"52:54:00:12:34:56\"\n"),
        (json!("a: b"), "k: \"a: b\"\n"),
        (json!("x #y"), "k: \"x #y\"\n"),
        (json!(""), "k: \"\"\n"),
        (json!("tab\there"), "k: \"tab\\there\"\n"),
        (
            json!("del\u{7f}nel\u{85}ls\u{2028}"),
            "k: \"del\\u007Fnel\\u0085ls\\u2028\"\n",
        ),
        (json!("one\ntwo\n"), "k: |\n  one\n  two\n"),
        (json!("one\n\ntwo"), "k: |-\n  one\n\n  two\n"),
        (json!(" lead\nx"), "k: \" lead\\nx\"\n"),
        (json!("two\n\n"), "k: \"two\\n\\n\"\n"),
        (json!(true), "k: true\n"),
        (json!(null), "k: null\n"),
        (json!(-12), "k: -12\n"),
        (json!([]), "k: []\n"),
        (json!({}), "k: {}\n"),
        (
            json!([[1, 2], {"b": 1, "a": [3]}]),
            "k:\n- - 1\n  - 2\n- a:\n  - 3\n  b: 1\n",
        ),
    ];
    for (value, printed) in cases {
        let doc = json!({ "k": value });
        let text = yaml::to_yaml_string(&doc);
        assert_eq!(text, printed, "{value}");
        assert_eq!(read_yaml(&text), doc, "{text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn printed_yaml_reads_back_for_any_text(
        key in any::<String>(),
        items in proptest::collection::vec(any::<String>(), 0..4),
        text in any::<String>(),
    ) {
        use serde_json::json;
        let doc = json!({ key: { "list": items, "text": text.clone(), "nested": [[text]] } });
        let printed = yaml::to_yaml_string(&doc);
        prop_assert_eq!(read_yaml(&printed), doc);
    }
}

/// Kubernetes' own rules (apimachinery's `IsDNS1123Subdomain`, `IsQualifiedName`,
/// `IsValidLabelValue`), case by case.
#[test]
fn names_and_labels_follow_kubernetes_rules() {
    let server = |name: &str, labels: &str| {
        format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: '{name}'\n  labels: {{{labels}}}\n"
        )
    };
    let long = |n: usize| "a".repeat(n);
    let ok_names = [
        "a".to_string(),
        "0".into(),
        "a.b".into(),
        "a-b.c-d".into(),
        "4c4c4544-0042-3010-8050-b4c04f4d4e31".into(),
        format!("{}.{}", long(63), long(189)),
        long(253),
        // DNS-1123 subdomains do not limit a dot-separated part to 63 characters.
        long(100),
    ];
    for name in &ok_names {
        assert!(parse_documents(&server(name, "")).is_ok(), "name {name}");
    }
    let bad_names = [
        ("a..b", "dot-separated"),
        (".a", "dot-separated"),
        ("a.", "dot-separated"),
        ("a.-b", "dot-separated"),
        ("a-.b", "dot-separated"),
        ("-a", "dot-separated"),
        ("A", "`A`"),
        ("a_b", "`_`"),
        ("a b", "` `"),
    ];
    for (name, why) in bad_names {
        let e = parse_documents(&server(name, "")).unwrap_err().to_string();
        assert!(
            e.contains("metadata.name") && e.contains(why),
            "{name}: {e}"
        );
    }
    let e = parse_documents(&server(&long(254), ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("254 characters"), "{e}");

    let ok_labels = [
        "rack: r12".to_string(),
        "cluster.x-k8s.io/cluster-name: management-cluster".into(),
        "cluster.x-k8s.io/control-plane: ''".into(),
        "A_b.C-9: V_a.l-1".into(),
        format!("{}: {}", long(63), long(63)),
        format!("{}/{}: x", long(253), long(63)),
        "k: '0'".into(),
    ];
    for labels in &ok_labels {
        assert!(parse_documents(&server("s", labels)).is_ok(), "{labels}");
    }
    let bad_labels = [
        (format!("{}: x", long(64)), "at most 63"),
        ("'-k': x".to_string(), "start and end"),
        ("'k_': x".into(), "start and end"),
        ("'k k': x".into(), "` `"),
        ("'/k': x".into(), "prefix before '/' must not be empty"),
        ("'a/b/c': x".into(), "`/`"),
        ("'Example.com/k': x".into(), "prefix contains `E`"),
        ("'a..b/k': x".into(), "prefix must be dot-separated"),
        ("'a/': x".into(), "name must not be empty"),
        (format!("{}/k: x", long(254)), "prefix is 254 characters"),
        (format!("k: {}", long(64)), "label value"),
        ("k: '-v'".into(), "label value `-v` must start and end"),
        ("k: 'v w'".into(), "` `"),
        ("k: 'v/w'".into(), "`/`"),
        ("k: 'é'".into(), "`é`"),
    ];
    for (labels, why) in &bad_labels {
        let e = parse_documents(&server("s", labels))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("metadata.labels.") && e.contains(why),
            "{labels}: {e}"
        );
    }

    // Selectors: matchLabels as labels, expression keys as label keys, values as values.
    let class = |selector: &str| {
        format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {{name: c}}\nspec:\n  selector:\n{selector}"
        )
    };
    assert!(parse_documents(&class("    matchLabels: {zone: east, 'a.io/b': ''}\n")).is_ok());
    assert!(
        parse_documents(&class(
            "    matchExpressions:\n      - {key: a.io/zone, operator: In, values: [east, '']}\n"
        ))
        .is_ok()
    );
    for (selector, path) in [
        (
            "    matchLabels: {'bad key': x}\n",
            "spec.selector.matchLabels.bad key",
        ),
        (
            "    matchLabels: {zone: 'a b'}\n",
            "spec.selector.matchLabels.zone",
        ),
        (
            "    matchExpressions:\n      - {key: 'a..b/z', operator: Exists}\n",
            "spec.selector.matchExpressions[0].key",
        ),
        (
            "    matchExpressions:\n      - {key: zone, operator: NotIn, values: [ok, 'no way']}\n",
            "spec.selector.matchExpressions[0].values[1]",
        ),
    ] {
        let e = parse_documents(&class(selector)).unwrap_err().to_string();
        assert!(e.contains(path), "{selector}: {e}");
    }
}

#[test]
fn apply_input_is_capped_at_one_mib() {
    let doc = server_with_spec("  accepted: true\n");
    // Documents padded with comments up to exactly the cap parse; one byte more does not.
    let pad = super::MAX_APPLY_BYTES - doc.len() - 1;
    let at_cap = format!("{doc}#{}", "x".repeat(pad));
    assert_eq!(at_cap.len(), super::MAX_APPLY_BYTES);
    assert_eq!(parse_documents(&at_cap).unwrap().len(), 1);
    let over = format!("{at_cap}x");
    assert_eq!(
        parse_documents(&over),
        Err(ParseObjectError::TooLarge {
            bytes: super::MAX_APPLY_BYTES + 1
        })
    );
    assert!(
        parse_documents(&over)
            .unwrap_err()
            .to_string()
            .contains("1 MiB")
    );
}

#[test]
fn condition_set_keeps_the_transition_time_until_the_status_flips() {
    let c = |status, time: &str, reason: &str| Condition {
        type_: "PowerCycle".into(),
        status,
        severity: None,
        last_transition_time: time.into(),
        reason: Some(reason.into()),
        message: None,
    };
    let mut list = vec![c(ConditionStatus::True, "t0", "a")];
    // Same condition again: nothing changes.
    assert!(!Condition::set(
        &mut list,
        c(ConditionStatus::True, "t1", "a")
    ));
    assert_eq!(list, [c(ConditionStatus::True, "t0", "a")]);
    // Same status, new reason: changed, time kept.
    assert!(Condition::set(
        &mut list,
        c(ConditionStatus::True, "t2", "b")
    ));
    assert_eq!(list, [c(ConditionStatus::True, "t0", "b")]);
    // The status flips: the time moves.
    assert!(Condition::set(
        &mut list,
        c(ConditionStatus::False, "t3", "b")
    ));
    assert_eq!(list, [c(ConditionStatus::False, "t3", "b")]);
    // Another type is appended.
    let mut other = c(ConditionStatus::True, "t4", "x");
    other.type_ = "PXEBooted".into();
    assert!(Condition::set(&mut list, other.clone()));
    assert_eq!(list.len(), 2);
    assert_eq!(list[1], other);
}
