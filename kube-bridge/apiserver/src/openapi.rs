//! `/openapi/v3`: the index of group-versions and one document per group-version, enough for
//! kubectl to know each kind's schema and that PATCH takes `fieldValidation` (so it leaves
//! unknown-field checks to the server, as against a real apiserver).

use super::store::State;
use serde_json::{Value, json};

pub fn serve(st: &State, path: &str) -> Option<Value> {
    let mut gvs: Vec<(String, String)> = st
        .types
        .keys()
        .map(|(g, v, _)| (g.clone(), v.clone()))
        .collect();
    gvs.dedup();
    let rel = |g: &str, v: &str| {
        if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        }
    };
    if path == "/openapi/v3" {
        let paths: serde_json::Map<String, Value> = gvs
            .iter()
            .map(|(g, v)| (rel(g, v), json!({"serverRelativeURL": format!("/openapi/v3/{}?hash={:016X}", rel(g, v), st.rv)})))
            .collect();
        return Some(json!({"paths": paths}));
    }
    let want = path.strip_prefix("/openapi/v3/")?;
    let (g, v) = gvs.iter().find(|(g, v)| rel(g, v) == want)?;
    let mut schemas = serde_json::Map::new();
    let mut paths = serde_json::Map::new();
    for t in st
        .types
        .values()
        .filter(|t| &t.group == g && &t.version == v)
    {
        let id = format!(
            "{}.{}.{}",
            if g.is_empty() { "io.k8s.api.core" } else { g },
            v,
            t.kind
        );
        let gvk = json!([{"group": g, "version": v, "kind": t.kind}]);
        let mut schema = t.schema.clone().unwrap_or_else(
            || json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
        );
        schema["x-kubernetes-group-version-kind"] = gvk.clone();
        schemas.insert(id.clone(), schema);
        let ns = if t.namespaced {
            "namespaces/{namespace}/"
        } else {
            ""
        };
        let item = format!("/{}/{ns}{}/{{name}}", rel(g, v), t.plural);
        let param = |n: &str| json!({"name": n, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |action: &str, params: Vec<Value>| {
            json!({"x-kubernetes-action": action, "x-kubernetes-group-version-kind": gvk[0], "parameters": params,
                   "responses": {"200": {"content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{id}")}}}}}})
        };
        paths.insert(
            item,
            json!({
                "get": op("get", vec![]),
                "put": op("put", vec![param("dryRun"), param("fieldManager"), param("fieldValidation")]),
                "patch": op("patch", vec![param("dryRun"), param("fieldManager"), param("fieldValidation"), param("force")]),
                "delete": op("delete", vec![param("dryRun")]),
            }),
        );
        paths.insert(
            format!("/{}/{ns}{}", rel(g, v), t.plural),
            json!({"get": op("list", vec![]), "post": op("post", vec![param("dryRun"), param("fieldManager"), param("fieldValidation")])}),
        );
    }
    Some(
        json!({"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.33.0"}, "paths": paths, "components": {"schemas": schemas}}),
    )
}
