//! The durable change log behind the admin Watch API: every committed object change is
//! appended, in the same write transaction as the change, under its store revision (the
//! revision counter in `meta`, one per change, so the log is dense). Each entry holds the
//! kind, name, put/delete, commit time and the object (after a put; the last state before a
//! delete), with inline BMC passwords sealed as in the `objects` table.
//!
//! A put written by a `Txn` (every create and most writes) leaves the object out of its
//! entry (a header line alone, [`refer_into`]): it refers to the object's record in
//! `objects`, which holds that revision until the object is written again or deleted. The
//! record's JSON was the entry's second copy of the same bytes (a Server's is ~3 KB: a
//! registration wrote a 4 KiB log leaf for it). Every write that replaces or deletes a record
//! first gives the entry of the replaced revision its bytes ([`keep_replaced`]), in the same
//! transaction, so a reader of any revision still in the log gets that revision's object,
//! whatever came after (from schema 6).
//!
//! The log is bounded by a [`Retention`] (number of changes and age), pruned oldest first
//! in the writing transaction. `meta` `change_log_compacted` is the highest revision pruned:
//! a reader may resume after any revision `r` with `compacted <= r <= revision`; an older
//! `r` must list again ([`Since::Compacted`]).

use redb::{ReadableTable, Table};

use super::tables::{self, CHANGE_LOG, META, META_LOG_COMPACTED, OBJECTS};
use super::{Change, ChangeOp, Store, StoreError};
use crate::model::{Kind, Object};
use crate::secrets::SecretKey;

/// How much of the change log is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Newest changes kept (at least 1); the log may hold up to 1/128 more before a
    /// commit prunes it back to this ([`count_slack`]).
    pub max_changes: u64,
    /// Changes older than this (ms, by commit time) are dropped at the next commit;
    /// `None` keeps them until `max_changes` pushes them out.
    pub max_age_ms: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            max_changes: 10_000,
            max_age_ms: Some(24 * 3600 * 1000),
        }
    }
}

/// One logged change, as a watcher reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedChange {
    pub revision: u64,
    pub kind: Kind,
    pub name: String,
    pub op: ChangeOp,
    /// Unix ms of the commit.
    pub committed_ms: u64,
    /// After a put: the object; after a delete: its last state.
    pub object: Object,
}

