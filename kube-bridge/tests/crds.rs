//! The CRDs: the manifests under `config/crd/` are exactly what the Rust types generate
//! (`KUBE_BRIDGE_BLESS=1` rewrites them), their schemas are Sidero's (every Sidero field with
//! its name, type, format and constraints; printer columns, scope, names) plus only the listed
//! additions, and the appliance's Sidero YAML fixtures pass the schemas and round-trip through
//! the Rust types without losing a field.

mod support;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_bridge::crd::{self, capi, metal};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use support::schema::{Problem, admit};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_crds_are_the_generated_ones() {
    let dir = manifest_dir().join("config/crd");
    let crds = crd::all();
    if std::env::var_os("KUBE_BRIDGE_BLESS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for c in &crds {
            std::fs::write(dir.join(crd::file_name(c)), crd::render(c)).unwrap();
        }
    }
    let mut expected: Vec<String> = crds.iter().map(crd::file_name).collect();
    expected.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    present.sort();
    assert_eq!(
        present, expected,
        "config/crd/ holds exactly one file per CRD"
    );
    for c in &crds {
        let on_disk = std::fs::read_to_string(dir.join(crd::file_name(c))).unwrap();
        assert!(
            on_disk == crd::render(c),
            "config/crd/{} differs from the Rust types; regenerate with \
             KUBE_BRIDGE_BLESS=1 cargo test -p kube-bridge --test crds",
            crd::file_name(c)
        );
    }
}

/// One CRD's storage version flattened like `fixtures/sidero-crd-facts.py` does: header
/// lines (`kind`, `names`, `scope`, `subresources`, `column`) then one line per schema node.
fn flatten(c: &CustomResourceDefinition) -> Vec<String> {
    let c = serde_json::to_value(c).unwrap();
    let spec = &c["spec"];
    let names = &spec["names"];
    let list = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"].as_array().unwrap();
    let v = versions
        .iter()
        .find(|v| v["storage"] == Value::Bool(true))
        .expect("a storage version");
    let mut out = vec![
        format!(
            "kind {} {}/{}",
            names["kind"].as_str().unwrap(),
            spec["group"].as_str().unwrap(),
            v["name"].as_str().unwrap()
        ),
        format!(
            "names plural={} singular={} categories={} shortNames={}",
            names["plural"].as_str().unwrap(),
            names["singular"].as_str().unwrap_or(""),
            list(&names["categories"]),
            list(&names["shortNames"])
        ),
        format!("scope {}", spec["scope"].as_str().unwrap()),
    ];
    let subresources: Vec<&String> = v["subresources"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    out.push(format!(
        "subresources {}",
        subresources
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    ));
    for col in v["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(format!(
            "column {} {} {} priority={}",
            col["name"],
            col["type"].as_str().unwrap(),
            col["jsonPath"],
            col["priority"].as_i64().unwrap_or(0)
        ));
    }
    walk(&v["schema"]["openAPIV3Schema"], "", &mut out);
    out
}

