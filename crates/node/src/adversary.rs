//! The adversary suite (`doin bench adversary`): fake and abusive submissions of many kinds,
//! each run through the real rules that refuse it — block validation (`apply_block`, the same
//! function every node runs), the node's gossip checks ([`GossipCheck`]) and the built-in
//! domains' tolerance profile (`quadratic` as `doin node` registers it) — with its outcome.
//!
//! Every kind reports how many attempts it made, how many fakes were accepted, and whether the
//! attacker ended richer than an honest participant doing the same work.

use doin_consensus::{
    State,
    certs::{self, median},
    quorum,
    testkit::{TestNet, domain_id},
};
use doin_net::{GossipMessage, GossipValidator, Refusal, Topic};
use doin_primitives::{
    Address, Amount, BlockBody, BoundedVec, Certificate, DomainSpec, FIXED_ONE, Hash, Keypair, Metric,
    Outcome, Signed, TxKind, VoteBody, poo,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::{
    config::{DomainConfig, NodeConfig},
    domains,
    gossip_check::GossipCheck,
};

/// One kind of attack and what came of it.
#[derive(Clone, Debug, Serialize)]
pub struct KindReport {
    /// Short name.
    pub kind: &'static str,
    /// Submissions made.
    pub attempts: u64,
    /// Fake submissions the rules accepted.
    pub accepted_fakes: u64,
    /// Whether the attacker ended richer than an honest participant doing the same work.
    pub attacker_richer: bool,
    /// What happened, in words.
    pub outcome: String,
}

/// The whole suite's result.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Per kind.
    pub kinds: Vec<KindReport>,
    /// One-sided p-value of "grinding salts/references raises the colluders' quorum share".
    pub grinding_advantage_p: f64,
    /// Colluders' share of quorum seats without and with grinding.
    pub grinding_share: (f64, f64),
}

impl Report {
    /// The benchmark's JSON line.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "bench": "adversary",
            "attempts": self.kinds.iter().map(|k| k.attempts).sum::<u64>(),
            "kinds": self.kinds.len(),
            "accepted_fakes": self.kinds.iter().map(|k| k.accepted_fakes).sum::<u64>(),
            "attacker_richer_than_honest": self.kinds.iter().filter(|k| k.attacker_richer).count(),
            "grinding_advantage_p": self.grinding_advantage_p,
            "grinding_share_plain": self.grinding_share.0,
            "grinding_share_ground": self.grinding_share.1,
            "by_kind": self.kinds,
        })
    }
}

/// Sizes of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    /// Over-claims and other per-certificate attempts.
    pub claims: usize,
    /// Gossip flood messages (from `flood_keys` throwaway keys).
    pub flood: usize,
    /// Throwaway keys of the flood.
    pub flood_keys: usize,
    /// Commits of the grinding test, and salts tried per commit.
    pub grind_commits: usize,
    /// Salts/references an optimizer tries per commit.
    pub grind_tries: usize,
}

impl Default for Scale {
    fn default() -> Self {
        Self { claims: 200, flood: 10_000, flood_keys: 1_000, grind_commits: 200, grind_tries: 10_000 }
    }
}

/// The `quadratic` domain's spec as `doin node` registers it (10 parameters in ±20, the
/// built-in tolerance profile).
pub fn quadratic_spec() -> Result<DomainSpec, String> {
    let config = DomainConfig { domain_id: "quadratic".into(), ..DomainConfig::default() };
    let node = NodeConfig::default();
    let domain = domains::build(&config)?;
    domains::spec_of(domain.as_ref(), &config, &node)
}

fn metric(x: f64) -> Metric {
    Metric((x * FIXED_ONE as f64).round() as i64)
}

/// Quadratic performance is `−loss`.
fn perf(loss: f64) -> Metric {
    metric(-loss)
}

/// A net of `evaluators` evaluators (accounts 0..), 2 optimizers and 3 spare accounts, with the
/// registered quadratic domain.
fn net(spec: &DomainSpec, evaluators: usize) -> TestNet {
    let params = TestNet::new(1, 0, 0).spec.params;
    TestNet::with_domain(evaluators + 5, evaluators, 2, params, spec.clone())
}