/// What a read of the log after a revision found.
#[derive(Debug, Clone, PartialEq)]
pub enum Since {
    /// Changes after the asked revision (at most the asked number), and the store revision
    /// the read saw: when fewer than asked came back, the reader has everything up to it.
    Changes {
        changes: Vec<LoggedChange>,
        revision: u64,
    },
    /// The asked revision is older than the log keeps (`compacted`), or newer than the
    /// store (`revision`; a store restored from an older backup): list again.
    Compacted { compacted: u64, revision: u64 },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    op: Op,
    kind: String,
    name: String,
    at_ms: u64,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum Op {
    Put,
    Delete,
}

/// Appends one change (inside the caller's write transaction). `object` is the object after
/// a put, or the last state before a delete.
pub(crate) fn append(
    log: &mut Table<'_, u64, &'static [u8]>,
    change: &Change,
    object: &Object,
    key: &SecretKey,
    at_ms: u64,
) -> Result<(), StoreError> {
    let json = tables::sealed_json(object, key)?;
    let mut value = Vec::new();
    entry_into(&mut value, change, json.as_bytes(), at_ms);
    log.insert(change.revision, value.as_slice())?;
    Ok(())
}

/// Writes the log entry of `change` into `out` (emptied first): its header line, the
/// bytes serde_json writes for [`Header`] (field order, escaping), written without building
/// one (a put is on every apply's path: the header's copies of kind and name were two
/// allocations), then the object's sealed JSON.
pub(crate) fn entry_into(out: &mut Vec<u8>, change: &Change, sealed_json: &[u8], at_ms: u64) {
    out.clear();
    out.reserve(64 + change.name.len() + sealed_json.len());
    out.extend_from_slice(match change.op {
        ChangeOp::Put => &b"{\"op\":\"put\",\"kind\":"[..],
        ChangeOp::Delete => &b"{\"op\":\"delete\",\"kind\":"[..],
    });
    serde_json::to_writer(&mut *out, change.kind.as_str()).expect("a string serialises");
    out.extend_from_slice(b",\"name\":");
    serde_json::to_writer(&mut *out, &change.name).expect("a string serialises");
    out.extend_from_slice(b",\"at_ms\":");
    serde_json::to_writer(&mut *out, &at_ms).expect("a number serialises");
    out.extend_from_slice(b"}\n");
    out.extend_from_slice(sealed_json);
}

/// Writes the entry of a put into `out` (emptied first) that refers to the object's record
/// in `objects` instead of copying it: the header line alone. The caller writes that record
/// under `change.revision` in the same transaction.
pub(crate) fn refer_into(out: &mut Vec<u8>, change: &Change, at_ms: u64) {
    entry_into(out, change, b"", at_ms);
}

/// Whether a logged entry refers to the object's record (written by [`refer_into`]): its
/// header line ends it. A header is one line (serde_json escapes newlines in strings), and a
/// copied object's JSON never ends in a newline.
fn refers(entry: &[u8]) -> bool {
    entry.last() == Some(&b'\n')
}

/// Called with the record (as stored: revision + sealed JSON) that a write of `kind`/`name`
/// is replacing or deleting, before the write's own entry is appended: when the log still
/// holds that revision's entry as a reference to the record, the entry gets the record's
/// JSON now, since the record is about to stop holding it. `scratch` is any buffer.
pub(crate) fn keep_replaced(
    log: &mut Table<'_, u64, &'static [u8]>,
    kind: Kind,
    name: &str,
    record: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let (revision, json) =
        record
            .split_first_chunk::<8>()
            .ok_or_else(|| StoreError::CorruptRecord {
                kind,
                name: name.to_string(),
                message: format!("record is {} bytes, shorter than 8", record.len()),
            })?;
    let revision = u64::from_be_bytes(*revision);
    scratch.clear();
    match log.get(revision)? {
        Some(entry) if refers(entry.value()) => {
            scratch.reserve(entry.value().len() + json.len());
            scratch.extend_from_slice(entry.value());
            scratch.extend_from_slice(json);
        }
        // Already a copy (written whole, or kept before), or pruned.
        _ => return Ok(()),
    }
    log.insert(revision, scratch.as_slice())?;
    Ok(())
}

/// Changes the log may hold beyond `max_changes` before the count rule prunes it (back
/// to `max_changes`): 1/128 of it, so that with the default 10,000 a commit touches the
/// oldest end of the log (one more leaf and its path written and fsynced) once in 78
/// commits instead of in every one. A retention under 128 is kept exactly.
pub(crate) fn count_slack(max_changes: u64) -> u64 {
    max_changes / 128
}

/// Drops entries beyond `retention` (oldest first), given the store revision after this
/// transaction's changes; records the new compaction point. By count, the log is pruned
/// only once it holds more than `max_changes` + [`count_slack`] changes.
pub(crate) fn prune(
    log: &mut Table<'_, u64, &'static [u8]>,
    meta: &mut Table<'_, &'static str, u64>,
    revision: u64,
    retention: Retention,
    now_ms: u64,
) -> Result<(), StoreError> {
    let mut compacted = meta
        .get(META_LOG_COMPACTED)?
        .map(|v| v.value())
        .unwrap_or(0);
    let start = compacted;
    let cutoff = retention.max_age_ms.map(|age| now_ms.saturating_sub(age));
    let max_changes = retention.max_changes.max(1);
    let count_due = revision - compacted > max_changes + count_slack(max_changes);
    while compacted < revision {
        let next = compacted + 1;
        let over_count = count_due && revision - compacted > max_changes;
        let too_old = match (cutoff, over_count) {
            (_, true) => true,
            (None, false) => false,
            (Some(cutoff), false) => match log.get(next)? {
                Some(v) => header_of(next, v.value())?.at_ms < cutoff,
                None => true,
            },
        };
        if !too_old {
            break;
        }
        log.remove(next)?;
        compacted = next;
    }
    if compacted != start {
        meta.insert(META_LOG_COMPACTED, compacted)?;
    }
    Ok(())
}

fn corrupt(revision: u64, message: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptChange {
        revision,
        message: message.to_string(),
    }
}

fn header_of(revision: u64, bytes: &[u8]) -> Result<Header, StoreError> {
    let end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| corrupt(revision, "no header line"))?;
    serde_json::from_slice(&bytes[..end]).map_err(|e| corrupt(revision, e))
}

