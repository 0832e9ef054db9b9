#![no_main]
//! Any bytes: decoding transactions, certificates and channel updates never panics.

use doin_primitives::{Certificate, ChannelUpdate, Transaction, decode, tx::MAX_TX_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = decode::<Transaction>(data, MAX_TX_BYTES, "transaction") {
        let _ = tx.verify();
        let _ = tx.weight();
    }
    let _ = decode::<Certificate>(data, 1 << 20, "certificate");
    let _ = decode::<ChannelUpdate>(data, 1 << 10, "channel update");
});
