//! Federated rounds as consensus state: the payout a round makes equals the formula applied to
//! its published inputs, coins are conserved, and every abuse of the round transaction is
//! refused with its reason while the state stays as it was.

use doin_consensus::{
    BlockError, TxError,
    federated::inputs_of,
    payout,
    testkit::{TestNet, domain_id},
};
use doin_primitives::{
    Amount, BoundedVec, DomainSpec, FederatedRound, Hash, Keypair, Roles, RoundContribution, Signed, TxKind,
    UpdateBody,
    domain::{Aggregation, DomainKind},
    tx::Capabilities,
};

const SUPERVISOR: usize = 1;
const CONTRIBUTORS: std::ops::Range<usize> = 2..7;
const OUTSIDER: usize = 7;

/// A net whose test domain is federated (pool 3 DOIN a round from a 10 DOIN escrow), with a
/// staked supervisor and five staked contributors.
fn federated_net() -> TestNet {
    federated_net_with(0)
}

/// [`federated_net`] with `evaluators` more accounts (from index 8) staked as the domain's
/// evaluators: its rounds then wait for their audit quorum.
fn federated_net_with(evaluators: usize) -> TestNet {
    let mut spec = DomainSpec::example("fed", 4);
    spec.kind = DomainKind::Federated {
        aggregation: Aggregation::LossScored,
        round_blocks: 5,
        initial_model: initial(),
    };
    spec.bounty_per_accept = Amount::doin(3);
    spec.limits.max_wall_ms = 10_000;
    let mut net = TestNet::with_domain(8 + evaluators, 0, 0, TestNet::new(1, 0, 0).spec.params, spec);
    let stake = |net: &TestNet, i: usize, roles: Roles| {
        net.tx(
            i,
            TxKind::Stake {
                amount: Amount::doin(10),
                roles,
                domains: BoundedVec::try_from_vec(vec![domain_id()]).unwrap(),
                preferences: Capabilities { cpu_cores: 2, bandwidth_mbps: 100, ..Default::default() },
            },
        )
    };
    let mut txs = vec![stake(&net, SUPERVISOR, Roles::SUPERVISOR)];
    txs.extend(CONTRIBUTORS.map(|i| stake(&net, i, Roles::CONTRIBUTOR)));
    txs.extend((8..8 + evaluators).map(|i| stake(&net, i, Roles::EVALUATOR)));
    net.heartbeat(txs).unwrap();
    net
}

/// The initial model the test job registers.
fn initial() -> Hash {
    Hash::of_encoded(&"initial model")
}

fn model(round: u64) -> Hash {
    Hash::of_encoded(&("model", round))
}

fn signed_update(key: &Keypair, round: u64, base: Hash, compute_ms: u64) -> Signed<UpdateBody> {
    Signed::sign(
        UpdateBody {
            domain: domain_id(),
            round,
            base,
            weights: Hash::of_encoded(&("weights", key.address(), round)),
            contributor: key.address(),
            samples: 120,
            compute_ms,
            bytes: 4 * 50_890,
        },
        key,
    )
}

fn contribution(keys: &[Keypair], i: usize, round: u64, base: Hash, quality_micro: i64) -> RoundContribution {
    RoundContribution {
        update: signed_update(&keys[i], round, base, 1_000 + 100 * i as u64),
        quality_micro,
        uptime_ppm: 1_000_000,
        kept: quality_micro > 0,
        say_ppm: 1_000_000,
    }
}

fn round_of(round: u64, base: Hash, contributions: Vec<RoundContribution>) -> FederatedRound {
    FederatedRound {
        domain: domain_id(),
        round,
        base,
        model: model(round + 1),
        model_quality_micro: 900_000,
        contributions: BoundedVec::try_from_vec(contributions).unwrap(),
        standing: Hash::ZERO,
    }
}

#[allow(clippy::result_large_err)]
fn record(
    net: &mut TestNet,
    from: usize,
    round: FederatedRound,
) -> Result<doin_consensus::block::Receipt, BlockError> {
    let tx = net.tx(from, TxKind::FederatedRound { round: Box::new(round) });
    net.heartbeat(vec![tx])
}

