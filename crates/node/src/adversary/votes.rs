//! Abusive votes: double votes, finality equivocation and forgeries, copied votes.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Quorum members sign two different votes; the gossip check turns the second into evidence,
/// which a block slashes.
pub(super) fn double_votes(spec: &DomainSpec, n: usize) -> KindReport {
    let mut accepted = 0;
    let mut slashed = 0u64;
    for i in 0..n {
        let mut net = net(spec, 5);
        let check = GossipCheck::new();
        check.set_state(net.state.clone());
        let topic = Topic::Optimae("quadratic".into());
        let (commit, _) = net.commit_reveal(5, params(i), perf(5.0));
        let _ = check.check(&Topic::Blocks, &GossipMessage::Commit(Box::new(commit.clone())));
        if include(&mut net, &commit).is_err() {
            continue;
        }
        check.set_state(net.state.clone());
        let voter = net.quorums(&commit).first[0];
        let before = wealth(&net.state, &voter);
        let first = net.vote(&voter, commit.id(), 0, perf(5.0));
        let second = net.vote(&voter, commit.id(), 0, perf(4.0));
        let _ = check.check(&topic, &GossipMessage::Vote(Box::new(first)));
        if check.check(&topic, &GossipMessage::Vote(Box::new(second))).is_ok() {
            accepted += 1;
        }
        let evidence = check.take_evidence();
        let body = BlockBody {
            evidence: BoundedVec::try_from_vec(evidence).unwrap_or_default(),
            ..Default::default()
        };
        if net.heartbeat_with(body).is_ok_and(|r| !r.slashes.is_empty())
            && wealth(&net.state, &voter) < before
        {
            slashed += 1;
        }
    }
    KindReport {
        kind: "double_vote",
        attempts: n as u64,
        accepted_fakes: accepted,
        attacker_richer: slashed < n as u64,
        outcome: format!("{slashed} of {n} double voters slashed through gossiped evidence"),
    }
}

/// A chain whose checkpoint 6 is two blocks deep.
pub(super) fn finality_net(spec: &DomainSpec) -> TestNet {
    let mut net = net(spec, 5);
    while net.state.height() < 8 {
        let _ = net.heartbeat(Vec::new());
    }
    net
}

/// Stakers sign two finality votes for one checkpoint height (backing two blocks) or a link
/// surrounding another; the node's finality pool turns the second into evidence, which a block
/// slashes.
pub(super) fn finality_equivocation(spec: &DomainSpec, n: usize) -> KindReport {
    let n = n.max(2);
    let (mut accepted, mut slashed) = (0u64, 0u64);
    let base = finality_net(spec);
    for i in 0..n {
        let mut net = base.clone();
        let check = GossipCheck::new();
        check.set_state(net.state.clone());
        let staker = i % 5;
        let voter = net.addr(staker);
        let before = wealth(&net.state, &voter);
        let honest = net.finality_vote(staker, 6);
        let mut body = honest.body.clone();
        if i % 2 == 0 {
            body.target.hash = Hash::of_parts(&[b"other block", &(i as u64).to_le_bytes()]);
        } else {
            // Surrounding: from genesis to a later checkpoint, around 6 → 12 (as if justified).
            body.source = doin_primitives::Checkpoint { height: 6, hash: honest.body.target.hash };
            body.target = doin_primitives::Checkpoint { height: 12, hash: Hash([7; 32]) };
        }
        let second = Signed::sign(body, &net.keys[staker]);
        let outer = if i % 2 == 0 {
            honest.clone()
        } else {
            let mut b = honest.body.clone();
            b.target = doin_primitives::Checkpoint { height: 18, hash: Hash([8; 32]) };
            Signed::sign(b, &net.keys[staker])
        };
        let _ = check.check(&Topic::Blocks, &GossipMessage::FinalityVote(Box::new(outer)));
        if check.check(&Topic::Blocks, &GossipMessage::FinalityVote(Box::new(second))).is_ok() {
            accepted += 1;
        }
        let evidence = check.take_finality_evidence();
        let body = BlockBody {
            finality_evidence: BoundedVec::try_from_vec(evidence).unwrap_or_default(),
            ..Default::default()
        };
        if net.heartbeat_with(body).is_ok_and(|r| !r.slashes.is_empty())
            && wealth(&net.state, &voter) < before
        {
            slashed += 1;
        }
    }
    KindReport {
        kind: "finality_equivocation",
        attempts: n as u64,
        accepted_fakes: accepted,
        attacker_richer: slashed < n as u64,
        outcome: format!(
            "{slashed} of {n} double or surround finality voters slashed (50 %) through gossiped evidence"
        ),
    }
}

