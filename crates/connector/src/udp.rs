//! The UDP TURN listener: one task reading client datagrams and handing
//! each to its flow (one per client address), creating flows on demand.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc::{self, error::TrySendError};

use crate::frame;
use crate::stats::Stats;
use crate::{flow, Shutdown, Turn};

/// The largest UDP datagram.
const MAX_DATAGRAM: usize = 65_536;

/// A live flow, as the dispatcher knows it.
struct Slot {
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
}

/// Reads datagrams until shutdown.
pub(crate) async fn serve(socket: Arc<UdpSocket>, turn: Arc<Turn>, mut shutdown: Shutdown) {
    let stats = Arc::clone(&turn.stats);
    let limits = turn.limits.clone();
    let mut flows: HashMap<SocketAddr, Slot> = HashMap::new();
    // Every flow sends its end here once; a flow waits for room.
    let (done_tx, mut done_rx) = mpsc::channel::<(SocketAddr, u64)>(limits.max_flows);
    let mut next_id: u64 = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut scratch = Vec::with_capacity(MAX_DATAGRAM + 4);
    let mut warned_full = false;
    loop {
        let (n, from) = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            Some((addr, id)) = done_rx.recv() => {
                if flows.get(&addr).is_some_and(|s| s.id == id) {
                    flows.remove(&addr);
                }
                continue;
            }
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::debug!("udp: receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        let datagram = buf[..n].to_vec();
        let datagram = match flows.entry(from) {
            Entry::Occupied(slot) => match slot.get().tx.try_send(datagram) {
                Ok(()) => continue,
                Err(TrySendError::Full(_)) => {
                    Stats::inc(&stats.dropped);
                    continue;
                }
                Err(TrySendError::Closed(d)) => {
                    slot.remove();
                    d
                }
            },
            Entry::Vacant(_) => datagram,
        };
        // A new flow: only for a TURN Allocate (a STUN Binding, e.g. from a
        // web page's `stun:` server, gets no answer), within the limits.
        scratch.clear();
        if frame::datagram_to_stream(&datagram, &mut scratch).is_err() {
            Stats::inc(&stats.dropped);
            continue;
        }
        if !frame::is_allocate_request(&datagram) {
            Stats::inc(&stats.not_allocate);
            continue;
        }
        if stats.flows_current.load(Ordering::Relaxed) >= limits.max_flows as u64 {
            Stats::inc(&stats.dropped);
            if !warned_full {
                tracing::warn!("udp: {} flows open: refusing new ones", limits.max_flows);
                warned_full = true;
            }
            continue;
        }
        warned_full = false;
        let Some(slot) = turn.pending_slot() else {
            continue;
        };
        let (tx, rx) = mpsc::channel(limits.flow_queue);
        if tx.try_send(datagram).is_err() {
            continue;
        }
        next_id += 1;
        let id = next_id;
        flows.insert(from, Slot { id, tx });
        stats.flow_opened();
        let (turn, socket, done, stop) = (
            Arc::clone(&turn),
            Arc::clone(&socket),
            done_tx.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let stats = Arc::clone(&turn.stats);
            flow::run(turn, socket, from, rx, slot, stop).await;
            stats.flow_closed();
            let _ = done.send((from, id)).await;
        });
    }
}