/// Asserts the round is refused naming `why`, and the state root is untouched.
fn refused(net: &mut TestNet, from: usize, round: FederatedRound, why: &str) {
    let root = net.state.root();
    let err = record(net, from, round).unwrap_err();
    match &err {
        BlockError::Transaction { source: TxError::Rejected(msg), .. } => {
            assert!(msg.contains(why), "{msg:?} lacks {why:?}")
        }
        other => assert!(other.to_string().contains(why), "{other} lacks {why:?}"),
    }
    assert_eq!(net.state.root(), root, "a refused round changed the state");
}

#[test]
fn a_round_pays_its_contributors_by_the_formula_and_conserves_coins() {
    let mut net = federated_net();
    let keys = net.keys.clone();
    let qualities = [40_000, 25_000, 10_000, -30_000, 0];
    let contributions: Vec<_> =
        CONTRIBUTORS.zip(qualities).map(|(i, q)| contribution(&keys, i, 0, initial(), q)).collect();
    let round = round_of(0, initial(), contributions);
    let before: Vec<Amount> = CONTRIBUTORS.map(|i| net.state.account(&net.addr(i)).balance).collect();
    let escrow = net.state.domain(&domain_id()).unwrap().bounty_left;
    let r = record(&mut net, SUPERVISOR, round.clone()).unwrap();

    // The payout recomputed from the transaction's published inputs alone.
    let inputs: Vec<_> = round.contributions.iter().map(|c| inputs_of(c, 10_000)).collect();
    let expected = payout::payouts(Amount::doin(3).0, &inputs);
    for ((i, b), p) in CONTRIBUTORS.zip(&before).zip(&expected) {
        let mut now = net.state.account(&net.addr(i)).balance.0;
        if r.generator == net.addr(i) {
            now -= r.generator_reward.0;
        }
        assert_eq!(now - b.0, p.amount, "contributor {i}");
    }
    assert_eq!(expected.iter().map(|p| p.amount).sum::<u128>(), Amount::doin(3).0);
    // The receipt records exactly these payouts (what the OLAP cube reads).
    let paid: Vec<(doin_primitives::Address, u128)> =
        r.transactions[0].paid.iter().map(|(a, x)| (*a, x.0)).collect();
    assert_eq!(paid, expected.iter().map(|p| (p.contributor, p.amount)).collect::<Vec<_>>());
    assert_eq!(
        (expected[3].amount, expected[4].amount),
        (0, 0),
        "harmful and worthless updates earn nothing"
    );
    assert!(expected[0].amount > expected[1].amount && expected[1].amount > expected[2].amount);
    let d = net.state.domain(&domain_id()).unwrap();
    assert_eq!(d.bounty_left.0, escrow.0 - Amount::doin(3).0);
    let fed = d.federated.clone().unwrap();
    assert_eq!(
        (fed.rounds, fed.model, fed.supervisor, fed.paid),
        (1, model(1), net.addr(SUPERVISOR), Amount::doin(3))
    );
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));

    // The next round continues from the recorded model; the escrow caps the pool (3 + 3 + 3 + 1).
    for round in 1..4u64 {
        let c = vec![contribution(&keys, 2, round, model(round), 5_000)];
        record(&mut net, SUPERVISOR, round_of(round, model(round), c)).unwrap();
    }
    let d = net.state.domain(&domain_id()).unwrap();
    assert_eq!((d.bounty_left, d.federated.as_ref().unwrap().paid), (Amount::ZERO, Amount::doin(10)));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

#[test]
fn a_dropped_update_earns_nothing_and_declared_compute_is_capped() {
    let mut net = federated_net();
    let keys = net.keys.clone();
    let mut dropped = contribution(&keys, 2, 0, initial(), 50_000);
    dropped.kept = false;
    let mut greedy = contribution(&keys, 3, 0, initial(), 10_000);
    greedy.update = signed_update(&keys[3], 0, initial(), u64::MAX);
    let honest = contribution(&keys, 4, 0, initial(), 10_000);
    let round = round_of(0, initial(), vec![dropped.clone(), greedy.clone(), honest.clone()]);
    let inputs: Vec<_> = round.contributions.iter().map(|c| inputs_of(c, 10_000)).collect();
    assert_eq!(inputs[0].quality_micro, 0);
    assert_eq!(inputs[1].compute_ms, 10_000);
    let p = payout::payouts(Amount::doin(3).0, &inputs);
    assert_eq!(p[0].amount, 0, "the rule dropped it: it earns nothing whatever quality is recorded");
    record(&mut net, SUPERVISOR, round).unwrap();

    // An account not staked as a contributor (never registered, or unstaked just before the
    // record) earns nothing, and does not void the round of the others.
    let stranger = contribution(&keys, OUTSIDER, 1, model(1), 90_000);
    let honest = contribution(&keys, 4, 1, model(1), 10_000);
    let before = net.state.account(&net.addr(OUTSIDER)).balance;
    let honest_before = net.state.account(&net.addr(4)).balance;
    let r = record(&mut net, SUPERVISOR, round_of(1, model(1), vec![stranger, honest])).unwrap();
    assert_ne!(r.generator, net.addr(OUTSIDER));
    assert_eq!(net.state.account(&net.addr(OUTSIDER)).balance, before, "an unregistered account was paid");
    let gained = net.state.account(&net.addr(4)).balance.0 - honest_before.0;
    let generator_part = if r.generator == net.addr(4) { r.generator_reward.0 } else { 0 };
    assert_eq!(gained - generator_part, Amount::doin(3).0, "the registered contributor takes the pool");
    assert_eq!(net.state.domain(&domain_id()).unwrap().federated.as_ref().unwrap().rounds, 2);
}

