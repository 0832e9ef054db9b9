#![no_main]
//! `doin_fuzzing::wire::sync` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| doin_fuzzing::wire::sync(data));
