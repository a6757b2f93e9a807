//! Sidero's CRDs as a superset, generated from the Rust types in this module with kube's
//! `CustomResource` derive and schemars: `metal.sidero.dev/v1alpha2` Server, ServerClass,
//! Environment and `infrastructure.cluster.x-k8s.io/v1alpha3` MetalCluster, MetalMachine,
//! MetalMachineTemplate, ServerBinding. The manifests checked in under `config/crd/` are
//! exactly [`render`] of [`all`] (tested).

pub mod capi;
pub mod common;
pub mod metal;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

/// Every CRD, in the order the manifests list them.
pub fn all() -> Vec<CustomResourceDefinition> {
    [
        metal::Server::crd(),
        metal::ServerClass::crd(),
        metal::Environment::crd(),
        capi::MetalCluster::crd(),
        capi::MetalMachine::crd(),
        capi::MetalMachineTemplate::crd(),
        capi::ServerBinding::crd(),
    ]
    .into_iter()
    .map(finish)
    .collect()
}

/// Sidero's file name for a CRD: `<group>_<plural>.yaml` (as controller-gen names them).
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document (no leading `---`).
pub fn render(crd: &CustomResourceDefinition) -> String {
    // A CRD built from our own types always serialises; a failure is a bug, not input.
    yaml_serde::to_string(crd).expect("a CustomResourceDefinition serialises to YAML")
}

/// Fixes what the derive cannot express, so the schema reads like Sidero's (controller-gen):
/// - `spec` is optional (the derive requires it; Sidero accepts an object without one);
/// - the root lists `apiVersion`, `kind` and `metadata`, and every kind has a `status`
///   object (MetalMachineTemplate's is empty and, as in Sidero, no subresource);
/// - no `nullable` (schemars marks every `Option`; Sidero's schemas never are).
fn finish(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    for version in &mut crd.spec.versions {
        let Some(root) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        strip_nullable(root);
        if let Some(required) = root.required.as_mut() {
            required.retain(|r| r != "spec");
        }
        if root.required.as_ref().is_some_and(Vec::is_empty) {
            root.required = None;
        }
        let props = root.properties.get_or_insert_with(Default::default);
        let field = |type_: &str, description: &str| JSONSchemaProps {
            type_: Some(type_.to_owned()),
            description: Some(description.to_owned()),
            ..Default::default()
        };
        props.insert(
            "apiVersion".into(),
            field(
                "string",
                "APIVersion defines the versioned schema of this representation of an object.",
            ),
        );
        props.insert(
            "kind".into(),
            field(
                "string",
                "Kind is a string value representing the REST resource this object represents.",
            ),
        );
        props.insert(
            "metadata".into(),
            JSONSchemaProps {
                type_: Some("object".into()),
                ..Default::default()
            },
        );
        props
            .entry("status".into())
            .or_insert_with(|| JSONSchemaProps {
                type_: Some("object".into()),
                ..Default::default()
            });
    }
    crd
}

fn strip_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    if let Some(props) = schema.properties.as_mut() {
        props.values_mut().for_each(strip_nullable);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_nullable(items);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        strip_nullable(extra);
    }
}
