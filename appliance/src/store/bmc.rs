//! BMC room of the store: credentials and per-server BMC settings.
//!
//! `bmc_secrets`: key `"<namespace>/<name>"`, value = JSON map key → value, sealed with the
//! store's secrets key (`crate::secrets`, context `bmc_secrets/<namespace>/<name>`). This plays the
//! part of the Kubernetes Secrets that Sidero's `spec.bmc.userFrom/passFrom.secretKeyRef`
//! point at; automatic BMC setup and `ctl server bmc set` write here and point the Server's
//! `spec.bmc` at it, so the password never sits in the Server object.
//! `bmc_settings`: key server name, value = JSON [`BmcSettings`] (Redfish TLS trust and the
//! pinned certificate fingerprint, preferred IPMI cipher suite).
//!
//! Also the redaction rule for inline `spec.bmc.pass`: shown as `<redacted>` by the admin
//! API, and an apply that carries `<redacted>` back keeps the stored password. In the
//! stored record an inline password is sealed too (`sealed:<hex>`), so no BMC password is
//! ever in the file in clear.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadableTable, TableError};
use serde::{Deserialize, Serialize};

use super::tables::{self, BMC_SECRETS, BMC_SETTINGS, META, OBJECTS, object_key};
use super::{Change, ChangeOp, Store, StoreError, Stored};
use crate::model::server::{Bmc as BmcSpec, CredentialSource, SecretKeyRef};
use crate::model::{Kind, Object};
use crate::secrets::SecretKey;

/// What the admin API shows instead of an inline BMC password.
pub const REDACTED: &str = "<redacted>";

/// How a sealed inline `spec.bmc.pass` starts in a stored record (then hex of the sealed
/// bytes). Only ever written by the store; every inline password is sealed when written.
const SEALED_PASS_PREFIX: &str = "sealed:";

fn inline_pass_context(server: &str) -> String {
    format!("objects/Server/{server}/spec.bmc.pass")
}

fn secret_context(id: &str) -> String {
    format!("bmc_secrets/{id}")
}

/// The record form of `object` when it carries an inline BMC password: that password
/// sealed. `None`: nothing to seal, store the object as it is.
pub(super) fn seal_inline_pass(
    object: &Object,
    key: &SecretKey,
) -> Result<Option<Object>, StoreError> {
    let Object::Server(s) = object else {
        return Ok(None);
    };
    let Some(pass) = s.spec.bmc.as_ref().and_then(|b| b.pass.as_deref()) else {
        return Ok(None);
    };
    if pass.is_empty() {
        return Ok(None);
    }
    let name = s.metadata.name.as_str();
    let sealed = key
        .seal_random(&inline_pass_context(name), pass.as_bytes())
        .map_err(|source| StoreError::Secret {
            record: format!("Server/{name}"),
            source,
        })?;
    let mut out = object.clone();
    if let Object::Server(o) = &mut out
        && let Some(b) = o.spec.bmc.as_mut()
    {
        b.pass = Some(format!("{SEALED_PASS_PREFIX}{}", hex::encode(sealed)));
    }
    Ok(Some(out))
}

/// Opens a sealed inline BMC password in a decoded record (a clear one, from a store
/// written before sealing, is left as it is).
pub(super) fn open_inline_pass(object: &mut Object, key: &SecretKey) -> Result<(), StoreError> {
    let Object::Server(s) = object else {
        return Ok(());
    };
    let name = s.metadata.name.clone();
    let Some(bmc) = s.spec.bmc.as_mut() else {
        return Ok(());
    };
    let Some(sealed) = bmc
        .pass
        .as_deref()
        .and_then(|p| p.strip_prefix(SEALED_PASS_PREFIX))
    else {
        return Ok(());
    };
    let fail = |message: String| corrupt(&name, "sealed spec.bmc.pass", message);
    let bytes = hex::decode(sealed).map_err(|e| fail(e.to_string()))?;
    let plain = key
        .open(&inline_pass_context(&name), &bytes)
        .map_err(|e| fail(e.to_string()))?;
    bmc.pass = Some(String::from_utf8(plain).map_err(|e| fail(e.to_string()))?);
    Ok(())
}

