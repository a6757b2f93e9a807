//! What the console shows, computed from stored objects: server rows (state, class,
//! hardware summary), the servers query (filter, sort, page), the overview counts, the
//! recent-changes list, what the action buttons may do (capabilities), object summaries
//! (ServerClass, Environment and its asset downloads), lifecycle events and the settings
//! page (DHCP pools and leases from the config and the lease table).
//!
//! Pure. Reads objects through their canonical JSON, so fields other rooms add to the
//! model (`status.state`, `status.power`, `status.addresses`, `spec.bmc`…) show up here as
//! soon as they exist, without this room naming their Rust types. Environment asset
//! readiness is the exception: it is read where the boot routes read it (`boot::assets`).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use crate::boot::assets;
use crate::config::Config;
use crate::model::{self, Kind, Object};
use crate::protocol::dhcp::{Lease, LeaseState};
use crate::store::EventRecord;

/// Lifecycle states in display order (the phases of `reconcile::lifecycle`). A phase
/// stored on the Server (`status.state` or `status.phase`) wins when present; otherwise the state is derived from Sidero's (accepted, inUse, isClean) tuple.
pub const STATES: [&str; 8] = [
    "discovered",
    "accepted",
    "wiping",
    "available",
    "allocated",
    "booting",
    "installed",
    "released",
];

/// One row of the servers table.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerRow {
    pub name: String,
    pub hostname: String,
    pub state: String,
    pub accepted: bool,
    pub cordoned: bool,
    pub in_use: bool,
    pub clean: bool,
    pub power: String,
    pub classes: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub manufacturer: String,
    pub product: String,
    pub cpus: u64,
    pub cores: u64,
    pub memory_mib: u64,
    pub disks: u64,
    pub storage_bytes: u64,
    pub nics: u64,
    /// `spec.hardware.firmware.kind` (`bios`, `uefi`), empty when not reported.
    pub firmware: String,
    /// `spec.hardware.firmware.secureBoot` (`enabled`, `disabled`, `unknown`), empty when
    /// not reported.
    pub secure_boot: String,
    pub hardware: String,
    pub revision: u64,
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn b(v: &Value, ptr: &str) -> bool {
    v.pointer(ptr).and_then(Value::as_bool).unwrap_or(false)
}

fn n(v: &Value, ptr: &str) -> Option<u64> {
    let x = v.pointer(ptr)?;
    x.as_u64().or_else(|| x.as_f64().map(|f| f.max(0.0) as u64))
}

/// "16 GB" / "16384 MB" / 17179869184 → MiB.
fn size_mib(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    if let Some(bytes) = v.as_u64() {
        return Some(bytes / (1 << 20));
    }
    let text = v.as_str()?.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let num: f64 = text[..split].trim().parse().ok()?;
    let unit = text[split..].trim().to_ascii_uppercase();
    let mib = match unit.as_str() {
        "" | "B" => num / (1u64 << 20) as f64,
        "KB" | "KIB" => num / 1024.0,
        "MB" | "MIB" => num,
        "GB" | "GIB" => num * 1024.0,
        "TB" | "TIB" => num * 1024.0 * 1024.0,
        _ => return None,
    };
    Some(mib as u64)
}

/// Human size from MiB: "512 MiB", "16 GiB", "1.5 TiB".
pub fn human_mib(mib: u64) -> String {
    if mib >= 1 << 20 {
        format!("{:.1} TiB", mib as f64 / (1u64 << 20) as f64)
    } else if mib >= 1024 {
        let g = mib as f64 / 1024.0;
        if g.fract() < 0.05 {
            format!("{g:.0} GiB")
        } else {
            format!("{g:.1} GiB")
        }
    } else {
        format!("{mib} MiB")
    }
}

/// The lifecycle state of a server from its JSON.
pub fn server_state(v: &Value) -> String {
    for ptr in ["/status/state", "/status/phase", "/status/lifecycle/state"] {
        let st = s(v, ptr);
        if !st.is_empty() {
            return st.to_ascii_lowercase();
        }
    }
    let accepted = b(v, "/spec/accepted");
    let in_use = b(v, "/status/inUse");
    let clean = b(v, "/status/isClean");
    match (accepted, in_use, clean) {
        (false, _, _) => "discovered",
        (true, true, _) => "allocated",
        (true, false, true) => "available",
        (true, false, false) => "accepted",
    }
    .to_string()
}

