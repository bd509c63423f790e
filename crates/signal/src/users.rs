//! SIP accounts: `DATA_DIR/users.sqlite` (mode 0600 in the 0700 data
//! directory, like the statistics store). Only the digest hashes are
//! stored: `HA1 = H(name:realm:password)` for MD5 and SHA-256, never the
//! password. The realm is fixed when an account is created (the hashes
//! bind it); `passwd` keeps it.
//!
//! `onionrtc users add|remove|list|passwd` writes it; `serve` reads it for
//! every authentication (a user added while `serve` runs can log in at
//! once).

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension as _};
use sip::Algorithm;
use subtle::ConstantTimeEq as _;

use crate::store::{create_private_file, open_conn, secure_data_dir, StoreError};

/// The accounts database's file in the data directory.
pub const USERS_FILE: &str = "users.sqlite";
/// The longest user name.
pub const MAX_NAME: usize = 64;
/// The longest password accepted.
pub const MAX_PASSWORD: usize = 1024;

/// What went wrong with an account.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a user name is 1 to {MAX_NAME} characters of A-Z a-z 0-9 . _ -")]
    BadName,
    #[error("a password is 8 to {MAX_PASSWORD} characters without line breaks")]
    BadPassword,
    #[error("the user {0} exists already")]
    Exists(String),
    #[error("there is no user {0}")]
    NoSuchUser(String),
}

impl From<rusqlite::Error> for UsersError {
    fn from(e: rusqlite::Error) -> Self {
        UsersError::Store(StoreError::Sqlite(e))
    }
}

/// One account as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub realm: String,
    pub created_ms: i64,
}

/// The accounts store.
#[derive(Debug)]
pub struct UserStore {
    conn: Mutex<Connection>,
}

/// Whether `name` is a valid user name (the SIP user part and the HTTP
/// Basic user: no `@`, `:`, spaces or escapes).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn valid_password(pw: &str) -> bool {
    (8..=MAX_PASSWORD).contains(&pw.chars().count()) && !pw.contains(['\r', '\n', '\0'])
}

