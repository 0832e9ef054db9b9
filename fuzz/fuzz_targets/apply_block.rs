#![no_main]
//! `doin_fuzzing::chain::apply_block` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| doin_fuzzing::chain::apply_block(data));