/// Whether a stored object record holds an inline BMC password in clear (written before
/// secrets were sealed).
pub(super) fn has_clear_inline_pass(object: &Object) -> bool {
    matches!(object, Object::Server(s) if s.spec.bmc.as_ref()
        .and_then(|b| b.pass.as_deref())
        .is_some_and(|p| !p.is_empty()))
}

/// Decodes a `bmc_secrets` value: sealed (normal) or clear JSON (a store written before
/// secrets were sealed; the schema 2 migration seals those).
pub(super) fn decode_secret(
    id: &str,
    bytes: &[u8],
    key: &SecretKey,
) -> Result<BTreeMap<String, String>, StoreError> {
    let json: Cow<'_, [u8]> = if crate::secrets::is_sealed(bytes) {
        Cow::Owned(
            key.open(&secret_context(id), bytes)
                .map_err(|e| corrupt(id, "bmc secret", e))?,
        )
    } else {
        Cow::Borrowed(bytes)
    };
    serde_json::from_slice(&json).map_err(|e| corrupt(id, "bmc secret", e))
}

/// Encodes a `bmc_secrets` value (sealed).
pub(super) fn encode_secret(
    id: &str,
    map: &BTreeMap<String, String>,
    key: &SecretKey,
) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(map).expect("map serialises");
    key.seal_random(&secret_context(id), &json)
        .map_err(|source| StoreError::Secret {
            record: format!("bmc_secrets/{id}"),
            source,
        })
}

/// Per-server BMC settings that have no place in Sidero's `spec.bmc`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BmcSettings {
    /// Redfish: accept a certificate that does not chain to a trusted root (self-signed
    /// BMC certs), pinning it on first contact.
    #[serde(default)]
    pub insecure_tls: bool,
    /// Redfish: SHA-256 of the BMC's certificate (hex), pinned on first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_sha256: Option<String>,
    /// Redfish: ComputerSystem id; the first member of /redfish/v1/Systems when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// IPMI cipher suite (3 or 17); tried 17 then 3 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<u8>,
}

fn corrupt(name: &str, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::CorruptRecord {
        kind: Kind::Server,
        name: name.to_string(),
        message: format!("{what}: {e}"),
    }
}

/// Replaces an inline BMC password by [`REDACTED`] (for showing objects).
pub fn redact_secrets(object: &mut Object) {
    if let Object::Server(s) = object
        && let Some(bmc) = s.spec.bmc.as_mut()
        && bmc.pass.as_deref().is_some_and(|p| !p.is_empty())
    {
        bmc.pass = Some(REDACTED.to_string());
    }
}

/// An incoming object that carries [`REDACTED`] as its BMC password keeps the stored one.
pub(super) fn keep_redacted_pass(new: &mut Object, old: &Object) {
    if let (Object::Server(n), Object::Server(o)) = (new, old)
        && let Some(nb) = n.spec.bmc.as_mut()
        && nb.pass.as_deref() == Some(REDACTED)
    {
        nb.pass = o.spec.bmc.as_ref().and_then(|b| b.pass.clone());
    }
}

/// The secret (namespace `default`, name `<server>-bmc`) that holds a server's BMC
/// credentials, as Sidero names it.
pub fn bmc_secret_name(server: &str) -> String {
    format!("{server}-bmc")
}

