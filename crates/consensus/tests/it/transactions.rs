//! Transactions, fees, limits and the state root.

use doin_consensus::{
    BlockError, BlockTemplate, StateKey, TxError, apply_block, build_block, testkit::TestNet,
    tree::verify_proof,
};
use doin_primitives::{
    Amount, Block, BlockBody, BlockKind, BoundedVec, Keypair, Signed, TxKind, tx::ChannelUpdateBody,
};

fn body(txs: Vec<doin_primitives::Transaction>) -> BlockBody {
    BlockBody { transactions: BoundedVec::try_from_vec(txs).unwrap(), ..Default::default() }
}

#[test]
fn transfer_moves_coins_burns_base_fee_and_tips_generator() {
    let mut net = TestNet::new(4, 0, 0);
    let (a, b, g) = (net.addr(1), net.addr(2), net.addr(3));
    let before_a = net.state.account(&a).balance;
    let before_b = net.state.account(&b).balance;
    let before_g = net.state.account(&g).balance;
    let base_fee = net.state.meta().base_fee;
    let tx = net.transfer(1, b, Amount::doin(5), 0);
    let weight = tx.weight();
    let receipt = net.heartbeat(vec![tx]).unwrap();
    let generator = receipt.generator;
    // Fees: max_fee 1000 ≥ base 10, tip min(2, 1000 − 10) = 2 per unit.
    let burned = Amount(base_fee.0 * weight as u128);
    let tip = Amount(2 * weight as u128);
    assert_eq!(receipt.fees_burned, burned);
    assert_eq!(receipt.tips, tip);
    assert_eq!(net.state.account(&a).balance, Amount(before_a.0 - Amount::doin(5).0 - burned.0 - tip.0));
    assert_eq!(net.state.account(&b).balance, Amount(before_b.0 + Amount::doin(5).0));
    assert_eq!(net.state.account(&a).nonce, 1);
    if generator == g {
        assert_eq!(net.state.account(&g).balance, Amount(before_g.0 + tip.0));
    }
    assert_eq!(net.state.meta().supply.burned, burned);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn replayed_transaction_is_rejected() {
    let mut net = TestNet::new(3, 0, 0);
    let tx = net.transfer(1, net.addr(2), Amount(1), 0);
    net.heartbeat(vec![tx.clone()]).unwrap();
    let err = net.heartbeat(vec![tx]).unwrap_err();
    assert!(
        matches!(err, BlockError::Transaction { source: TxError::Nonce { got: 0, expected: 1 }, .. }),
        "{err}"
    );
}

#[test]
fn forged_transaction_signature_is_rejected() {
    let mut net = TestNet::new(3, 0, 0);
    let mut tx = net.transfer(1, net.addr(2), Amount(1), 0);
    tx.body.kind = TxKind::Transfer { to: net.addr(2), amount: Amount::doin(999) };
    let err = net.heartbeat(vec![tx]).unwrap_err();
    assert!(matches!(err, BlockError::Signature(_)), "{err}");
}

#[test]
fn wrong_chain_id_fee_too_low_and_insufficient_balance() {
    let mut net = TestNet::new(3, 0, 0);
    let mut body = net.transfer(1, net.addr(2), Amount(1), 0).body;
    body.chain_id = 99;
    let tx = Signed::sign(body, &net.keys[1]);
    assert!(matches!(
        net.heartbeat(vec![tx]).unwrap_err(),
        BlockError::Transaction { source: TxError::ChainId { got: 99, .. }, .. }
    ));
    let mut body = net.transfer(1, net.addr(2), Amount(1), 0).body;
    body.max_fee = Amount(1);
    let tx = Signed::sign(body, &net.keys[1]);
    assert!(matches!(
        net.heartbeat(vec![tx]).unwrap_err(),
        BlockError::Transaction { source: TxError::FeeTooLow { .. }, .. }
    ));
    let tx = net.transfer(1, net.addr(2), Amount::doin(2_000_000), 0);
    assert!(matches!(
        net.heartbeat(vec![tx]).unwrap_err(),
        BlockError::Transaction { source: TxError::InsufficientBalance { .. }, .. }
    ));
}

#[test]
fn amount_overflow_is_an_invalid_block_not_a_panic() {
    let mut net = TestNet::new(3, 0, 0);
    // Supply conservation keeps balances far from u128::MAX, but fee arithmetic on hostile
    // inputs can overflow: weight × (u128::MAX tip).
    let mut body = net.transfer(1, net.addr(2), Amount(1), 0).body;
    body.max_fee = Amount(u128::MAX);
    body.priority_fee = Amount(u128::MAX);
    let tx = Signed::sign(body, &net.keys[1]);
    let err = net.heartbeat(vec![tx]).unwrap_err();
    assert!(matches!(err, BlockError::Transaction { source: TxError::Overflow(_), .. }), "{err}");
    // A genesis whose allocations overflow the supply is refused with a message.
    let mut spec = net.spec.clone();
    spec.allocations[2].balance = Amount(u128::MAX);
    assert!(spec.build().unwrap_err().to_string().contains("overflows"));
}

#[test]
fn block_limits_are_enforced_independently_of_any_mempool() {
    let mut net = TestNet::new(3, 0, 0);
    let mut params = net.spec.params.clone();
    params.max_block_txs = 2;
    let mut spec = net.spec.clone();
    spec.params = params.clone();
    net.state = spec.build().unwrap().0;
    let txs: Vec<_> = (0..3).map(|n| net.transfer(1, net.addr(2), Amount(1), n)).collect();
    assert!(matches!(net.heartbeat(txs).unwrap_err(), BlockError::Limit(_)));

    let mut spec = net.spec.clone();
    spec.params.max_block_weight = 2_000;
    net.state = spec.build().unwrap().0;
    let txs: Vec<_> = (0..2).map(|n| net.transfer(1, net.addr(2), Amount(1), n)).collect();
    let err = net.heartbeat(txs).unwrap_err();
    assert!(err.to_string().contains("block weight"), "{err}");
}

#[test]
fn stake_unstake_and_unbonding_release() {
    let mut net = TestNet::new(3, 0, 0);
    let a = net.addr(1);
    let stake = TxKind::Stake {
        amount: Amount::doin(10),
        roles: doin_primitives::Roles::EVALUATOR,
        domains: BoundedVec::try_from_vec(vec![doin_consensus::testkit::domain_id()]).unwrap(),
        preferences: Default::default(),
    };
    net.heartbeat(vec![net.tx(1, stake)]).unwrap();
    assert_eq!(net.state.stake(&a).unwrap().amount, Amount::doin(10));
    assert_eq!(net.state.evaluators(&doin_consensus::testkit::domain_id()), vec![a]);
    let r = net.heartbeat(vec![net.tx(1, TxKind::Unstake { amount: Amount::doin(10) })]).unwrap();
    let unstaked_at = r.height;
    assert!(net.state.stake(&a).is_none(), "a fully unstaked account has no stake record");
    assert!(net.state.evaluators(&doin_consensus::testkit::domain_id()).is_empty());
    let release = unstaked_at + net.spec.params.unbonding_blocks;
    assert_eq!(net.state.unbonding().next().map(|(k, v)| (*k, *v)), Some(((release, a), Amount::doin(10))));
    let before = net.state.account(&a).balance;
    while net.state.height() < release - 1 {
        net.heartbeat(vec![]).unwrap();
    }
    assert_eq!(net.state.account(&a).balance, before, "not released early");
    net.heartbeat(vec![]).unwrap();
    assert_eq!(net.state.account(&a).balance, Amount(before.0 + Amount::doin(10).0));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
    // Unstaking more than the stake is refused.
    let err = net.heartbeat(vec![net.tx(1, TxKind::Unstake { amount: Amount(1) })]).unwrap_err();
    assert!(err.to_string().contains("no stake"), "{err}");
}

#[test]
fn register_domain_escrows_bounty_and_rejects_duplicates() {
    let mut net = TestNet::new(3, 0, 0);
    let spec = doin_primitives::DomainSpec::example("rastrigin", 3);
    let tx = net.tx(1, TxKind::RegisterDomain { spec: Box::new(spec.clone()), bounty: Amount::doin(7) });
    let before = net.state.account(&net.addr(1)).balance;
    let r = net.heartbeat(vec![tx]).unwrap();
    let fee = r.fees_burned.0 + r.tips.0;
    let d = net.state.domain(&spec.id).unwrap();
    assert_eq!(d.bounty_left, Amount::doin(7));
    assert_eq!(d.registered_by, net.addr(1));
    assert_eq!(net.state.account(&net.addr(1)).balance.0, before.0 - Amount::doin(7).0 - fee);
    let again = net.tx(2, TxKind::RegisterDomain { spec: Box::new(spec), bounty: Amount::ZERO });
    assert!(net.heartbeat(vec![again]).unwrap_err().to_string().contains("already registered"));
    let mut bad = doin_primitives::DomainSpec::example("bad", 1);
    bad.scale = doin_primitives::Metric(0);
    let tx = net.tx(2, TxKind::RegisterDomain { spec: Box::new(bad), bounty: Amount::ZERO });
    assert!(net.heartbeat(vec![tx]).unwrap_err().to_string().contains("scale"));
}

fn update(
    net: &TestNet,
    payer: usize,
    channel: doin_primitives::Hash,
    nonce: u64,
    paid: Amount,
) -> doin_primitives::ChannelUpdate {
    Signed::sign(
        ChannelUpdateBody { channel, payer: net.addr(payer), nonce, paid_total: paid },
        &net.keys[payer],
    )
}

#[test]
fn payment_channel_payee_close_settles_at_once() {
    let mut net = TestNet::new(3, 0, 0);
    let (payer, payee) = (net.addr(1), net.addr(2));
    let open = net.tx(1, TxKind::OpenChannel { payee, deposit: Amount::doin(10), expiry_height: 1_000 });
    let id = open.id();
    net.heartbeat(vec![open]).unwrap();
    assert_eq!(net.state.channel(&id).unwrap().deposit, Amount::doin(10));
    let payer_before = net.state.account(&payer).balance;
    let payee_before = net.state.account(&payee).balance;
    // Overpaying updates are refused.
    let over = update(&net, 1, id, 1, Amount::doin(11));
    assert!(net.heartbeat(vec![net.tx(2, TxKind::CloseChannel { final_update: over })]).is_err());
    let u = update(&net, 1, id, 5, Amount::doin(3));
    let r = net.heartbeat(vec![net.tx(2, TxKind::CloseChannel { final_update: u })]).unwrap();
    let fee = r.fees_burned.0 + r.tips.0;
    assert!(net.state.channel(&id).is_none());
    assert_eq!(
        net.state.account(&payee).balance.0 + fee,
        payee_before.0 + Amount::doin(3).0 + if r.generator == payee { r.tips.0 } else { 0 }
    );
    assert_eq!(
        net.state.account(&payer).balance.0,
        payer_before.0 + Amount::doin(7).0 + if r.generator == payer { r.generator_reward.0 } else { 0 }
    );
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn payment_channel_payer_close_can_be_challenged_or_settles_after_window() {
    let mut net = TestNet::new(3, 0, 0);
    let payee = net.addr(2);
    let open = net.tx(1, TxKind::OpenChannel { payee, deposit: Amount::doin(10), expiry_height: 1_000 });
    let id = open.id();
    net.heartbeat(vec![open]).unwrap();
    // Payer posts an old update; payee challenges with a newer one.
    let old = update(&net, 1, id, 1, Amount::doin(1));
    net.heartbeat(vec![net.tx(1, TxKind::CloseChannel { final_update: old.clone() })]).unwrap();
    assert!(net.state.channel(&id).unwrap().closing.is_some());
    let stale = update(&net, 1, id, 1, Amount::doin(9));
    let err = net.heartbeat(vec![net.tx(2, TxKind::ChallengeChannel { newer_update: stale })]).unwrap_err();
    assert!(err.to_string().contains("not above the posted nonce"), "{err}");
    let newer = update(&net, 1, id, 2, Amount::doin(6));
    let payee_before = net.state.account(&payee).balance;
    let r = net.heartbeat(vec![net.tx(2, TxKind::ChallengeChannel { newer_update: newer })]).unwrap();
    assert!(net.state.channel(&id).is_none());
    let fee = r.fees_burned.0 + r.tips.0;
    let generator_gain = if r.generator == payee { r.generator_reward.0 } else { 0 };
    assert_eq!(
        net.state.account(&payee).balance.0 + fee,
        payee_before.0 + Amount::doin(6).0 + generator_gain
    );

    // Unchallenged close settles when the window ends; expiry closes an idle channel.
    let open = net.tx(
        1,
        TxKind::OpenChannel { payee, deposit: Amount::doin(4), expiry_height: net.state.height() + 3 },
    );
    let id2 = open.id();
    net.heartbeat(vec![open]).unwrap();
    let u = update(&net, 1, id2, 1, Amount::doin(1));
    net.heartbeat(vec![net.tx(1, TxKind::CloseChannel { final_update: u })]).unwrap();
    let deadline = net.state.channel(&id2).unwrap().closing.as_ref().unwrap().deadline;
    while net.state.height() < deadline {
        assert!(net.state.channel(&id2).is_some());
        net.heartbeat(vec![]).unwrap();
    }
    assert!(net.state.channel(&id2).is_none(), "settled at the deadline");
    let open = net.tx(
        1,
        TxKind::OpenChannel { payee, deposit: Amount::doin(4), expiry_height: net.state.height() + 2 },
    );
    let id3 = open.id();
    net.heartbeat(vec![open]).unwrap();
    for _ in 0..2 {
        net.heartbeat(vec![]).unwrap();
    }
    assert!(net.state.channel(&id3).unwrap().closing.is_some(), "expiry starts the close");
    for _ in 0..net.spec.params.challenge_window_blocks {
        net.heartbeat(vec![]).unwrap();
    }
    assert!(net.state.channel(&id3).is_none());
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn wrong_state_root_or_threshold_in_header_is_rejected() {
    let net = TestNet::new(3, 0, 0);
    let ts = net.state.meta().timestamp_ms + net.spec.params.max_block_interval_ms;
    let slot = doin_consensus::heartbeat_slot(&net.state, ts).unwrap();
    let leader = doin_consensus::heartbeat_leader(&net.state, slot).unwrap_or(net.addr(0));
    let key = net.key_of(&leader).unwrap_or(&net.keys[0]).clone();
    let (block, _, _) = build_block(
        &net.state,
        BlockTemplate { key: &key, timestamp_ms: ts, kind: BlockKind::Heartbeat, body: body(vec![]) },
    )
    .unwrap();
    apply_block(&net.state, &block).unwrap();
    let resign = |f: &dyn Fn(&mut doin_primitives::HeaderBody)| {
        let mut h = block.header.body.clone();
        f(&mut h);
        Block { header: Signed::sign(h, &key), body: block.body.clone() }
    };
    let bad_root = resign(&|h| h.state_root = doin_primitives::Hash::of(b"x"));
    assert!(matches!(
        apply_block(&net.state, &bad_root),
        Err(BlockError::Mismatch { field: "state_root", .. })
    ));
    let bad_threshold = resign(&|h| h.threshold += 1);
    assert!(matches!(
        apply_block(&net.state, &bad_threshold),
        Err(BlockError::Mismatch { field: "threshold", .. })
    ));
    let bad_fee = resign(&|h| h.base_fee = Amount(h.base_fee.0 + 1));
    assert!(matches!(apply_block(&net.state, &bad_fee), Err(BlockError::Mismatch { field: "base_fee", .. })));
    let bad_parent = resign(&|h| h.parent_hash = doin_primitives::Hash::of(b"p"));
    assert!(matches!(apply_block(&net.state, &bad_parent), Err(BlockError::Header(_))));
    let stale_ts = resign(&|h| h.timestamp_ms = net.state.meta().timestamp_ms);
    assert!(matches!(apply_block(&net.state, &stale_ts), Err(BlockError::Header(_))));
    // A header signed by someone else than its generator.
    let mut forged = block.clone();
    forged.header.signature =
        Keypair::from_seed([9; 32]).sign(doin_primitives::SigTag::BlockHeader, &block.hash());
    assert!(matches!(apply_block(&net.state, &forged), Err(BlockError::Signature(_))));
}

#[test]
fn heartbeat_must_wait_and_come_from_the_slot_leader() {
    let net = TestNet::new(6, 3, 1);
    let p = &net.spec.params;
    let ts = net.state.meta().timestamp_ms + p.max_block_interval_ms + 2 * p.heartbeat_slot_ms;
    let slot = doin_consensus::heartbeat_slot(&net.state, ts).unwrap();
    assert_eq!(slot, 2);
    let leader = doin_consensus::heartbeat_leader(&net.state, slot).unwrap();
    let leader_key = net.key_of(&leader).unwrap().clone();
    let other = net.keys.iter().find(|k| k.address() != leader).unwrap().clone();
    let template = |key, timestamp_ms| BlockTemplate {
        key,
        timestamp_ms,
        kind: BlockKind::Heartbeat,
        body: body(vec![]),
    };
    build_block(&net.state, template(&leader_key, ts)).unwrap();
    let err = build_block(&net.state, template(&other, ts)).unwrap_err();
    assert!(err.to_string().contains("is not the slot 2 leader"), "{err}");
    let early = net.state.meta().timestamp_ms + p.max_block_interval_ms - 1;
    let err = build_block(&net.state, template(&leader_key, early)).unwrap_err();
    assert!(err.to_string().contains("before max_block_interval"), "{err}");
    // A heartbeat earns no block reward.
    let (_, _, r) = build_block(&net.state, template(&leader_key, ts)).unwrap();
    assert_eq!(r.reward, Amount::ZERO);
    assert_eq!(r.work, 0);
}

#[test]
fn state_proofs_verify_against_the_root_and_incremental_root_matches_rebuild() {
    let mut net = TestNet::new(5, 3, 1);
    for n in 0..3 {
        net.heartbeat(vec![net.transfer(4, net.addr(n), Amount(n as u128 + 1), n as u64)]).unwrap();
    }
    let root = net.state.root();
    assert_eq!(net.state.recompute_root().unwrap(), root);
    for key in [StateKey::Account(net.addr(1)), StateKey::Stake(net.addr(0)), StateKey::Meta] {
        let (value, proof) = net.state.prove(&key).unwrap();
        assert!(value.is_some());
        assert!(verify_proof(&root, key.key_hash(), value.as_deref(), &proof));
        assert!(!verify_proof(&root, key.key_hash(), Some(b"forged"), &proof));
    }
    let missing = StateKey::Account(Keypair::from_seed([42; 32]).address());
    let (value, proof) = net.state.prove(&missing).unwrap();
    assert!(value.is_none());
    assert!(verify_proof(&root, missing.key_hash(), None, &proof), "non-membership proof");
}
