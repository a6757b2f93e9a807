//! The resource types the in-test API server knows: built-in kinds (no schema) and the ones
//! registered by creating a CustomResourceDefinition (schema, status subresource, printer
//! columns, names), plus the Status objects it answers errors with.

use serde_json::{Value, json};

/// One served resource (one group/version/plural).
#[derive(Clone, Debug)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// `openAPIV3Schema` of a CRD version; `None` for built-ins (not validated).
    pub schema: Option<Value>,
    pub status_subresource: bool,
    /// `additionalPrinterColumns` of a CRD version (name/type/jsonPath/priority/description).
    pub columns: Vec<Value>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: vec![],
        categories: vec![],
        schema: None,
        status_subresource: status,
        columns: vec![],
    }
}

/// What a fresh server serves: the core kinds kubectl and the bridge touch, the CRD kind, and
/// the CAPI core and Talos provider kinds (as those providers' CRDs would register them;
/// schema-less here, they are not ours to check).
pub fn builtins() -> Vec<ResourceType> {
    let mut all = vec![
        builtin("", "v1", "Namespace", "namespaces", false, true),
        builtin("", "v1", "Secret", "secrets", true, false),
        builtin("", "v1", "ServiceAccount", "serviceaccounts", true, false),
        builtin("", "v1", "ConfigMap", "configmaps", true, false),
        builtin("", "v1", "Event", "events", true, false),
        builtin("apps", "v1", "Deployment", "deployments", true, true),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "Role",
            "roles",
            true,
            false,
        ),
        builtin(
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        builtin("coordination.k8s.io", "v1", "Lease", "leases", true, false),
        builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            true,
        ),
        builtin(
            "cluster.x-k8s.io",
            "v1beta1",
            "Cluster",
            "clusters",
            true,
            true,
        ),
        builtin(
            "cluster.x-k8s.io",
            "v1beta1",
            "Machine",
            "machines",
            true,
            true,
        ),
        builtin(
            "cluster.x-k8s.io",
            "v1beta1",
            "MachineDeployment",
            "machinedeployments",
            true,
            true,
        ),
        builtin(
            "controlplane.cluster.x-k8s.io",
            "v1alpha3",
            "TalosControlPlane",
            "taloscontrolplanes",
            true,
            true,
        ),
        builtin(
            "bootstrap.cluster.x-k8s.io",
            "v1alpha3",
            "TalosConfig",
            "talosconfigs",
            true,
            true,
        ),
        builtin(
            "bootstrap.cluster.x-k8s.io",
            "v1alpha3",
            "TalosConfigTemplate",
            "talosconfigtemplates",
            true,
            false,
        ),
    ];
    let short: &[(&str, &[&str])] = &[
        ("namespaces", &["ns"]),
        ("serviceaccounts", &["sa"]),
        ("configmaps", &["cm"]),
        ("events", &["ev"]),
        ("deployments", &["deploy"]),
        ("customresourcedefinitions", &["crd", "crds"]),
        ("machinedeployments", &["md"]),
        ("clusters", &["cl"]),
        ("machines", &["ma"]),
        ("taloscontrolplanes", &["tcp"]),
    ];
    for t in &mut all {
        if let Some((_, names)) = short.iter().find(|(p, _)| *p == t.plural) {
            t.short_names = names.iter().map(|s| s.to_string()).collect();
        }
    }
    for t in all
        .iter_mut()
        .filter(|t| t.group.ends_with("cluster.x-k8s.io"))
    {
        t.categories = vec!["cluster-api".into()];
    }
    all
}

/// The resource types a CRD object declares (one per served version). `Err` says what is
/// wrong with it.
pub fn from_crd(crd: &Value) -> Result<Vec<ResourceType>, String> {
    let spec = crd.get("spec").ok_or("spec: Required value")?;
    let s = |v: &Value, what: &str| {
        v.as_str()
            .map(str::to_owned)
            .ok_or(format!("{what}: Required value"))
    };
    let group = s(&spec["group"], "spec.group")?;
    let names = &spec["names"];
    let plural = s(&names["plural"], "spec.names.plural")?;
    let kind = s(&names["kind"], "spec.names.kind")?;
    let expected = format!("{plural}.{group}");
    if crd["metadata"]["name"] != expected.as_str() {
        return Err(format!(
            "metadata.name: Invalid value: must be spec.names.plural+\".\"+spec.group ({expected})"
        ));
    }
    let namespaced = match spec["scope"].as_str() {
        Some("Namespaced") => true,
        Some("Cluster") => false,
        _ => {
            return Err(
                "spec.scope: Unsupported value: supported values: \"Cluster\", \"Namespaced\""
                    .into(),
            );
        }
    };
    let strs = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let versions = spec["versions"]
        .as_array()
        .filter(|v| !v.is_empty())
        .ok_or("spec.versions: Required value")?;
    if versions.iter().filter(|v| v["storage"] == true).count() != 1 {
        return Err(
            "spec.versions: Invalid value: must have exactly one version marked as storage version"
                .into(),
        );
    }
    let mut out = Vec::new();
    for v in versions.iter().filter(|v| v["served"] == true) {
        let schema = v["schema"]["openAPIV3Schema"].clone();
        if !schema.is_object() {
            return Err("spec.versions[].schema.openAPIV3Schema: Required value".into());
        }
        out.push(ResourceType {
            group: group.clone(),
            version: s(&v["name"], "spec.versions[].name")?,
            kind: kind.clone(),
            plural: plural.clone(),
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            namespaced,
            short_names: strs(&names["shortNames"]),
            categories: strs(&names["categories"]),
            schema: Some(schema),
            status_subresource: v["subresources"].get("status").is_some(),
            columns: v["additionalPrinterColumns"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// A `Status` failure object (`reason` as the apiserver spells it).
pub fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut s = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

pub fn not_found(t: &ResourceType, name: &str) -> Value {
    let resource = if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    };
    status(
        404,
        "NotFound",
        &format!("{resource} \"{name}\" not found"),
        Some(json!({"name": name, "group": t.group, "kind": t.plural})),
    )
}
