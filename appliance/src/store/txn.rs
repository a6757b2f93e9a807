//! Multi-object write transactions: `Store::transact` runs a closure against a `Txn` that
//! reads and writes objects, lifecycle events and allocations inside ONE redb write
//! transaction. The closure's error aborts it (nothing written); success commits (fsync'd)
//! and then publishes the changed objects on the change feed. Object changes are also
//! appended to the durable change log (`changelog.rs`) in the same transaction.
//!
//! Used by the lifecycle (reconcile/) so that a transition (server status + binding +
//! event) is atomic. `Store::transact_each` runs many such jobs in one transaction (one
//! commit, one fsync) with each job's result its own: the group commit of `group.rs`.
//! Only this module and its siblings name redb types.

use std::sync::Arc;

use redb::{ReadableTable, Table};

use super::events::{AllocationRecord, EVENTS_PER_SERVER, EventRecord, NewEvent};
use super::tables::{self, ALLOCATIONS, CHANGE_LOG, EVENTS, META, OBJECTS, object_key};
use super::{
    Applied, ApplyResult, Change, ChangeOp, Store, StoreError, Stored, changelog, siderolink_index,
};
use crate::model::{Kind, Object};

/// An open write transaction (see `Store::transact`). The tables every object write
/// touches are opened with it; the others when a job first uses them, since each table
/// opened costs a lookup on open and another when the commit records its root.
pub struct Txn<'t> {
    objects: Table<'t, &'static str, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    log: Table<'t, u64, &'static [u8]>,
    events: Option<Table<'t, (&'static str, u64), &'static [u8]>>,
    allocations: Option<Table<'t, &'static str, &'static [u8]>>,
    talos_events: Option<Table<'t, (&'static str, u64), &'static str>>,
    siderolink: Option<Table<'t, &'static str, &'static [u8]>>,
    /// Who holds which overlay address / WireGuard key (`siderolink_index.rs`).
    siderolink_index: Option<super::siderolink_index::IndexTable<'t>>,
    /// The transaction itself, for the tables a Txn opens only when it needs them.
    wtx: &'t redb::WriteTransaction,
    key: &'t crate::secrets::SecretKey,
    now_ms: u64,
    revision: u64,
    /// The last lifecycle event sequence number taken, once an event was appended: read
    /// from META by the first append, written back once by `finish_txn` (not by every
    /// append: a group commit appends an adoption event per new Server).
    event_seq: Option<u64>,
    changes: Vec<Change>,
    /// Scratch for the object record and the change-log entries a write inserts (redb
    /// copies them), kept for the transaction's next write.
    record: Vec<u8>,
    entry: Vec<u8>,
    dirty: bool,
    /// Writes begun (counted before each one touches a table): a job of
    /// `Store::transact_each` that fails after one must not leave it behind.
    attempts: u64,
}

/// The table in `slot`, opened in `wtx` on first use.
fn lazy<'a, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    wtx: &'t redb::WriteTransaction,
    slot: &'a mut Option<Table<'t, K, V>>,
    table: redb::TableDefinition<'static, K, V>,
) -> Result<&'a mut Table<'t, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(wtx.open_table(table)?);
    }
    Ok(slot.as_mut().expect("opened above"))
}

impl<'t> Txn<'t> {
    fn events_table(
        &mut self,
    ) -> Result<&mut Table<'t, (&'static str, u64), &'static [u8]>, StoreError> {
        lazy(self.wtx, &mut self.events, EVENTS)
    }

    fn allocations_table(
        &mut self,
    ) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        lazy(self.wtx, &mut self.allocations, ALLOCATIONS)
    }

    fn talos_events_table(
        &mut self,
    ) -> Result<&mut Table<'t, (&'static str, u64), &'static str>, StoreError> {
        lazy(
            self.wtx,
            &mut self.talos_events,
            tables::SIDEROLINK_EVENT_IDS,
        )
    }

    pub(super) fn siderolink_table(
        &mut self,
    ) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        lazy(self.wtx, &mut self.siderolink, tables::SIDEROLINK)
    }

    fn siderolink_index_table(
        &mut self,
    ) -> Result<&mut super::siderolink_index::IndexTable<'t>, StoreError> {
        if self.siderolink_index.is_none() {
            self.siderolink_index = Some(
                self.wtx
                    .open_multimap_table(siderolink_index::SIDEROLINK_INDEX)?,
            );
        }
        Ok(self.siderolink_index.as_mut().expect("opened above"))
    }
}

