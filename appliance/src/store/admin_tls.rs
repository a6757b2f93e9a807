//! The admin mTLS port's state in redb: the admin CA (key sealed with the secrets key,
//! certificate in clear) and the client certificates it issued, by name (SHA-256 of the
//! certificate, revoked or not). See `secrets/ca.rs` and `http/tls.rs`.

use redb::{ReadableTable, TableError};

use super::tables::ADMIN_TLS;
use super::{Store, StoreError};

const CA_KEY: &str = "ca-key";
const CA_CERT: &str = "ca-cert";
const SEAL_CONTEXT: &str = "admin_tls/ca-key";

/// One enrolled client.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClientRecord {
    pub name: String,
    /// SHA-256 of the certificate's DER, hex.
    pub sha256: String,
    pub issued_unix_ms: u64,
    pub revoked: bool,
}

impl Store {
    /// The admin CA's (key PEM, certificate PEM); created by `create` and stored (key
    /// sealed) on the first call, in one transaction.
    pub fn admin_ca_or_create<E: From<StoreError>>(
        &self,
        create: impl FnOnce() -> Result<(String, String), E>,
    ) -> Result<(String, String), E> {
        let txn = self.inner.db.write()?;
        let found = {
            let table = txn.open_table(ADMIN_TLS).map_err(StoreError::from)?;
            let key = table
                .get(CA_KEY)
                .map_err(StoreError::from)?
                .map(|v| v.value().to_vec());
            let cert = table
                .get(CA_CERT)
                .map_err(StoreError::from)?
                .map(|v| v.value().to_vec());
            key.zip(cert)
        };
        if let Some((sealed, cert)) = found {
            txn.abort().map_err(StoreError::from)?;
            let key = self.open_secret(SEAL_CONTEXT, &sealed)?;
            let text = |b: Vec<u8>| {
                String::from_utf8(b).map_err(|_| StoreError::CorruptAdminTls {
                    record: "admin CA".into(),
                    message: "not UTF-8 PEM".into(),
                })
            };
            return Ok((text(key)?, text(cert)?));
        }
        let (key, cert) = create()?;
        let sealed = self.seal_secret(SEAL_CONTEXT, key.as_bytes())?;
        {
            let mut table = txn.open_table(ADMIN_TLS).map_err(StoreError::from)?;
            table
                .insert(CA_KEY, sealed.as_slice())
                .map_err(StoreError::from)?;
            table
                .insert(CA_CERT, cert.as_bytes())
                .map_err(StoreError::from)?;
        }
        self.inner.db.commit(txn)?;
        Ok((key, cert))
    }

    /// Records (or replaces) the client certificate issued to `record.name`.
    pub fn put_admin_client(&self, record: &ClientRecord) -> Result<(), StoreError> {
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(ADMIN_TLS)?;
            let json = serde_json::to_vec(record).expect("serialises");
            table.insert(format!("client/{}", record.name).as_str(), json.as_slice())?;
        }
        self.inner.db.commit(txn)?;
        Ok(())
    }

    /// All enrolled clients, by name.
    pub fn admin_clients(&self) -> Result<Vec<ClientRecord>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(ADMIN_TLS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in table.range("client/".."client0")? {
            let (k, v) = entry?;
            let record: ClientRecord =
                serde_json::from_slice(v.value()).map_err(|e| StoreError::CorruptAdminTls {
                    record: k.value().to_string(),
                    message: e.to_string(),
                })?;
            out.push(record);
        }
        Ok(out)
    }
}