#[test]
fn every_abuse_of_a_round_is_refused_by_name() {
    let mut net = federated_net();
    let keys = net.keys.clone();
    let ok = || contribution(&keys, 2, 0, initial(), 10_000);

    // Only a staked supervisor records rounds.
    refused(&mut net, OUTSIDER, round_of(0, initial(), vec![ok()]), "not staked as a supervisor");
    refused(
        &mut net,
        2,
        round_of(0, initial(), vec![contribution(&keys, 3, 0, initial(), 1)]),
        "not staked as a supervisor",
    );
    // The supervisor cannot pay itself, an unregistered account, or one contributor twice.
    let mut own = ok();
    own.update = signed_update(&keys[SUPERVISOR], 0, initial(), 1);
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![own]), "supervisor cannot be paid");
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![ok(), ok()]), "second contribution");
    // A contribution the contributor did not sign (the supervisor forges one).
    let mut forged = ok();
    forged.update.body.samples = 10_000;
    refused(
        &mut net,
        SUPERVISOR,
        round_of(0, initial(), vec![forged]),
        "contribution 0 of the federated round",
    );
    // Shape of the record.
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![]), "at least one contribution");
    let mut late = ok();
    late.uptime_ppm = 2_000_000;
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![late]), "uptime");
    let mut huge = ok();
    huge.quality_micro = i64::MIN;
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![huge]), "out of range");
    refused(&mut net, SUPERVISOR, round_of(1, initial(), vec![ok()]), "next round is 0");
    let other_round = contribution(&keys, 2, 5, initial(), 10_000);
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![other_round]), "not this round");

    // Round 0 is recorded; replaying it, skipping ahead or starting from another model is refused.
    record(&mut net, SUPERVISOR, round_of(0, initial(), vec![ok()])).unwrap();
    refused(&mut net, SUPERVISOR, round_of(0, initial(), vec![ok()]), "next round is 1");
    let stale = contribution(&keys, 2, 1, initial(), 10_000);
    refused(&mut net, SUPERVISOR, round_of(1, initial(), vec![stale]), "the domain's model is");
    // Two rounds of one domain in one block.
    let r1 = round_of(1, model(1), vec![contribution(&keys, 2, 1, model(1), 10_000)]);
    let mut r2 = round_of(2, model(2), vec![contribution(&keys, 3, 2, model(2), 10_000)]);
    r2.model = model(3);
    let t1 = net.tx(SUPERVISOR, TxKind::FederatedRound { round: Box::new(r1) });
    let t2 = net.tx_with_nonce(SUPERVISOR, t1.nonce + 1, TxKind::FederatedRound { round: Box::new(r2) });
    let root = net.state.root();
    let err = net.heartbeat(vec![t1, t2]).unwrap_err();
    assert!(err.to_string().contains("already recorded at height"), "{err}");
    assert_eq!(net.state.root(), root);

    // Not a federated domain: a fresh net whose domain is an optimization domain.
    let mut plain = TestNet::new(4, 0, 0);
    let c = contribution(&plain.keys.clone(), 2, 0, initial(), 1);
    refused(&mut plain, 1, round_of(0, initial(), vec![c]), "not a federated domain");
}