impl Txn<'_> {
    pub fn get(&self, kind: Kind, name: &str) -> Result<Option<Stored>, StoreError> {
        self.objects
            .get(object_key(kind, name).as_str())?
            .map(|v| tables::decode_record(kind, name, v.value(), self.key))
            .transpose()
    }

    /// All objects of one kind, sorted by name.
    pub fn list(&self, kind: Kind) -> Result<Vec<Stored>, StoreError> {
        let prefix = tables::kind_prefix(kind);
        let mut out = Vec::new();
        for entry in self.objects.range(prefix.as_str()..)? {
            let (k, v) = entry?;
            let Some(name) = k.value().strip_prefix(prefix.as_str()) else {
                break;
            };
            out.push(tables::decode_record(kind, name, v.value(), self.key)?);
        }
        Ok(out)
    }

    /// Creates or replaces `object`; returns its revision (unchanged objects keep theirs and
    /// are not written).
    pub fn put(&mut self, object: &Object) -> Result<u64, StoreError> {
        let old = self.get(object.kind(), object.name())?;
        if let Some(old) = &old
            && old.object == *object
        {
            return Ok(old.revision);
        }
        self.write(Arc::new(object.clone()), old.as_ref().map(|o| &o.object))
    }

    /// Writes `object` over the stored one, which the caller read in this transaction and
    /// found different from it (or absent): [`Txn::put`] without reading, decoding and
    /// comparing it again (the class status writer's `any` class holds every server's name;
    /// a registration creates a Server it found absent, and passes it shared: an `Arc`). A
    /// ServerBinding goes through `put`, since the SideroLink index follows its old
    /// version.
    pub fn put_changed(&mut self, object: impl Into<Arc<Object>>) -> Result<u64, StoreError> {
        let object = object.into();
        if object.kind() == Kind::ServerBinding {
            return self.put(&object);
        }
        self.write(object, None)
    }

    /// One object of an apply (`Store::apply_with`): an incoming object without `status`
    /// keeps the stored one, a redacted BMC password the stored password; `complete` runs
    /// on an object that is then written (created or changed), and the event it returns is
    /// appended with it.
    pub(super) fn apply(
        &mut self,
        mut object: Object,
        complete: &impl Fn(&mut Object, u64) -> Option<NewEvent>,
    ) -> Result<Applied, StoreError> {
        let kind = object.kind();
        let name = object.name().to_string();
        let existing = self.get(kind, &name)?;
        if let Some(old) = &existing {
            super::keep_status_if_absent(&mut object, &old.object);
            super::bmc::keep_redacted_pass(&mut object, &old.object);
        }
        let result = match &existing {
            Some(old) if old.object == object => {
                return Ok(Applied {
                    kind,
                    name,
                    result: ApplyResult::Unchanged,
                    revision: old.revision,
                });
            }
            Some(_) => ApplyResult::Configured,
            None => ApplyResult::Created,
        };
        let event = complete(&mut object, self.now_ms);
        let revision = self.write(Arc::new(object), existing.as_ref().map(|o| &o.object))?;
        if let Some(event) = event {
            self.append_event(event)?;
        }
        Ok(Applied {
            kind,
            name,
            result,
            revision,
        })
    }

    /// Writes `object` (replacing `old`, the stored one) under the next revision, with its
    /// change-log entry and the SideroLink index's entries of a ServerBinding; the change
    /// published after the commit carries `object`. The entry refers to the record written
    /// (`changelog::refer_into`); the entry of the record it replaces gets that record's
    /// bytes first (`changelog::keep_replaced`).
    fn write(&mut self, object: Arc<Object>, old: Option<&Object>) -> Result<u64, StoreError> {
        let kind = object.kind();
        let name = object.name().to_string();
        let key = object_key(kind, &name);
        // Sealed and serialised once, into the record for the object table; the buffers
        // live as long as the transaction.
        tables::sealed_record_into(&mut self.record, &object, self.key)?;
        self.attempts += 1;
        if kind == Kind::ServerBinding {
            siderolink_index::follow(self.siderolink_index_table()?, &name, old, Some(&object))?;
        }
        self.revision += 1;
        self.record[..8].copy_from_slice(&self.revision.to_be_bytes());
        if let Some(replaced) = self.objects.insert(key.as_str(), self.record.as_slice())? {
            changelog::keep_replaced(
                &mut self.log,
                kind,
                &name,
                replaced.value(),
                &mut self.entry,
            )?;
        }
        let change = Change {
            revision: self.revision,
            kind,
            name,
            op: ChangeOp::Put,
            object: Some(object),
        };
        changelog::refer_into(&mut self.entry, &change, self.now_ms);
        self.log.insert(change.revision, self.entry.as_slice())?;
        self.changes.push(change);
        self.dirty = true;
        Ok(self.revision)
    }

    /// Deletes one object; false if it did not exist. Deleting a Server also forgets what
    /// the store kept about it outside the objects ([`forget_server`]).
    pub fn delete(&mut self, kind: Kind, name: &str) -> Result<bool, StoreError> {
        self.attempts += 1;
        let old = match self.objects.remove(object_key(kind, name).as_str())? {
            Some(v) => {
                changelog::keep_replaced(&mut self.log, kind, name, v.value(), &mut self.entry)?;
                tables::decode_record(kind, name, v.value(), self.key)?
            }
            None => return Ok(false),
        };
        if kind == Kind::ServerBinding {
            siderolink_index::follow(
                self.siderolink_index_table()?,
                name,
                Some(&old.object),
                None,
            )?;
        }
        self.revision += 1;
        let change = Change {
            revision: self.revision,
            kind,
            name: name.to_string(),
            op: ChangeOp::Delete,
            object: None,
        };
        changelog::append(&mut self.log, &change, &old.object, self.key, self.now_ms)?;
        if kind == Kind::Server {
            self.talos_events_table()?;
            self.siderolink_table()?;
            let (Some(talos_events), Some(siderolink)) =
                (self.talos_events.as_mut(), self.siderolink.as_mut())
            else {
                unreachable!("both opened above")
            };
            forget_server(self.wtx, talos_events, siderolink, name)?;
        }
        self.changes.push(change);
        self.dirty = true;
        Ok(true)
    }

    /// Appends a lifecycle event; keeps the newest `EVENTS_PER_SERVER` per server.
    pub fn append_event(&mut self, event: NewEvent) -> Result<u64, StoreError> {
        self.attempts += 1;
        let last = match self.event_seq {
            Some(seq) => seq,
            None => self
                .meta
                .get(tables::META_EVENT_SEQ)?
                .map(|v| v.value())
                .unwrap_or(0),
        };
        let seq = last + 1;
        self.event_seq = Some(seq);
        let record = EventRecord::from_new(seq, event);
        let events = self.events_table()?;
        events.insert((record.server.as_str(), seq), record.to_json().as_bytes())?;
        let server = record.server.clone();
        let mut old = Vec::new();
        {
            let range = events.range((server.as_str(), 0)..(server.as_str(), u64::MAX))?;
            for entry in range {
                let (k, _) = entry?;
                old.push(k.value().1);
            }
        }
        if old.len() > EVENTS_PER_SERVER {
            for s in &old[..old.len() - EVENTS_PER_SERVER] {
                events.remove((server.as_str(), *s))?;
            }
        }
        self.dirty = true;
        Ok(seq)
    }

    /// Records that the Talos event `id` of `server` was applied (SideroLink's event sink,
    /// in the transaction that applied it); keeps the newest `keep` ids per server.
    pub fn remember_talos_event(
        &mut self,
        server: &str,
        id: &str,
        keep: u64,
    ) -> Result<(), StoreError> {
        self.attempts += 1;
        let seq = self
            .meta
            .get(tables::META_SIDEROLINK_EVENT_SEQ)?
            .map(|v| v.value())
            .unwrap_or(0)
            + 1;
        self.meta.insert(tables::META_SIDEROLINK_EVENT_SEQ, seq)?;
        let talos_events = self.talos_events_table()?;
        talos_events.insert((server, seq), id)?;
        if let Some(upto) = seq.checked_sub(keep.max(1)) {
            let mut old = Vec::new();
            for entry in talos_events.range((server, 0)..=(server, upto))? {
                old.push(entry?.0.value().1);
            }
            for s in old {
                talos_events.remove((server, s))?;
            }
        }
        self.dirty = true;
        Ok(())
    }

    /// The ServerBindings whose `spec.siderolink.address` is `addr` (any prefix length), from
    /// the index (`siderolink_index.rs`), without reading any binding.
    pub fn siderolink_address_holders(
        &mut self,
        addr: std::net::Ipv6Addr,
    ) -> Result<Vec<String>, StoreError> {
        siderolink_index::holders(
            self.siderolink_index_table()?,
            &siderolink_index::address_key(addr),
        )
    }

    /// The ServerBindings whose `spec.siderolink.publicKey` is `key` (base64), from the index.
    pub fn siderolink_key_holders(&mut self, key: &str) -> Result<Vec<String>, StoreError> {
        siderolink_index::holders(
            self.siderolink_index_table()?,
            &siderolink_index::public_key_key(key),
        )
    }

    /// Marks the transaction as having written something outside the object tables.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn allocation(&mut self, server: &str) -> Result<Option<AllocationRecord>, StoreError> {
        self.allocations_table()?
            .get(server)?
            .map(|v| AllocationRecord::decode(server, v.value()))
            .transpose()
    }

    /// All allocations, by server name.
    pub fn allocations(&mut self) -> Result<Vec<(String, AllocationRecord)>, StoreError> {
        let mut out = Vec::new();
        for entry in self.allocations_table()?.iter()? {
            let (k, v) = entry?;
            let server = k.value().to_string();
            let record = AllocationRecord::decode(&server, v.value())?;
            out.push((server, record));
        }
        Ok(out)
    }

    pub fn put_allocation(
        &mut self,
        server: &str,
        record: &AllocationRecord,
    ) -> Result<(), StoreError> {
        self.attempts += 1;
        self.allocations_table()?
            .insert(server, record.to_json().as_bytes())?;
        self.dirty = true;
        Ok(())
    }

    pub fn delete_allocation(&mut self, server: &str) -> Result<bool, StoreError> {
        self.attempts += 1;
        let removed = self.allocations_table()?.remove(server)?.is_some();
        self.dirty |= removed;
        Ok(removed)
    }
}