/// Distinct in-bounds parameters for claim `n`.
fn params(n: usize) -> Vec<i64> {
    let mut p = vec![0i64; 10];
    p[0] = (n as i64 % 4_000) * (FIXED_ONE / 200);
    p[1] = (n as i64 / 4_000) * (FIXED_ONE / 200);
    p
}

fn wealth(state: &State, who: &Address) -> u128 {
    let stake = state.stake(who).map_or(0, |s| s.amount.0);
    let unbonding: u128 = state.unbonding().filter(|((_, a), _)| a == who).map(|(_, v)| v.0).sum();
    state.account(who).balance.0 + stake + unbonding
}

/// Applies certificates in a block of the right kind: a work block when they add work, else a
/// heartbeat. Returns the outcomes, or the block error.
fn land(net: &mut TestNet, certs: Vec<Certificate>) -> Result<Vec<(Outcome, bool)>, String> {
    let receipt = match net.work_block(9, certs.clone()) {
        Ok(r) => r,
        Err(_) => net
            .heartbeat_with(BlockBody {
                certificates: BoundedVec::try_from_vec(certs).unwrap_or_default(),
                ..Default::default()
            })
            .map_err(|e| e.to_string())?,
    };
    Ok(receipt.certificates.iter().map(|c| (c.outcome, c.improved)).collect())
}

/// Whether `cert` lands in a block as an accepted claim.
fn lands_accepted(net: &mut TestNet, cert: Certificate) -> bool {
    land(net, vec![cert]).is_ok_and(|o| o.first().is_some_and(|(outcome, _)| *outcome == Outcome::Accept))
}

/// A defended kind's report: `accepted` fakes of `attempts`, never richer.
fn defended(kind: &'static str, attempts: usize, accepted: u64, outcome: String) -> KindReport {
    KindReport { kind, attempts: attempts as u64, accepted_fakes: accepted, attacker_richer: false, outcome }
}

/// Includes and seals `commit` on chain (a seal-leader block, then the block after it), or says
/// why the rules refuse to include it.
fn include(net: &mut TestNet, commit: &doin_primitives::Commit) -> Result<(), String> {
    if net.state.committed_at(&commit.id()).is_some() {
        return Ok(());
    }
    net.include(vec![commit.clone()]).map_err(|e| e.to_string())
}

/// A certificate whose first-round members measure `measured(g, address)`, `g` the member's
/// seed group (members of a group measure the same data: honest ones report the same figure);
/// disagreeing votes escalate as an honest node would, escalation members measuring
/// `measured(100 + g, address)`. Its commit is included and sealed first (an `Err` names why it
/// cannot be).
fn certificate(
    net: &mut TestNet,
    spec: &DomainSpec,
    optimizer: usize,
    n: usize,
    claimed: Metric,
    measured: impl Fn(usize, &Address) -> Metric,
) -> Result<Certificate, String> {
    let (commit, reveal) = net.commit_reveal(optimizer, params(n), claimed);
    include(net, &commit)?;
    let q = net.quorums(&commit);
    let group = |i: usize, k: usize| quorum::group_of(i, k);
    let votes: Vec<_> = q
        .first
        .iter()
        .enumerate()
        .map(|(i, a)| net.vote(a, commit.id(), 0, measured(group(i, q.first.len()), a)))
        .collect();
    let values: Vec<Metric> = votes.iter().map(|v| v.body.measured).collect();
    let m = median(&values);
    let agree = values.iter().all(|v| certs::agrees(spec, *v, m));
    let escalation: Vec<_> = if agree {
        Vec::new()
    } else {
        q.escalation
            .iter()
            .enumerate()
            .map(|(i, a)| net.vote(a, commit.id(), 1, measured(100 + group(i, q.escalation.len()), a)))
            .collect()
    };
    let decisive: Vec<Metric> =
        if agree { values } else { escalation.iter().map(|v| v.body.measured).collect() };
    let outcome = certs::outcome(spec, claimed, median(&decisive)).unwrap_or(Outcome::Reject);
    Ok(Certificate {
        commit,
        reveal,
        votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
        escalation: BoundedVec::try_from_vec(escalation).unwrap_or_default(),
        outcome,
    })
}

