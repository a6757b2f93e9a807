//! Pure rooms compiled on their own for fuzzing: their source files are included directly
//! instead of building the whole appliance crate (tokio, tonic, redb…) with sanitizers.

/// `appliance::model`: depends only on serde, serde_json, yaml_serde, serde_path_to_error
/// and thiserror.
#[path = "../../appliance/src/model/mod.rs"]
pub mod model;

/// `appliance::protocol::tftp`: the TFTP core depends on nothing but std and thiserror.
#[path = "../../appliance/src/protocol/tftp/mod.rs"]
pub mod tftp;

/// `appliance::protocol::dhcp`: depends only on dhcproto and thiserror.
#[path = "../../appliance/src/protocol/dhcp/mod.rs"]
pub mod dhcp;

/// `appliance::protocol::ipmi`: the RMCP+ core depends on std, thiserror and the RustCrypto
/// hmac/sha1/sha2/aes/cbc crates.
#[path = "../../appliance/src/protocol/ipmi/mod.rs"]
pub mod ipmi;

/// `appliance::metadata::strategic`: Talos strategic merge; depends on serde, serde_json,
/// yaml_serde and thiserror.
#[path = "../../appliance/src/metadata/strategic.rs"]
pub mod strategic;

/// `appliance::protocol::siderolink`: overlay addressing, Talos log-line decoding and the
/// event → ServerBinding mapping; depends on serde_json, sha2 and thiserror.
#[path = "../../appliance/src/protocol/siderolink/mod.rs"]
pub mod siderolink;

/// `appliance::protocol::dhcpv6`: the DHCPv6 core and router advertisements; depends on
/// std, thiserror and the DHCPv4 core above (client classification, boot files).
#[path = "../../appliance/src/protocol/dhcpv6/mod.rs"]
pub mod dhcpv6;

/// The crate paths the included rooms name (`crate::protocol::siderolink`,
/// `crate::protocol::dhcp`).
pub mod protocol {
    pub use super::dhcp;
    pub use super::siderolink;
}

/// `appliance::siderolink::payload`: a Talos event's `Any` decoded into the pure event;
/// depends on `appliance-rpc`'s messages, prost and the SideroLink core above.
#[path = "../../appliance/src/siderolink/payload.rs"]
pub mod siderolink_payload;

/// `appliance::siderolink::screen`: the endpoint's screening of datagrams before boringtun's
/// `Tunn` (rate limiter, cookie replies, peer lookup); depends on boringtun only.
#[path = "../../appliance/src/siderolink/screen.rs"]
pub mod siderolink_screen;

/// `appliance::protocol::ipxe::query`: the `/ipxe` query string; depends on form_urlencoded
/// and the model's MAC type.
#[path = "../../appliance/src/protocol/ipxe/query.rs"]
pub mod ipxe_query;

/// `appliance::api::agent_report`: the agent's protobuf hardware report read into the typed
/// model; depends on `appliance-rpc`'s messages, prost, tonic's `Status` and the model.
#[path = "../../appliance/src/api/agent_report.rs"]
pub mod agent_report;
