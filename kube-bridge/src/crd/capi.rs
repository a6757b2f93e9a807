//! `infrastructure.cluster.x-k8s.io/v1alpha3`: MetalCluster, MetalMachine,
//! MetalMachineTemplate (namespaced, category `cluster-api`) and ServerBinding
//! (cluster-scoped), as Sidero's `app/caps-controller-manager/api/v1alpha3` types. The only
//! additions are CAPI v1beta2 contract fields (`status.initialization`, condition
//! `observedGeneration`). The CRDs carry CAPI's contract labels
//! (`cluster.x-k8s.io/v1beta1: v1alpha3`, `…/v1beta2: v1alpha3`): how CAPI core finds the
//! version of an infrastructure kind to use.

// Each `printcolumn(name = …, type_ = …)` repeats the same keys; clippy reads that as a
// duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use super::common::{Condition, ObjectReference};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// MetalCluster: the infrastructure side of a CAPI Cluster.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalCluster",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    status = "MetalClusterStatus",
    doc = "MetalCluster is the Schema for the metalclusters API.",
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        description = "Cluster to which this MetalCluster belongs"
    ),
    printcolumn(name = "Ready", type_ = "boolean", json_path = ".status.ready"),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.controlPlaneEndpoint.host",
        description = "Control Plane Endpoint",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MetalClusterSpec {
    /// Where the workload cluster's API server listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
}

/// CAPI `APIEndpoint`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ApiEndpoint {
    #[schemars(length(max = 512))]
    pub host: String,
    pub port: i32,
}

/// MetalCluster status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetalClusterStatus {
    /// Addition for CAPI v1beta2: `initialization.provisioned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// CAPI v1beta1 contract: the infrastructure is ready.
    pub ready: bool,
}

/// CAPI v1beta2 contract: `status.initialization`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Initialization {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

/// MetalMachine: the infrastructure side of a CAPI Machine; bound to one Server.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalMachine",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    status = "MetalMachineStatus",
    doc = "MetalMachine is the Schema for the metalmachines API.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "MetalMachine ready status"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        description = "Cluster to which this MetalMachine belongs",
        priority = 1
    ),
    printcolumn(
        name = "Machine",
        type_ = "string",
        json_path = ".metadata.ownerReferences[?(@.kind==\"Machine\")].name",
        description = "Machine object to which this MetalMachine belongs",
        priority = 1
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".spec.serverRef.name",
        description = "Server ID",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineSpec {
    /// `sidero://<server uuid>`.
    #[serde(
        rename = "providerID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub provider_id: Option<String>,
    /// Pick a free server from this ServerClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
    /// This exact server (also the current binding once picked from a class).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_ref: Option<ObjectReference>,
}

/// MetalMachine status, written by the bridge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetalMachineStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<MachineAddress>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Addition for CAPI v1beta2: `initialization.provisioned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<Initialization>,
    /// CAPI v1beta1 contract: the infrastructure is provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
}

/// CAPI `MachineAddress`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MachineAddress {
    #[schemars(length(min = 1, max = 256))]
    pub address: String,
    #[serde(rename = "type")]
    pub type_: MachineAddressType,
}

/// CAPI `MachineAddressType`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum MachineAddressType {
    Hostname,
    ExternalIP,
    #[default]
    InternalIP,
    ExternalDNS,
    InternalDNS,
}

/// MetalMachineTemplate: what a MachineDeployment or control plane stamps MetalMachines from.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "MetalMachineTemplate",
    namespaced,
    category = "cluster-api",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    doc = "MetalMachineTemplate is the Schema for the metalmachinetemplates API."
)]
pub struct MetalMachineTemplateSpec {
    pub template: MetalMachineTemplateResource,
}

/// `spec.template`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MetalMachineTemplateResource {
    pub spec: MetalMachineSpec,
}

/// ServerBinding: a Server allocated to a MetalMachine (named after the Server).
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1alpha3",
    kind = "ServerBinding",
    label("cluster.x-k8s.io/v1beta1", "v1alpha3"),
    label("cluster.x-k8s.io/v1beta2", "v1alpha3"),
    status = "ServerBindingStatus",
    doc = "ServerBinding defines the binding between a Server and a MetalMachine.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.ready",
        description = "ServerBinding ready status"
    ),
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".metadata.name",
        description = "Server ID",
        priority = 1
    ),
    printcolumn(
        name = "ServerClass",
        type_ = "string",
        json_path = ".spec.serverClassRef.name",
        description = "Server Class",
        priority = 1
    ),
    printcolumn(
        name = "MetalMachine",
        type_ = "string",
        json_path = ".spec.metalMachineRef.name",
        description = "Metal Machine",
        priority = 1
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".metadata.labels.cluster\\.x-k8s\\.io/cluster-name",
        description = "Cluster to which this ServerBinding belongs",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp",
        description = "The age of this resource"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ServerBindingSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub metal_machine_ref: ObjectReference,
    /// Nil when bound through an explicit `serverRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_class_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub siderolink: Option<SideroLinkSpec>,
}

/// The node's SideroLink tunnel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SideroLinkSpec {
    /// `<ipv6>/64`.
    pub address: String,
    /// WireGuard public key (base64).
    pub public_key: String,
}

/// ServerBinding status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ServerBindingStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<Condition>>,
    /// The Server exists.
    #[serde(default)]
    pub ready: bool,
}
