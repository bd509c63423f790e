//! The registrar's bindings: address-of-record (a user name) → the contacts
//! its devices registered, each tied to the connection it came on (the
//! only way to reach a browser, whose Contact host is `.invalid`).
//!
//! A binding is identified by its RFC 5626 `+sip.instance` and `reg-id`
//! when the client sends them (JsSIP and SIP.js do), else by its contact
//! URI. A closed connection removes its bindings (RFC 5626 §4.4 flow
//! failure). Bounded: [`Registrar::max_per_user`] per user and
//! [`Registrar::max_total`] in all.

use std::collections::HashMap;
use std::time::Instant;

use crate::ConnId;

/// One registered contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The contact URI as the device sent it (only ever sent back to
    /// that device, as the Request-URI of requests to it).
    pub uri: String,
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub conn: ConnId,
    pub expires: Instant,
}

impl Binding {
    fn same(&self, other: &Binding) -> bool {
        match (&self.instance, &other.instance) {
            (Some(a), Some(b)) => a == b && self.reg_id == other.reg_id,
            _ => self.uri == other.uri,
        }
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("too many contacts for this user")]
    TooManyContacts,
    #[error("too many registrations")]
    Full,
}

/// The bindings of every user.
#[derive(Debug)]
pub struct Registrar {
    users: HashMap<String, Vec<Binding>>,
    /// The users that bound a contact on each connection (a superset: a
    /// binding that expired or moved leaves its entry until the
    /// connection closes), so that a close visits only those.
    by_conn: HashMap<ConnId, std::collections::HashSet<String>>,
    total: usize,
    pub max_per_user: usize,
    pub max_total: usize,
}

impl Registrar {
    pub fn new(max_per_user: usize, max_total: usize) -> Registrar {
        Registrar {
            users: HashMap::new(),
            by_conn: HashMap::new(),
            total: 0,
            max_per_user,
            max_total,
        }
    }

    /// Adds or refreshes `binding` for `user`.
    pub fn bind(&mut self, user: &str, binding: Binding) -> Result<(), RegisterError> {
        let conn = binding.conn;
        let list = self.users.entry(user.to_string()).or_default();
        if let Some(b) = list.iter_mut().find(|b| b.same(&binding)) {
            *b = binding;
            self.by_conn
                .entry(conn)
                .or_default()
                .insert(user.to_string());
            return Ok(());
        }
        if list.len() >= self.max_per_user {
            return Err(RegisterError::TooManyContacts);
        }
        if self.total >= self.max_total {
            if list.is_empty() {
                self.users.remove(user);
            }
            return Err(RegisterError::Full);
        }
        list.push(binding);
        self.total += 1;
        self.by_conn
            .entry(conn)
            .or_default()
            .insert(user.to_string());
        Ok(())
    }

    /// Removes the binding of `user` that `binding` identifies.
    pub fn unbind(&mut self, user: &str, binding: &Binding) {
        self.retain_user(user, |b| !b.same(binding));
    }

    /// Removes every binding of `user`.
    pub fn unbind_all(&mut self, user: &str) {
        self.retain_user(user, |_| false);
    }

    fn retain_user(&mut self, user: &str, keep: impl Fn(&Binding) -> bool) {
        if let Some(list) = self.users.get_mut(user) {
            let before = list.len();
            list.retain(|b| keep(b));
            self.total -= before - list.len();
            if list.is_empty() {
                self.users.remove(user);
            }
        }
    }

    /// The live bindings of `user`.
    pub fn lookup(&self, user: &str, now: Instant) -> Vec<Binding> {
        self.users
            .get(user)
            .map(|l| l.iter().filter(|b| b.expires > now).cloned().collect())
            .unwrap_or_default()
    }

    /// The connections that have a binding.
    pub fn conns(&self) -> std::collections::HashSet<ConnId> {
        self.users
            .values()
            .flat_map(|l| l.iter().map(|b| b.conn))
            .collect()
    }

    /// Removes the bindings that came on `conn`.
    pub fn conn_closed(&mut self, conn: ConnId) {
        let Some(users) = self.by_conn.remove(&conn) else {
            return;
        };
        for user in users {
            self.retain_user(&user, |b| b.conn != conn);
        }
    }

    /// Removes expired bindings.
    pub fn expire(&mut self, now: Instant) {
        self.retain_all(|b| b.expires > now);
    }

    fn retain_all(&mut self, keep: impl Fn(&Binding) -> bool) {
        let mut removed = 0;
        self.users.retain(|_, list| {
            let before = list.len();
            list.retain(|b| keep(b));
            removed += before - list.len();
            !list.is_empty()
        });
        self.total -= removed;
    }

    /// Registered contacts in all.
    pub fn len(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn b(uri: &str, inst: Option<&str>, conn: ConnId, at: Instant) -> Binding {
        Binding {
            uri: uri.into(),
            instance: inst.map(Into::into),
            reg_id: inst.map(|_| 1),
            conn,
            expires: at + Duration::from_secs(60),
        }
    }

    #[test]
    fn bind_refresh_limit_expire() {
        let now = Instant::now();
        let mut r = Registrar::new(2, 3);
        r.bind("a", b("sip:a@x", Some("i1"), 1, now)).unwrap();
        // Same instance, new URI: replaces.
        r.bind("a", b("sip:a@y", Some("i1"), 2, now)).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r.lookup("a", now)[0].uri, "sip:a@y");
        r.bind("a", b("sip:a@z", Some("i2"), 3, now)).unwrap();
        assert_eq!(
            r.bind("a", b("sip:a@w", None, 4, now)),
            Err(RegisterError::TooManyContacts)
        );
        r.bind("b", b("sip:b@x", None, 5, now)).unwrap();
        assert_eq!(
            r.bind("c", b("sip:c@x", None, 6, now)),
            Err(RegisterError::Full)
        );
        assert_eq!(r.len(), 3);
        r.conn_closed(3);
        assert_eq!(r.lookup("a", now).len(), 1);
        assert!(r.lookup("a", now + Duration::from_secs(61)).is_empty());
        r.expire(now + Duration::from_secs(61));
        assert!(r.is_empty());
        r.bind("c", b("sip:c@x", None, 6, now)).unwrap();
        r.unbind_all("c");
        assert!(r.is_empty());
    }

    #[test]
    fn a_close_removes_only_what_is_still_on_that_connection() {
        let now = Instant::now();
        let mut r = Registrar::new(10, 100);
        r.bind("a", b("sip:a@x", None, 1, now)).unwrap();
        // The same contact registered again from connection 2 moves there.
        r.bind("a", b("sip:a@x", None, 2, now)).unwrap();
        r.bind("b", b("sip:b@x", None, 1, now)).unwrap();
        r.conn_closed(1);
        assert_eq!(r.len(), 1);
        assert_eq!(r.lookup("a", now)[0].conn, 2);
        assert!(r.lookup("b", now).is_empty());
        r.conn_closed(1);
        r.conn_closed(2);
        assert!(r.is_empty());
    }
}