/// Stakes `OUTSIDER` as a second supervisor of the job.
fn stake_second_supervisor(net: &mut TestNet) {
    let stake = net.tx(
        OUTSIDER,
        TxKind::Stake {
            amount: Amount::doin(10),
            roles: Roles::SUPERVISOR,
            domains: BoundedVec::try_from_vec(vec![domain_id()]).unwrap(),
            preferences: Capabilities::default(),
        },
    );
    net.heartbeat(vec![stake]).unwrap();
}

/// A supervisor whose job still runs keeps it; one stalled past the lease can be replaced.
#[test]
fn a_running_job_cannot_be_taken_over_but_a_stalled_one_can() {
    let mut net = federated_net();
    let keys = net.keys.clone();
    stake_second_supervisor(&mut net);
    let round = |r: u64, base: Hash| round_of(r, base, vec![contribution(&keys, 2, r, base, 10_000)]);
    record(&mut net, SUPERVISOR, round(0, initial())).unwrap();
    let recorded_at = net.state.height();
    let spec = net.state.domain(&domain_id()).unwrap().spec.clone();
    let until = recorded_at + doin_consensus::federated::takeover_blocks(&spec);
    assert_eq!(until, recorded_at + 15, "three rounds of 5 blocks");
    // While the job's supervisor is running, another cannot record its next round.
    refused(&mut net, OUTSIDER, round(1, model(1)), "holds");
    while net.state.height() + 1 < until {
        net.heartbeat(vec![]).unwrap();
    }
    // Once it has recorded nothing for three rounds' length, another supervisor takes over...
    record(&mut net, OUTSIDER, round(1, model(1))).unwrap();
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.supervisor), (2, net.addr(OUTSIDER)));
    // ...and now holds the job: the first supervisor, back, follows.
    refused(&mut net, SUPERVISOR, round(2, model(2)), "holds");
}

/// Contributors train; they run no node: an account staked only as a contributor is never drawn
/// to lead a block slot and its stake is not in finality's total, so a crowd of contributors
/// cannot stall blocks or finality.
#[test]
fn contributor_stakes_lead_no_slot_and_weigh_nothing_in_finality() {
    let net = federated_net();
    let contributors: Vec<_> = CONTRIBUTORS.map(|i| net.addr(i)).collect();
    for slot in 0..500 {
        let leader = doin_consensus::heartbeat_leader(&net.state, slot).unwrap();
        assert!(!contributors.contains(&leader), "slot {slot} led by a contributor");
        let sealer = doin_consensus::seal_leader(&net.state, slot).unwrap();
        assert!(!contributors.contains(&sealer), "seal slot {slot} led by a contributor");
    }
    let validators: u128 = net.state.stakes().filter(|(_, s)| s.validates()).map(|(_, s)| s.amount.0).sum();
    assert_eq!(net.state.active_stake(), validators);
    assert_eq!(net.state.active_stake(), Amount::doin(10).0, "only the supervisor's stake");
}

/// The account indices of the pending round's audit quorum.
fn quorum(net: &TestNet) -> Vec<usize> {
    let (members, _) =
        doin_consensus::federated::audit::quorum_of(&net.state, &domain_id()).expect("quorum drawn");
    members.iter().map(|a| net.keys.iter().position(|k| k.address() == *a).unwrap()).collect()
}

fn vote(round: &FederatedRound, ok: bool, qualities: &[i64]) -> TxKind {
    TxKind::FederatedVote {
        vote: Box::new(doin_primitives::RoundVote {
            domain: domain_id(),
            round: round.round,
            model: round.model,
            aggregate_ok: ok,
            model_quality_micro: 800_000,
            qualities: BoundedVec::try_from_vec(qualities.to_vec()).unwrap(),
        }),
    }
}

/// Asserts the block with `tx` is refused naming `why`, the state root untouched.
fn refused_tx(net: &mut TestNet, from: usize, kind: TxKind, why: &str) {
    let tx = net.tx(from, kind);
    let root = net.state.root();
    let err = net.heartbeat(vec![tx]).unwrap_err();
    assert!(err.to_string().contains(why) || format!("{err:?}").contains(why), "{err} lacks {why:?}");
    assert_eq!(net.state.root(), root, "a refused transaction changed the state");
}

