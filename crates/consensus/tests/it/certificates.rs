//! Proof-of-Optimization certificates: every acceptance and rejection rule.

use doin_consensus::{
    BlockError, CertError,
    testkit::{TestNet, domain_id},
};
use doin_primitives::{
    Amount, BlockBody, BoundedVec, DoubleVoteEvidence, FIXED_ONE, Metric, Outcome, Signed, VoteBody,
};

const ONE: i64 = FIXED_ONE;

fn m(x: f64) -> Metric {
    Metric((x * ONE as f64).round() as i64)
}

/// 5 evaluators (accounts 0-4), 2 optimizers (5, 6), 3 more accounts.
fn net() -> TestNet {
    TestNet::new(10, 5, 2)
}

fn cert_err(err: BlockError) -> CertError {
    match err {
        BlockError::Certificate { source, .. } => source,
        other => panic!("expected a certificate error, got {other}"),
    }
}

fn commit_err(err: BlockError) -> CertError {
    match err {
        BlockError::Commit { source, .. } => source,
        other => panic!("expected a commit error, got {other}"),
    }
}

#[test]
fn accepted_certificate_sets_champion_to_median_and_pays_65_30_5() {
    let mut net = net();
    let cert = net.certificate(5, vec![ONE, ONE, ONE, ONE], m(50.0), |i| [m(50.05), m(50.0), m(49.98)][i]);
    assert_eq!(cert.votes.len(), 3, "k = max(quorum_min 3, ceil(sqrt 5)) = 3");
    let optimizer = net.addr(5);
    let voters: Vec<_> = cert.votes.iter().map(|v| v.evaluator).collect();
    let before: Vec<_> = voters.iter().map(|a| net.state.account(a).balance).collect();
    let opt_before = net.state.account(&optimizer).balance;
    let r = net.work_block(9, vec![cert]).unwrap();
    let c = &r.certificates[0];
    assert_eq!(c.outcome, Outcome::Accept);
    assert_eq!(c.median, m(50.0), "lower-middle median of the three votes");
    let d = net.state.domain(&domain_id()).unwrap();
    let champ = d.champion.as_ref().unwrap();
    assert_eq!(champ.performance, m(50.0), "champion is the verified median, not the claim");
    assert_eq!(champ.optimizer, optimizer);
    // increment = weight 1 × (100 − 50)/100 × rep_factor floor 0.1 × fraction 1
    assert_eq!(c.increment, (ONE / 20) as u128);
    assert_eq!(r.work, c.increment);
    assert_eq!(r.reward, Amount::doin(50));
    assert_eq!(c.optimizer_reward, Amount(Amount::doin(50).0 * 65 / 100));
    for (i, a) in voters.iter().enumerate() {
        let share = Amount::doin(15).0 / 3;
        assert_eq!(net.state.account(a).balance.0, before[i].0 + share, "evaluator {i}");
        assert_eq!(net.state.reputation(a, &domain_id()), (4 * ONE / 10) as u64);
    }
    assert_eq!(
        r.generator_reward,
        Amount(Amount::doin(50).0 - c.optimizer_reward.0 - 3 * (Amount::doin(15).0 / 3))
    );
    // Bounty pays on top of the reward (example domain: bounty_per_accept 0 → nothing).
    assert_eq!(net.state.account(&optimizer).balance, Amount(opt_before.0 + c.optimizer_reward.0));
    assert_eq!(net.state.reputation(&optimizer, &domain_id()), ONE as u64);
    assert_eq!(d.stats.improvements, 1);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn over_claim_within_tolerance_scales_reward_down() {
    let mut net = net();
    // Claim 49.95 vs median 50.0: over-claims by 0.05 with tolerance 0.1 → fraction 0.5.
    let cert = net.certificate(5, vec![ONE, ONE, ONE, ONE], m(49.95), |_| m(50.0));
    let r = net.work_block(9, vec![cert]).unwrap();
    assert_eq!(r.certificates[0].outcome, Outcome::Accept);
    assert_eq!(r.certificates[0].reward_fraction, (ONE / 2) as u64);
    assert_eq!(r.certificates[0].increment, (ONE / 40) as u128);
}

#[test]
fn inflated_claim_is_rejected_burns_bond_and_reputation() {
    let mut net = net();
    // Give the optimizer some reputation first.
    let good = net.improving_certificate(5, 50.0);
    net.work_block(9, vec![good]).unwrap();
    let optimizer = net.addr(5);
    let stake_before = net.state.stake(&optimizer).unwrap().amount;
    let burned_before = net.state.meta().supply.burned;
    let mut bad = net.certificate(5, vec![2 * ONE, ONE, ONE, ONE], m(10.0), |_| m(40.0));
    assert_eq!(bad.outcome, Outcome::Reject);
    // Declaring it accepted is an invalid block.
    bad.outcome = Outcome::Accept;
    let err = cert_err(net.work_block(9, vec![bad.clone()]).unwrap_err());
    assert!(matches!(err, CertError::Outcome { computed: Outcome::Reject, .. }), "{err}");
    // A reject alone carries no work, so it rides in a block with an improvement.
    bad.outcome = Outcome::Reject;
    let improve = net.certificate(6, vec![3 * ONE, ONE, ONE, ONE], m(45.0), |_| m(45.0));
    let r = net.work_block(9, vec![bad, improve]).unwrap();
    let c = &r.certificates[0];
    assert_eq!(c.outcome, Outcome::Reject);
    assert_eq!(c.increment, 0);
    let bond_burn = Amount(Amount::doin(1).0 / 2);
    assert_eq!(c.bond_burned, bond_burn);
    assert_eq!(net.state.stake(&optimizer).unwrap().amount, Amount(stake_before.0 - bond_burn.0));
    assert!(net.state.meta().supply.burned.0 >= burned_before.0 + bond_burn.0);
    assert_eq!(net.state.reputation(&optimizer, &domain_id()), 0, "1.0 − 3.0 floors at 0");
    let d = net.state.domain(&domain_id()).unwrap();
    assert_eq!(d.stats.rejected, 1);
    assert_eq!(d.champion.as_ref().unwrap().performance, m(45.0));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn forged_vote_signature_is_rejected() {
    let mut net = net();
    let mut cert = net.improving_certificate(5, 50.0);
    let mut votes = cert.votes.clone().into_inner();
    votes[1].body.measured = m(1.0);
    cert.votes = BoundedVec::try_from_vec(votes).unwrap();
    let err = net.work_block(9, vec![cert]).unwrap_err();
    assert!(matches!(&err, BlockError::Signature(what) if what.contains("vote 1")), "{err}");
}

#[test]
fn vote_from_non_member_is_rejected() {
    let mut net = net();
    let mut cert = net.improving_certificate(5, 50.0);
    let members: Vec<_> = cert.votes.iter().map(|v| v.evaluator).collect();
    let outsider = (0..5).map(|i| net.addr(i)).find(|a| !members.contains(a)).unwrap();
    let mut votes = cert.votes.clone().into_inner();
    votes[0] = net.vote(&outsider, cert.commit.id(), 0, m(50.0));
    cert.votes = BoundedVec::try_from_vec(votes).unwrap();
    let err = cert_err(net.work_block(9, vec![cert]).unwrap_err());
    assert!(err.to_string().contains("not a member of the quorum"), "{err}");
}

#[test]
fn too_few_votes_is_rejected() {
    let mut net = net();
    let mut cert = net.improving_certificate(5, 50.0);
    let mut votes = cert.votes.clone().into_inner();
    votes.pop();
    cert.votes = BoundedVec::try_from_vec(votes).unwrap();
    let err = cert_err(net.work_block(9, vec![cert]).unwrap_err());
    assert!(matches!(err, CertError::Quorum(ref s) if s.contains("2 of 3")), "{err}");
}

#[test]
fn duplicate_vote_is_rejected() {
    let mut net = net();
    let mut cert = net.improving_certificate(5, 50.0);
    let mut votes = cert.votes.clone().into_inner();
    votes[2] = votes[0].clone();
    cert.votes = BoundedVec::try_from_vec(votes).unwrap();
    let err = cert_err(net.work_block(9, vec![cert]).unwrap_err());
    assert!(err.to_string().contains("voted twice"), "{err}");
}

#[test]
fn disagreement_must_escalate_and_escalation_penalizes_outliers() {
    let mut net = net();
    let cert =
        net.certificate(5, vec![ONE, ONE, ONE, ONE], m(50.0), |i| if i == 0 { m(90.0) } else { m(50.0) });
    let err = cert_err(net.work_block(9, vec![cert.clone()]).unwrap_err());
    assert!(err.to_string().contains("must escalate"), "{err}");

    let q = net.quorums(&cert.commit);
    assert_eq!(q.escalation.len(), 5, "min(2k + 1, N) = min(7, 5)");
    let liar = cert.votes[0].evaluator;
    let escalation: Vec<_> = q
        .escalation
        .iter()
        .map(|a| net.vote(a, cert.commit.id(), 1, if *a == liar { m(90.0) } else { m(50.0) }))
        .collect();
    let mut escalated = cert.clone();
    escalated.escalation = BoundedVec::try_from_vec(escalation.clone()).unwrap();
    let r = net.work_block(9, vec![escalated]).unwrap();
    let c = &r.certificates[0];
    assert!(c.escalated);
    assert_eq!(c.median, m(50.0));
    assert!(c.outliers.contains(&liar));
    assert_eq!(net.state.reputation(&liar, &domain_id()), 0, "outlier penalized (floored at 0)");
    let honest = cert.votes[1].evaluator;
    assert!(net.state.reputation(&honest, &domain_id()) > 0);
    assert_eq!(net.state.domain(&domain_id()).unwrap().stats.escalated, 1);
}

#[test]
fn escalation_without_a_supermajority_is_rejected() {
    let mut net = net();
    let cert =
        net.certificate(5, vec![ONE, ONE, ONE, ONE], m(50.0), |i| if i == 0 { m(90.0) } else { m(50.0) });
    let q = net.quorums(&cert.commit);
    // 3 of 5 agree: ceil(5 × 2/3) = 4 needed.
    let escalation: Vec<_> = q
        .escalation
        .iter()
        .enumerate()
        .map(|(i, a)| {
            net.vote(a, cert.commit.id(), 1, if i < 2 { m(80.0 + i as f64 * 5.0) } else { m(50.0) })
        })
        .collect();
    let mut escalated = cert;
    escalated.escalation = BoundedVec::try_from_vec(escalation).unwrap();
    let err = cert_err(net.work_block(9, vec![escalated]).unwrap_err());
    assert!(err.to_string().contains("4 of 5 needed"), "{err}");
}

#[test]
fn double_vote_is_slashed_once() {
    let mut net = net();
    let evaluator = net.addr(2);
    let commit = doin_primitives::Hash::of(b"some commit");
    let key = net.keys[2].clone();
    let vote = |measured| {
        Signed::sign(
            VoteBody {
                commit,
                evaluator,
                round: 0,
                measured,
                data_hash: doin_primitives::Hash::ZERO,
                artifact_measured: None,
            },
            &key,
        )
    };
    let evidence = DoubleVoteEvidence { first: vote(m(1.0)), second: vote(m(2.0)) };
    let stake_before = net.state.stake(&evaluator).unwrap().amount;
    let body = BlockBody {
        evidence: BoundedVec::try_from_vec(vec![evidence.clone()]).unwrap(),
        ..Default::default()
    };
    let r = net.heartbeat_with(body.clone()).unwrap();
    assert_eq!(r.slashes, vec![(evaluator, Amount::doin(10))], "10 % of a 100 DOIN stake");
    assert_eq!(net.state.stake(&evaluator).unwrap().amount, Amount(stake_before.0 - Amount::doin(10).0));
    let err = net.heartbeat_with(body).unwrap_err();
    assert!(err.to_string().contains("already slashed"), "{err}");
    let same = DoubleVoteEvidence { first: vote(m(1.0)), second: vote(m(1.0)) };
    let body = BlockBody { evidence: BoundedVec::try_from_vec(vec![same]).unwrap(), ..Default::default() };
    assert!(net.heartbeat_with(body).unwrap_err().to_string().contains("identical"));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn reference_block_must_be_recent() {
    let mut net = net();
    let old = net.state.tip().hash;
    for _ in 1..net.spec.params.max_reference_age {
        net.heartbeat(vec![]).unwrap();
    }
    // The including block is max_reference_age blocks after the reference: still in the
    // window, as the block builder (which checks against the tip's state) sees it too.
    let (edge, _) = net.commit_reveal_at(5, vec![2 * ONE, ONE, ONE, ONE], m(50.0), old);
    assert_eq!(doin_consensus::check_commit(&net.state, &edge), Ok(()));
    let before = (net.state.clone(), net.blocks.clone(), net.now_ms);
    net.include(vec![edge]).unwrap();
    (net.state, net.blocks, net.now_ms) = before;
    net.heartbeat(vec![]).unwrap();
    let (commit, _) = net.commit_reveal_at(5, vec![ONE, ONE, ONE, ONE], m(50.0), old);
    let err = commit_err(net.include(vec![commit]).unwrap_err());
    assert!(matches!(err, CertError::Reference(h) if h == old), "{err}");
}

#[test]
fn a_certificate_needs_its_commit_included_and_sealed() {
    let mut net = net();
    let (commit, reveal) = net.commit_reveal(5, vec![ONE, ONE, ONE, ONE], m(50.0));
    let bare = doin_primitives::Certificate {
        commit: commit.clone(),
        reveal: reveal.clone(),
        votes: BoundedVec::new(),
        escalation: BoundedVec::new(),
        outcome: Outcome::Accept,
    };
    // Never included: refused whatever its votes.
    let err = cert_err(net.work_block(9, vec![bare.clone()]).unwrap_err());
    assert!(matches!(err, CertError::NotCommitted(_)), "{err}");
    // Included but not sealed: its quorum is not drawn yet.
    net.seal_block(BlockBody {
        commits: BoundedVec::try_from_vec(vec![commit.clone()]).unwrap(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(net.state.committed_at(&commit.id()), Some(net.state.height()));
    // Only the seal leader may produce the block after a commit's inclusion, and even its
    // block cannot carry the certificate yet.
    let leader = doin_consensus::seal_leader(&net.state, 0).unwrap();
    let (by_leader, other) = (
        (0..10).find(|i| net.addr(*i) == leader).unwrap(),
        (0..10).find(|i| net.addr(*i) != leader).unwrap(),
    );
    net.now_ms = net.state.meta().timestamp_ms + 1;
    let body =
        BlockBody { certificates: BoundedVec::try_from_vec(vec![bare]).unwrap(), ..Default::default() };
    let err = cert_err(net.produce(by_leader, doin_primitives::BlockKind::Work, body).unwrap_err());
    assert!(matches!(err, CertError::Unsealed(_)), "{err}");
    let err = net.produce(other, doin_primitives::BlockKind::Heartbeat, BlockBody::default()).unwrap_err();
    assert!(err.to_string().contains("seal leader"), "{err}");
    // Sealed: the quorum draws from the sealing block's beacon, and the commit cannot be
    // included twice.
    net.seal_block(BlockBody::default()).unwrap();
    let cert = net.sealed_certificate(commit.clone(), reveal, |_| m(50.0));
    let err = commit_err(net.include(vec![commit]).unwrap_err());
    assert!(matches!(err, CertError::Duplicate(_)), "{err}");
    net.work_block(9, vec![cert]).unwrap();
}

#[test]
fn commits_need_the_seal_leader_and_respect_per_block_caps() {
    let mut net = net();
    // A block including commits by anyone but the seal leader is refused, even a work block.
    let (commit, _) = net.commit_reveal(5, vec![ONE, 0, 0, 0], m(50.0));
    let leader = doin_consensus::seal_leader(&net.state, 0).unwrap();
    let other = (0..10).find(|i| net.addr(*i) != leader).unwrap();
    let body = BlockBody { commits: BoundedVec::try_from_vec(vec![commit]).unwrap(), ..Default::default() };
    let err = net.produce(other, doin_primitives::BlockKind::Heartbeat, body).unwrap_err();
    assert!(err.to_string().contains("seal leader"), "{err}");
    // An empty early heartbeat is not a seal block: it waits for max_block_interval.
    let ts = net.state.meta().timestamp_ms + 1;
    let key = net.key_of(&leader).unwrap();
    let early = doin_consensus::build_block(
        &net.state,
        doin_consensus::BlockTemplate {
            key,
            timestamp_ms: ts,
            kind: doin_primitives::BlockKind::Heartbeat,
            body: BlockBody::default(),
        },
    );
    assert!(early.is_err());
    // At most max_account_commits (4) per optimizer per block.
    let five: Vec<_> = (0..5).map(|i| net.commit_reveal(5, vec![i * ONE, 0, 0, 0], m(50.0)).0).collect();
    let err = commit_err(net.include(five.clone()).unwrap_err());
    assert!(matches!(err, CertError::TooManyCommits(4)), "{err}");
    net.include(five[..4].to_vec()).unwrap();
}

#[test]
fn a_commit_is_certified_once_and_first_revealer_wins() {
    let mut net = net();
    let cert = net.improving_certificate(5, 50.0);
    net.work_block(9, vec![cert.clone()]).unwrap();
    let err = cert_err(net.work_block(9, vec![cert.clone()]).unwrap_err());
    assert!(matches!(err, CertError::Duplicate(_)), "{err}");
    // Another optimizer revealing the same parameters later is refused.
    let copy = net.certificate(6, cert.reveal.params.to_vec(), m(49.0), |_| m(49.0));
    let err = cert_err(net.work_block(9, vec![copy]).unwrap_err());
    assert!(err.to_string().contains("already revealed"), "{err}");
}

#[test]
fn parameters_must_fit_the_domain() {
    let mut net = net();
    let cert = net.certificate(5, vec![ONE, ONE, ONE, 11 * ONE], m(50.0), |_| m(50.0));
    let err = cert_err(net.work_block(9, vec![cert]).unwrap_err());
    assert!(matches!(err, CertError::ParamOutOfBounds { index: 3, .. }), "{err}");
    let cert = net.certificate(5, vec![ONE, ONE], m(50.0), |_| m(50.0));
    let err = cert_err(net.work_block(9, vec![cert]).unwrap_err());
    assert!(matches!(err, CertError::ParamCount { got: 2, expected: 4 }), "{err}");
}

#[test]
fn optimizer_needs_a_bond_and_is_never_in_its_own_quorum() {
    let mut net = net();
    let (commit, _) = net.commit_reveal(8, vec![ONE, 0, 0, 0], m(50.0));
    let err = commit_err(net.include(vec![commit]).unwrap_err());
    assert!(matches!(err, CertError::NoBond { .. }), "{err}");
    // An evaluator optimizing is excluded from its own quorum.
    let inclusion = net.state.recent_at(net.state.height()).unwrap().clone();
    let spec = net.state.domain(&domain_id()).unwrap().spec.clone();
    for i in 0..20u64 {
        let sealed = doin_consensus::quorum::Sealed {
            inclusion: &inclusion,
            beacon: doin_primitives::Hash::of(&i.to_le_bytes()),
        };
        let q = doin_consensus::quorum::quorums(
            &sealed,
            &spec.quorum,
            &domain_id(),
            &net.addr(0),
            &sealed.beacon,
        );
        assert!(!q.first.contains(&net.addr(0)) && !q.escalation.contains(&net.addr(0)));
        assert_eq!(q.eligible, 4);
    }
}

#[test]
fn late_improvement_adds_no_work_and_costs_nothing() {
    let mut net = net();
    let first = net.certificate(5, vec![ONE, ONE, ONE, ONE], m(40.0), |_| m(40.0));
    let second = net.certificate(6, vec![2 * ONE, ONE, ONE, ONE], m(45.0), |_| m(45.0));
    let rep_before = net.state.reputation(&net.addr(6), &domain_id());
    let r = net.work_block(9, vec![first, second]).unwrap();
    assert_eq!(r.certificates[1].outcome, Outcome::Accept);
    assert!(!r.certificates[1].improved);
    assert_eq!(r.certificates[1].increment, 0);
    assert_eq!(r.certificates[1].optimizer_reward, Amount::ZERO);
    assert_eq!(net.state.reputation(&net.addr(6), &domain_id()), rep_before);
    let d = net.state.domain(&domain_id()).unwrap();
    assert_eq!((d.stats.improvements, d.stats.late), (1, 1));
    assert_eq!(d.champion.as_ref().unwrap().performance, m(40.0));
}

#[test]
fn work_block_below_threshold_and_heartbeat_with_certificates_are_invalid() {
    let mut net = net();
    let mut spec = net.spec.clone();
    spec.params.initial_threshold = ONE as u128; // needs a 100 % improvement at rep floor 0.1
    net.state = spec.build().unwrap().0;
    let cert = net.improving_certificate(5, 50.0);
    let err = net.work_block(9, vec![cert.clone()]).unwrap_err();
    assert!(
        matches!(err, BlockError::BelowThreshold { work, threshold } if work == (ONE / 20) as u128 && threshold == ONE as u128),
        "{err}"
    );
    let body =
        BlockBody { certificates: BoundedVec::try_from_vec(vec![cert]).unwrap(), ..Default::default() };
    let err = net.heartbeat_with(body).unwrap_err();
    assert!(err.to_string().contains("carries only certificates that add no work"), "{err}");
    // A reject adds no work: a heartbeat carries it, and the optimizer's bond burns.
    let stake_before = net.state.stake(&net.addr(5)).unwrap().amount;
    let reject = net.certificate(5, vec![0; 4], m(1.0), |_| m(90.0));
    assert_eq!(reject.outcome, Outcome::Reject);
    let body =
        BlockBody { certificates: BoundedVec::try_from_vec(vec![reject]).unwrap(), ..Default::default() };
    let r = net.heartbeat_with(body).unwrap();
    assert_eq!(r.certificates[0].outcome, Outcome::Reject);
    assert!(net.state.stake(&net.addr(5)).unwrap().amount < stake_before);
}

#[test]
fn no_eligible_evaluators_means_no_acceptance() {
    let mut net = TestNet::new(4, 0, 2);
    let cert = net.certificate(0, vec![ONE, ONE, ONE, ONE], m(50.0), |_| m(50.0));
    assert!(cert.votes.is_empty());
    let err = cert_err(net.work_block(3, vec![cert]).unwrap_err());
    assert!(matches!(err, CertError::NoEvaluators), "{err}");
}

#[test]
fn bounty_pays_accepted_improvements_until_empty() {
    let mut net = net();
    let mut spec = net.spec.clone();
    spec.domains[0].spec.bounty_per_accept = Amount::doin(6);
    net.state = spec.build().unwrap().0;
    let r = net.improve(9, 5, 50.0).unwrap();
    assert_eq!(r.certificates[0].bounty_paid, Amount::doin(6));
    let r = net.improve(9, 6, 30.0).unwrap();
    assert_eq!(r.certificates[0].bounty_paid, Amount::doin(4), "capped by what is left of the 10 DOIN");
    assert_eq!(net.state.domain(&domain_id()).unwrap().bounty_left, Amount::ZERO);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn evaluators_below_min_stake_are_not_drawn() {
    let mut spec = net().spec;
    spec.params.min_evaluator_stake = Amount::doin(101);
    spec.stakes[0].amount = Amount::doin(500);
    spec.stakes[1].amount = Amount::doin(500);
    let mut net = net();
    net.state = spec.build().unwrap().0;
    let cert = net.improving_certificate(5, 50.0);
    let members: Vec<_> = cert.votes.iter().map(|v| v.evaluator).collect();
    let q = net.quorums(&cert.commit);
    assert_eq!(q.eligible, 2, "only the two evaluators with 500 DOIN qualify");
    assert_eq!(members.len(), 2);
    assert!(members.contains(&net.addr(0)) && members.contains(&net.addr(1)));
    net.work_block(9, vec![cert]).unwrap();
}

#[test]
fn improvement_is_capped_at_max_improvement() {
    let mut net = net();
    let mut spec = net.spec.clone();
    spec.domains[0].spec.scale = Metric(1);
    spec.domains[0].spec.direction = doin_primitives::domain::Direction::Maximize;
    spec.domains[0].spec.baseline = Metric(ONE / 1000); // tiny baseline: a huge relative gain
    net.state = spec.build().unwrap().0;
    let cert = net.certificate(5, vec![ONE, ONE, ONE, ONE], m(50.0), |_| m(50.0));
    let r = net.work_block(9, vec![cert]).unwrap();
    // min(gain / |old|, 10.0) × rep floor 0.1 = 1.0
    assert_eq!(r.certificates[0].increment, ONE as u128);
}

#[test]
fn slashing_reaches_unbonding_stake() {
    let mut net = net();
    let evaluator = net.addr(3);
    net.heartbeat(vec![net.tx(3, doin_primitives::TxKind::Unstake { amount: Amount::doin(100) })]).unwrap();
    assert!(net.state.stake(&evaluator).is_none());
    let key = net.keys[3].clone();
    let commit = doin_primitives::Hash::of(b"c");
    let vote = |x| {
        Signed::sign(
            VoteBody {
                commit,
                evaluator,
                round: 0,
                measured: m(x),
                data_hash: doin_primitives::Hash::ZERO,
                artifact_measured: None,
            },
            &key,
        )
    };
    let ev = DoubleVoteEvidence { first: vote(1.0), second: vote(2.0) };
    let r = net
        .heartbeat_with(BlockBody {
            evidence: BoundedVec::try_from_vec(vec![ev]).unwrap(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.slashes, vec![(evaluator, Amount::doin(10))]);
    let pending: u128 = net.state.unbonding().filter(|((_, a), _)| *a == evaluator).map(|(_, v)| v.0).sum();
    assert_eq!(pending, Amount::doin(90).0);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

/// `synthetic_data_validation: false`: a trusted domain's certificate carries no votes, its claim
/// becomes the champion, and it adds no work, reward, bounty or reputation, so it travels in a
/// heartbeat; votes on it, or a Reject, are invalid.
#[test]
fn trusted_domain_accepts_claims_unverified_and_pays_nothing() {
    let mut net = net();
    let mut spec = net.spec.clone();
    spec.domains[0].spec.evaluation.data = doin_primitives::domain::DataSource::Trusted;
    spec.domains[0].spec.bounty_per_accept = Amount::doin(5);
    net.state = spec.build().unwrap().0;
    let optimizer = net.addr(5);
    let balance_before = net.state.account(&optimizer).balance;
    let supply_before = net.state.meta().supply.minted;

    // Votes are refused on a trusted domain.
    let voted = net.certificate(5, vec![ONE; 4], m(50.0), |_| m(50.0));
    assert!(!voted.votes.is_empty());
    let body =
        BlockBody { certificates: BoundedVec::try_from_vec(vec![voted]).unwrap(), ..Default::default() };
    let err = cert_err(net.heartbeat_with(body).unwrap_err());
    assert!(err.to_string().contains("trusted"), "{err}");

    let (commit, reveal) = net.commit_reveal(5, vec![ONE; 4], m(42.0));
    net.include(vec![commit.clone()]).unwrap();
    let bare = |outcome| doin_primitives::Certificate {
        commit: commit.clone(),
        reveal: reveal.clone(),
        votes: BoundedVec::new(),
        escalation: BoundedVec::new(),
        outcome,
    };
    // A trusted claim is an Accept by definition.
    let body = BlockBody {
        certificates: BoundedVec::try_from_vec(vec![bare(Outcome::Reject)]).unwrap(),
        ..Default::default()
    };
    let err = cert_err(net.heartbeat_with(body).unwrap_err());
    assert!(matches!(err, CertError::Outcome { .. }), "{err}");
    // Zero work: a work block cannot carry it, a heartbeat can.
    let err = net.work_block(9, vec![bare(Outcome::Accept)]).unwrap_err();
    assert!(matches!(err, BlockError::BelowThreshold { work: 0, .. }), "{err}");
    let body = BlockBody {
        certificates: BoundedVec::try_from_vec(vec![bare(Outcome::Accept)]).unwrap(),
        ..Default::default()
    };
    let r = net.heartbeat_with(body).unwrap();
    let c = &r.certificates[0];
    assert_eq!((c.outcome, c.median, c.increment, c.improved), (Outcome::Accept, m(42.0), 0, true));
    assert_eq!((c.optimizer_reward, c.bounty_paid), (Amount::ZERO, Amount::ZERO));
    let d = net.state.domain(&domain_id()).unwrap();
    assert_eq!(d.champion.as_ref().unwrap().performance, m(42.0), "the claim is the champion");
    assert_eq!(d.bounty_left, Amount::doin(10), "the escrow is untouched");
    assert_eq!(net.state.reputation(&optimizer, &domain_id()), 0, "no reputation for unverified claims");
    assert!(
        net.state.account(&optimizer).balance <= balance_before,
        "no reward (a heartbeat pays fees only)"
    );
    assert_eq!(net.state.meta().supply.minted, supply_before, "nothing minted");
}

/// The example domain with a 1e-9 absolute floor, a 25 % relative tolerance and a 1 % relative
/// acceptance margin: tolerances that follow the evaluators' relative noise.
fn relative_net() -> TestNet {
    let mut spec = doin_primitives::DomainSpec::example("quadratic", 4);
    spec.tolerance = Metric(1);
    spec.relative_tolerance_ppm = 250_000;
    spec.relative_acceptance_ppm = 10_000;
    TestNet::with_domain(10, 5, 2, net().spec.params.clone(), spec)
}

/// Votes spread ±3 % around `loss` (the quorum's relative noise).
fn noisy(loss: f64) -> impl Fn(usize) -> Metric {
    move |i| m(loss * [1.0, 1.03, 0.97, 1.01, 0.99][i % 5])
}

#[test]
fn constant_factor_liars_are_refused_at_every_scale_and_honest_claims_pass() {
    for (i, loss) in [50.0, 1.0, 1e-3, 1e-6].into_iter().enumerate() {
        let params = |k: i64| vec![k * ONE / 8, i as i64, 0, 0];
        for (k, factor) in [2.0, 10.0].into_iter().enumerate() {
            let mut net = relative_net();
            let optimizer = net.addr(5);
            let stake = net.state.stake(&optimizer).unwrap().amount;
            let liar = net.certificate(5, params(k as i64), m(loss / factor), noisy(loss));
            assert_eq!(liar.outcome, Outcome::Reject, "{factor}x liar at loss {loss}");
            let r = net.heartbeat_with(BlockBody {
                certificates: BoundedVec::try_from_vec(vec![liar]).unwrap(),
                ..Default::default()
            });
            let r = r.unwrap();
            assert_eq!(r.certificates[0].outcome, Outcome::Reject);
            assert_eq!(net.state.stake(&optimizer).unwrap().amount, Amount(stake.0 - Amount::doin(1).0 / 2));
            assert!(net.state.domain(&domain_id()).unwrap().champion.is_none(), "{factor}x at {loss}");
        }
        // An honest claim from the optimizer's own data sits inside the quorum's noise.
        let mut net = relative_net();
        let honest = net.certificate(5, params(7), m(loss * 0.98), noisy(loss));
        assert_eq!(honest.outcome, Outcome::Accept, "honest at loss {loss}");
        let r = net.work_block(9, vec![honest]).unwrap();
        assert!(r.certificates[0].improved, "honest at loss {loss}");
        assert_eq!(net.state.domain(&domain_id()).unwrap().champion.as_ref().unwrap().performance, m(loss));
    }
}

#[test]
fn a_gain_inside_the_quorums_noise_or_margin_earns_nothing() {
    let mut net = relative_net();
    let first = net.certificate(5, vec![ONE, 0, 0, 0], m(10.0), noisy(10.0));
    net.work_block(9, vec![first]).unwrap();
    // 2 % better, but the quorum's votes spread ±3 %: inside the noise, late.
    let inside = net.certificate(6, vec![2 * ONE, 0, 0, 0], m(9.8), noisy(9.8));
    let r = net.heartbeat_with(BlockBody {
        certificates: BoundedVec::try_from_vec(vec![inside]).unwrap(),
        ..Default::default()
    });
    let r = r.unwrap();
    assert!(!r.certificates[0].improved);
    assert_eq!(r.certificates[0].increment, 0);
    // 0.5 % better with unanimous votes: inside the 1 % relative margin, late too.
    let margin = net.certificate(6, vec![3 * ONE, 0, 0, 0], m(9.95), |_| m(9.95));
    let r = net.heartbeat_with(BlockBody {
        certificates: BoundedVec::try_from_vec(vec![margin]).unwrap(),
        ..Default::default()
    });
    assert!(!r.unwrap().certificates[0].improved);
    // 20 % better: clearly outside both, it improves the champion.
    let outside = net.certificate(6, vec![4 * ONE, 0, 0, 0], m(8.0), noisy(8.0));
    let r = net.work_block(9, vec![outside]).unwrap();
    assert!(r.certificates[0].improved);
    assert_eq!(net.state.domain(&domain_id()).unwrap().stats.late, 2);
}

#[test]
fn only_an_account_staked_as_optimizer_of_the_domain_is_accepted() {
    let mut net = net();
    // Account 0 is staked as an evaluator only: its commit is never included, so it never
    // reaches a quorum (a liar that drops its role after inclusion is covered below).
    let (commit, _) = net.commit_reveal(0, vec![ONE, 0, 0, 0], m(50.0));
    let err = commit_err(net.include(vec![commit]).unwrap_err());
    assert!(matches!(err, CertError::Role { .. }), "{err}");
}

#[test]
fn unstaking_after_a_lie_does_not_escape_the_bond_burn() {
    let mut net = net();
    let optimizer = net.addr(5);
    let liar = net.certificate(5, vec![ONE, 0, 0, 0], m(5.0), |_| m(50.0));
    assert_eq!(liar.outcome, Outcome::Reject);
    // The liar unstakes everything before its certificate lands.
    net.heartbeat(vec![net.tx(5, doin_primitives::TxKind::Unstake { amount: Amount::doin(100) })]).unwrap();
    assert!(net.state.stake(&optimizer).is_none());
    let r = net
        .heartbeat_with(BlockBody {
            certificates: BoundedVec::try_from_vec(vec![liar]).unwrap(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.certificates[0].bond_burned, Amount(Amount::doin(1).0 / 2), "taken from unbonding");
    let pending: u128 = net.state.unbonding().filter(|((_, a), _)| *a == optimizer).map(|(_, v)| v.0).sum();
    assert_eq!(pending, Amount::doin(100).0 - Amount::doin(1).0 / 2);
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

/// With reproducible evaluations, members sharing a seed check each other: in a triple, a
/// member that votes the claim instead of its (shared) measurement is an outlier and unpaid
/// while the two that agree are paid; in a pair, a mismatch pays neither.
#[test]
fn seed_groups_catch_a_member_that_votes_without_evaluating() {
    let run = |quorum_min: u16, evaluators: usize| {
        let mut spec = doin_primitives::DomainSpec::example("quadratic", 4);
        spec.reproducibility = Some(Metric(2));
        spec.tolerance = m(5.0);
        spec.quorum.min = quorum_min;
        let mut net =
            TestNet::with_domain(evaluators + 5, evaluators, 2, TestNet::new(1, 0, 0).spec.params, spec);
        let optimizer = evaluators;
        let claimed = m(49.0);
        // Members measure by group (shared seeds): group g sees 50 + g; member 0 copies the claim.
        let (commit, reveal) = net.commit_reveal(optimizer, vec![ONE, 0, 0, 0], claimed);
        net.include(vec![commit.clone()]).unwrap();
        let q = net.quorums(&commit);
        let k = q.first.len();
        let cert = net.sealed_certificate(commit, reveal, |i| {
            if i == 0 { claimed } else { m(50.0 + doin_consensus::quorum::group_of(i, k) as f64 * 0.01) }
        });
        let lazy = q.first[0];
        let r = net.work_block(evaluators + 4, vec![cert]).unwrap();
        (q, lazy, r.certificates[0].clone())
    };
    // k = 3: one triple.
    let (q, lazy, c) = run(3, 5);
    assert_eq!(q.first.len(), 3);
    assert_eq!(c.outcome, Outcome::Accept);
    assert!(c.outliers.contains(&lazy), "{c:?}");
    assert!(!c.evaluator_rewards.iter().any(|(a, _)| *a == lazy));
    assert_eq!(c.evaluator_rewards.len(), 2, "the two members that agree are paid");
    // k = 4: two pairs; the copier's pair is paid nothing and penalized nothing.
    let (q, lazy, c) = run(4, 6);
    assert_eq!(q.first.len(), 4);
    let partner = q.first[1];
    assert!(!c.agreeing.contains(&lazy) && !c.agreeing.contains(&partner));
    assert!(!c.outliers.contains(&lazy) && !c.outliers.contains(&partner));
    assert_eq!(c.agreeing, vec![q.first[2], q.first[3]]);
    assert_eq!(c.evaluator_rewards.len(), 2);
}

/// A first-round certificate of optimizer 5's claim whose reveal attaches `artifact`, every
/// member measuring 50.0 and member `i`'s measurement of the artifact being `figures[i]`.
fn model_certificate(
    net: &mut TestNet,
    artifact: Option<doin_primitives::Hash>,
    figures: &[Option<Metric>],
) -> doin_primitives::Certificate {
    let (commit, reveal) = net.commit_reveal(5, vec![ONE, ONE, ONE, ONE], m(50.0));
    let key = net.key_of(&net.addr(5)).unwrap().clone();
    let reveal = Signed::sign(doin_primitives::RevealBody { artifact, ..reveal.body }, &key);
    net.include(vec![commit.clone()]).unwrap();
    let votes: Vec<_> = net
        .quorums(&commit)
        .first
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let body =
                VoteBody { artifact_measured: figures[i], ..net.vote(a, commit.id(), 0, m(50.0)).body };
            Signed::sign(body, net.key_of(a).unwrap())
        })
        .collect();
    let outcome = doin_consensus::testkit::outcome_for(&net.state, &commit, &votes);
    doin_primitives::Certificate {
        commit,
        reveal,
        votes: BoundedVec::try_from_vec(votes).unwrap(),
        escalation: BoundedVec::new(),
        outcome,
    }
}

#[test]
fn a_champions_model_has_the_quality_its_quorum_measured_or_none() {
    let model = doin_primitives::Hash::of(b"model");
    // Two of three members measured the model: its quality is their (lower) median.
    let mut t = net();
    let cert = model_certificate(&mut t, Some(model), &[Some(m(0.95)), None, Some(m(0.93))]);
    t.work_block(9, vec![cert]).unwrap();
    let champ = t.state.domain(&domain_id()).unwrap().champion.clone().unwrap();
    assert_eq!((champ.artifact, champ.model_quality), (Some(model), Some(m(0.93))));
    assert_eq!(champ.performance, m(50.0), "the claim's figure is the parameters' measurement");
    // One of three: the model is on chain but has no quality (no node serves it).
    let mut t = net();
    let cert = model_certificate(&mut t, Some(model), &[None, Some(m(0.95)), None]);
    t.work_block(9, vec![cert]).unwrap();
    let champ = t.state.domain(&domain_id()).unwrap().champion.clone().unwrap();
    assert_eq!((champ.artifact, champ.model_quality), (Some(model), None));
    // No model attached: a vote measuring one is forged, and the certificate is refused.
    let mut t = net();
    let cert = model_certificate(&mut t, None, &[None, None, Some(m(0.99))]);
    let err = cert_err(t.work_block(9, vec![cert]).unwrap_err());
    assert!(
        matches!(&err, CertError::Vote { index: 2, reason } if reason.contains("does not attach")),
        "{err}"
    );
    assert!(t.state.domain(&domain_id()).unwrap().champion.is_none());
}