/// Whether a claim lands as an accepted certificate (its commit included and sealed, its
/// certificate in a block); `None` if its commit could not be included (a fixture error).
fn claim_accepted(
    net: &mut TestNet,
    spec: &DomainSpec,
    optimizer: usize,
    n: usize,
    claimed: Metric,
    measured: impl Fn(usize, &Address) -> Metric,
) -> Option<bool> {
    certificate(net, spec, optimizer, n, claimed, measured).ok().map(|c| lands_accepted(net, c))
}

/// Evaluator `i`'s figure for a point of true loss `loss`: ±3 % relative noise, as the
/// quadratic domain's seeded weights give.
fn noisy(loss: f64, i: usize) -> Metric {
    perf(loss * (1.0 + 0.03 * (((i * 7919) % 13) as f64 / 6.0 - 1.0)))
}

/// Runs every kind.
pub fn run(scale: Scale) -> Result<Report, String> {
    let spec = quadratic_spec()?;
    let mut kinds = vec![
        over_claims(&spec, scale.claims),
        factor_liar(&spec, 2.0),
        factor_liar(&spec, 10.0),
        colluders(&spec, scale.claims / 4),
        replays(&spec, scale.claims / 10),
        copies(&spec, scale.claims / 10),
        out_of_bounds(&spec, scale.claims / 10),
        stale_references(&spec, scale.claims / 10),
        forged_signatures(&spec, scale.claims / 10),
        wrong_role(&spec, scale.claims / 10),
        unbond_escape(&spec),
        double_votes(&spec, scale.claims / 10),
        flood(&spec, scale.flood, scale.flood_keys),
        vote_copying(&spec, scale.claims / 10),
        finality_equivocation(&spec, scale.claims / 10),
        finality_forgeries(&spec, scale.claims / 10),
    ];
    let (p, share, kind) = grinding(&spec, scale.grind_commits, scale.grind_tries);
    kinds.push(kind);
    Ok(Report { kinds, grinding_advantage_p: p, grinding_share: share })
}

/// Claims that over-state the quorum's median by 30 – 100 % at losses from 50 to 1e-6.
fn over_claims(spec: &DomainSpec, n: usize) -> KindReport {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (mut accepted, mut made) = (0, 0);
    for i in 0..n {
        let mut net = net(spec, 5);
        let loss = 50.0 * 10f64.powf(-(i as f64 % 8.0));
        let claimed = perf(loss * (1.0 - rng.random_range(0.3..1.0)));
        if let Some(a) = claim_accepted(&mut net, spec, 5, i, claimed, |j, _| noisy(loss, j)) {
            made += 1;
            accepted += u64::from(a);
        }
    }
    defended(
        "over_claim",
        made,
        accepted,
        format!("{} of {made} rejected with their bond burned", made as u64 - accepted),
    )
}

/// An optimizer reporting every loss `factor`× better than measured, through a whole
/// convergence (loss 50 → 1.5e-6), against an honest optimizer making the same progress.
fn factor_liar(spec: &DomainSpec, factor: f64) -> KindReport {
    let run = |lie: bool| {
        let mut net = net(spec, 5);
        let me = net.addr(5);
        let mut accepted = 0u64;
        for r in 0..25 {
            let loss = 50.0 * 0.5f64.powi(r);
            let claimed = if lie { perf(loss / factor) } else { perf(loss * 0.99) };
            let landed = certificate(&mut net, spec, 5, r as usize, claimed, |j, _| noisy(loss, j))
                .and_then(|cert| land(&mut net, vec![cert]));
            if let Ok(outcomes) = landed {
                accepted += outcomes.iter().filter(|(o, _)| *o == Outcome::Accept).count() as u64;
            }
        }
        (wealth(&net.state, &me), accepted)
    };
    let (honest, honest_accepted) = run(false);
    let (liar, liar_accepted) = run(true);
    KindReport {
        kind: if factor < 5.0 { "liar_2x" } else { "liar_10x" },
        attempts: 25,
        accepted_fakes: liar_accepted,
        attacker_richer: liar > honest,
        outcome: format!(
            "liar accepted {liar_accepted} of 25 (honest {honest_accepted}); wealth liar {:.3} vs honest {:.3} DOIN",
            liar as f64 / 1e9,
            honest as f64 / 1e9
        ),
    }
}