/// With evaluators staked, a round's pool waits for its audit quorum and is paid by the
/// quorum's median measurements, not the supervisor's: a supervisor that inflates one
/// contributor's quality (and deflates another's) pays neither by its figures. Votes from
/// outside the quorum, twice, too early, of the wrong length or for another model are refused;
/// the next round waits for the audit.
#[test]
fn an_audit_quorum_pays_by_its_medians_not_the_supervisors_figures() {
    let mut net = federated_net_with(4);
    let keys = net.keys.clone();
    // The supervisor's figures: contributor 5 (truly harmful) inflated to the best, 2 (truly
    // the best) deflated to nothing.
    let claimed = [1, 25_000, 10_000, 90_000, 0];
    let truth = [[40_000, 25_000, 10_000, -30_000, 0], [44_000, 21_000, 12_000, -26_000, 2_000]];
    let contributions: Vec<_> =
        CONTRIBUTORS.zip(claimed).map(|(i, q)| contribution(&keys, i, 0, initial(), q)).collect();
    let round = round_of(0, initial(), contributions);
    let before: Vec<Amount> = CONTRIBUTORS.map(|i| net.state.account(&net.addr(i)).balance).collect();
    let escrow = net.state.domain(&domain_id()).unwrap().bounty_left;
    let r = record(&mut net, SUPERVISOR, round.clone()).unwrap();
    assert!(
        r.transactions[0].paid.is_empty() && r.transactions[0].settled.is_empty(),
        "paid before the audit"
    );
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.model, fed.pending.is_some()), (1, model(1), true));
    assert_eq!(net.state.domain(&domain_id()).unwrap().bounty_left, escrow);

    // The quorum is drawn from the beacon after the next block: a vote before it is refused.
    refused_tx(&mut net, 8, vote(&round, true, &truth[0]), "is drawn once the block after height");
    net.heartbeat(Vec::new()).unwrap();
    let members = quorum(&net);
    assert_eq!(members.len(), 3, "a quorum of 3 of the 4 evaluators");
    assert!(members.iter().all(|m| (8..12).contains(m)), "only evaluators: {members:?}");
    let outsider = (8..12).find(|i| !members.contains(i)).unwrap();
    refused_tx(&mut net, outsider, vote(&round, true, &truth[0]), "not in the audit quorum");
    refused_tx(&mut net, 3, vote(&round, true, &truth[0]), "not in the audit quorum");
    refused_tx(&mut net, members[0], vote(&round, true, &truth[0][..4]), "4 qualities for a round of 5");
    let mut other = round.clone();
    other.model = Hash([3; 32]);
    refused_tx(&mut net, members[0], vote(&other, true, &truth[0]), "the round awaiting its audit is 0");
    // The next round waits for the audit.
    let next = round_of(1, model(1), vec![contribution(&keys, 2, 1, model(1), 5_000)]);
    refused(&mut net, SUPERVISOR, next, "awaits its audit until height");

    net.heartbeat(vec![net.tx(members[0], vote(&round, true, &truth[0]))]).unwrap();
    assert!(
        net.state.domain(&domain_id()).unwrap().federated.as_ref().unwrap().pending.is_some(),
        "one vote of three decided"
    );
    refused_tx(&mut net, members[0], vote(&round, true, &truth[1]), "already voted");
    let r = net.heartbeat(vec![net.tx(members[1], vote(&round, true, &truth[1]))]).unwrap();

    // Paid by the medians of the two agreeing votes (the mean of the middle pair).
    let median: Vec<i64> = (0..5).map(|i| (truth[0][i] + truth[1][i]) / 2).collect();
    let mut audited = round.clone();
    let mut cs = audited.contributions.clone().into_inner();
    cs.iter_mut().zip(&median).for_each(|(c, q)| c.quality_micro = *q);
    audited.contributions = BoundedVec::try_from_vec(cs).unwrap();
    let inputs: Vec<_> = audited.contributions.iter().map(|c| inputs_of(c, 10_000)).collect();
    let expected = payout::payouts(Amount::doin(3).0, &inputs);
    let receipt = &r.transactions[0];
    assert_eq!(receipt.settled.len(), 1);
    assert_eq!(receipt.settled[0].outcome, doin_consensus::federated::RoundOutcome::Audited);
    assert_eq!(
        receipt.paid.iter().map(|(a, x)| (*a, x.0)).collect::<Vec<_>>(),
        expected.iter().map(|p| (p.contributor, p.amount)).collect::<Vec<_>>()
    );
    for ((i, b), p) in CONTRIBUTORS.zip(&before).zip(&expected) {
        let mut now = net.state.account(&net.addr(i)).balance.0;
        if r.generator == net.addr(i) {
            now -= r.generator_reward.0;
        }
        assert_eq!(now - b.0, p.amount, "contributor {i}");
    }
    assert_eq!(expected[3].amount, 0, "the inflated, harmful contributor earns nothing");
    assert!(expected[0].amount > expected[1].amount, "the deflated best contributor earns the most");
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.pending.is_none(), fed.audited, fed.unaudited, fed.paid), (true, 1, 0, Amount::doin(3)));
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
    // A late vote has nothing to vote on.
    refused_tx(&mut net, members[2], vote(&round, true, &truth[0]), "awaits an audit");
}

