//! # pgconn — how OnionRTC's stores talk to PostgreSQL
//!
//! The statistics store of `signal` (`[serve] database_url`) and the lab's
//! result store (`lab run --db postgres://…`) share these rules:
//!
//! - **Only this machine, or a Unix socket.** [`Target::parse`] refuses a
//!   host that is not a loopback address (or `localhost`) or a socket
//!   directory. The connection is not encrypted (no TLS is built in), and
//!   what these stores hold — keyed room hashes, call times and their
//!   quality, lab plans — should not cross a network in clear; a warning
//!   in a log is easily missed, so it is an error. A database elsewhere is
//!   reached through an encrypted tunnel that ends on this machine
//!   (stunnel, WireGuard, an SSH forward), whose local end is the URL.
//! - **The password is never printed**: [`redact`] is what `check-config`
//!   and the logs show; [`Target`]'s `Debug` is redacted too.
//! - **Each store has its own schema** (`onionrtc_signal`, `onionrtc_lab`;
//!   set as the connection's `search_path`), so both may share a database.
//! - **Versioned, idempotent migrations** ([`migrate`]): a `schema_version`
//!   table in the store's schema; all pending steps run in one transaction
//!   under an advisory lock, so two processes starting at once migrate
//!   once, and a failed step leaves the previous version intact.
//!
//! tokio-postgres is used through its blocking client (the `postgres`
//! crate): both stores already run on threads of their own.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr as _;
use std::time::Duration;

pub use postgres;
use postgres::config::Host;
use postgres::{Client, Config, NoTls};

/// How long connecting may take when the URL does not say.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL could not be read (the message names no part of it).
    #[error("unreadable PostgreSQL URL (expected postgres://user:password@127.0.0.1:5432/db)")]
    Url,
    /// The URL names a host that is not this machine.
    #[error(
        "PostgreSQL host {0:?} is not a loopback address or a Unix socket: the connection is not \
         encrypted; reach a remote database through an encrypted tunnel ending on this machine"
    )]
    NotLocal(String),
    /// The database failed.
    #[error("postgresql: {0}")]
    Db(#[from] postgres::Error),
    /// The schema was written by a newer program.
    #[error("database schema version {found} is newer than this program's ({known})")]
    TooNew {
        /// Found in the database.
        found: i64,
        /// This program's.
        known: i64,
    },
}

/// Whether `s` is meant as a PostgreSQL URL (not a file path).
pub fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A checked connection target.
#[derive(Clone)]
pub struct Target {
    config: Config,
    shown: String,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.shown)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Target {
    /// Reads a URL (`postgres://…`) or key-value string and checks that
    /// every host is on this machine.
    pub fn parse(url: &str) -> Result<Target, PgError> {
        let config = Config::from_str(url).map_err(|_| PgError::Url)?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            // libpq would pick a default socket; say where instead.
            return Err(PgError::Url);
        }
        for host in config.get_hosts() {
            if let Host::Tcp(name) = host {
                let local = name.eq_ignore_ascii_case("localhost")
                    || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                    || name
                        .strip_prefix('[')
                        .and_then(|n| n.strip_suffix(']'))
                        .and_then(|n| n.parse::<IpAddr>().ok())
                        .is_some_and(|ip| ip.is_loopback());
                // hostaddr, when given, is what is dialled instead.
                if !local && config.get_hostaddrs().is_empty() {
                    return Err(PgError::NotLocal(name.clone()));
                }
            }
        }
        if let Some(ip) = config.get_hostaddrs().iter().find(|ip| !ip.is_loopback()) {
            return Err(PgError::NotLocal(ip.to_string()));
        }
        Ok(Target {
            shown: shown(&config),
            config,
        })
    }

    /// Connects with `search_path` set to `schema` (created by
    /// [`migrate`]).
    pub fn connect(&self, schema: &str) -> Result<Client, PgError> {
        let mut config = self.config.clone();
        let mut options = config.get_options().unwrap_or("").to_owned();
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c search_path={}", checked_schema(schema)));
        config.options(&options);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("onionrtc");
        }
        Ok(config.connect(NoTls)?)
    }
}

/// `url` as it may be printed: the password replaced by `<redacted>`, and
/// nothing of an unreadable URL.
pub fn redact(url: &str) -> String {
    match Config::from_str(url) {
        Ok(c) => shown(&c),
        Err(_) => "<unreadable PostgreSQL URL, not shown>".into(),
    }
}