/// Two of nine evaluators (22 % of evaluator stake) vote a liar's 10× claim as measured.
fn colluders(spec: &DomainSpec, n: usize) -> KindReport {
    let (mut accepted, mut escalated, mut made) = (0, 0, 0);
    for i in 0..n {
        // Evaluators 0-8, optimizers 9 and 10.
        let mut net = net(spec, 9);
        let colluding = [net.addr(0), net.addr(1)];
        let loss = 10.0 * 0.5f64.powi((i % 20) as i32);
        let claimed = perf(loss / 10.0);
        let Ok(cert) = certificate(&mut net, spec, 9, i, claimed, |j, a| {
            if colluding.contains(a) { claimed } else { noisy(loss, j) }
        }) else {
            continue;
        };
        made += 1;
        escalated += u64::from(cert.escalated());
        accepted += u64::from(lands_accepted(&mut net, cert));
    }
    // Only claims whose commits were included count as attempts (a fixture error shows as 0).
    defended(
        "colluding_evaluators_below_third",
        made,
        accepted,
        format!("{escalated} of {made} escalated on the colluders' votes; {accepted} accepted"),
    )
}

/// Runs `attempts` invalid certificates built by `make` and counts those a block accepted (an
/// `Err` from `make`: the rules refused to include its commit).
fn refused(
    kind: &'static str,
    spec: &DomainSpec,
    attempts: usize,
    make: impl Fn(&mut TestNet, usize) -> Result<Certificate, String>,
) -> KindReport {
    let mut accepted = 0;
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..attempts {
        let mut net = net(spec, 5);
        match make(&mut net, i).and_then(|cert| land(&mut net, vec![cert])) {
            Ok(_) => accepted += 1,
            Err(text) => {
                reasons.insert(
                    text.split(':').next_back().unwrap_or(&text).trim().chars().take(60).collect::<String>(),
                );
            }
        }
    }
    KindReport {
        kind,
        attempts: attempts as u64,
        accepted_fakes: accepted,
        attacker_richer: false,
        outcome: format!(
            "{} refused ({})",
            attempts as u64 - accepted,
            reasons.into_iter().take(2).collect::<Vec<_>>().join("; ")
        ),
    }
}

fn replays(spec: &DomainSpec, n: usize) -> KindReport {
    refused("replayed_certificate", spec, n, |net, i| {
        let cert = certificate(net, spec, 5, i, perf(9.9), |j, _| noisy(10.0, j))?;
        let _ = land(net, vec![cert.clone()]);
        Ok(cert)
    })
}

fn copies(spec: &DomainSpec, n: usize) -> KindReport {
    refused("copied_parameters", spec, n, |net, i| {
        let cert = certificate(net, spec, 5, i, perf(9.9), |j, _| noisy(10.0, j))?;
        let _ = land(net, vec![cert]);
        // Optimizer 6 re-commits the revealed parameters under its own name.
        certificate(net, spec, 6, i, perf(9.0), |j, _| noisy(9.0, j))
    })
}