/// A majority finding that the recorded model is not the aggregate of its updates rejects the
/// round: nothing paid, the job's model back at the round's base, the supervisor slashed by the
/// pool; the round is recorded again from that base. A round whose quorum stays silent past
/// its deadline is settled unpaid by the next round's record.
#[test]
fn a_false_aggregate_is_rejected_and_a_silent_quorum_pays_nothing() {
    let mut net = federated_net_with(4);
    let keys = net.keys.clone();
    let round = round_of(0, initial(), vec![contribution(&keys, 2, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, round.clone()).unwrap();
    net.heartbeat(Vec::new()).unwrap();
    let members = quorum(&net);
    let stake = net.state.stake(&net.addr(SUPERVISOR)).unwrap().amount;
    let balance = net.state.account(&net.addr(2)).balance;
    net.heartbeat(vec![net.tx(members[0], vote(&round, false, &[5_000]))]).unwrap();
    let r = net.heartbeat(vec![net.tx(members[1], vote(&round, false, &[5_000]))]).unwrap();
    let settled = &r.transactions[0].settled[0];
    assert_eq!(
        (settled.outcome, settled.slashed),
        (doin_consensus::federated::RoundOutcome::Rejected, Amount::doin(3))
    );
    assert!(r.transactions[0].paid.is_empty());
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.rejected, fed.paid, fed.pending.is_none()), (0, 1, Amount::ZERO, true));
    assert_eq!(net.state.stake(&net.addr(SUPERVISOR)).unwrap().amount.0, stake.0 - Amount::doin(3).0);
    assert_eq!(net.state.account(&net.addr(2)).balance, balance, "a rejected round paid");
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));

    // Recorded again; this time nobody votes. Past the deadline (3 × 5 blocks) the next round's
    // record settles it unpaid, and waits for its own audit.
    let again = round_of(0, initial(), vec![contribution(&keys, 3, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, again).unwrap();
    let escrow = net.state.domain(&domain_id()).unwrap().bounty_left;
    net.heartbeat(Vec::new()).unwrap();
    let silent = quorum(&net);
    for _ in 0..12 {
        net.heartbeat(Vec::new()).unwrap();
    }
    let next = round_of(1, model(1), vec![contribution(&keys, 2, 1, model(1), 5_000)]);
    refused(&mut net, SUPERVISOR, next.clone(), "awaits its audit until height");
    net.heartbeat(Vec::new()).unwrap();
    let r = record(&mut net, SUPERVISOR, next).unwrap();
    assert_eq!(r.transactions[0].settled[0].outcome, doin_consensus::federated::RoundOutcome::Unpaid);
    let d = net.state.domain(&domain_id()).unwrap();
    let fed = d.federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.unpaid, fed.pending.as_ref().map(|p| p.record.round)), (2, 1, Some(1)));
    assert_eq!(d.bounty_left, escrow, "an unaudited round's pool stays in the escrow");
    // The silent members are not drawn again for a while: the next quorum is the one evaluator
    // left (a stopped node stops holding rounds up).
    assert_eq!(fed.absent.len(), 3, "{:?}", fed.absent);
    net.heartbeat(Vec::new()).unwrap();
    let next = quorum(&net);
    assert_eq!(next.len(), 1);
    assert!(!silent.contains(&next[0]), "a silent member drawn again: {next:?} of {silent:?}");
}

