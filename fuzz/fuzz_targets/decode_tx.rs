#![no_main]
//! `doin_fuzzing::chain::decode_tx` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| doin_fuzzing::chain::decode_tx(data));