/// Finality votes that must count for nothing: by unstaked keys, for another chain, for a height
/// that is no checkpoint, for a block off the chain, from an unjustified source, with a forged
/// signature, and a second count of one vote. Each goes into a block.
pub(super) fn finality_forgeries(spec: &DomainSpec, n: usize) -> KindReport {
    let n = n.max(7);
    let base = finality_net(spec);
    let mut accepted = 0u64;
    let stranger = Keypair::from_seed([0xfa; 32]);
    for i in 0..n {
        let mut net = base.clone();
        let honest = net.finality_vote(0, 6);
        let resign = |edit: &dyn Fn(&mut doin_primitives::FinalityVoteBody), key: &Keypair| {
            let mut b = honest.body.clone();
            edit(&mut b);
            Signed::sign(b, key)
        };
        let votes = match i % 7 {
            0 => vec![resign(&|b| b.voter = stranger.address(), &stranger)],
            1 => vec![resign(&|b| b.chain_id += 1, &net.keys[0])],
            2 => vec![resign(&|b| b.target.height = 5, &net.keys[0])],
            3 => vec![resign(&|b| b.target.hash = Hash([3; 32]), &net.keys[0])],
            4 => vec![resign(&|b| b.source.hash = Hash([4; 32]), &net.keys[0])],
            5 => {
                let mut forged = honest.clone();
                forged.body.voter = net.addr(1);
                vec![forged]
            }
            _ => vec![honest.clone(), honest.clone()],
        };
        let body = BlockBody {
            finality_votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
            ..Default::default()
        };
        if net.heartbeat_with(body).is_ok() {
            accepted += 1;
        }
    }
    KindReport {
        kind: "finality_forgery",
        attempts: n as u64,
        accepted_fakes: accepted,
        attacker_richer: false,
        outcome: "unstaked, other-chain, non-checkpoint, off-chain, unjustified-source, forged and repeated finality votes: all refused by block validation".into(),
    }
}

/// A lazy quorum member votes the claim instead of evaluating. The quadratic domain's
/// evaluations are reproducible, so its seed-group partner's figure (same data) refutes it.
pub(super) fn vote_copying(spec: &DomainSpec, n: usize) -> KindReport {
    let (mut paid, mut made, mut lazy_gain, mut honest_gain) = (0u64, 0u64, 0u128, 0u128);
    for i in 0..n {
        let mut net = net(spec, 5);
        let claimed = perf(10.0 * 0.99);
        // The first member drawn copies the claim.
        let lazy = std::cell::Cell::new(None::<Address>);
        let measured = |g: usize, a: &Address| {
            if lazy.get().is_none() {
                lazy.set(Some(*a));
            }
            if lazy.get() == Some(*a) { claimed } else { noisy(10.0, g) }
        };
        let Ok(cert) = certificate(&mut net, spec, 5, i, claimed, measured) else { continue };
        let (Some(lazy), Some(honest)) =
            (lazy.get(), cert.votes.iter().map(|v| v.evaluator).find(|a| Some(*a) != lazy.get()))
        else {
            continue;
        };
        let before = (wealth(&net.state, &lazy), wealth(&net.state, &honest));
        let Ok(receipt) = net.work_block(9, vec![cert]) else { continue };
        made += 1;
        let rewarded = |who: &Address| {
            receipt.certificates.iter().any(|c| c.evaluator_rewards.iter().any(|(a, _)| a == who))
        };
        paid += u64::from(rewarded(&lazy));
        lazy_gain += wealth(&net.state, &lazy).saturating_sub(before.0);
        honest_gain += wealth(&net.state, &honest).saturating_sub(before.1);
    }
    KindReport {
        kind: "vote_copying",
        attempts: made,
        accepted_fakes: paid,
        attacker_richer: lazy_gain > honest_gain,
        outcome: format!(
            "{paid} of {made} copied votes (the claim, not evaluated) paid; the copiers gained {:.3} DOIN, an \
             honest member of the same quorums {:.3}",
            lazy_gain as f64 / 1e9,
            honest_gain as f64 / 1e9
        ),
    }
}
