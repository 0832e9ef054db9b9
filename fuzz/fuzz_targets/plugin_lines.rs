#![no_main]
//! `doin_fuzzing::plugin::plugin_lines` (its invariants are documented there).

libfuzzer_sys::fuzz_target!(|data: &[u8]| doin_fuzzing::plugin::plugin_lines(data));
