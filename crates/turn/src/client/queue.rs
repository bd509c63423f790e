//! The bounded event queue.

use std::collections::VecDeque;

use super::Event;

/// Data events kept at most; past this the oldest Data event is dropped.
pub const MAX_DATA_EVENTS: usize = 10_000;
/// Other events kept at most; past this new ones are dropped. They come from
/// the client's own transactions (at most 1000 outstanding) and from
/// ConnectionAttempt indications, so this is only reached by a driver that
/// never polls.
pub const MAX_CONTROL_EVENTS: usize = 10_000;

/// Events in arrival order, bounded, with a count of what was dropped.
#[derive(Debug, Default)]
pub(super) struct EventQueue {
    queue: VecDeque<Event>,
    data: usize,
    dropped: u64,
}

impl EventQueue {
    /// Appends an event, dropping the oldest Data event if Data is at its
    /// bound, or the new event if other events are at theirs.
    pub(super) fn push(&mut self, ev: Event) {
        let is_data = matches!(ev, Event::Data { .. });
        if is_data && self.data >= MAX_DATA_EVENTS {
            if let Some(i) = self
                .queue
                .iter()
                .position(|e| matches!(e, Event::Data { .. }))
            {
                self.queue.remove(i);
                self.data -= 1;
                self.dropped += 1;
            }
        } else if !is_data && self.queue.len() - self.data >= MAX_CONTROL_EVENTS {
            self.dropped += 1;
            return;
        }
        if is_data {
            self.data += 1;
        }
        self.queue.push_back(ev);
    }

    /// The oldest event.
    pub(super) fn pop(&mut self) -> Option<Event> {
        let ev = self.queue.pop_front()?;
        if matches!(ev, Event::Data { .. }) {
            self.data -= 1;
        }
        Some(ev)
    }

    /// Events dropped because the queue was full.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped
    }
}
