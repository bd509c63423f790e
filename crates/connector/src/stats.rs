//! Counters shared by every task: atomics, read as a [`StatsSnapshot`].
//! Nothing is per client or per address.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters.
#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) flows_current: AtomicU64,
    pub(crate) flows_total: AtomicU64,
    pub(crate) bytes_up: AtomicU64,
    pub(crate) bytes_down: AtomicU64,
    pub(crate) payload_up: AtomicU64,
    pub(crate) payload_down: AtomicU64,
    pub(crate) redials: AtomicU64,
    pub(crate) upstream_failures: AtomicU64,
    pub(crate) dead_upstreams: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) web_requests: AtomicU64,
    pub(crate) web_upgrades: AtomicU64,
    pub(crate) flows_pending: AtomicU64,
    pub(crate) not_allocate: AtomicU64,
    pub(crate) pending_refused: AtomicU64,
    pub(crate) unauthenticated_closed: AtomicU64,
    pub(crate) redirects_blocked: AtomicU64,
    pub(crate) relay_malformed: AtomicU64,
    pub(crate) redials_suppressed: AtomicU64,
    pub(crate) web_header_timeouts: AtomicU64,
    pub(crate) web_refused: AtomicU64,
    pub(crate) races: AtomicU64,
    pub(crate) race_losers: AtomicU64,
    pub(crate) spares_built: AtomicU64,
    pub(crate) spares_used: AtomicU64,
    pub(crate) spares_expired: AtomicU64,
    pub(crate) flows_degraded: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// TURN flows open now: UDP client 5-tuples and TCP client connections.
    pub flows_current: u64,
    /// TURN flows opened since start.
    pub flows_total: u64,
    /// Bytes written to upstream TURN sockets: TURN frames plus TLS and
    /// SOCKS overhead (what leaves the machine, before TCP/IP headers).
    pub bytes_up: u64,
    /// Bytes read from upstream TURN sockets (same scope).
    pub bytes_down: u64,
    /// TURN message bytes the clients sent (datagram or stream bytes).
    pub payload_up: u64,
    /// TURN message bytes delivered to clients.
    pub payload_down: u64,
    /// Upstream streams dialled again for a flow that already had one
    /// (after the upstream closed, failed or was found dead).
    pub redials: u64,
    /// Dials that failed (TCP, SOCKS, TLS or certificate errors, timeouts).
    pub upstream_failures: u64,
    /// Upstreams closed because a client request went unanswered.
    pub dead_upstreams: u64,
    /// Flows closed for silence from the client.
    pub idle_closed: u64,
    /// Client datagrams dropped: not TURN, queue full, too many flows, or
    /// no upstream.
    pub dropped: u64,
    /// HTTP requests forwarded by the web proxy.
    pub web_requests: u64,
    /// WebSocket (Upgrade) tunnels opened by the web proxy.
    pub web_upgrades: u64,
    /// TURN flows open now that have no authenticated allocation yet (see
    /// `Limits::max_pending_flows`).
    pub flows_pending: u64,
    /// Client messages refused unanswered: those that would have opened a
    /// flow but were not a TURN Allocate request, and STUN Binding requests
    /// inside a UDP flow (e.g. from a web page listing the connector as a
    /// `stun:` server). Nothing is dialled for them.
    pub not_allocate: u64,
    /// Allocates that would have opened a flow (one per datagram or TCP
    /// connection; a retransmission counts again), and re-dials, refused
    /// because `max_pending_flows` flows were already waiting for an
    /// authenticated allocation.
    pub pending_refused: u64,
    /// Flows closed because no authenticated allocation (a success response
    /// to Allocate from the relay) came within `auth_timeout` of the
    /// upstream connect.
    pub unauthenticated_closed: u64,
    /// Redirects from the relay (ERROR-CODE 300, ALTERNATE-SERVER,
    /// ALTERNATE-DOMAIN) not passed on to the client.
    pub redirects_blocked: u64,
    /// STUN frames from the relay that did not parse: not passed on.
    pub relay_malformed: u64,
    /// Client datagrams dropped while their flow waited out its re-dial
    /// back-off (each would have been a re-dial without it).
    pub redials_suppressed: u64,
    /// Web proxy connections closed because the browser did not send a
    /// request's headers within `web_header_timeout` (also when idle
    /// between requests).
    pub web_header_timeouts: u64,
    /// Web proxy connections refused: `max_web_connections` were open.
    pub web_refused: u64,
    /// Flows that raced more than one upstream at their start.
    pub races: u64,
    /// Upstreams closed because another answered first.
    pub race_losers: u64,
    /// Spare upstreams dialled ahead of time (after a degradation).
    pub spares_built: u64,
    /// Spares a flow started on.
    pub spares_used: u64,
    /// Spares closed unused after `SPARE_TTL`.
    pub spares_expired: u64,
    /// Flows reported degraded (stall, RTT, or upstream lost under an
    /// allocation) to the page.
    pub flows_degraded: u64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn flow_opened(&self) {
        Stats::inc(&self.flows_current);
        Stats::inc(&self.flows_total);
    }

    pub(crate) fn flow_closed(&self) {
        self.flows_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            flows_current: g(&self.flows_current),
            flows_total: g(&self.flows_total),
            bytes_up: g(&self.bytes_up),
            bytes_down: g(&self.bytes_down),
            payload_up: g(&self.payload_up),
            payload_down: g(&self.payload_down),
            redials: g(&self.redials),
            upstream_failures: g(&self.upstream_failures),
            dead_upstreams: g(&self.dead_upstreams),
            idle_closed: g(&self.idle_closed),
            dropped: g(&self.dropped),
            web_requests: g(&self.web_requests),
            web_upgrades: g(&self.web_upgrades),
            flows_pending: g(&self.flows_pending),
            not_allocate: g(&self.not_allocate),
            pending_refused: g(&self.pending_refused),
            unauthenticated_closed: g(&self.unauthenticated_closed),
            redirects_blocked: g(&self.redirects_blocked),
            relay_malformed: g(&self.relay_malformed),
            redials_suppressed: g(&self.redials_suppressed),
            web_header_timeouts: g(&self.web_header_timeouts),
            web_refused: g(&self.web_refused),
            races: g(&self.races),
            race_losers: g(&self.race_losers),
            spares_built: g(&self.spares_built),
            spares_used: g(&self.spares_used),
            spares_expired: g(&self.spares_expired),
            flows_degraded: g(&self.flows_degraded),
        }
    }
}