fn walk(s: &Value, path: &str, out: &mut Vec<String>) {
    let mut line = vec![if path.is_empty() {
        ".".to_owned()
    } else {
        path.to_owned()
    }];
    line.push(
        s.get("type")
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned(),
    );
    for k in [
        "format",
        "enum",
        "default",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
    ] {
        if let Some(v) = s.get(k) {
            line.push(format!("{k}={v}"));
        }
    }
    let obj = s.as_object().unwrap();
    for (k, v) in obj.iter().filter(|(k, _)| k.starts_with("x-kubernetes")) {
        line.push(format!("{k}={v}"));
    }
    if let Some(req) = s
        .get("required")
        .and_then(Value::as_array)
        .filter(|r| !r.is_empty())
    {
        let mut req: Vec<&str> = req.iter().map(|r| r.as_str().unwrap()).collect();
        req.sort();
        line.push(format!("required={}", req.join(",")));
    }
    out.push(line.join(" "));
    for (k, v) in s
        .get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        walk(v, &format!("{path}.{k}"), out);
    }
    if let Some(items) = s.get("items") {
        walk(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = s.get("additionalProperties").filter(|a| a.is_object()) {
        walk(extra, &format!("{path}{{}}"), out);
    }
}

/// Sidero's facts per kind: the line for each key (`kind`, `names`, …, a column's name, a
/// schema path).
fn sidero_facts() -> BTreeMap<String, BTreeMap<String, String>> {
    let mut facts: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut kind = String::new();
    for line in include_str!("fixtures/sidero-crd-facts.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
    {
        if let Some(rest) = line.strip_prefix("kind ") {
            kind = rest.split(' ').next().unwrap().to_owned();
        }
        facts
            .entry(kind.clone())
            .or_default()
            .insert(fact_key(line), line.to_owned());
    }
    facts
}

/// Sidero's lines for one kind, in the fixture's order.
fn sidero_lines(kind: &str) -> Vec<String> {
    let text = include_str!("fixtures/sidero-crd-facts.txt");
    let start = text.find(&format!("kind {kind} ")).unwrap();
    let block = &text[start..];
    let end = block[1..].find("\nkind ").map_or(block.len(), |e| e + 1);
    block[..end].lines().map(str::to_owned).collect()
}

fn fact_key(line: &str) -> String {
    let mut words = line.split(' ');
    let first = words.next().unwrap();
    match first {
        "column" => format!("column {}", words.next().unwrap()),
        "kind" | "names" | "scope" | "subresources" => first.to_owned(),
        path => path.to_owned(),
    }
}

/// Where the generated schema knowingly differs from Sidero's: (kind, key, our line, why).
const CHANGED: &[(&str, &str, &str, &str)] = &[
    (
        "Server",
        ".spec",
        ".spec object",
        "accepted is optional (default false): Sidero's own documentation examples omit it",
    ),
    (
        "Server",
        ".spec.accepted",
        ".spec.accepted boolean default=false",
        "absent reads as false, and the stored object carries it, as Sidero always writes it",
    ),
    (
        "Server",
        ".spec.bmc.passFrom.secretKeyRef",
        ".spec.bmc.passFrom.secretKeyRef object required=key,name",
        "namespace is optional (meaning default): Sidero's documentation example omits it",
    ),
    (
        "Server",
        ".spec.bmc.userFrom.secretKeyRef",
        ".spec.bmc.userFrom.secretKeyRef object required=key,name",
        "as passFrom",
    ),
    (
        "Server",
        ".status.inUse",
        ".status.inUse boolean default=false",
        "Sidero always writes it",
    ),
    (
        "Server",
        ".status.isClean",
        ".status.isClean boolean default=false",
        "Sidero always writes it",
    ),
    (
        "Server",
        ".status.ready",
        ".status.ready boolean default=false",
        "Sidero always writes it",
    ),
    (
        "ServerBinding",
        ".status.ready",
        ".status.ready boolean default=false",
        "Sidero always writes it",
    ),
];

/// Fields only we have: CAPI v1beta2 contract additions.
const ADDED: &[(&str, &str)] = &[
    ("MetalCluster", ".status.initialization"),
    ("MetalCluster", ".status.initialization.provisioned"),
    ("MetalMachine", ".status.initialization"),
    ("MetalMachine", ".status.initialization.provisioned"),
    ("MetalMachine", ".status.conditions[].observedGeneration"),
    ("Server", ".status.conditions[].observedGeneration"),
    ("ServerBinding", ".status.conditions[].observedGeneration"),
];

#[test]
fn schemas_are_sideros_plus_listed_additions() {
    let facts = sidero_facts();
    let ours: BTreeMap<String, Vec<String>> = crd::all()
        .iter()
        .map(|c| (c.spec.names.kind.clone(), flatten(c)))
        .collect();
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        facts.keys().collect::<Vec<_>>(),
        "the same kinds"
    );
    let mut problems = Vec::new();
    for (kind, lines) in &ours {
        let theirs = &facts[kind];
        let mut seen = 0;
        for line in lines {
            let key = fact_key(line);
            match theirs.get(&key) {
                Some(t) if t == line => seen += 1,
                Some(t) => {
                    if CHANGED
                        .iter()
                        .any(|(k, p, ours, _)| k == kind && *p == key && ours == line)
                    {
                        seen += 1;
                    } else {
                        problems.push(format!("{kind}: Sidero has `{t}`, we have `{line}`"));
                    }
                }
                None if ADDED.contains(&(kind.as_str(), key.as_str())) => {}
                None => problems.push(format!(
                    "{kind}: `{line}` is not Sidero's and not a listed addition"
                )),
            }
        }
        if seen != theirs.len() {
            let ours_keys: Vec<String> = lines.iter().map(|l| fact_key(l)).collect();
            for (key, line) in theirs {
                if !ours_keys.contains(key) {
                    problems.push(format!("{kind}: Sidero's `{line}` is missing"));
                }
            }
        }
        // Printer columns in Sidero's order.
        let columns = |ls: &mut dyn Iterator<Item = &String>| {
            ls.filter(|l| l.starts_with("column "))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (ours, theirs) = (
            columns(&mut lines.iter()),
            columns(&mut sidero_lines(kind).iter()),
        );
        if ours != theirs {
            problems.push(format!(
                "{kind}: printer columns {ours:?}, Sidero's (in order) {theirs:?}"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "schema differences:\n{}",
        problems.join("\n")
    );
}

/// The schema of `kind`'s storage version, as JSON.
fn schema_of(kind: &str) -> Value {
    let c = crd::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD {kind}"));
    let c = serde_json::to_value(c).unwrap();
    c["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every YAML document of a fixture file as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    yaml_serde::Deserializer::from_str(&text)
        .map(|d| {
            yaml_serde::from_value::<Value>(yaml_serde::Value::deserialize(d).unwrap()).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

/// `obj` read into its Rust type and written back.
fn round_trip(obj: &Value) -> Value {
    fn through<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Value {
        let typed: T = serde_path_to_error::deserialize(obj.clone())
            .unwrap_or_else(|e| panic!("{}: {e}", e.path()));
        serde_json::to_value(typed).unwrap()
    }
    match obj["kind"].as_str().unwrap() {
        "Server" => through::<metal::Server>(obj),
        "ServerClass" => through::<metal::ServerClass>(obj),
        "Environment" => through::<metal::Environment>(obj),
        "MetalCluster" => through::<capi::MetalCluster>(obj),
        "MetalMachine" => through::<capi::MetalMachine>(obj),
        "MetalMachineTemplate" => through::<capi::MetalMachineTemplate>(obj),
        "ServerBinding" => through::<capi::ServerBinding>(obj),
        other => panic!("unexpected kind {other}"),
    }
}

fn sidero_fixtures() -> Vec<PathBuf> {
    let dir = manifest_dir().join("../appliance/tests/fixtures/sidero");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn sidero_fixtures_pass_the_schemas_and_round_trip_through_the_types() {
    let mut checked = BTreeMap::<String, usize>::new();
    for file in sidero_fixtures() {
        if file.file_name().unwrap() == "serverclass-stale-sample.yaml" {
            continue; // refused, see below
        }
        for mut doc in documents(&file) {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            let errors = admit(&schema_of(&kind), &mut doc);
            assert!(errors.is_empty(), "{}: {kind}: {errors:?}", file.display());
            // Defaults applied; the typed object must say exactly the same, not a field lost.
            assert_eq!(
                round_trip(&doc),
                doc,
                "{}: {kind} round trip",
                file.display()
            );
            *checked.entry(kind).or_default() += 1;
        }
    }
    // Every fixture kind was seen (the fixtures hold no MetalCluster/MetalMachineTemplate).
    for kind in [
        "Server",
        "ServerClass",
        "Environment",
        "MetalMachine",
        "ServerBinding",
    ] {
        assert!(
            checked.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} fixture checked: {checked:?}"
        );
    }
}

#[test]
fn the_stale_v1alpha1_serverclass_sample_is_refused_at_spec_qualifiers() {
    let file =
        manifest_dir().join("../appliance/tests/fixtures/sidero/serverclass-stale-sample.yaml");
    let mut doc = documents(&file).remove(0);
    let errors = admit(&schema_of("ServerClass"), &mut doc);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "spec.qualifiers");
    assert!(
        matches!(&errors[0].kind, Problem::Type { expected, got: "array" } if expected == "object")
    );
}

#[test]
fn the_schemas_refuse_what_sidero_refuses() {
    let server = |spec: Value| serde_json::json!({"apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Server", "metadata": {"name": "a"}, "spec": spec});
    let cases = [
        (
            server(serde_json::json!({"bmc": {"port": 623}})),
            "spec.bmc.endpoint",
            "required",
        ),
        (
            server(serde_json::json!({"bmc": {"endpoint": "x", "port": 4294967296_u64}})),
            "spec.bmc.port",
            "int32",
        ),
        (
            server(
                serde_json::json!({"hardware": {"compute": {"processors": [{"speed": "fast"}]}}}),
            ),
            "spec.hardware.compute.processors[0].speed",
            "type",
        ),
        (
            server(serde_json::json!({"accepted": "yes"})),
            "spec.accepted",
            "type",
        ),
        (
            server(serde_json::json!({"acceptd": true})),
            "spec.acceptd",
            "unknown",
        ),
        (
            server(serde_json::json!({"configPatches": [{"op": "add"}]})),
            "spec.configPatches[0].path",
            "required",
        ),
    ];
    for (mut obj, path, what) in cases {
        let errors = admit(&schema_of("Server"), &mut obj);
        assert!(
            errors.iter().any(|e| e.path == path),
            "{path} ({what}) not refused: {errors:?}"
        );
    }
    let mut mm = serde_json::json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1alpha3", "kind": "MetalMachine",
        "metadata": {"name": "m", "namespace": "default"}, "spec": {},
        "status": {"addresses": [{"type": "PublicIP", "address": "1.2.3.4"}], "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z", "reason": ""}]}});
    let errors = admit(&schema_of("MetalMachine"), &mut mm);
    let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["status.addresses[0].type", "status.conditions[0].reason"],
        "{errors:?}"
    );
}
