//! Chain-level rules: difficulty, finality, anchors, reputation decay, halving, fork choice and
//! purity of the transition.

use std::cmp::Ordering;

use doin_consensus::{
    ProtocolParams, apply_block,
    fork_choice::{self, ChainTip},
    state::Checkpoint,
    testkit::{TestNet, domain_id},
};
use doin_primitives::{Amount, FIXED_ONE, Hash};

#[test]
fn fast_blocks_raise_the_threshold_by_at_most_two_percent_and_epochs_retarget() {
    let params = ProtocolParams {
        target_block_time_ms: 1_000,
        epoch_blocks: 4,
        initial_threshold: 1_000_000,
        ..TestNet::new(1, 0, 0).spec.params
    };
    let mut net = TestNet::with_params(8, 5, 2, params);
    let mut thresholds = vec![net.state.meta().difficulty.threshold];
    for i in 0..3 {
        net.now_ms = net.state.meta().timestamp_ms + 100; // 10× too fast
        let loss = 50.0 - i as f64 * 10.0;
        net.improve(7, 5 + i % 2, loss).unwrap();
        thresholds.push(net.state.meta().difficulty.threshold);
    }
    for w in thresholds.windows(2) {
        assert!(w[1] > w[0], "fast blocks raise the threshold: {thresholds:?}");
        assert!(w[1] <= w[0] * 102 / 100, "by at most 2 % per block: {thresholds:?}");
    }
    // The 4th work block closes the epoch: 4 blocks in ~400 ms instead of 4 s → ×4 clamp.
    net.now_ms = net.state.meta().timestamp_ms + 100;
    let before = net.state.meta().difficulty.threshold;
    net.improve(7, 5, 10.0).unwrap();
    let after = net.state.meta().difficulty.threshold;
    assert_eq!(after, before * 102 / 100 * 4, "epoch retarget clamped to ×4");
    // Heartbeats leave the difficulty alone.
    net.heartbeat(vec![]).unwrap();
    assert_eq!(net.state.meta().difficulty.threshold, after);
}

#[test]
fn depth_alone_finalizes_nothing() {
    // Finality comes from stake votes (`finality.rs`), never from blocks piling up.
    let mut net = TestNet::new(4, 0, 0);
    for _ in 0..(4 * net.spec.params.finality_depth) {
        net.heartbeat(vec![]).unwrap();
    }
    assert_eq!(net.state.meta().finalized, Checkpoint::default());
    assert_eq!(net.state.meta().justified, Checkpoint::default());
}

#[test]
fn reputation_decays_with_its_half_life() {
    let mut net = TestNet::new(8, 5, 2);
    net.improve(7, 5, 50.0).unwrap();
    let optimizer = net.addr(5);
    assert_eq!(net.state.reputation(&optimizer, &domain_id()), FIXED_ONE as u64);
    for _ in 0..net.spec.params.reputation_half_life_blocks {
        net.heartbeat(vec![]).unwrap();
    }
    assert_eq!(net.state.reputation(&optimizer, &domain_id()), FIXED_ONE as u64 / 2);
}