impl Store {
    /// Opens every table a [`Txn`] uses inside `txn`.
    fn open_txn<'t>(&'t self, txn: &'t redb::WriteTransaction) -> Result<Txn<'t>, StoreError> {
        let meta = txn.open_table(META)?;
        let revision = meta
            .get(tables::META_REVISION)?
            .map(|v| v.value())
            .unwrap_or(0);
        Ok(Txn {
            objects: txn.open_table(OBJECTS)?,
            meta,
            log: txn.open_table(CHANGE_LOG)?,
            events: None,
            allocations: None,
            talos_events: None,
            siderolink: None,
            siderolink_index: None,
            wtx: txn,
            key: &self.inner.key,
            now_ms: crate::clock::unix_ms(),
            revision,
            event_seq: None,
            changes: Vec::new(),
            record: Vec::new(),
            entry: Vec::new(),
            dirty: false,
            attempts: 0,
        })
    }

    /// Records the revision and the lifecycle event sequence and prunes the change log
    /// before a commit of `t`.
    fn finish_txn(&self, t: &mut Txn<'_>) -> Result<(), StoreError> {
        if let Some(seq) = t.event_seq {
            t.meta.insert(tables::META_EVENT_SEQ, seq)?;
        }
        if !t.changes.is_empty() {
            t.meta.insert(tables::META_REVISION, t.revision)?;
            self.prune_log(&mut t.log, &mut t.meta, t.revision, t.now_ms)?;
        }
        Ok(())
    }