/// A supervisor that vanishes right after its round is recorded may take the round's model with
/// it (nobody fetched it yet). A takeover records that round again from its base — only when
/// nobody verified it (its audit expired without a verdict: unpaid), only by another supervisor
/// past the lease, never over an audited round.
#[test]
fn a_takeover_records_again_a_round_nobody_verified() {
    let mut net = federated_net_with(4);
    let keys = net.keys.clone();
    stake_second_supervisor(&mut net);
    let spec = net.state.domain(&domain_id()).unwrap().spec.clone();
    let lease = doin_consensus::federated::takeover_blocks(&spec);
    let past = |net: &mut TestNet, height: u64| {
        while net.state.height() + 1 < height + lease {
            net.heartbeat(Vec::new()).unwrap();
        }
    };
    // Round 0, audited by its quorum.
    let first = round_of(0, initial(), vec![contribution(&keys, 2, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, first.clone()).unwrap();
    let at = net.state.height();
    net.heartbeat(Vec::new()).unwrap();
    let members = quorum(&net);
    net.heartbeat(vec![net.tx(members[0], vote(&first, true, &[5_000]))]).unwrap();
    net.heartbeat(vec![net.tx(members[1], vote(&first, true, &[5_000]))]).unwrap();
    // An audited round is not recorded again, however long its supervisor is gone.
    past(&mut net, at);
    let mut again = round_of(0, initial(), vec![contribution(&keys, 3, 0, initial(), 5_000)]);
    again.model = Hash::of_encoded(&"the outsider's round 0");
    refused(&mut net, OUTSIDER, again, "the domain's next round is 1");

    // Round 1, recorded; its supervisor vanishes and its quorum cannot vote.
    let lost = round_of(1, model(1), vec![contribution(&keys, 2, 1, model(1), 5_000)]);
    record(&mut net, SUPERVISOR, lost).unwrap();
    let at = net.state.height();
    let mut redo = round_of(1, model(1), vec![contribution(&keys, 3, 1, model(1), 5_000)]);
    redo.model = Hash::of_encoded(&"the outsider's round 1");
    // Not before the audit's deadline (the lease's end)...
    refused(&mut net, OUTSIDER, redo.clone(), "awaits its audit until height");
    past(&mut net, at);
    // ...and never by the supervisor that recorded it (it holds its model).
    refused(&mut net, SUPERVISOR, redo.clone(), "the domain's next round is 2");
    let escrow = net.state.domain(&domain_id()).unwrap().bounty_left;
    let r = record(&mut net, OUTSIDER, redo.clone()).unwrap();
    assert_eq!(r.transactions[0].settled[0].outcome, doin_consensus::federated::RoundOutcome::Unpaid);
    let d = net.state.domain(&domain_id()).unwrap();
    let fed = d.federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.model, fed.supervisor), (2, redo.model, net.addr(OUTSIDER)));
    assert_eq!((fed.audited, fed.unpaid), (1, 1));
    assert_eq!(fed.pending.as_ref().map(|p| (p.record.round, p.supervisor)), Some((1, net.addr(OUTSIDER))));
    assert_eq!(d.bounty_left, escrow, "the lost round paid nobody");
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}

