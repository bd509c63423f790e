//! Setting up allocations: Allocate, then a permission and a channel to the
//! session's target, a bounded number in flight at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use turn::client::{Client, Event};

use super::engine::{Engine, Notice, SessionState};
use super::{count_error, LoadgenArgs, ServerUrl};

/// Where the setup stands, and how to react to the client's events.
#[derive(Debug)]
pub(super) struct Setup<'a> {
    args: &'a LoadgenArgs,
    server: ServerUrl,
    /// Peer addresses; session i binds to `targets[i % len]`. Empty for
    /// client-to-client, where partners bind to each other.
    targets: Vec<SocketAddr>,
    /// Next session to start.
    pub next: usize,
    /// Sessions being set up.
    pub in_flight: usize,
    /// Sessions ready.
    pub ready: usize,
    /// Sessions that failed.
    pub failed: usize,
    /// Failure reasons.
    pub errors: BTreeMap<String, u64>,
    /// Allocate 437 answers retried on a new port, per session.
    retried: Vec<u8>,
}

/// Allocate 437 answers a session retries on a new local port.
const MAX_437_RETRIES: u8 = 3;

impl<'a> Setup<'a> {
    pub(super) fn new(args: &'a LoadgenArgs, server: ServerUrl, targets: Vec<SocketAddr>) -> Self {
        Setup {
            args,
            server,
            targets,
            next: 0,
            in_flight: 0,
            ready: 0,
            failed: 0,
            errors: BTreeMap::new(),
            retried: Vec::new(),
        }
    }

    /// Sessions ready or failed.
    pub(super) fn settled(&self) -> usize {
        self.ready + self.failed
    }

    /// Starts sessions below `limit` while fewer than the window are in flight.
    pub(super) fn start_more(&mut self, engine: &mut Engine, limit: usize) {
        let window = self.args.window.max(1) as usize;
        let limit = limit.min(engine.sessions.len());
        while self.next < limit && self.in_flight < window {
            let i = self.next;
            self.next += 1;
            self.in_flight += 1;
            let config = self.args.client_config(self.server, i as u64);
            let client = Client::new(config, Instant::now());
            if let Err(e) = engine.open(i, self.server.addr, Some(client)) {
                // `open` failed before the session left Idle.
                engine.sessions[i].state = SessionState::Setup;
                self.fail(engine, i, format!("connect: {e}"));
            }
        }
    }

    /// Gives up on every session still being set up.
    pub(super) fn give_up(&mut self, engine: &mut Engine) {
        for i in 0..self.next {
            if engine.sessions[i].state == SessionState::Setup {
                self.fail(engine, i, "setup timed out".into());
            }
        }
    }

    /// Handles the engine's notices.
    pub(super) fn handle_notices(&mut self, engine: &mut Engine) {
        while let Some((i, notice)) = engine.next_notice() {
            match notice {
                Notice::Turn(Event::Allocated { relayed, .. }) => {
                    engine.sessions[i].relayed = relayed.first().copied();
                    self.on_allocated(engine, i);
                }
                Notice::Turn(Event::ChannelBound { .. }) => {
                    if engine.sessions[i].state == SessionState::Setup {
                        engine.sessions[i].state = SessionState::Ready;
                        self.ready += 1;
                        self.in_flight -= 1;
                    }
                }
                Notice::Turn(Event::AllocationFailed { code: 437, .. }) if self.may_retry(i) => {
                    self.retry_on_new_port(engine, i);
                }
                Notice::Turn(Event::AllocationFailed { code, reason }) => {
                    self.fail(engine, i, format!("Allocate: {code} {}", reason.trim()));
                }
                Notice::Turn(Event::ChannelBindFailed { code, .. }) => {
                    self.fail(engine, i, format!("ChannelBind: error {code}"));
                }
                Notice::Turn(Event::PermissionFailed { code, .. }) => {
                    self.fail(engine, i, format!("CreatePermission: error {code}"));
                }
                Notice::Turn(Event::TransactionTimedOut { method, .. }) => {
                    self.fail(engine, i, format!("{} timed out", method.name()));
                }
                Notice::Turn(Event::RefreshFailed { code }) => {
                    self.fail(engine, i, format!("Refresh: error {code}"));
                }
                Notice::Turn(Event::AllocationExpired) => {
                    self.fail(engine, i, "allocation expired".into());
                }
                Notice::LinkFailed(e) => self.fail(engine, i, format!("link: {e}")),
                Notice::Turn(_) => {}
            }
        }
    }