    /// Runs `f` inside one write transaction. `Err` from `f` aborts (nothing is written);
    /// `Ok` commits if anything was written, then publishes the changed objects.
    pub fn transact<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let (result, unpublished) = self.transact_unpublished(f);
        unpublished.publish();
        result
    }

    /// [`Store::transact`], leaving the committed changes for the caller to publish
    /// ([`Unpublished::publish`]); none when nothing was committed.
    pub(super) fn transact_unpublished<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> (Result<T, E>, Unpublished<'_>) {
        match self.transact_inner(f) {
            Ok((v, unpublished)) => (Ok(v), unpublished),
            Err(e) => (Err(e), Unpublished::nothing(self)),
        }
    }

    fn transact_inner<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<(T, Unpublished<'_>), E> {
        let txn = self.inner.db.write()?;
        let (result, changes, dirty) = {
            let mut t = self.open_txn(&txn)?;
            let result = f(&mut t);
            if result.is_ok() {
                self.finish_txn(&mut t)?;
            }
            (result, t.changes, t.dirty)
        };
        match result {
            Ok(v) if dirty => {
                let order = self.commit_in_order(txn)?;
                Ok((
                    v,
                    Unpublished {
                        store: self,
                        changes,
                        _order: Some(order),
                    },
                ))
            }
            Ok(v) => {
                txn.abort().map_err(StoreError::from)?;
                Ok((v, Unpublished::nothing(self)))
            }
            Err(e) => {
                txn.abort().map_err(StoreError::from)?;
                Err(e)
            }
        }
    }

    /// Runs `job` for each input, in order, inside ONE write transaction committed once
    /// (one fsync for all). Each input gets its own result, as if each job had run in a
    /// [`Store::transact`] of its own, one after the other: a job's `Err` leaves nothing of
    /// it written and fails no other job (a job that fails after it began writing makes the
    /// transaction start over without it; the others run again, so `job` must depend only
    /// on its input and the store). `Err` only when the transaction itself could not begin
    /// or commit: then nothing of any job was written.
    pub fn transact_each<I, T, E: From<StoreError>>(
        &self,
        inputs: &[I],
        job: impl Fn(&mut Txn<'_>, &I) -> Result<T, E>,
    ) -> Result<Vec<Result<T, E>>, StoreError> {
        let mut failed: Vec<Option<E>> = inputs.iter().map(|_| None).collect();
        'attempt: loop {
            let txn = self.inner.db.write()?;
            let mut done: Vec<Option<T>> = Vec::with_capacity(inputs.len());
            let (changes, dirty) = {
                let mut t = self.open_txn(&txn)?;
                for (input, failed) in inputs.iter().zip(failed.iter_mut()) {
                    if failed.is_some() {
                        done.push(None);
                        continue;
                    }
                    let (attempts, revision, dirty) = (t.attempts, t.revision, t.dirty);
                    match job(&mut t, input) {
                        Ok(v) => done.push(Some(v)),
                        Err(e) => {
                            *failed = Some(e);
                            done.push(None);
                            let wrote = t.attempts != attempts
                                || t.revision != revision
                                || t.dirty != dirty;
                            if wrote {
                                drop(t);
                                txn.abort()?;
                                continue 'attempt;
                            }
                        }
                    }
                }
                self.finish_txn(&mut t)?;
                (t.changes, t.dirty)
            };
            if dirty {
                let _order = self.commit_in_order(txn)?;
                self.publish(changes);
            } else {
                txn.abort()?;
            }
            return Ok(done
                .into_iter()
                .zip(failed)
                .map(|(ok, err)| match (ok, err) {
                    (Some(v), _) => Ok(v),
                    (None, Some(e)) => Err(e),
                    (None, None) => unreachable!("every job has a result or an error"),
                })
                .collect());
        }
    }
}

