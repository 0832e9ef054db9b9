//! Finality by stake: checkpoints are justified and finalized only by votes of two thirds of
//! the active stake; invalid votes are refused naming the rule; double and surround votes are
//! slashed once; fork choice prefers the higher justified checkpoint.

use std::cmp::Ordering;

use doin_consensus::{
    BlockError, FinalityError, State,
    fork_choice::{self, ChainTip},
    testkit::TestNet,
};
use doin_primitives::{
    Amount, BlockBody, BoundedBytes, BoundedVec, Checkpoint, FinalityEvidence, FinalityVote,
    FinalityVoteBody, Hash, Signed, TxKind,
};

/// Six stakers of 100 DOIN each, `blocks` heartbeats on top of genesis.
fn net(blocks: u64) -> TestNet {
    let mut net = TestNet::new(8, 6, 0);
    for _ in 0..blocks {
        net.heartbeat(vec![]).unwrap();
    }
    net
}

// `BlockError` is what the rules return; these helpers only pass it on.
#[allow(clippy::result_large_err)]
fn with_votes(net: &mut TestNet, votes: Vec<FinalityVote>) -> Result<(), BlockError> {
    let body = BlockBody { finality_votes: BoundedVec::try_from_vec(votes).unwrap(), ..Default::default() };
    net.heartbeat_with(body).map(|_| ())
}

#[allow(clippy::result_large_err)]
fn with_evidence(
    net: &mut TestNet,
    evidence: Vec<FinalityEvidence>,
) -> Result<doin_consensus::Receipt, BlockError> {
    let body =
        BlockBody { finality_evidence: BoundedVec::try_from_vec(evidence).unwrap(), ..Default::default() };
    net.heartbeat_with(body)
}

fn resigned(net: &TestNet, i: usize, edit: impl FnOnce(&mut FinalityVoteBody)) -> FinalityVote {
    let mut body = net.finality_vote(i, 6).body;
    edit(&mut body);
    Signed::sign(body, &net.keys[i])
}

#[test]
fn checkpoints_justify_with_two_thirds_of_stake_and_finalize_when_adjacent() {
    let mut net = net(8);
    let depth = net.spec.params.finality_depth;
    assert_eq!(depth, 6);
    let c6 = net.state.recent_hash_at(6).unwrap();
    // Half the stake (3 of 6) justifies nothing.
    let votes: Vec<_> = (0..3).map(|i| net.finality_vote(i, 6)).collect();
    with_votes(&mut net, votes).unwrap();
    assert_eq!(net.state.meta().justified.height, 0);
    assert_eq!(net.state.finality_tally(0, 6), Amount::doin(300).0);
    // A fourth voter brings it to exactly two thirds: justified (from genesis, nothing to
    // finalize yet).
    let vote = net.finality_vote(3, 6);
    with_votes(&mut net, vec![vote]).unwrap();
    assert_eq!(net.state.meta().justified, Checkpoint { height: 6, hash: c6 });
    assert_eq!(net.state.meta().finalized.height, 0);
    // The link 6 → 12 by four stakers justifies 12 and finalizes 6.
    while net.state.height() < 13 {
        net.heartbeat(vec![]).unwrap();
    }
    let c12 = net.state.recent_hash_at(12).unwrap();
    let votes: Vec<_> = (2..6).map(|i| net.finality_vote(i, 12)).collect();
    assert!(votes.iter().all(|v| v.body.source.height == 6));
    with_votes(&mut net, votes).unwrap();
    assert_eq!(net.state.meta().justified, Checkpoint { height: 12, hash: c12 });
    assert_eq!(net.state.meta().finalized, Checkpoint { height: 6, hash: c6 });
    // Finality records are in the root, and the state rebuilds from its records.
    assert_eq!(net.state.recompute_root().unwrap(), net.state.root());
    let records: Vec<_> =
        net.state.keys().into_iter().map(|k| (k.clone(), net.state.record(&k).unwrap())).collect();
    let rebuilt = State::from_records(
        records,
        net.state.tip(),
        net.state.recent().cloned().collect(),
        &net.state.root(),
    )
    .unwrap();
    assert_eq!(rebuilt.meta(), net.state.meta());
    // Height 6 (anchor_interval 6 in the test net) became an anchor checkpoint when it was
    // finalized: it can be anchored now, a non-final height cannot.
    let anchor = |h, hash| TxKind::Anchor {
        height: h,
        block_hash: hash,
        external_ref: BoundedBytes::try_from_vec(b"file:///anchors.log".to_vec()).unwrap(),
    };
    let err = net.heartbeat(vec![net.tx(2, anchor(12, c12))]).unwrap_err();
    assert!(err.to_string().contains("not a finalized anchor checkpoint"), "{err}");
    // Only validators record anchors, and each checkpoint once.
    let err = net.heartbeat(vec![net.tx(7, anchor(6, c6))]).unwrap_err();
    assert!(err.to_string().contains("only a staked account records anchors"), "{err}");
    net.heartbeat(vec![net.tx(2, anchor(6, c6))]).unwrap();
    assert_eq!(net.state.anchors().find(|(h, _)| **h == 6).map(|(_, a)| a.by), Some(net.addr(2)));
    let err = net.heartbeat(vec![net.tx(3, anchor(6, c6))]).unwrap_err();
    assert!(err.to_string().contains("checkpoint 6 is already anchored"), "{err}");
    // Votes expire with their window: the tallies of old links are gone a window later.
    let window = net.spec.params.history_len();
    while net.state.height() < 12 + window + 1 {
        net.heartbeat(vec![]).unwrap();
    }
    assert_eq!(net.state.finality_tally(6, 12), 0);
    assert_eq!(net.state.finality_voted(&net.addr(2), 12), None);
}