#[test]
fn reward_halves_on_schedule() {
    let params = ProtocolParams { halving_interval: 8, ..TestNet::new(1, 0, 0).spec.params };
    let mut net = TestNet::with_params(8, 5, 2, params);
    // Three sealed certificates (blocks 1-6), then work blocks at heights 7, 8 and 16.
    let certs = [(5, 50.0), (6, 40.0), (5, 30.0)].map(|(o, loss)| net.improving_certificate(o, loss));
    let [c1, c2, c3] = certs;
    let r1 = net.work_block(7, vec![c1]).unwrap();
    let r2 = net.work_block(7, vec![c2]).unwrap();
    for _ in 0..7 {
        net.heartbeat(vec![]).unwrap();
    }
    let r3 = net.work_block(7, vec![c3]).unwrap();
    assert_eq!((r1.height, r1.reward), (7, Amount::doin(50)));
    assert_eq!((r2.height, r2.reward), (8, Amount::doin(25)));
    assert_eq!((r3.height, r3.reward), (16, Amount(Amount::doin(25).0 / 2)));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn apply_block_is_pure_and_forks_coexist() {
    let mut net = TestNet::new(8, 5, 2);
    net.heartbeat(vec![]).unwrap();
    let (c1, c2) = (net.improving_certificate(5, 50.0), net.improving_certificate(6, 45.0));
    let base = net.state.clone();
    let root = base.root();
    // Two competing children of the same parent.
    net.work_block(7, vec![c1]).unwrap();
    let a = net.blocks.last().unwrap().clone();
    net.state = base.clone();
    net.work_block(7, vec![c2]).unwrap();
    let b = net.blocks.last().unwrap().clone();
    assert_eq!(base.root(), root, "the parent state is untouched");
    let (sa, _) = apply_block(&base, &a).unwrap();
    let (sb, _) = apply_block(&base, &b).unwrap();
    assert_ne!(sa.root(), sb.root());
    assert_eq!(sa.recompute_root().unwrap(), sa.root());
    assert_eq!(sb.recompute_root().unwrap(), sb.root());
    let ta = ChainTip::of(&a.header.body, a.hash(), 0);
    let tb = ChainTip::of(&b.header.body, b.hash(), 0);
    // Both carry work; the heavier wins.
    let expected = if a.header.cumulative_work > b.header.cumulative_work { ta } else { tb };
    assert_eq!(*fork_choice::select([&ta, &tb], &Checkpoint::default(), |_, _| None).unwrap(), expected);
}

#[test]
fn fork_choice_prefers_work_then_height_then_lower_hash_and_respects_finality() {
    let t = |w, h, x: u8| ChainTip { hash: Hash([x; 32]), height: h, cumulative_work: w, justified: 0 };
    assert_eq!(fork_choice::compare(&t(10, 1, 0), &t(9, 50, 0)), Ordering::Greater);
    assert_eq!(fork_choice::compare(&t(10, 5, 0), &t(10, 4, 0)), Ordering::Greater);
    assert_eq!(fork_choice::compare(&t(10, 5, 1), &t(10, 5, 2)), Ordering::Greater);
    let finalized = Checkpoint { height: 3, hash: Hash([7; 32]) };
    let heavy_fork = t(100, 9, 1);
    let honest = t(10, 9, 2);
    let ancestor =
        |tip: &ChainTip, _h| Some(if tip.hash == heavy_fork.hash { Hash([6; 32]) } else { Hash([7; 32]) });
    let picked = fork_choice::select([&heavy_fork, &honest], &finalized, ancestor).unwrap();
    assert_eq!(*picked, honest, "never reorg past the finalized checkpoint");
}

#[test]
fn state_rebuilds_from_records_and_undoes_blocks_from_recorded_changes() {
    use doin_consensus::State;
    let mut net = TestNet::new(8, 5, 2);
    net.improve(7, 5, 50.0).unwrap();
    net.heartbeat(vec![net.transfer(1, net.addr(2), Amount(5), 0)]).unwrap();
    let cert = net.improving_certificate(6, 40.0);
    let next = net.improving_certificate(5, 30.0);
    let before = net.state.clone();
    net.work_block(7, vec![cert]).unwrap();
    let after = net.state.clone();

    // Rebuild the tip state from its records alone (plus tip and recent window).
    let records: Vec<_> = after
        .keys()
        .into_iter()
        .map(|k| {
            let v = after.record(&k).unwrap();
            (k, v)
        })
        .collect();
    let recent: Vec<_> = after.recent().cloned().collect();
    let rebuilt = State::from_records(records, after.tip(), recent, &after.root()).unwrap();
    assert_eq!(rebuilt.root(), after.root());
    // It behaves identically: the next block applies to the same root on both.
    net.work_block(7, vec![next]).unwrap();
    let block = net.blocks.last().unwrap();
    assert_eq!(apply_block(&rebuilt, block).unwrap().0.root(), net.state.root());

    // Undo: write the previous values of the last block's changes.
    let undo: Vec<_> = after.last_changes().iter().map(|(k, _)| (k.clone(), before.record(k))).collect();
    assert!(!undo.is_empty());
    let recent: Vec<_> = before.recent().cloned().collect();
    let reverted = after.with_records(&undo, before.tip(), recent, &before.root()).unwrap();
    assert_eq!(reverted.root(), before.root());
    assert_eq!(reverted.account(&net.addr(5)), before.account(&net.addr(5)));
    // A wrong expected root is reported, never accepted.
    let err = after.with_records(&undo, before.tip(), vec![], &after.root()).unwrap_err();
    assert!(err.to_string().contains("differs from the expected"), "{err}");
}

/// Every block carries its generator's VRF proof over the parent's beacon: one valid proof per
/// key and parent, so the beacon (and the heartbeat leader it seeds) cannot be ground; a
/// tampered or borrowed proof is refused.
#[test]
fn blocks_carry_a_vrf_proof_and_chain_the_beacon() {
    let mut net = doin_consensus::testkit::TestNet::new(10, 5, 2);
    let before = net.state.meta().beacon;
    net.heartbeat(vec![]).unwrap();
    let block = net.blocks.last().unwrap().clone();
    let output = block
        .header
        .generator
        .vrf_verify(&doin_primitives::vrf::beacon_input(&before, 1), &block.header.vrf)
        .unwrap();
    assert_eq!(net.state.meta().beacon, doin_primitives::vrf::next_beacon(&before, &output));
    // The next block: a proof over the wrong input (the old beacon) is refused.
    let snapshot = net.state.clone();
    net.heartbeat(vec![]).unwrap();
    let good = net.blocks.pop().unwrap();
    net.state = snapshot;
    let key = net.key_of(&good.header.generator).unwrap().clone();
    let stale = key.vrf_prove(&doin_primitives::vrf::beacon_input(&before, 2));
    let bad = doin_consensus::testkit::reseal(&good, good.body.clone(), &key, |h| h.vrf = stale);
    let err = doin_consensus::apply_block(&net.state, &bad).unwrap_err();
    assert!(err.to_string().contains("VRF proof does not verify"), "{err}");
    doin_consensus::apply_block(&net.state, &good).unwrap();
}