/// Removes, inside `wtx`, what the store keeps about Server `name` outside the objects: its
/// SideroLink log lines (`node_logs` and its count), the ids of the Talos events applied
/// for it, its node record (last SideroLink session) and its boot timeline. Called by both
/// delete paths (`Txn::delete`, `Store::delete`), so a deleted Server leaves none of them
/// behind, and a machine registering again under the name starts with none.
pub(super) fn forget_server(
    wtx: &redb::WriteTransaction,
    talos_events: &mut Table<'_, (&'static str, u64), &'static str>,
    siderolink: &mut Table<'_, &'static str, &'static [u8]>,
    name: &str,
) -> Result<(), StoreError> {
    talos_events.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)?;
    siderolink.remove(format!("{}{name}", tables::SIDEROLINK_NODE_PREFIX).as_str())?;
    super::node_logs::drop_server(wtx, name)?;
    super::timeline::drop_key(wtx, name)?;
    Ok(())
}

/// The changes of a commit not yet on the feed, holding the feed's order lock
/// ([`Store::commit_in_order`]) until [`Unpublished::publish`] sends them.
pub(super) struct Unpublished<'a> {
    store: &'a Store,
    changes: Vec<Change>,
    _order: Option<std::sync::MutexGuard<'a, ()>>,
}

impl<'a> Unpublished<'a> {
    /// No changes (nothing was committed), holding no lock.
    fn nothing(store: &'a Store) -> Self {
        Unpublished {
            store,
            changes: Vec::new(),
            _order: None,
        }
    }

    /// Sends the changes on the feed, then lets the next commit's publish go.
    pub(super) fn publish(self) {
        self.store.publish(self.changes);
    }
}