/// A first-round certificate of optimizer 5's claim `claimed` against `reference`, every member
/// measuring the claim and the outcome declared Accept: only what the block rules check of the
/// commit itself can refuse it.
fn unanimous(
    net: &mut TestNet,
    p: Vec<i64>,
    claimed: Metric,
    reference: Hash,
) -> Result<Certificate, String> {
    let (commit, reveal) = net.commit_reveal_at(5, p, claimed, reference);
    include(net, &commit)?;
    let q = net.quorums(&commit);
    let votes: Vec<_> = q.first.iter().map(|a| net.vote(a, commit.id(), 0, claimed)).collect();
    Ok(Certificate {
        commit,
        reveal,
        votes: BoundedVec::try_from_vec(votes).unwrap_or_default(),
        escalation: BoundedVec::new(),
        outcome: Outcome::Accept,
    })
}

fn out_of_bounds(spec: &DomainSpec, n: usize) -> KindReport {
    refused("out_of_bounds_parameters", spec, n, |net, i| {
        let mut p = params(i);
        p[i % 10] = 21 * FIXED_ONE + i as i64;
        let tip = net.state.tip().hash;
        unanimous(net, p, perf(1.0), tip)
    })
}

fn stale_references(spec: &DomainSpec, n: usize) -> KindReport {
    refused("stale_reference", spec, n, |net, i| {
        // Half the attempts: a commit whose reference aged out before its inclusion; the other
        // half: a certificate whose commit's window closed before it landed.
        let tip = net.state.tip().hash;
        if i % 2 == 0 {
            for _ in 0..=net.spec.params.max_reference_age {
                let _ = net.heartbeat(vec![]);
            }
            return unanimous(net, params(i), perf(5.0), tip);
        }
        let cert = unanimous(net, params(i), perf(5.0), tip)?;
        for _ in 0..=net.spec.params.max_reference_age {
            let _ = net.heartbeat(vec![]);
        }
        Ok(cert)
    })
}

fn forged_signatures(spec: &DomainSpec, n: usize) -> KindReport {
    refused("forged_signature", spec, n, |net, i| {
        let mut cert = certificate(net, spec, 5, i, perf(5.0), |j, _| noisy(5.0, j))?;
        match i % 3 {
            // A vote's figure changed after signing.
            0 => {
                let mut votes = cert.votes.clone().into_inner();
                votes[0].body.measured = perf(0.001);
                cert.votes = BoundedVec::try_from_vec(votes).unwrap_or_default();
            }
            // The claim changed after signing.
            1 => cert.commit.body.claimed = perf(0.001),
            // Signed by another key.
            _ => cert.reveal = Signed::sign(cert.reveal.body.clone(), &net.keys[6]),
        }
        Ok(cert)
    })
}

fn wrong_role(spec: &DomainSpec, n: usize) -> KindReport {
    refused("wrong_role", spec, n, |net, i| {
        // Account 0 is staked as an evaluator only.
        certificate(net, spec, 0, i, perf(9.9), |j, _| noisy(10.0, j))
    })
}

/// A liar unstakes everything before its reject lands.
fn unbond_escape(spec: &DomainSpec) -> KindReport {
    let mut net = net(spec, 5);
    let liar = net.addr(5);
    let before = wealth(&net.state, &liar);
    let cert = certificate(&mut net, spec, 5, 1, perf(0.1), |j, _| noisy(10.0, j));
    let _ = net.heartbeat(vec![net.tx(5, TxKind::Unstake { amount: Amount::doin(100) })]);
    let landed = cert.and_then(|cert| land(&mut net, vec![cert]));
    let burned = before.saturating_sub(wealth(&net.state, &liar));
    let accepted = matches!(landed.as_deref(), Ok([(Outcome::Accept, _)]));
    KindReport {
        kind: "unstake_before_reject",
        attempts: 1,
        accepted_fakes: u64::from(accepted),
        attacker_richer: burned < Amount::doin(1).0 / 2,
        outcome: format!("bond burned from unbonding stake: {:.3} DOIN", burned as f64 / 1e9),
    }
}