fn shown(c: &Config) -> String {
    let mut s = String::from("postgres://");
    if let Some(user) = c.get_user() {
        s.push_str(user);
        if c.get_password().is_some() {
            s.push_str(":<redacted>");
        }
        s.push('@');
    }
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string().replace('/', "%2F"),
        })
        .collect();
    s.push_str(&hosts.join(","));
    if let Some(port) = c.get_ports().first() {
        s.push_str(&format!(":{port}"));
    }
    s.push('/');
    s.push_str(c.get_dbname().unwrap_or(""));
    s
}

fn checked_schema(schema: &str) -> &str {
    assert!(
        !schema.is_empty()
            && schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
        "schema names are program constants"
    );
    schema
}

/// Brings `schema` to version `migrations.len()`: `migrations[i]` takes it
/// from version `i` to `i + 1`. All pending steps run in one transaction
/// under an advisory lock; returns the version found before. Append only;
/// never edit a shipped entry.
pub fn migrate(client: &mut Client, schema: &str, migrations: &[&str]) -> Result<i64, PgError> {
    let schema = checked_schema(schema);
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    let mut tx = client.transaction()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('onionrtc migrate ' || $1::text))",
        &[&schema],
    )?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_version (version BIGINT NOT NULL);"
    ))?;
    let found: Option<i64> = tx
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])?
        .map(|r| r.try_get(0))
        .transpose()?;
    let found = match found {
        Some(v) => v,
        None => {
            tx.execute(
                &format!("INSERT INTO {schema}.schema_version VALUES (0)"),
                &[],
            )?;
            0
        }
    };
    if found > known {
        return Err(PgError::TooNew { found, known });
    }
    for sql in migrations.iter().skip(usize::try_from(found).unwrap_or(0)) {
        tx.batch_execute(&format!("SET LOCAL search_path TO {schema};\n{sql}"))?;
    }
    tx.execute(
        &format!("UPDATE {schema}.schema_version SET version = $1"),
        &[&known],
    )?;
    tx.commit()?;
    Ok(found)
}

/// The version `schema` is at (0 if it has none).
pub fn version(client: &mut Client, schema: &str) -> Result<i64, PgError> {
    let schema = checked_schema(schema);
    let exists: bool = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL",
            &[&format!("{schema}.schema_version")],
        )?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    Ok(client
        .query_opt(&format!("SELECT version FROM {schema}.schema_version"), &[])?
        .map(|r| r.try_get(0))
        .transpose()?
        .unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn only_local_hosts() {
        for ok in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgres://u@localhost/db",
            "postgresql://u:p@[::1]:5433/db",
            "postgres://u@%2Frun%2Fpostgresql/db",
            "host=/run/postgresql user=u dbname=db",
            "postgres://u:p@db.example/db?hostaddr=127.0.0.1",
        ] {
            assert!(Target::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "postgres://u:p@10.0.0.5/db",
            "postgres://u:p@db.example:5432/db",
            "postgres://u:p@127.0.0.1/db?hostaddr=192.0.2.1",
            "postgres://u:p@127.0.0.1,db.example/db",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(PgError::NotLocal(_))),
                "{bad}"
            );
        }
        assert!(matches!(Target::parse("postgres://"), Err(PgError::Url)));
        assert!(matches!(
            Target::parse("postgres://u:s3cret@[nope/db"),
            Err(PgError::Url)
        ));
    }

    #[test]
    fn the_password_is_never_shown() {
        let url = "postgres://onionrtc:s3cret-pw@127.0.0.1:5433/stats";
        assert_eq!(
            redact(url),
            "postgres://onionrtc:<redacted>@127.0.0.1:5433/stats"
        );
        let t = Target::parse(url).unwrap();
        for shown in [format!("{t}"), format!("{t:?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        assert_eq!(
            redact("host=/run/postgresql user=u password=s3cret dbname=d"),
            "postgres://u:<redacted>@%2Frun%2Fpostgresql/d"
        );
        let bad = redact("postgres://u:s3cret@[x");
        assert!(!bad.contains("s3cret"), "{bad}");
        let err = Target::parse("postgres://u:s3cret@db.example/d")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
