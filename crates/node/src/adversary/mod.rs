//! The adversary suite (`doin bench adversary`): fake and abusive submissions of many kinds,
//! each run through the real rules that refuse it — block validation (`apply_block`, the same
//! function every node runs), the node's gossip checks ([`GossipCheck`]) and the built-in
//! domains' tolerance profile (`quadratic` as `doin node` registers it) — with its outcome.
//!
//! Every kind reports how many attempts it made, how many fakes were accepted, and whether the
//! attacker ended richer than an honest participant doing the same work.

mod claims;
mod flood;
mod votes;

#[allow(clippy::wildcard_imports)]
use self::{claims::*, flood::*, votes::*};

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
