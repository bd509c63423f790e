//! One WebSocket text frame from a page, parsed as the signaling server
//! does: never a panic, whatever the JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = signal::protocol::check(text);
    }
});
