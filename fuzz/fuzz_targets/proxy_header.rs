//! The PROXY v1 header tor writes before each onion-service connection
//! (`serve --onion`'s fronts), parsed from arbitrary bytes: never a panic,
//! never more than `MAX_HEADER` bytes consumed, "incomplete" only while a
//! longer input could still be a header, and the same answer for every
//! input that starts with an accepted header.

#![no_main]

use libfuzzer_sys::fuzz_target;
use signal::onion::{parse_proxy_v1, MAX_HEADER};

fuzz_target!(|data: &[u8]| {
    match parse_proxy_v1(data) {
        Ok(Some((circuit, used))) => {
            assert!(used <= MAX_HEADER && used <= data.len());
            assert_eq!(&data[used - 2..used], b"\r\n");
            // The header alone gives the same answer.
            assert_eq!(parse_proxy_v1(&data[..used]), Ok(Some((circuit, used))));
        }
        Ok(None) => assert!(data.len() < MAX_HEADER),
        Err(_) => {}
    }
});
