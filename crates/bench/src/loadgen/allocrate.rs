//! `--measure alloc-rate`: allocations per second with REST credentials.
//!
//! `--allocations` sessions each loop: a fresh client on a fresh socket
//! (a new 5-tuple, as a new call would have) with a fresh REST username
//! sends Allocate (401, then authenticated), and once allocated deletes the
//! allocation (Refresh with LIFETIME 0) so no quota binds. Allocations made
//! within `--duration` seconds are counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use turn::client::{Client, Event};

use super::engine::{Engine, Notice, Path};
use super::{count_error, io_err, secs};
use super::{LoadgenArgs, LoadgenError, LoadgenReport, ServerUrl};

const IDLE: Duration = Duration::from_millis(10);
/// Local ports cycled through: Linux's default ephemeral range, above the
/// relay ports of `onionrtc bench relay` (16384-32767).
const LOCAL_PORTS: std::ops::RangeInclusive<u16> = 33_000..=60_999;

pub(super) fn run(
    args: &LoadgenArgs,
    server: ServerUrl,
    stop: &AtomicBool,
) -> Result<LoadgenReport, LoadgenError> {
    if args.rest_secret.is_none() {
        return Err(LoadgenError::Usage(
            "--measure alloc-rate needs --rest-secret".into(),
        ));
    }
    let slots = args.allocations as usize;
    let mut engine =
        Engine::new(Path::Relay, server.kind, slots, 32, 0).map_err(io_err("event loop"))?;
    let mut report = LoadgenReport {
        mode: "alloc-rate".into(),
        transport: server.kind.name().into(),
        server: Some(server.to_string()),
        allocations: u32::try_from(slots).unwrap_or(u32::MAX),
        ..LoadgenReport::default()
    };
    engine.cycle_ports(LOCAL_PORTS);
    let mut serial: u64 = 0;
    let start = Instant::now();
    for i in 0..slots {
        let client = Client::new(args.client_config(server, serial), start);
        serial += 1;
        engine
            .open(i, server.addr, Some(client))
            .map_err(io_err("connect"))?;
    }
    let end = start + secs(args.duration);
    let mut made: u64 = 0;
    let mut failed: u64 = 0;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        engine.pump(None, IDLE).map_err(io_err("event loop"))?;
        while let Some((i, notice)) = engine.next_notice() {
            let recycle = match notice {
                Notice::Turn(Event::Allocated { .. }) => {
                    made += 1;
                    let now = Instant::now();
                    let ok = engine.sessions[i]
                        .client
                        .as_mut()
                        .is_some_and(|c| c.deallocate(now).is_ok());
                    engine.touch(i);
                    !ok
                }
                Notice::Turn(Event::Deallocated) => true,
                Notice::Turn(Event::AllocationFailed { code, reason }) => {
                    failed += 1;
                    count_error(
                        &mut report.errors,
                        format!("Allocate: {code} {}", reason.trim()),
                    );
                    true
                }
                Notice::Turn(Event::RefreshFailed { code }) => {
                    count_error(&mut report.errors, format!("Refresh: error {code}"));
                    true
                }
                Notice::Turn(Event::TransactionTimedOut { method, .. }) => {
                    failed += 1;
                    count_error(&mut report.errors, format!("{} timed out", method.name()));
                    true
                }
                Notice::LinkFailed(e) => {
                    failed += 1;
                    count_error(&mut report.errors, format!("link: {e}"));
                    true
                }
                Notice::Turn(_) => false,
            };
            if recycle {
                // Some servers keep a deleted allocation's 5-tuple for a
                // while (coturn answers 437): every allocation gets a new one.
                engine.close(i);
                let client = Client::new(args.client_config(server, serial), Instant::now());
                serial += 1;
                if let Err(e) = engine.open(i, server.addr, Some(client)) {
                    count_error(&mut report.errors, format!("connect: {e}"));
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    report.duration_s = elapsed;
    report.allocations_made = made;
    report.ready = u32::try_from(made).unwrap_or(u32::MAX);
    report.failed = u32::try_from(failed).unwrap_or(u32::MAX);
    report.alloc_per_s = Some(if elapsed > 0.0 {
        made as f64 / elapsed
    } else {
        0.0
    });
    Ok(report)
}