/// Class membership: server name → class names, from ServerClass status lists.
#[derive(Debug, Default, Clone)]
pub struct ClassIndex {
    pub members: BTreeMap<String, BTreeSet<String>>,
    pub classes: Vec<ClassCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ClassCount {
    pub name: String,
    pub available: u64,
    pub in_use: u64,
}

impl ClassIndex {
    pub fn build<'a>(classes: impl IntoIterator<Item = &'a Object>) -> ClassIndex {
        let mut idx = ClassIndex::default();
        for class in classes {
            let v = serde_json::to_value(class).unwrap_or_default();
            let name = class.name().to_string();
            let list = |ptr: &str| -> Vec<String> {
                v.pointer(ptr)
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let available = list("/status/serversAvailable");
            let in_use = list("/status/serversInUse");
            for server in available.iter().chain(&in_use) {
                idx.members
                    .entry(server.clone())
                    .or_default()
                    .insert(name.clone());
            }
            idx.classes.push(ClassCount {
                name,
                available: available.len() as u64,
                in_use: in_use.len() as u64,
            });
        }
        idx
    }
}

/// Projects a stored Server into a table row.
pub fn server_row(object: &Object, revision: u64, classes: &ClassIndex) -> ServerRow {
    let v = serde_json::to_value(object).unwrap_or_default();
    let hw = v.pointer("/spec/hardware").cloned().unwrap_or(Value::Null);
    let cpus = n(&hw, "/compute/processorCount")
        .or_else(|| {
            hw.pointer("/compute/processors")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
        })
        .unwrap_or(0);
    let cores = n(&hw, "/compute/totalCoreCount").unwrap_or(0);
    let memory_mib = size_mib(hw.pointer("/memory/totalSize"))
        .or_else(|| {
            hw.pointer("/memory/modules")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(|x| n(x, "/size")).sum())
        })
        .unwrap_or(0);
    let devices = hw.pointer("/storage/devices").and_then(Value::as_array);
    let disks = n(&hw, "/storage/deviceCount")
        .or_else(|| devices.map(|d| d.len() as u64))
        .unwrap_or(0);
    let storage_bytes = devices
        .map(|d| d.iter().filter_map(|x| n(x, "/size")).sum::<u64>())
        .filter(|b| *b > 0)
        .or_else(|| size_mib(hw.pointer("/storage/totalSize")).map(|m| m << 20))
        .unwrap_or(0);
    let nics = n(&hw, "/network/interfaceCount")
        .or_else(|| {
            hw.pointer("/network/interfaces")
                .and_then(Value::as_array)
                .map(|a| a.len() as u64)
        })
        .unwrap_or(0);
    let mut parts = Vec::new();
    if cpus > 0 {
        parts.push(if cores > 0 {
            format!("{cpus} CPU / {cores} cores")
        } else {
            format!("{cpus} CPU")
        });
    }
    if memory_mib > 0 {
        parts.push(format!("{} RAM", human_mib(memory_mib)));
    }
    if disks > 0 {
        parts.push(format!(
            "{disks} disk{} {}",
            if disks == 1 { "" } else { "s" },
            human_mib(storage_bytes >> 20)
        ));
    }
    if nics > 0 {
        parts.push(format!("{nics} NIC{}", if nics == 1 { "" } else { "s" }));
    }
    let firmware = s(&hw, "/firmware/kind");
    let secure_boot = s(&hw, "/firmware/secureBoot");
    match (firmware, secure_boot) {
        ("", _) => {}
        (kind, "enabled") => parts.push(format!("{} Secure Boot", kind.to_ascii_uppercase())),
        (kind, _) => parts.push(kind.to_ascii_uppercase()),
    }
    let power = s(&v, "/status/power");
    ServerRow {
        name: object.name().to_string(),
        hostname: s(&v, "/spec/hostname").to_string(),
        state: server_state(&v),
        accepted: b(&v, "/spec/accepted"),
        cordoned: b(&v, "/spec/cordoned"),
        in_use: b(&v, "/status/inUse"),
        clean: b(&v, "/status/isClean"),
        power: if power.is_empty() { "unknown" } else { power }.to_string(),
        classes: classes
            .members
            .get(object.name())
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default(),
        labels: object.metadata().labels.clone(),
        manufacturer: s(&hw, "/system/manufacturer").to_string(),
        product: s(&hw, "/system/productName").to_string(),
        cpus,
        cores,
        memory_mib,
        disks,
        storage_bytes,
        nics,
        firmware: firmware.to_string(),
        secure_boot: secure_boot.to_string(),
        hardware: parts.join(", "),
        revision,
    }
}

