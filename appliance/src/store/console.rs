//! Console login settings in redb: the admin console password hash (argon2id PHC string,
//! never the password). Written by `appliance ctl admin set-password` through the admin
//! API, read on every password login.

use redb::TableError;

use super::tables::{CONSOLE, CONSOLE_ADMIN_PASSWORD};
use super::{Store, StoreError};

impl Store {
    /// The stored console password hash, if one was set.
    pub fn console_password_hash(&self) -> Result<Option<String>, StoreError> {
        let txn = self.inner.db.read()?;
        let table = match txn.open_table(CONSOLE) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table
            .get(CONSOLE_ADMIN_PASSWORD)?
            .map(|v| v.value().to_string()))
    }

    /// Replaces the console password hash (one durable transaction).
    pub fn set_console_password_hash(&self, phc: &str) -> Result<(), StoreError> {
        let txn = self.inner.db.write()?;
        {
            let mut table = txn.open_table(CONSOLE)?;
            table.insert(CONSOLE_ADMIN_PASSWORD, phc)?;
        }
        self.inner.db.commit(txn)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trip_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.console_password_hash().unwrap(), None);
            store.set_console_password_hash("$argon2id$x").unwrap();
            store.set_console_password_hash("$argon2id$y").unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.console_password_hash().unwrap().as_deref(),
            Some("$argon2id$y")
        );
    }
}