#[test]
fn invalid_finality_votes_are_refused_naming_the_rule() {
    let mut net = net(8);
    let refused = |net: &mut TestNet, vote: FinalityVote| match with_votes(net, vec![vote]) {
        Err(BlockError::FinalityVote { source, .. }) => source,
        other => panic!("expected a refused finality vote, got {other:?}"),
    };
    let unstaked = resigned(&net, 7, |_| {});
    assert!(matches!(refused(&mut net, unstaked), FinalityError::NoStake(_)));
    let other_chain = resigned(&net, 0, |b| b.chain_id += 1);
    assert!(matches!(refused(&mut net, other_chain), FinalityError::ChainId { .. }));
    let not_checkpoint = resigned(&net, 0, |b| b.target.height = 5);
    assert!(matches!(refused(&mut net, not_checkpoint), FinalityError::NotCheckpoint { .. }));
    let off_chain = resigned(&net, 0, |b| b.target.hash = Hash([1; 32]));
    assert!(matches!(refused(&mut net, off_chain), FinalityError::TargetNotOnChain(_)));
    let bad_source = resigned(&net, 0, |b| b.source = Checkpoint { height: 0, hash: Hash([2; 32]) });
    assert!(matches!(refused(&mut net, bad_source), FinalityError::Source { .. }));
    // A forged signature.
    let mut forged = net.finality_vote(0, 6);
    forged.body.voter = net.addr(1);
    let err = with_votes(&mut net, vec![forged]).unwrap_err();
    assert!(matches!(err, BlockError::Signature(ref w) if w.contains("finality vote")), "{err}");
    // One vote per voter and height, even in one block.
    let twice = vec![net.finality_vote(0, 6), net.finality_vote(0, 6)];
    let err = with_votes(&mut net, twice).unwrap_err();
    assert!(
        matches!(err, BlockError::FinalityVote { index: 1, ref source } if matches!(*source, FinalityError::AlreadyCounted { .. })),
        "{err}"
    );
    // Once justified, further votes for it change nothing and are refused.
    let votes: Vec<_> = (0..4).map(|i| net.finality_vote(i, 6)).collect();
    with_votes(&mut net, votes).unwrap();
    let late = resigned(&net, 5, |b| b.source = Checkpoint::default());
    assert!(matches!(refused(&mut net, late), FinalityError::AlreadyJustified { .. }));
}