/// Filter, sort and page of the servers table (all optional).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct ServerQuery {
    /// Lifecycle state, or "cordoned".
    pub state: String,
    /// ServerClass name; "-" = in no class.
    pub class: String,
    /// `key` or `key=value`; several separated by commas (all must match).
    pub label: String,
    /// Free text over name, hostname, labels, manufacturer, product and hardware summary.
    pub q: String,
    /// name | hostname | state | class | cpus | memory | storage | revision
    pub sort: String,
    /// "desc" for descending.
    pub order: String,
    pub offset: usize,
    pub limit: usize,
}

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ServerPage {
    pub total: usize,
    pub matched: usize,
    pub offset: usize,
    pub limit: usize,
    pub rows: Vec<ServerRow>,
}

fn matches(row: &ServerRow, q: &ServerQuery) -> bool {
    if !q.state.is_empty() {
        let ok = if q.state == "cordoned" {
            row.cordoned
        } else {
            row.state.eq_ignore_ascii_case(&q.state)
        };
        if !ok {
            return false;
        }
    }
    if !q.class.is_empty() {
        let ok = if q.class == "-" {
            row.classes.is_empty()
        } else {
            row.classes.contains(&q.class)
        };
        if !ok {
            return false;
        }
    }
    for sel in q.label.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ok = match sel.split_once('=') {
            Some((k, v)) => row.labels.get(k.trim()).is_some_and(|x| x == v.trim()),
            None => row.labels.contains_key(sel),
        };
        if !ok {
            return false;
        }
    }
    let text = q.q.trim().to_ascii_lowercase();
    if !text.is_empty() {
        for word in text.split_whitespace() {
            let hay = [
                row.name.as_str(),
                &row.hostname,
                &row.manufacturer,
                &row.product,
                &row.hardware,
                &row.state,
            ];
            let in_fields = hay.iter().any(|h| h.to_ascii_lowercase().contains(word));
            let in_labels = row.labels.iter().any(|(k, v)| {
                k.to_ascii_lowercase().contains(word) || v.to_ascii_lowercase().contains(word)
            });
            let in_classes = row.classes.iter().any(|c| c.contains(word));
            if !(in_fields || in_labels || in_classes) {
                return false;
            }
        }
    }
    true
}

fn state_rank(state: &str) -> usize {
    STATES
        .iter()
        .position(|s| *s == state)
        .unwrap_or(STATES.len())
}

/// Applies `q` to all rows: filter, stable sort (ties by name), then one page.
pub fn query(rows: &[ServerRow], q: &ServerQuery) -> ServerPage {
    let limit = match q.limit {
        0 => DEFAULT_LIMIT,
        l => l.min(MAX_LIMIT),
    };
    let mut hits: Vec<&ServerRow> = rows.iter().filter(|r| matches(r, q)).collect();
    let key = |a: &ServerRow, b: &ServerRow| -> Ordering {
        match q.sort.as_str() {
            "hostname" => a.hostname.cmp(&b.hostname),
            "state" => state_rank(&a.state)
                .cmp(&state_rank(&b.state))
                .then_with(|| a.state.cmp(&b.state)),
            "class" => a.classes.first().cmp(&b.classes.first()),
            "cpus" => a.cpus.cmp(&b.cpus).then(a.cores.cmp(&b.cores)),
            "memory" => a.memory_mib.cmp(&b.memory_mib),
            "storage" => a.storage_bytes.cmp(&b.storage_bytes),
            "revision" => a.revision.cmp(&b.revision),
            _ => Ordering::Equal,
        }
    };
    hits.sort_by(|a, b| {
        let o = key(a, b);
        let o = if q.order == "desc" { o.reverse() } else { o };
        o.then_with(|| a.name.cmp(&b.name))
    });
    let matched = hits.len();
    let offset = q.offset.min(matched);
    ServerPage {
        total: rows.len(),
        matched,
        offset,
        limit,
        rows: hits.into_iter().skip(offset).take(limit).cloned().collect(),
    }
}