/// Reads the entry logged under `revision`; an entry that refers to the object's record
/// reads it from `objects` (of the same snapshot), which must still hold that revision.
fn decode(
    revision: u64,
    bytes: &[u8],
    objects: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &SecretKey,
) -> Result<LoggedChange, StoreError> {
    let header = header_of(revision, bytes)?;
    let kind = Kind::parse_cli(&header.kind)
        .ok_or_else(|| corrupt(revision, format!("unknown kind `{}`", header.kind)))?;
    let object = if refers(bytes) {
        let record = objects
            .get(tables::object_key(kind, &header.name).as_str())?
            .ok_or_else(|| corrupt(revision, "refers to an object that is gone"))?;
        let stored = tables::decode_record(kind, &header.name, record.value(), key)?;
        if stored.revision != revision {
            return Err(corrupt(
                revision,
                format!(
                    "refers to an object now at revision {}, without a copy",
                    stored.revision
                ),
            ));
        }
        stored.object
    } else {
        let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(0);
        let json = std::str::from_utf8(&bytes[end + 1..]).map_err(|e| corrupt(revision, e))?;
        tables::open_json(kind, &header.name, json, key)?
    };
    Ok(LoggedChange {
        revision,
        kind,
        name: header.name,
        op: match header.op {
            Op::Put => ChangeOp::Put,
            Op::Delete => ChangeOp::Delete,
        },
        committed_ms: header.at_ms,
        object,
    })
}

impl Store {
    /// The changes committed after `revision`, oldest first, at most `limit`, read in one
    /// snapshot (see [`Since`]).
    pub fn changes_since(&self, revision: u64, limit: usize) -> Result<Since, StoreError> {
        let txn = self.inner.db.read()?;
        let meta = txn.open_table(META)?;
        let current = meta
            .get(tables::META_REVISION)?
            .map(|v| v.value())
            .unwrap_or(0);
        let compacted = meta
            .get(META_LOG_COMPACTED)?
            .map(|v| v.value())
            .unwrap_or(0);
        if revision < compacted || revision > current {
            return Ok(Since::Compacted {
                compacted,
                revision: current,
            });
        }
        let log = txn.open_table(CHANGE_LOG)?;
        let objects = txn.open_table(OBJECTS)?;
        let mut changes = Vec::new();
        for entry in log.range(revision + 1..)?.take(limit) {
            let (k, v) = entry?;
            changes.push(decode(k.value(), v.value(), &objects, &self.inner.key)?);
        }
        Ok(Since::Changes {
            changes,
            revision: current,
        })
    }

    /// The oldest revision a watch can resume after (the highest revision pruned from the
    /// change log).
    pub fn compacted_revision(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.read()?;
        let meta = txn.open_table(META)?;
        Ok(meta
            .get(META_LOG_COMPACTED)?
            .map(|v| v.value())
            .unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header line written by hand is serde_json's own for [`Header`], byte for byte,
    /// and reads back.
    #[test]
    fn an_entry_header_is_what_serde_json_writes() {
        let mut out = Vec::new();
        for op in [ChangeOp::Put, ChangeOp::Delete] {
            for name in ["s1", "a \"quoted\" \\ name\n\u{7f}é"] {
                let change = Change {
                    revision: 7,
                    kind: Kind::ServerClass,
                    name: name.to_string(),
                    op,
                    object: None,
                };
                entry_into(&mut out, &change, b"{\"x\":1}", u64::MAX - 3);
                let mut want = serde_json::to_vec(&Header {
                    op: match op {
                        ChangeOp::Put => Op::Put,
                        ChangeOp::Delete => Op::Delete,
                    },
                    kind: "ServerClass".into(),
                    name: name.into(),
                    at_ms: u64::MAX - 3,
                })
                .unwrap();
                want.extend_from_slice(b"\n{\"x\":1}");
                assert_eq!(
                    String::from_utf8_lossy(&out),
                    String::from_utf8_lossy(&want)
                );
                let header = header_of(7, &out).unwrap();
                assert_eq!((header.name.as_str(), header.at_ms), (name, u64::MAX - 3));
            }
        }
    }
}
