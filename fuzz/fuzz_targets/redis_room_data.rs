//! What a `serve` node reads from Redis (rooms on Redis): a message on its
//! pub/sub channel, a room's hash fields, the join script's answer — never
//! a panic, whatever Redis holds.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    signal::cluster::check_redis_data(data);
});
