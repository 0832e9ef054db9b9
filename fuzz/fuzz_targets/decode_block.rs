#![no_main]
//! Any bytes: decoding a block returns Ok or Err, never panics; Ok round-trips.

use doin_primitives::{Block, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        assert_eq!(encode(&block), data);
    }
});
