#![no_main]
//! Arbitrary block bytes against a staked test chain: apply_block returns Ok or a BlockError,
//! never panics, and never changes the input state.

use std::sync::OnceLock;

use doin_consensus::{State, apply_block, testkit::TestNet};
use doin_primitives::Block;
use libfuzzer_sys::fuzz_target;

fn base() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut net = TestNet::new(10, 5, 2);
        net.work_block(9, vec![net.improving_certificate(5, 50.0)]).expect("seed block");
        net.state
    })
}

fuzz_target!(|data: &[u8]| {
    let state = base();
    let root = state.root();
    if let Ok(block) = Block::decode(data) {
        let _ = apply_block(state, &block);
    }
    assert_eq!(state.root(), root);
});