/// Counts by lifecycle state (every known state present, even at 0) plus cordoned.
pub fn state_counts(rows: &[ServerRow]) -> BTreeMap<String, u64> {
    let mut out: BTreeMap<String, u64> = STATES.iter().map(|s| (s.to_string(), 0)).collect();
    let mut cordoned = 0;
    for r in rows {
        *out.entry(r.state.clone()).or_default() += 1;
        if r.cordoned {
            cordoned += 1;
        }
    }
    out.insert("cordoned".into(), cordoned);
    out
}

/// Recent changes kept for the overview and server history.
pub const RECENT_EVENTS: usize = 500;

/// One entry of the recent-changes list (from the store change feed).
#[derive(Debug, Clone, Serialize)]
pub struct RecentEvent {
    pub revision: u64,
    /// Unix seconds when the console saw the change.
    pub at: u64,
    pub kind: String,
    pub name: String,
    pub op: &'static str,
    /// For servers: the lifecycle state after the change (and "cordoned").
    pub detail: String,
}

/// The recent-changes list, oldest first, at most `RECENT_EVENTS` long, and for each object
/// in it how many entries it has and what its newest one says: the repeat check of
/// [`RecentEvents::push`] looks there instead of scanning the list (500 string
/// comparisons per change, for a new object every time).
#[derive(Debug, Default)]
pub struct RecentEvents {
    list: VecDeque<RecentEvent>,
    /// (kind, name) → (entries in `list`, the newest one's op and detail).
    newest: HashMap<(String, String), (usize, &'static str, String)>,
}

impl RecentEvents {
    /// Appends `e`, dropping the oldest beyond `RECENT_EVENTS`. A change that reads the
    /// same as the object's previous entry is left out: the change feed glue reads the
    /// object as it is when the batch is described, so a create followed by a status write
    /// (two changes, one batch later) would otherwise show twice with the same state.
    pub fn push(&mut self, e: RecentEvent) {
        let key = (e.kind.clone(), e.name.clone());
        if let Some((_, op, detail)) = self.newest.get(&key)
            && *op == e.op
            && *detail == e.detail
        {
            return;
        }
        if self.list.len() == RECENT_EVENTS
            && let Some(oldest) = self.list.pop_front()
        {
            let oldest_key = (oldest.kind, oldest.name);
            if let Some((count, _, _)) = self.newest.get_mut(&oldest_key) {
                *count -= 1;
                if *count == 0 {
                    self.newest.remove(&oldest_key);
                }
            }
        }
        let entry = self.newest.entry(key).or_insert((0, e.op, String::new()));
        entry.0 += 1;
        entry.1 = e.op;
        entry.2.clone_from(&e.detail);
        self.list.push_back(e);
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &RecentEvent> {
        self.list.iter()
    }
}

/// The detail of a recent-changes entry for a server as stored now: its state, and
/// ", cordoned" when it is. A Server's is read from its typed fields, as
/// [`server_state`] and `/spec/cordoned` read them from its JSON form (which the console
/// would otherwise build for every change it is told of).
pub fn change_detail(object: &Object) -> String {
    let Object::Server(server) = object else {
        let v = serde_json::to_value(object).unwrap_or_default();
        let mut d = server_state(&v);
        if v.pointer("/spec/cordoned").and_then(Value::as_bool) == Some(true) {
            d.push_str(", cordoned");
        }
        return d;
    };
    let status = server.status.as_ref();
    let mut d = match status.and_then(|s| s.state.as_deref()) {
        Some(state) if !state.is_empty() => state.to_ascii_lowercase(),
        _ => {
            let in_use = status.is_some_and(|s| s.in_use);
            let clean = status.is_some_and(|s| s.is_clean);
            match (server.spec.accepted, in_use, clean) {
                (false, _, _) => "discovered",
                (true, true, _) => "allocated",
                (true, false, true) => "available",
                (true, false, false) => "accepted",
            }
            .to_string()
        }
    };
    if server.spec.cordoned {
        d.push_str(", cordoned");
    }
    d
}

/// Whether an on-demand wipe of this server is allowed now, and if not, why: asks the
/// lifecycle's pure state machine, so the button and the API give the same reason.
pub fn wipe_capability(server: Option<&model::Server>) -> Value {
    use crate::reconcile::lifecycle::{Context, Event, plan};
    let Some(server) = server else {
        return json!({ "enabled": true });
    };
    let ctx = Context {
        agent_connected: false,
        reboot_timeout: Duration::ZERO,
        reboot_retries: 0,
    };
    match plan(
        crate::reconcile::apply::server_state(server),
        Event::WipeRequested,
        &ctx,
    ) {
        Ok(_) => json!({ "enabled": true }),
        Err(e) => json!({ "enabled": false, "reason": e.to_string() }),
    }
}

/// What the box can do to servers right now; buttons for the rest are shown disabled with
/// the reason. `has_bmc`: None = not known (session-wide view), Some(false) = this server
/// has no `spec.bmc`. `wipe` from `wipe_capability`.
pub fn capabilities(has_bmc: Option<bool>, wipe: Value) -> Value {
    let power_cap = if has_bmc == Some(false) {
        json!({ "enabled": false, "reason": "this server has no BMC configured (set one with appliance ctl server bmc NAME …, or let the agent report it)" })
    } else {
        json!({ "enabled": true })
    };
    json!({
        "accept": { "enabled": true },
        "cordon": { "enabled": true },
        "uncordon": { "enabled": true },
        "delete": { "enabled": true },
        "power-on": power_cap,
        "power-off": power_cap,
        "power-cycle": power_cap,
        "pxe-once": power_cap,
        "wipe": wipe,
    })
}

/// A server's lifecycle events as the detail page lists them, newest first.
pub fn lifecycle_events(events: &[EventRecord]) -> Vec<Value> {
    events
        .iter()
        .rev()
        .map(|e| {
            json!({
                "seq": e.seq,
                "at": e.time_ms / 1000,
                "event": e.event,
                "from": e.from,
                "to": e.to,
                "message": e.message,
            })
        })
        .collect()
}

/// One line of a ServerClass or Environment list (and the head of its detail page).
pub fn object_summary(kind: Kind, object: &Object, revision: u64) -> Value {
    let v = serde_json::to_value(object).unwrap_or_default();
    match kind {
        Kind::ServerClass => {
            let len = |p: &str| v.pointer(p).and_then(Value::as_array).map_or(0, Vec::len);
            json!({
                "name": object.name(),
                "revision": revision,
                "available": len("/status/serversAvailable"),
                "in_use": len("/status/serversInUse"),
                "environment": v.pointer("/spec/environmentRef/name"),
                "qualifiers": v.pointer("/spec/qualifiers").map(|q| q.to_string()),
                "labels": object.metadata().labels,
            })
        }
        _ => {
            let conditions = v
                .pointer("/status/conditions")
                .cloned()
                .unwrap_or(Value::Array(vec![]));
            json!({
                "name": object.name(),
                "revision": revision,
                "kernel": v.pointer("/spec/kernel/url"),
                "initrd": v.pointer("/spec/initrd/url"),
                "args": v.pointer("/spec/kernel/args"),
                "conditions": conditions,
                "assets": match object {
                    Object::Environment(e) => asset_status(e),
                    _ => Vec::new(),
                },
            })
        }
    }
}

/// Download status per Environment asset with a URL, from its `Ready` conditions as
/// `boot::assets` reads them (Sidero: one condition per URL, `status` True/False).
pub fn asset_status(env: &model::Environment) -> Vec<Value> {
    let spec = assets::EnvSpec::from_environment(env);
    let conditions = assets::conditions(env);
    assets::Asset::ALL
        .iter()
        .filter_map(|&a| {
            let url = &spec.asset(a).url;
            if url.is_empty() {
                return None;
            }
            let cond = conditions.iter().find(|c| &c.url == url);
            let status = match cond {
                Some(c) if c.ready => "ready",
                Some(_) => "failed",
                None => "not downloaded",
            };
            Some(json!({
                "asset": a.as_str(),
                "url": url,
                "status": status,
                "message": cond.map(|c| &c.message).filter(|m| !m.is_empty()),
            }))
        })
        .collect()
}

/// Leases shown on the settings page at most.
const SETTINGS_LEASES: usize = 200;

/// The settings page at Unix time `now`: network and DHCP settings from the effective
/// config, pool usage and the bound leases (the first `SETTINGS_LEASES`) from the lease table.
pub fn settings(c: &Config, leases: &[Lease], now: u64) -> Value {
    let bound: Vec<_> = leases
        .iter()
        .filter(|l| matches!(l.state, LeaseState::Bound) && l.expires_at > now)
        .collect();
    let d = &c.dhcp;
    let pools: Vec<Value> = d
        .pools
        .iter()
        .map(|p| {
            let (lo, hi) = (u32::from(p.range_start), u32::from(p.range_end));
            let size = hi.saturating_sub(lo).saturating_add(1);
            let in_use = bound
                .iter()
                .filter(|l| (lo..=hi).contains(&u32::from(l.addr)))
                .count();
            json!({
                "range": format!("{} – {}", p.range_start, p.range_end),
                "netmask": p.netmask.to_string(),
                "router": p.router.map(|r| r.to_string()),
                "dns": p.dns.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "domain": p.domain,
                "size": size,
                "in_use": in_use,
            })
        })
        .collect();
    let active: Vec<Value> = bound
        .iter()
        .take(SETTINGS_LEASES)
        .map(|l| {
            json!({
                "ip": l.addr.to_string(),
                "mac": l.chaddr.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"),
                "hostname": l.hostname,
                "expires_in": l.expires_at.saturating_sub(now),
            })
        })
        .collect();
    let config_value = serde_json::to_value(c).unwrap_or_default();
    json!({
        "network": {
            "interface": c.interface,
            "http_listen": c.http.listen.to_string(),
            "tftp": config_value.get("tftp"),
        },
        "dhcp": {
            "mode": config_value.pointer("/dhcp/mode"),
            "listen_port": d.listen_port,
            "proxy_port": d.proxy_port,
            "lease_time_secs": d.lease_time_secs,
            "boot": config_value.pointer("/dhcp/boot"),
            "pools": pools,
            "reservations": d.reservations.len(),
            "active_leases": bound.len(),
            "leases": active,
        },
        "effective_toml": c.to_toml(),
        "editable": false,
        "editable_reason": "Settings come from the config file, flags and APPLIANCE_* environment; edit /etc/appliance/config.toml and restart the service",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_documents;

    fn server(name: &str, extra: &str) -> Object {
        let yaml = format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\n{extra}"
        );
        parse_documents(&yaml).unwrap().remove(0)
    }

    const HW: &str = "spec:
  hostname: node-1
  accepted: true
  hardware:
    system: {manufacturer: QEMU, productName: Standard PC}
    compute: {processorCount: 2, totalCoreCount: 4}
    memory: {totalSize: 16 GB, moduleCount: 2}
    storage:
      deviceCount: 2
      devices: [{size: 10737418240}, {size: 10737418240}]
    network: {interfaceCount: 1}
status: {ready: true, inUse: false, isClean: true}
";

    #[test]
    fn row_from_sidero_hardware() {
        let o = server("a", HW);
        let r = server_row(&o, 7, &ClassIndex::default());
        assert_eq!(r.state, "available");
        assert_eq!((r.cpus, r.cores, r.memory_mib, r.disks), (2, 4, 16384, 2));
        assert_eq!(r.storage_bytes, 20 << 30);
        assert_eq!(
            r.hardware,
            "2 CPU / 4 cores, 16 GiB RAM, 2 disks 20 GiB, 1 NIC"
        );
        assert_eq!(r.manufacturer, "QEMU");
        assert_eq!(r.power, "unknown");
        assert_eq!((r.firmware.as_str(), r.secure_boot.as_str()), ("", ""));
        let bare = server_row(&server("b", ""), 1, &ClassIndex::default());
        assert_eq!(bare.state, "discovered");
        assert_eq!(bare.hardware, "");
    }

    #[test]
    fn row_shows_the_reported_firmware() {
        for (firmware, kind, sb, summary) in [
            (
                "{kind: uefi, secureBoot: enabled}",
                "uefi",
                "enabled",
                "1 NIC, UEFI Secure Boot",
            ),
            (
                "{kind: uefi, secureBoot: disabled}",
                "uefi",
                "disabled",
                "1 NIC, UEFI",
            ),
            (
                "{kind: uefi, secureBoot: unknown}",
                "uefi",
                "unknown",
                "1 NIC, UEFI",
            ),
            (
                "{kind: bios, secureBoot: disabled}",
                "bios",
                "disabled",
                "1 NIC, BIOS",
            ),
        ] {
            let o = server(
                "a",
                &format!(
                    "spec:\n  hardware:\n    network: {{interfaceCount: 1}}\n    firmware: {firmware}\n"
                ),
            );
            let r = server_row(&o, 1, &ClassIndex::default());
            assert_eq!(
                (r.firmware.as_str(), r.secure_boot.as_str()),
                (kind, sb),
                "{firmware}"
            );
            assert_eq!(r.hardware, summary);
        }
    }

    #[test]
    fn sizes() {
        let v = |s: &str| Value::String(s.into());
        assert_eq!(size_mib(Some(&v("8 GB"))), Some(8192));
        assert_eq!(size_mib(Some(&v("512MB"))), Some(512));
        assert_eq!(size_mib(Some(&v("1.5 TB"))), Some(1572864));
        assert_eq!(size_mib(Some(&v("lots"))), None);
        assert_eq!(size_mib(Some(&Value::from(1u64 << 30))), Some(1024));
        assert_eq!(human_mib(512), "512 MiB");
        assert_eq!(human_mib(16384), "16 GiB");
        assert_eq!(human_mib(1536), "1.5 GiB");
    }

    fn rows() -> Vec<ServerRow> {
        let class = parse_documents(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata: {name: big}\nstatus: {serversAvailable: [s1], serversInUse: [s3]}\n",
        )
        .unwrap();
        let idx = ClassIndex::build(&class);
        assert_eq!(
            idx.classes,
            vec![ClassCount {
                name: "big".into(),
                available: 1,
                in_use: 1
            }]
        );
        (0..5)
            .map(|i| {
                let extra = match i {
                    1 => "metadata:\n  name: s1\n  labels: {rack: a1}\nspec: {accepted: true, hardware: {compute: {processorCount: 8}}}\nstatus: {isClean: true}\n",
                    2 => "metadata:\n  name: s2\n  labels: {rack: b2}\nspec: {accepted: true, cordoned: true}\n",
                    3 => "metadata: {name: s3}\nspec: {accepted: true}\nstatus: {inUse: true}\n",
                    _ => "",
                };
                let yaml = format!(
                    "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\n{}",
                    if extra.is_empty() {
                        format!("metadata: {{name: s{i}}}\n")
                    } else {
                        extra.to_string()
                    }
                );
                let o = parse_documents(&yaml).unwrap().remove(0);
                server_row(&o, i, &idx)
            })
            .collect()
    }

    fn names(p: &ServerPage) -> Vec<&str> {
        p.rows.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn filter_sort_page() {
        let rows = rows();
        let q = |f: &dyn Fn(&mut ServerQuery)| {
            let mut q = ServerQuery::default();
            f(&mut q);
            query(&rows, &q)
        };
        assert_eq!(names(&q(&|_| {})), ["s0", "s1", "s2", "s3", "s4"]);
        assert_eq!(names(&q(&|q| q.state = "discovered".into())), ["s0", "s4"]);
        assert_eq!(names(&q(&|q| q.state = "cordoned".into())), ["s2"]);
        assert_eq!(names(&q(&|q| q.class = "big".into())), ["s1", "s3"]);
        assert_eq!(names(&q(&|q| q.class = "-".into())), ["s0", "s2", "s4"]);
        assert_eq!(names(&q(&|q| q.label = "rack".into())), ["s1", "s2"]);
        assert_eq!(names(&q(&|q| q.label = "rack=b2".into())), ["s2"]);
        assert_eq!(names(&q(&|q| q.q = "8 cpu".into())), ["s1"]);
        let p = q(&|q| {
            q.sort = "state".into();
            q.order = "desc".into();
        });
        assert_eq!(names(&p), ["s3", "s1", "s2", "s0", "s4"]);
        let p = q(&|q| {
            q.offset = 3;
            q.limit = 1;
        });
        assert_eq!((p.total, p.matched, names(&p)), (5, 5, vec!["s3"]));
        let p = q(&|q| q.offset = 99);
        assert!(p.rows.is_empty());
        let counts = state_counts(&rows);
        assert_eq!(counts["discovered"], 2);
        assert_eq!(counts["available"], 1);
        assert_eq!(counts["allocated"], 1);
        assert_eq!(counts["cordoned"], 1);
        assert_eq!(counts["installed"], 0);
    }

    #[test]
    fn recent_events_collapse_repeats_of_the_same_state() {
        let ev = |rev: u64, name: &str, op: &'static str, detail: &str| RecentEvent {
            revision: rev,
            at: 0,
            kind: "Server".into(),
            name: name.into(),
            op,
            detail: detail.into(),
        };
        let mut list = RecentEvents::default();
        list.push(ev(1, "a", "put", "discovered"));
        list.push(ev(2, "b", "put", "discovered"));
        list.push(ev(3, "a", "put", "discovered"));
        list.push(ev(4, "a", "put", "accepted"));
        list.push(ev(5, "a", "put", "discovered"));
        list.push(ev(6, "a", "delete", ""));
        // Another kind of the same name is another object.
        let mut class = ev(7, "a", "delete", "");
        class.kind = "ServerClass".into();
        list.push(class);
        let revs: Vec<u64> = list.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![1, 2, 4, 5, 6, 7]);
        list.push(ev(8, "b", "put", "discovered"));
        for i in 0..RECENT_EVENTS as u64 + 10 {
            list.push(ev(10 + i, &format!("s{i}"), "put", "x"));
            assert!(list.list.len() <= RECENT_EVENTS);
        }
        assert_eq!(list.list.len(), RECENT_EVENTS);
        // Only what the list still holds is remembered: `b` left it, so the same state
        // is listed again; the newest `s…` is still there, so its repeat is not.
        assert_eq!(list.newest.len(), RECENT_EVENTS);
        list.push(ev(1000, "b", "put", "discovered"));
        let newest = RECENT_EVENTS as u64 + 9;
        list.push(ev(1001, &format!("s{newest}"), "put", "x"));
        let tail: Vec<u64> = list.iter().rev().take(2).map(|e| e.revision).collect();
        assert_eq!(tail, vec![1000, 10 + newest]);
        assert_eq!(list.list.len(), RECENT_EVENTS);
    }

    #[test]
    fn a_servers_change_detail_reads_its_typed_fields_as_its_json_form_reads() {
        let server = |spec: &str, status: &str| {
            model::parse_documents(&format!(
                "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: s1\nspec:\n{spec}{status}"
            ))
            .unwrap()
            .remove(0)
        };
        let from_json = |object: &Object| {
            let v = serde_json::to_value(object).unwrap();
            let mut d = server_state(&v);
            if v.pointer("/spec/cordoned").and_then(Value::as_bool) == Some(true) {
                d.push_str(", cordoned");
            }
            d
        };
        let specs = [
            "  accepted: false\n",
            "  accepted: true\n",
            "  accepted: true\n  cordoned: true\n",
            "  cordoned: true\n",
        ];
        let statuses = [
            "",
            "status:\n  ready: false\n",
            "status:\n  inUse: true\n",
            "status:\n  isClean: true\n",
            "status:\n  inUse: true\n  isClean: true\n",
            "status:\n  state: Installed\n",
            "status:\n  state: ''\n  isClean: true\n",
            "status:\n  state: wiping\n  inUse: true\n",
        ];
        let mut seen = BTreeSet::new();
        for spec in specs {
            for status in statuses {
                let object = server(spec, status);
                let detail = change_detail(&object);
                assert_eq!(detail, from_json(&object), "{spec}{status}");
                seen.insert(detail);
            }
        }
        assert_eq!(
            seen.len(),
            12,
            "every state and its cordoned form: {seen:?}"
        );
        let class = model::parse_documents(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: ServerClass\nmetadata:\n  name: c\n",
        )
        .unwrap()
        .remove(0);
        assert_eq!(change_detail(&class), from_json(&class));
    }

    #[test]
    fn environment_asset_status() {
        let v = json!({
            "apiVersion": "metal.sidero.dev/v1alpha2", "kind": "Environment", "metadata": {"name": "e"},
            "spec": {"kernel": {"url": "http://a/k"}, "initrd": {"url": "http://a/i"}},
            "status": {"conditions": [{"url": "http://a/k", "status": "True", "type": "Ready"}]},
        });
        let a = asset_status(&serde_json::from_value(v).unwrap());
        assert_eq!(a[0]["status"], "ready");
        assert_eq!(a[1]["status"], "not downloaded");
    }
}
