//! A wake-up at a precise instant: a timerfd in the event loop.
//!
//! epoll's timeout counts whole milliseconds, too coarse for 20 000 packets
//! per second (one every 50 µs). A one-shot timerfd armed for the next send
//! deadline wakes `epoll_wait` within microseconds, without spinning.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

/// A one-shot timer registered with the event loop.
#[derive(Debug)]
pub struct Pacer {
    fd: TimerFd,
    armed: Option<Instant>,
}

impl Pacer {
    /// A disarmed timer on CLOCK_MONOTONIC (the clock of `Instant`).
    pub fn new() -> io::Result<Pacer> {
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(Pacer { fd, armed: None })
    }

    /// Registers the timer under `token`.
    pub fn register(&self, registry: &Registry, token: Token) -> io::Result<()> {
        let raw = self.fd.as_fd().as_raw_fd();
        registry.register(&mut SourceFd(&raw), token, Interest::READABLE)
    }

    /// Makes the timer fire at `at` (at once if it is past).
    pub fn arm(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        // A zero expiration disarms a timerfd: fire after 1 µs instead.
        let d = at
            .saturating_duration_since(now)
            .max(Duration::from_micros(1));
        self.fd.set(
            Expiration::OneShot(TimeSpec::from_duration(d)),
            TimerSetTimeFlags::empty(),
        )?;
        self.armed = Some(at);
        Ok(())
    }

    /// Acknowledges an expiry reported by the event loop. The expiry count
    /// is not read: edge-triggered epoll reports every expiry anyway, and
    /// the next `arm` resets the count, so this saves a syscall per wake-up.
    pub fn fired(&mut self) {
        self.armed = None;
    }
}
