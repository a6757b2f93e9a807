//! Every redb table of the store, in one place, and the record encoding.
//!
//! `objects`: key `"<Kind>/<name>"`, value = 8-byte big-endian revision + canonical JSON;
//! a Server's inline `spec.bmc.pass` is sealed inside that JSON (see `bmc.rs`).
//! `meta`: schema version, the store revision counter and the secrets key id.
//! `change_log`: key revision, value = one JSON header line + the object's canonical JSON
//! (sealed as in `objects`), or the header line alone when the entry refers to the object's
//! record in `objects` (from schema 6); see `changelog.rs`.

use redb::TableDefinition;

use super::{StoreError, Stored};
use crate::model::{Kind, Object};
use crate::secrets::SecretKey;

pub const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub const META_SCHEMA_VERSION: &str = "schema_version";
pub const META_REVISION: &str = "revision";
/// The highest revision pruned from `change_log` (from schema 3).
pub const META_LOG_COMPACTED: &str = "change_log_compacted";
/// Committed object changes by revision (`changelog.rs`).
pub const CHANGE_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("change_log");
/// `SecretKey::id` of the key this store's secrets are sealed with (from schema 2).
pub const META_SECRETS_KEY_ID: &str = "secrets_key_id";

pub fn kind_prefix(kind: Kind) -> String {
    format!("{}/", kind.as_str())
}

pub fn object_key(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

/// Encodes an object record, sealing its secrets with `key`.
pub fn encode_record(
    revision: u64,
    object: &Object,
    key: &SecretKey,
) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    sealed_record_into(&mut out, object, key)?;
    out[..8].copy_from_slice(&revision.to_be_bytes());
    Ok(out)
}

/// [`encode_record`] into `out` (emptied first) with the revision left zero, for the
/// caller to fill in: a put writes the record's JSON to the change log as well.
pub fn sealed_record_into(
    out: &mut Vec<u8>,
    object: &Object,
    key: &SecretKey,
) -> Result<(), StoreError> {
    let sealed = super::bmc::seal_inline_pass(object, key)?;
    out.clear();
    // A Server's JSON is a few hundred bytes: grown from empty, the buffer was reallocated
    // five times in a transaction's first write.
    out.reserve(1024);
    out.extend_from_slice(&[0; 8]);
    sealed.as_ref().unwrap_or(object).write_json(out);
    Ok(())
}

/// An object's canonical JSON with its secrets sealed with `key`.
pub fn sealed_json(object: &Object, key: &SecretKey) -> Result<String, StoreError> {
    let sealed = super::bmc::seal_inline_pass(object, key)?;
    Ok(sealed.as_ref().unwrap_or(object).to_json())
}

/// Reads what [`sealed_json`] wrote, opening the sealed secrets with `key`.
pub fn open_json(
    kind: Kind,
    name: &str,
    json: &str,
    key: &SecretKey,
) -> Result<Object, StoreError> {
    let mut object =
        Object::from_stored_json(kind, json).map_err(|e| StoreError::CorruptRecord {
            kind,
            name: name.to_string(),
            message: e.to_string(),
        })?;
    super::bmc::open_inline_pass(&mut object, key)?;
    Ok(object)
}

/// Decodes an object record, opening its sealed secrets with `key` (a record written
/// before secrets were sealed reads as it is).
pub fn decode_record(
    kind: Kind,
    name: &str,
    bytes: &[u8],
    key: &SecretKey,
) -> Result<Stored, StoreError> {
    let mut stored = decode_unsealed(kind, name, bytes)?;
    super::bmc::open_inline_pass(&mut stored.object, key)?;
    Ok(stored)
}

/// Decodes an object record as written, without opening sealed secrets.
pub fn decode_unsealed(kind: Kind, name: &str, bytes: &[u8]) -> Result<Stored, StoreError> {
    let corrupt = |message: String| StoreError::CorruptRecord {
        kind,
        name: name.to_string(),
        message,
    };
    let (rev, json) = bytes
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt(format!("record is {} bytes, shorter than 8", bytes.len())))?;
    let json = std::str::from_utf8(json).map_err(|e| corrupt(e.to_string()))?;
    let object = Object::from_stored_json(kind, json).map_err(|e| corrupt(e.to_string()))?;
    Ok(Stored {
        object,
        revision: u64::from_be_bytes(*rev),
    })
}

// --- lifecycle room (store/txn.rs, store/events.rs) ---