#[test]
fn double_and_surround_finality_votes_are_slashed_once() {
    let mut net = net(8);
    let stake = |net: &TestNet, i: usize| net.state.stake(&net.addr(i)).map_or(0, |s| s.amount.0);
    let honest = net.finality_vote(0, 6);
    let double = resigned(&net, 0, |b| b.target.hash = Hash([3; 32]));
    let evidence = FinalityEvidence { first: honest.clone(), second: double };
    let before = stake(&net, 0);
    let receipt = with_evidence(&mut net, vec![evidence.clone()]).unwrap();
    assert_eq!(receipt.slashes, vec![(net.addr(0), Amount(before / 2))], "finality_slash_ppm 50 %");
    assert_eq!(stake(&net, 0), before / 2);
    // The same offence again, in either order, is refused.
    let swapped = FinalityEvidence { first: evidence.second.clone(), second: evidence.first.clone() };
    let err = with_evidence(&mut net, vec![swapped]).unwrap_err();
    assert!(
        matches!(err, BlockError::FinalityEvidence { ref source, .. } if matches!(*source, FinalityError::AlreadySlashed)),
        "{err}"
    );
    // A surround vote: 0 → 18 around 6 → 12.
    let inner = resigned(&net, 1, |b| {
        b.source = Checkpoint { height: 6, hash: Hash([4; 32]) };
        b.target = Checkpoint { height: 12, hash: Hash([5; 32]) };
    });
    let outer = resigned(&net, 1, |b| b.target = Checkpoint { height: 18, hash: Hash([6; 32]) });
    let before = stake(&net, 1);
    with_evidence(&mut net, vec![FinalityEvidence { first: outer, second: inner }]).unwrap();
    assert_eq!(stake(&net, 1), before / 2);
    // Two honest votes of one key (later target, same source) are no offence.
    let next = resigned(&net, 2, |b| b.target = Checkpoint { height: 12, hash: Hash([7; 32]) });
    let first = net.finality_vote(2, 6);
    let err = with_evidence(&mut net, vec![FinalityEvidence { first, second: next }]).unwrap_err();
    assert!(
        matches!(err, BlockError::FinalityEvidence { ref source, .. } if matches!(*source, FinalityError::NotConflicting)),
        "{err}"
    );
    // Votes of two keys never convict either.
    let (first, second) = (net.finality_vote(2, 6), net.finality_vote(3, 6));
    let err = with_evidence(&mut net, vec![FinalityEvidence { first, second }]).unwrap_err();
    assert!(
        matches!(err, BlockError::FinalityEvidence { ref source, .. } if matches!(*source, FinalityError::NotConflicting)),
        "{err}"
    );
    // An account without stake has nothing to slash.
    let a = resigned(&net, 7, |_| {});
    let b = resigned(&net, 7, |b| b.target.hash = Hash([8; 32]));
    let err = with_evidence(&mut net, vec![FinalityEvidence { first: a, second: b }]).unwrap_err();
    assert!(
        matches!(err, BlockError::FinalityEvidence { ref source, .. } if matches!(*source, FinalityError::NothingToSlash(_))),
        "{err}"
    );
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn fork_choice_prefers_the_higher_justified_checkpoint_over_work() {
    let t = |justified, work, height, x: u8| ChainTip {
        hash: Hash([x; 32]),
        height,
        cumulative_work: work,
        justified,
    };
    assert_eq!(fork_choice::compare(&t(12, 10, 20, 0), &t(6, 1_000, 40, 0)), Ordering::Greater);
    assert_eq!(fork_choice::compare(&t(6, 11, 20, 0), &t(6, 10, 40, 0)), Ordering::Greater);
}