/// The first round starts from the initial model the domain registered: another base is
/// refused from the start, and a rejected first round does not unpin it.
#[test]
fn the_first_round_starts_from_the_registered_initial_model() {
    let mut net = federated_net_with(4);
    let keys = net.keys.clone();
    let other = Hash::of_encoded(&"another initial model");
    let swapped = round_of(0, other, vec![contribution(&keys, 2, 0, other, 5_000)]);
    refused(&mut net, SUPERVISOR, swapped.clone(), "round starts from model");
    let round = round_of(0, initial(), vec![contribution(&keys, 2, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, round.clone()).unwrap();
    net.heartbeat(Vec::new()).unwrap();
    let members = quorum(&net);
    for m in &members[..2] {
        net.heartbeat(vec![net.tx(*m, vote(&round, false, &[5_000]))]).unwrap();
    }
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.rounds, fed.model, fed.rejected), (0, initial(), 1));
    refused(&mut net, SUPERVISOR, swapped, "round starts from model");
    let again = round_of(0, initial(), vec![contribution(&keys, 3, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, again).unwrap();
}

/// `server`'s signed receipt for one row answered from `model` (named as its own optimae when
/// `optimae` is `None`), issued at `issued_ms`, disputed at that row.
fn federated_dispute(
    net: &TestNet,
    server: usize,
    model: Hash,
    optimae: Option<Hash>,
    issued_ms: u64,
) -> doin_primitives::InferenceDispute {
    let (inputs, outputs) = (vec![vec![0.25; 64]], vec![vec![0.1; 10]]);
    let receipt = Signed::sign(
        doin_primitives::InferenceReceiptBody {
            server: net.addr(server),
            domain: domain_id(),
            optimae: optimae.unwrap_or(model),
            artifact: model,
            rows: 1,
            answers: doin_primitives::answers_root(&inputs, &outputs),
            height: net.state.height(),
            issued_ms,
            payment: None,
        },
        &net.keys[server],
    );
    doin_primitives::InferenceDispute::new(receipt, &inputs, &outputs, 0).unwrap()
}

fn dispute_tx(d: doin_primitives::InferenceDispute) -> TxKind {
    TxKind::DisputeInference { dispute: Box::new(d) }
}

/// The model a federated job is served from is the newest round its audit quorum settled: a
/// round still under audit, or one paid by the supervisor's own figures, is not; receipts of the
/// verified model (named as their own optimae) can be disputed, those of a pending model or
/// naming another optimae cannot; the model a newer audited round replaces stays disputable for
/// the dispute window.
#[test]
fn only_an_audited_round_becomes_the_served_model_and_its_receipts_are_disputable() {
    // No evaluator: paid unaudited, never verified.
    let mut net = federated_net();
    let keys = net.keys.clone();
    record(&mut net, SUPERVISOR, round_of(0, initial(), vec![contribution(&keys, 2, 0, initial(), 5_000)]))
        .unwrap();
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!((fed.unaudited, fed.verified), (1, None));

    let mut net = federated_net_with(4);
    let keys = net.keys.clone();
    let (server, disputer) = (8, OUTSIDER);
    let round = round_of(0, initial(), vec![contribution(&keys, 2, 0, initial(), 5_000)]);
    record(&mut net, SUPERVISOR, round.clone()).unwrap();
    net.heartbeat(Vec::new()).unwrap();
    assert_eq!(net.state.domain(&domain_id()).unwrap().federated.as_ref().unwrap().verified, None);
    let pending = dispute_tx(federated_dispute(&net, server, model(1), None, 1));
    refused_tx(&mut net, disputer, pending, "is not a champion model");
    let members = quorum(&net);
    for m in &members[..2] {
        net.heartbeat(vec![net.tx(*m, vote(&round, true, &[5_000]))]).unwrap();
    }
    let settled_at = net.state.height();
    let fed = net.state.domain(&domain_id()).unwrap().federated.clone().unwrap();
    assert_eq!(
        fed.verified,
        Some(doin_consensus::state::VerifiedModel {
            model: model(1),
            quality_micro: 800_000,
            round: 0,
            height: settled_at
        }),
        "the quorum's median quality, not the supervisor's 900 000"
    );
    // Another optimae with the verified model is not a receipt of it.
    let other = dispute_tx(federated_dispute(&net, server, model(1), Some(Hash([9; 32])), 2));
    refused_tx(&mut net, disputer, other, "is not a champion model");
    let first = federated_dispute(&net, server, model(1), None, 3);
    let id = first.id();
    net.heartbeat(vec![net.tx(disputer, dispute_tx(first))]).unwrap();
    assert!(net.state.dispute(&id).is_some_and(|d| d.outcome.is_none()), "the dispute is pending");

    // Round 1, audited: its model is served now, round 0's stays disputable for the window.
    let next = round_of(1, model(1), vec![contribution(&keys, 3, 1, model(1), 5_000)]);
    record(&mut net, SUPERVISOR, next.clone()).unwrap();
    net.heartbeat(Vec::new()).unwrap();
    let members = quorum(&net);
    let mut voted = 0;
    for m in members.iter().filter(|m| **m != server) {
        if voted < 2 {
            net.heartbeat(vec![net.tx(*m, vote(&next, true, &[5_000]))]).unwrap();
            voted += 1;
        }
    }
    let d = net.state.domain(&domain_id()).unwrap().clone();
    let verified = d.federated.as_ref().unwrap().verified.clone().unwrap();
    assert_eq!((verified.model, verified.round), (model(2), 1));
    let window = net.state.params().dispute_window_blocks;
    assert!(
        d.past_models
            .iter()
            .any(|m| m.optimae == model(1) && m.artifact == model(1) && m.until == verified.height + window),
        "{:?}",
        d.past_models
    );
    let late = federated_dispute(&net, server, model(1), None, 4);
    let late_id = late.id();
    net.heartbeat(vec![net.tx(disputer, dispute_tx(late))]).unwrap();
    assert!(net.state.dispute(&late_id).is_some());
    assert_eq!(net.state.accounted_supply(), Some(net.state.meta().supply.minted.0));
}