    fn may_retry(&mut self, i: usize) -> bool {
        if self.retried.len() <= i {
            self.retried.resize(i + 1, 0);
        }
        self.retried[i] < MAX_437_RETRIES
    }

    /// A 437 to our first Allocate: the server still holds an allocation
    /// on this 5-tuple (RFC 8656 section 7.2), left by an earlier generator
    /// run against the same server whose socket had the same local port
    /// (the generator does not deallocate at exit). Starts the session
    /// again on a new socket; the old one stays bound until the new one is,
    /// so the kernel cannot hand out the same port again.
    fn retry_on_new_port(&mut self, engine: &mut Engine, i: usize) {
        self.retried[i] += 1;
        count_error(
            &mut self.errors,
            "Allocate: 437 (this 5-tuple still allocated by an earlier run), retried on a new port"
                .into(),
        );
        let client = Client::new(
            self.args.client_config(self.server, i as u64),
            Instant::now(),
        );
        if let Err(e) = engine.open(i, self.server.addr, Some(client)) {
            self.fail(engine, i, format!("connect: {e}"));
        }
    }

    fn on_allocated(&mut self, engine: &mut Engine, i: usize) {
        if self.targets.is_empty() {
            // Client to client: bind both once the partner has its address.
            let partner = i ^ 1;
            if engine
                .sessions
                .get(partner)
                .is_none_or(|p| p.state == SessionState::Failed)
            {
                self.fail(engine, i, "partner failed".into());
                return;
            }
            let (Some(mine), Some(theirs)) = (
                engine.sessions[i].relayed,
                engine.sessions.get(partner).and_then(|s| s.relayed),
            ) else {
                return;
            };
            engine.sessions[i].target = Some(theirs);
            engine.sessions[partner].target = Some(mine);
            self.bind(engine, i);
            self.bind(engine, partner);
        } else {
            engine.sessions[i].target = Some(self.targets[i % self.targets.len()]);
            self.bind(engine, i);
        }
    }

    fn bind(&mut self, engine: &mut Engine, i: usize) {
        let now = Instant::now();
        let s = &mut engine.sessions[i];
        let (Some(c), Some(target)) = (s.client.as_mut(), s.target) else {
            return;
        };
        let result = c
            .create_permission(now, target.ip())
            .and_then(|()| c.bind_channel(now, target).map(|_| ()));
        match result {
            Ok(()) => engine.touch(i),
            Err(e) => self.fail(engine, i, format!("bind: {e}")),
        }
    }

    fn fail(&mut self, engine: &mut Engine, i: usize, reason: String) {
        count_error(&mut self.errors, reason);
        let state = engine.sessions[i].state;
        engine.close(i);
        engine.sessions[i].state = SessionState::Failed;
        match state {
            SessionState::Setup => {
                self.in_flight -= 1;
                self.failed += 1;
            }
            SessionState::Ready => {
                self.ready -= 1;
                self.failed += 1;
            }
            SessionState::Idle | SessionState::Failed => {}
        }
        // Client to client: a partner still waiting for this relayed
        // address would wait forever.
        let partner = i ^ 1;
        if self.targets.is_empty()
            && engine
                .sessions
                .get(partner)
                .is_some_and(|p| p.state == SessionState::Setup && p.target.is_none())
        {
            self.fail(engine, partner, "partner failed".into());
        }
    }
}
