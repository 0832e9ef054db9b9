#![no_main]
//! `doin_fuzzing::config::config` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| doin_fuzzing::config::config(data));