impl Store {
    /// One key of a stored secret.
    pub fn bmc_secret_value(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(BMC_SECRETS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let id = format!("{namespace}/{name}");
        let Some(v) = table.get(id.as_str())? else {
            return Ok(None);
        };
        let map = decode_secret(&id, v.value(), &self.inner.key)?;
        Ok(map.get(key).cloned())
    }

    /// Resolves a `userFrom`/`passFrom` source against the secrets table.
    pub fn resolve_credential(
        &self,
        source: &CredentialSource,
    ) -> Result<Option<String>, StoreError> {
        let Some(r) = &source.secret_key_ref else {
            return Ok(None);
        };
        self.bmc_secret_value(r.namespace.as_deref().unwrap_or("default"), &r.name, &r.key)
    }

    pub fn bmc_settings(&self, server: &str) -> Result<BmcSettings, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(BMC_SETTINGS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BmcSettings::default()),
            Err(e) => return Err(e.into()),
        };
        match table.get(server)? {
            None => Ok(BmcSettings::default()),
            Some(v) => {
                serde_json::from_slice(v.value()).map_err(|e| corrupt(server, "bmc settings", e))
            }
        }
    }

    /// Changes a server's BMC settings in one transaction.
    pub fn update_bmc_settings(
        &self,
        server: &str,
        edit: impl FnOnce(&mut BmcSettings),
    ) -> Result<BmcSettings, StoreError> {
        let txn = self.inner.db.write()?;
        let settings;
        {
            let mut table = txn.open_table(BMC_SETTINGS)?;
            let mut s = match table.get(server)? {
                None => BmcSettings::default(),
                Some(v) => serde_json::from_slice(v.value())
                    .map_err(|e| corrupt(server, "bmc settings", e))?,
            };
            edit(&mut s);
            let json = serde_json::to_vec(&s).expect("settings serialise");
            table.insert(server, json.as_slice())?;
            settings = s;
        }
        self.inner.db.commit(txn)?;
        Ok(settings)
    }

    /// Stores BMC credentials for `server` in its secret and points `spec.bmc` at it
    /// (endpoint, port, interface as given; no inline password), in one transaction.
    pub fn set_server_bmc(
        &self,
        server: &str,
        spec: BmcSpec,
        username: &str,
        password: &str,
    ) -> Result<Stored, StoreError> {
        self.edit_server_bmc(
            server,
            |b| {
                *b = spec;
                Ok(())
            },
            Some((username, password)),
        )
    }

    /// Edits a server's `spec.bmc` (starting from the default when it has none) and, when
    /// `credentials` are given, stores them in the server's secret and points
    /// `userFrom`/`passFrom` at it (inline `user`/`pass` are dropped). One transaction;
    /// nothing is written when nothing changes. An `Err` from `edit` (the reason) rejects
    /// the change as [`StoreError::Rejected`] and writes nothing.
    pub fn edit_server_bmc(
        &self,
        server: &str,
        edit: impl FnOnce(&mut BmcSpec) -> Result<(), String>,
        credentials: Option<(&str, &str)>,
    ) -> Result<Stored, StoreError> {
        let secret = bmc_secret_name(server);
        let secret_id = format!("default/{secret}");
        let txn = self.inner.db.write()?;
        let stored;
        let mut changed = None;
        {
            let mut meta = txn.open_table(META)?;
            let mut objects = txn.open_table(OBJECTS)?;
            let mut secrets = txn.open_table(BMC_SECRETS)?;
            let key = object_key(Kind::Server, server);
            let old = objects
                .get(key.as_str())?
                .map(|v| tables::decode_record(Kind::Server, server, v.value(), &self.inner.key))
                .transpose()?
                .ok_or_else(|| StoreError::NotFound {
                    kind: Kind::Server,
                    name: server.to_string(),
                })?;
            let mut object = old.object.clone();
            let Object::Server(s) = &mut object else {
                unreachable!("the Server key holds a Server");
            };
            let mut spec = s.spec.bmc.clone().unwrap_or_default();
            edit(&mut spec).map_err(|reason| StoreError::Rejected {
                kind: Kind::Server,
                name: server.to_string(),
                reason,
            })?;
            if let Some((username, password)) = credentials {
                let reference = |key: &str| {
                    Some(CredentialSource {
                        secret_key_ref: Some(SecretKeyRef {
                            namespace: Some("default".into()),
                            name: secret.clone(),
                            key: key.to_string(),
                        }),
                    })
                };
                spec.user = None;
                spec.pass = None;
                spec.user_from = reference("user");
                spec.pass_from = reference("pass");
                let map = BTreeMap::from([
                    ("user".to_string(), username.to_string()),
                    ("pass".to_string(), password.to_string()),
                ]);
                let same = match secrets.get(secret_id.as_str())? {
                    Some(v) => decode_secret(&secret_id, v.value(), &self.inner.key)? == map,
                    None => false,
                };
                if !same {
                    let sealed = encode_secret(&secret_id, &map, &self.inner.key)?;
                    secrets.insert(secret_id.as_str(), sealed.as_slice())?;
                    changed = Some(None);
                }
            }
            s.spec.bmc = Some(spec);
            if object == old.object {
                stored = old;
            } else {
                let revision = super::next_revision(&mut meta)?;
                let replaced = objects.insert(
                    key.as_str(),
                    tables::encode_record(revision, &object, &self.inner.key)?.as_slice(),
                )?;
                let change = Change {
                    revision,
                    kind: Kind::Server,
                    name: server.to_string(),
                    op: ChangeOp::Put,
                    object: Some(Arc::new(object.clone())),
                };
                self.log_one(
                    &txn,
                    &mut meta,
                    &change,
                    &object,
                    replaced.as_ref().map(|r| r.value()),
                )?;
                changed = Some(Some(change));
                stored = Stored { object, revision };
            }
        }
        match changed {
            None => txn.abort()?,
            Some(change) => {
                let _order = self.commit_in_order(txn)?;
                if let Some(change) = change {
                    self.publish(Some(change));
                }
            }
        }
        Ok(stored)
    }

    /// The credentials a server's `spec.bmc` refers to in the secrets table (not inline
    /// ones), when both are there.
    pub fn server_bmc_secret(&self, server: &str) -> Result<Option<(String, String)>, StoreError> {
        let Some(stored) = self.get(Kind::Server, server)? else {
            return Ok(None);
        };
        let Object::Server(s) = stored.object else {
            return Ok(None);
        };
        let Some(bmc) = s.spec.bmc else {
            return Ok(None);
        };
        let (Some(user_from), Some(pass_from)) = (&bmc.user_from, &bmc.pass_from) else {
            return Ok(None);
        };
        Ok(self
            .resolve_credential(user_from)?
            .zip(self.resolve_credential(pass_from)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, extra: &str) -> Object {
        crate::model::parse_documents(&format!(
            "apiVersion: metal.sidero.dev/v1alpha2\nkind: Server\nmetadata:\n  name: {name}\nspec:\n  accepted: true\n{extra}"
        ))
        .unwrap()
        .remove(0)
    }

    #[test]
    fn credentials_go_to_the_secret_not_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.apply(vec![server("s1", "")]).unwrap();
        let spec = BmcSpec {
            endpoint: "10.0.0.5".into(),
            port: Some(623),
            ..Default::default()
        };
        let stored = store
            .set_server_bmc("s1", spec, "sidero", "s3cret")
            .unwrap();
        let json = stored.object.to_json();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("s1-bmc"), "{json}");
        let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
            panic!()
        };
        let bmc = s.spec.bmc.unwrap();
        let pass = store
            .resolve_credential(bmc.pass_from.as_ref().unwrap())
            .unwrap();
        assert_eq!(pass.as_deref(), Some("s3cret"));
        assert!(
            store
                .set_server_bmc("nope", BmcSpec::default(), "u", "p")
                .is_err()
        );
    }

    #[test]
    fn inline_password_is_redacted_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let extra = "  bmc:\n    endpoint: 10.0.0.5\n    user: admin\n    pass: hunter2\n";
        store.apply(vec![server("s1", extra)]).unwrap();
        let mut shown = store.get(Kind::Server, "s1").unwrap().unwrap().object;
        redact_secrets(&mut shown);
        let yaml = shown.to_yaml();
        assert!(
            !yaml.contains("hunter2") && yaml.contains(REDACTED),
            "{yaml}"
        );
        // Re-applying what was shown keeps the real password.
        let reparsed = crate::model::parse_documents(&yaml).unwrap().remove(0);
        store.apply(vec![reparsed]).unwrap();
        let Object::Server(s) = store.get(Kind::Server, "s1").unwrap().unwrap().object else {
            panic!()
        };
        assert_eq!(s.spec.bmc.unwrap().pass.as_deref(), Some("hunter2"));
    }

    #[test]
    fn settings_default_and_update() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.bmc_settings("x").unwrap(), BmcSettings::default());
        store
            .update_bmc_settings("x", |s| s.pinned_sha256 = Some("ab".into()))
            .unwrap();
        assert_eq!(
            store.bmc_settings("x").unwrap().pinned_sha256.as_deref(),
            Some("ab")
        );
    }
}