impl std::fmt::Display for StatsSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "flows {} open, {} total; upstream {} B up, {} B down (TURN payload {} B up, \
             {} B down); {} redials, {} dial failures, {} dead upstreams, {} idle closed, \
             {} datagrams dropped; refused: {} not Allocate, {} over the pending cap \
             ({} pending now), {} unauthenticated closed, {} redirects blocked, {} malformed from \
             the relay, {} re-dials held back; web {} requests, {} WebSockets, {} header \
             timeouts, {} refused; circuits: {} races ({} losers closed), {} spares built, \
             {} used, {} expired, {} flows degraded",
            self.flows_current,
            self.flows_total,
            self.bytes_up,
            self.bytes_down,
            self.payload_up,
            self.payload_down,
            self.redials,
            self.upstream_failures,
            self.dead_upstreams,
            self.idle_closed,
            self.dropped,
            self.not_allocate,
            self.pending_refused,
            self.flows_pending,
            self.unauthenticated_closed,
            self.redirects_blocked,
            self.relay_malformed,
            self.redials_suppressed,
            self.web_requests,
            self.web_upgrades,
            self.web_header_timeouts,
            self.web_refused,
            self.races,
            self.race_losers,
            self.spares_built,
            self.spares_used,
            self.spares_expired,
            self.flows_degraded
        )
    }
}