/// Quorum members sign two different votes; the gossip check turns the second into evidence,
/// which a block slashes.
fn double_votes(spec: &DomainSpec, n: usize) -> KindReport {
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
fn finality_net(spec: &DomainSpec) -> TestNet {
    let mut net = net(spec, 5);
    while net.state.height() < 8 {
        let _ = net.heartbeat(Vec::new());
    }
    net
}

/// Stakers sign two finality votes for one checkpoint height (backing two blocks) or a link
/// surrounding another; the node's finality pool turns the second into evidence, which a block
/// slashes.
fn finality_equivocation(spec: &DomainSpec, n: usize) -> KindReport {
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
fn finality_forgeries(spec: &DomainSpec, n: usize) -> KindReport {
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

/// Signed bogus commits, reveals and votes from throwaway keys.
fn flood(spec: &DomainSpec, n: usize, keys: usize) -> KindReport {
    let net = net(spec, 5);
    let check = GossipCheck::new();
    check.set_state(net.state.clone());
    let topic = Topic::Optimae("quadratic".into());
    let (honest, reveal) = net.commit_reveal(5, params(1), perf(5.0));
    let _ = check.check(&topic, &GossipMessage::Commit(Box::new(honest.clone())));
    let keys: Vec<Keypair> = (0..keys.max(1))
        .map(|i| Keypair::from_seed(*Hash::of(&(i as u64).to_le_bytes()).as_bytes()))
        .collect();
    let tip = net.state.tip().hash;
    let mut admitted = 0;
    for i in 0..n {
        let key = &keys[i % keys.len()];
        let message = match i % 3 {
            0 => GossipMessage::Commit(Box::new(Signed::sign(
                poo::CommitBody {
                    domain: domain_id(),
                    optimizer: key.address(),
                    optimae_hash: Hash::of(&(i as u64).to_le_bytes()),
                    claimed: perf(0.0),
                    reference_block: tip,
                },
                key,
            ))),
            1 => GossipMessage::Reveal(Box::new(Signed::sign(
                poo::RevealBody { optimizer: key.address(), ..reveal.body.clone() },
                key,
            ))),
            _ => GossipMessage::Vote(Box::new(Signed::sign(
                VoteBody {
                    commit: honest.id(),
                    evaluator: key.address(),
                    round: 0,
                    measured: perf(0.0),
                    data_hash: Hash::ZERO,
                },
                key,
            ))),
        };
        if !matches!(check.check(&topic, &message), Err(Refusal::Reject(_))) {
            admitted += 1;
        }
    }
    let honest_ok = check.check(&topic, &GossipMessage::Reveal(Box::new(reveal))).is_ok();
    KindReport {
        kind: "gossip_flood",
        attempts: n as u64,
        accepted_fakes: admitted,
        attacker_richer: false,
        outcome: format!(
            "{} of {n} rejected (forwarding peers charged), pending commits {}, honest reveal admitted after: {honest_ok}",
            n as u64 - admitted,
            check.pending()
        ),
    }
}

/// A lazy quorum member votes the claim instead of evaluating. The quadratic domain's
/// evaluations are reproducible, so its seed-group partner's figure (same data) refutes it.
fn vote_copying(spec: &DomainSpec, n: usize) -> KindReport {
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

/// An optimizer whose colluders hold 20 % of evaluator stake tries `tries` salts and references
/// per commit and commits the one whose quorum it predicts its colluders fill most — the quorum
/// drawn with the newest beacon it knows, the tip's — against committing with its first salt.
/// Both commits are included and sealed on a real chain (seal-leader blocks, VRF beacons) and
/// the quorums they actually drew are counted. The test is one-sided on the colluders' share of
/// seats (normal approximation of two proportions).
fn grinding(spec: &DomainSpec, commits: usize, tries: usize) -> (f64, (f64, f64), KindReport) {
    let mut net = net(spec, 20);
    let colluding: Vec<Address> = (0..4).map(|i| net.addr(i)).collect();
    let key = net.keys[20].clone();
    let optimizer = key.address();
    // Some history: references to grind over.
    for _ in 0..4 {
        let _ = net.heartbeat(vec![]);
    }
    let seats = |q: &quorum::Quorums| q.first.iter().filter(|a| colluding.contains(a)).count();
    let (mut plain, mut ground, mut predicted, mut total) = (0usize, 0usize, 0usize, 0usize);
    for c in 0..commits {
        let state = net.state.clone();
        let Some(tip) = state.recent_at(state.height()).cloned() else { break };
        let references: Vec<Hash> =
            (0..4).filter_map(|back| state.recent_hash_at(state.height().checked_sub(back)?)).collect();
        let p: poo::Params = BoundedVec::try_from_vec(params(c)).unwrap_or_default();
        let body = |t: usize| {
            let salt = Hash::of_parts(&[b"grind", &(c as u64).to_le_bytes(), &(t as u64).to_le_bytes()]).0;
            poo::CommitBody {
                domain: domain_id(),
                optimizer,
                optimae_hash: poo::optimae_hash(&p, &salt, &optimizer),
                claimed: perf(1.0),
                reference_block: references[t % references.len()],
            }
        };
        // What the optimizer can compute before committing: the quorum under the tip's beacon.
        let guess = quorum::Sealed { inclusion: &tip, beacon: state.meta().beacon };
        let predict = |b: &poo::CommitBody| {
            seats(&quorum::quorums(&guess, &spec.quorum, &domain_id(), &optimizer, &Hash::of_encoded(b)))
        };
        let best = (1..=tries).map(body).max_by_key(|b| predict(b)).unwrap_or_else(|| body(1));
        predicted += predict(&best);
        let pair = [Signed::sign(body(0), &key), Signed::sign(best, &key)];
        if net.include(pair.to_vec()).is_err() {
            break;
        }
        let (a, b) = (net.quorums(&pair[0]), net.quorums(&pair[1]));
        plain += seats(&a);
        ground += seats(&b);
        total += a.first.len();
    }
    let p1 = plain as f64 / total.max(1) as f64;
    let p2 = ground as f64 / total.max(1) as f64;
    let pooled = (plain + ground) as f64 / (2 * total).max(1) as f64;
    let se = (pooled * (1.0 - pooled) * 2.0 / total.max(1) as f64).sqrt();
    let z = if se > 0.0 { (p2 - p1) / se } else { 0.0 };
    let p = 0.5 * erfc(z / std::f64::consts::SQRT_2);
    let kind = KindReport {
        kind: "quorum_grinding",
        attempts: (commits * tries) as u64,
        accepted_fakes: 0,
        attacker_richer: p < 0.01,
        outcome: format!(
            "colluders' seat share {p1:.3} with one salt, {p2:.3} trying {tries} salts/references per commit \
             (p = {p:.2e}); the grinder predicted {:.3} from the tip's beacon, but the quorum comes from \
             the beacon of the block after the commit's inclusion",
            predicted as f64 / total.max(1) as f64
        ),
    };
    (p, (p1, p2), kind)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        assert!((erfc(0.0) - 1.0).abs() < 1e-6);
        assert!((erfc(1.0) - 0.157_299_2).abs() < 1e-6);
        assert!((erfc(-1.0) - 1.842_700_8).abs() < 1e-6);
    }

    /// Every kind runs, accepts no fake and leaves the attacker no richer than honest work.
    #[test]
    fn the_suite_refuses_every_defended_attack() {
        let report =
            run(Scale { claims: 40, flood: 900, flood_keys: 300, grind_commits: 40, grind_tries: 50 })
                .unwrap();
        assert!(report.kinds.len() >= 17);
        for k in &report.kinds {
            assert!(k.attempts > 0, "{}", k.kind);
            assert_eq!(k.accepted_fakes, 0, "{}: {}", k.kind, k.outcome);
            assert!(!k.attacker_richer, "{}: {}", k.kind, k.outcome);
        }
        assert!(report.grinding_advantage_p >= 0.01, "grinding helps: p = {}", report.grinding_advantage_p);
        let json = report.json();
        assert_eq!(json["kinds"], report.kinds.len());
    }
}