impl UserStore {
    /// Opens (or creates) `data_dir/users.sqlite`.
    pub fn open(data_dir: &Path) -> Result<UserStore, StoreError> {
        let dir_err = |e| StoreError::Dir(data_dir.to_owned(), e);
        secure_data_dir(data_dir).map_err(dir_err)?;
        let path = data_dir.join(USERS_FILE);
        create_private_file(&path).map_err(dir_err)?;
        let conn = open_conn(&path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sip_users (
                name TEXT PRIMARY KEY NOT NULL,
                realm TEXT NOT NULL,
                ha1_md5 TEXT NOT NULL,
                ha1_sha256 TEXT NOT NULL,
                created_ms INTEGER NOT NULL
            ) STRICT;",
        )?;
        Ok(UserStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates `name` in `realm` with `password`.
    pub fn add(&self, name: &str, realm: &str, password: &str) -> Result<(), UsersError> {
        if !valid_name(name) {
            return Err(UsersError::BadName);
        }
        if !valid_password(password) {
            return Err(UsersError::BadPassword);
        }
        let md5 = sip::digest::ha1(Algorithm::Md5, name, realm, password);
        let sha = sip::digest::ha1(Algorithm::Sha256, name, realm, password);
        let n = self.conn().execute(
            "INSERT OR IGNORE INTO sip_users (name, realm, ha1_md5, ha1_sha256, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, realm, md5, sha, crate::state::now_ms()],
        )?;
        if n == 0 {
            return Err(UsersError::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Sets a new password for `name` (in its realm).
    pub fn set_password(&self, name: &str, password: &str) -> Result<(), UsersError> {
        if !valid_password(password) {
            return Err(UsersError::BadPassword);
        }
        let conn = self.conn();
        let realm: Option<String> = conn
            .query_row("SELECT realm FROM sip_users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(realm) = realm else {
            return Err(UsersError::NoSuchUser(name.to_string()));
        };
        let md5 = sip::digest::ha1(Algorithm::Md5, name, &realm, password);
        let sha = sip::digest::ha1(Algorithm::Sha256, name, &realm, password);
        conn.execute(
            "UPDATE sip_users SET ha1_md5 = ?2, ha1_sha256 = ?3 WHERE name = ?1",
            params![name, md5, sha],
        )?;
        Ok(())
    }

    /// Deletes `name`.
    pub fn remove(&self, name: &str) -> Result<(), UsersError> {
        let n = self
            .conn()
            .execute("DELETE FROM sip_users WHERE name = ?1", [name])?;
        if n == 0 {
            return Err(UsersError::NoSuchUser(name.to_string()));
        }
        Ok(())
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<Account>, UsersError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare("SELECT name, realm, created_ms FROM sip_users ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Account {
                name: r.get(0)?,
                realm: r.get(1)?,
                created_ms: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// `(realm, HA1)` of `name` for `alg`. A database error reads as no
    /// account (and is logged).
    pub fn ha1(&self, name: &str, alg: Algorithm) -> Option<(String, String)> {
        if !valid_name(name) {
            return None;
        }
        let column = match alg {
            Algorithm::Md5 => "ha1_md5",
            Algorithm::Sha256 => "ha1_sha256",
        };
        let sql = format!("SELECT realm, {column} FROM sip_users WHERE name = ?1");
        match self
            .conn()
            .query_row(&sql, [name], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
        {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "sip accounts: lookup failed");
                None
            }
        }
    }

    /// Whether `password` is `name`'s in `realm` (constant-time compare of
    /// the SHA-256 HA1).
    pub fn check_password(&self, name: &str, realm: &str, password: &str) -> bool {
        let Some((stored_realm, stored)) = self.ha1(name, Algorithm::Sha256) else {
            return false;
        };
        let given = sip::digest::ha1(Algorithm::Sha256, name, realm, password);
        stored_realm == realm && bool::from(given.as_bytes().ct_eq(stored.as_bytes()))
    }

    /// Accounts whose realm is not `realm` (they cannot log in).
    pub fn other_realms(&self, realm: &str) -> usize {
        self.list()
            .map(|l| l.iter().filter(|a| a.realm != realm).count())
            .unwrap_or(0)
    }
}

/// The store as the SIP core sees it: accounts of `realm` only.
#[derive(Debug)]
pub(crate) struct RealmAccounts<'a> {
    pub(crate) store: &'a UserStore,
    pub(crate) realm: &'a str,
}

impl sip::Accounts for RealmAccounts<'_> {
    fn ha1(&self, user: &str, alg: Algorithm) -> Option<String> {
        self.store
            .ha1(user, alg)
            .filter(|(realm, _)| realm == self.realm)
            .map(|(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sip::Accounts as _;

    #[test]
    fn accounts_store_hashes_only() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("d");
        let s = UserStore::open(&data).unwrap();
        s.add("alice", "example.test", "correct horse").unwrap();
        assert!(matches!(
            s.add("alice", "example.test", "x".repeat(9).as_str()),
            Err(UsersError::Exists(_))
        ));
        assert!(matches!(
            s.add("a@b", "example.test", "long enough"),
            Err(UsersError::BadName)
        ));
        assert!(matches!(
            s.add("bob", "example.test", "short"),
            Err(UsersError::BadPassword)
        ));
        assert!(s.check_password("alice", "example.test", "correct horse"));
        assert!(!s.check_password("alice", "example.test", "wrong horse"));
        assert!(!s.check_password("alice", "other.test", "correct horse"));
        let md5 = RealmAccounts {
            store: &s,
            realm: "example.test",
        }
        .ha1("alice", Algorithm::Md5);
        assert_eq!(
            md5,
            Some(sip::digest::ha1(
                Algorithm::Md5,
                "alice",
                "example.test",
                "correct horse"
            ))
        );
        assert!(RealmAccounts {
            store: &s,
            realm: "x"
        }
        .ha1("alice", Algorithm::Md5)
        .is_none());
        s.set_password("alice", "battery staple").unwrap();
        assert!(s.check_password("alice", "example.test", "battery staple"));
        assert_eq!(s.list().unwrap().len(), 1);
        assert_eq!(s.other_realms("x"), 1);
        drop(s);
        let bytes = std::fs::read(data.join(USERS_FILE)).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("correct horse") && !text.contains("battery staple"));
        let s = UserStore::open(&data).unwrap();
        s.remove("alice").unwrap();
        assert!(matches!(s.remove("alice"), Err(UsersError::NoSuchUser(_))));
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join(USERS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