/// Lifecycle events: key (server name, global sequence number), value = JSON `EventRecord`.
pub const EVENTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("lifecycle_events");
/// Allocations: key server name, value = JSON `AllocationRecord` (owner, bootstrap data…).
pub const ALLOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("lifecycle_allocations");
/// The last event sequence number handed out (in `META`).
pub const META_EVENT_SEQ: &str = "lifecycle_event_seq";

// dhcp
/// `dhcp_leases`: key = IPv4 address as u32, value = `store::leases` record encoding.
pub const LEASES: TableDefinition<u32, &[u8]> = TableDefinition::new("dhcp_leases");
/// `dhcpv6_leases`: key = IPv6 address as u128, value = `store::leases6` record encoding.
pub const LEASES6: TableDefinition<u128, &[u8]> = TableDefinition::new("dhcpv6_leases");

// --- bmc room (store/bmc.rs) ---

/// BMC credentials: key `"<namespace>/<name>"`, value = JSON map (the Secrets that
/// `spec.bmc.userFrom/passFrom` point at), sealed (`crate::secrets`).
pub const BMC_SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("bmc_secrets");
/// Per-server BMC settings: key server name, value = JSON `BmcSettings`.
pub const BMC_SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("bmc_settings");

// --- siderolink room: the box's SideroLink identity (`store/siderolink.rs`) ---

/// Key `"installation-id"` → its text; `"private-key"` → the WireGuard key, sealed;
/// `"talosconfig/<cluster>"` → an operator's talosconfig, sealed; `"node/<server>"` →
/// the node's last SideroLink session (JSON `NodeRecord`, written with the binding's
/// `spec.siderolink` and kept after the binding goes, for a reset without BMC).
pub const SIDEROLINK: TableDefinition<&str, &[u8]> = TableDefinition::new("siderolink");
pub const SIDEROLINK_INSTALLATION_ID: &str = "installation-id";
pub const SIDEROLINK_PRIVATE_KEY: &str = "private-key";
pub const SIDEROLINK_TALOSCONFIG_PREFIX: &str = "talosconfig/";
pub const SIDEROLINK_NODE_PREFIX: &str = "node/";
/// Talos event ids applied per server (Talos resends its backlog after a reconnect, also
/// after the box restarted): key (server name, sequence), value = the event id; the newest
/// few per server are kept (`Txn::remember_talos_event`).
pub const SIDEROLINK_EVENT_IDS: TableDefinition<(&str, u64), &str> =
    TableDefinition::new("siderolink_event_ids");
/// The last sequence number of `SIDEROLINK_EVENT_IDS` (in `META`).
pub const META_SIDEROLINK_EVENT_SEQ: &str = "siderolink_event_seq";

// --- console room: console login settings (`store/console.rs`) ---

/// Console settings: key `"admin_password"` → argon2id PHC string.
pub const CONSOLE: TableDefinition<&str, &str> = TableDefinition::new("console");
pub const CONSOLE_ADMIN_PASSWORD: &str = "admin_password";

// --- siderolink room: node logs (`store/node_logs.rs`) ---

/// Node log lines: key (server name, global sequence number), value = JSON `NodeLogRecord`.
pub const NODE_LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("node_logs");
/// Lines held per server in `NODE_LOGS` (so the ring is trimmed without counting it).
pub const NODE_LOG_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("node_log_counts");
/// The last node log sequence number handed out (in `META`).
pub const META_NODE_LOG_SEQ: &str = "node_log_seq";

// --- admin mTLS (`store/admin_tls.rs`) ---

/// `"ca-key"` → the admin CA's PKCS#8 PEM key, sealed; `"ca-cert"` → its certificate PEM;
/// `"client/<name>"` → JSON `ClientRecord` (certificate fingerprint, revoked).
pub const ADMIN_TLS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_tls");

// --- boot timeline (`store/timeline.rs`) ---

/// Timeline events: key (server name, or a pending client `mac:<mac>` / `ip:<addr>`,
/// global sequence number), value = JSON `TimelineRecord`.
pub const TIMELINE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("timeline");
/// Events held per key in `TIMELINE`.
pub const TIMELINE_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("timeline_counts");
/// Pending clients by the sequence number that created them (the oldest goes first), and
/// the reverse.
pub const TIMELINE_PENDING: TableDefinition<u64, &str> = TableDefinition::new("timeline_pending");
pub const TIMELINE_PENDING_KEYS: TableDefinition<&str, u64> =
    TableDefinition::new("timeline_pending_keys");
/// The last timeline sequence number handed out (in `META`).
pub const META_TIMELINE_SEQ: &str = "timeline_seq";
