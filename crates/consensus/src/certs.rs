//! Certificates: the Proof-of-Optimization rules that decide whether a claimed improvement
//! reproduces (DESIGN §4.1, §4.2).

use std::collections::BTreeSet;

use doin_primitives::{
    Address, Amount, Certificate, FIXED_ONE, Hash, Metric, Outcome, Vote, domain::DomainSpec, encode, poo,
};
use serde::{Deserialize, Serialize};

use crate::{
    error::CertError,
    fixed, quorum,
    state::{Champion, State, StateKey},
};

const ONE: u128 = FIXED_ONE as u128;

/// What applying a certificate did.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, borsh::BorshSerialize, borsh::BorshDeserialize,
)]
pub struct CertReceipt {
    /// Commit id.
    pub commit: Hash,
    /// Domain.
    pub domain: String,
    /// Optimizer.
    pub optimizer: Address,
    /// Computed outcome.
    pub outcome: Outcome,
    /// Whether the escalation quorum decided.
    pub escalated: bool,
    /// Claimed performance.
    pub claimed: Metric,
    /// The decisive median.
    pub median: Metric,
    /// Champion before.
    pub previous: Option<Metric>,
    /// Whether the champion moved to the median.
    pub improved: bool,
    /// Effective increment (fixed point), 0 unless improved.
    pub increment: u128,
    /// Reward fraction applied for an over-claim within tolerance (fixed point).
    pub reward_fraction: u64,
    /// Evaluators whose votes agreed with the median.
    pub agreeing: Vec<Address>,
    /// Evaluators whose votes were outliers.
    pub outliers: Vec<Address>,
    /// Bond burned from the optimizer (rejects).
    pub bond_burned: Amount,
    /// Bounty paid to the optimizer.
    pub bounty_paid: Amount,
    /// Optimizer's share of the block reward (filled in by the block).
    pub optimizer_reward: Amount,
    /// Evaluators' share of the block reward (filled in by the block).
    pub evaluator_rewards: Vec<(Address, Amount)>,
}

/// Median of the values: the lower middle element for an even count.
pub fn median(values: &[Metric]) -> Metric {
    let mut v = values.to_vec();
    v.sort();
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or_default()
}

/// The quality of a reveal's model artifact: the median of the deciding votes' measurements of
/// it, when more than half of them measured it (an artifact most of its quorum could not fetch
/// or run has no quality, and is not served). A vote measuring an artifact the reveal does not
/// attach is refused.
pub fn model_quality(attached: bool, deciding: &[Vote]) -> Result<Option<Metric>, CertError> {
    let figures: Vec<Metric> = deciding.iter().filter_map(|v| v.artifact_measured).collect();
    if !attached {
        if let Some(i) = deciding.iter().position(|v| v.artifact_measured.is_some()) {
            return Err(vote_err(i, "measures a model artifact the reveal does not attach"));
        }
        return Ok(None);
    }
    Ok((figures.len() * 2 > deciding.len()).then(|| median(&figures)))
}

fn vote_err(index: usize, reason: impl Into<String>) -> CertError {
    CertError::Vote { index, reason: reason.into() }
}

/// Checks votes against their quorum: right commit and round, members only, one vote each.
fn check_votes(votes: &[Vote], commit: &Hash, round: u8, members: &[Address]) -> Result<(), CertError> {
    let members: BTreeSet<&Address> = members.iter().collect();
    let mut seen = BTreeSet::new();
    for (i, v) in votes.iter().enumerate() {
        if v.commit != *commit {
            return Err(vote_err(i, "vote is for another commit"));
        }
        if v.round != round {
            return Err(vote_err(i, format!("vote round {} where {round} is expected", v.round)));
        }
        if !members.contains(&v.evaluator) {
            return Err(vote_err(i, format!("evaluator {:?} is not a member of the quorum", v.evaluator)));
        }
        if !seen.insert(v.evaluator) {
            return Err(vote_err(i, format!("evaluator {:?} voted twice", v.evaluator)));
        }
    }
    Ok(())
}

fn within(a: Metric, b: Metric, tolerance: i64) -> bool {
    (a.0 as i128 - b.0 as i128).abs() <= tolerance as i128
}

/// The quorum's own noise: half the range of the decisive votes that agree with the median.
/// A gain no larger than this is inside what the evaluators themselves disagree by.
pub fn noise(values: &[Metric], median: Metric, tolerance: i64) -> i64 {
    let agreeing = values.iter().filter(|v| within(**v, median, tolerance)).map(|v| v.0 as i128);
    let (lo, hi) = agreeing.fold((i128::MAX, i128::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi { 0 } else { i64::try_from((hi - lo) / 2).unwrap_or(i64::MAX) }
}

/// With reproducible evaluations (`DomainSpec::reproducibility` = `Some(t)`), the votes of each
/// seed group (members that measured the same data, [`quorum::group_of`]) check each other: in
/// a group, the votes within `t` of the group's median are confirmed if at least two are, and
/// the others are refuted. `agreeing` keeps only confirmed votes (the paid ones); refuted votes
/// become outliers; a vote its group can neither confirm nor refute (a pair that differs, or a
/// partner that did not vote) is neither paid nor penalized. A member that votes without
/// evaluating — copying the claim, or another member's figure from other data — differs from
/// its partner's exact figure and earns nothing.
fn group_check<'a>(
    spec: &DomainSpec,
    q: &quorum::Quorums,
    cert: &'a Certificate,
    agreeing: Vec<&'a Vote>,
    mut outliers: Vec<&'a Vote>,
) -> (Vec<&'a Vote>, Vec<&'a Vote>) {
    let Some(t) = spec.reproducibility else { return (agreeing, outliers) };
    let mut confirmed: BTreeSet<(u8, Address)> = BTreeSet::new();
    let mut refuted: BTreeSet<(u8, Address)> = BTreeSet::new();
    for (round, votes) in [(0u8, &cert.votes[..]), (1u8, &cert.escalation[..])] {
        let members = q.members(round);
        let mut groups: std::collections::BTreeMap<usize, Vec<&Vote>> = std::collections::BTreeMap::new();
        for v in votes.iter() {
            if let Some(i) = members.iter().position(|a| *a == v.evaluator) {
                groups.entry(quorum::group_of(i, members.len())).or_default().push(v);
            }
        }
        for group in groups.values() {
            let values: Vec<Metric> = group.iter().map(|v| v.measured).collect();
            let m = median(&values);
            let (consistent, other): (Vec<&&Vote>, Vec<&&Vote>) =
                group.iter().partition(|v| within(v.measured, m, t.0));
            if consistent.len() >= 2 {
                confirmed.extend(consistent.iter().map(|v| (round, v.evaluator)));
                refuted.extend(other.iter().map(|v| (round, v.evaluator)));
            }
        }
    }
    let key = |v: &Vote| (v.round, v.evaluator);
    let (agreeing, refuted_agreeing): (Vec<&Vote>, Vec<&Vote>) = agreeing
        .into_iter()
        .filter(|v| confirmed.contains(&key(v)) || refuted.contains(&key(v)))
        .partition(|v| confirmed.contains(&key(v)));
    outliers.extend(refuted_agreeing);
    (agreeing, outliers)
}

/// Whether a vote `v` agrees with the median `m`: within the domain's tolerance at `m`.
pub fn agrees(spec: &DomainSpec, v: Metric, m: Metric) -> bool {
    within(v, m, spec.tolerance_at(m))
}

/// The outcome of a claim against its decisive median: a reject iff it over-states the median
/// by more than the tolerance at the median. `None` on overflow.
pub fn outcome(spec: &DomainSpec, claimed: Metric, median: Metric) -> Option<Outcome> {
    let overclaim = spec.direction.gain(claimed, median)?;
    Some(if overclaim > spec.tolerance_at(median) { Outcome::Reject } else { Outcome::Accept })
}

/// Whether a verified `median` improves on `old`: its gain must exceed the domain's acceptance
/// margin at `old` and the quorum's own `noise` ([`noise`]).
pub fn improves(spec: &DomainSpec, old: Metric, median: Metric, noise: i64) -> Option<bool> {
    Some(spec.direction.gain(median, old)? > spec.acceptance_margin(old).max(noise))
}

/// The quorum's noise of a certificate that passed validation: [`noise`] over its decisive
/// votes (the escalation's when escalated), 0 for a trusted domain's.
pub fn certificate_noise(spec: &DomainSpec, cert: &Certificate, median: Metric) -> i64 {
    let decisive: &[Vote] = if cert.escalated() { &cert.escalation } else { &cert.votes };
    let values: Vec<Metric> = decisive.iter().map(|v| v.measured).collect();
    noise(&values, median, spec.tolerance_at(median))
}

/// Checks the parameters against the domain's space.
pub fn check_params(spec: &DomainSpec, params: &[i64]) -> Result<(), CertError> {
    if params.len() != spec.params.len() {
        return Err(CertError::ParamCount { got: params.len(), expected: spec.params.len() });
    }
    for (index, (value, p)) in params.iter().zip(spec.params.iter()).enumerate() {
        let (min, max) = p.kind.range();
        if *value < min || *value > max {
            return Err(CertError::ParamOutOfBounds { index, value: *value, min, max });
        }
    }
    Ok(())
}

/// The effective increment of an improvement from `old` to `new`:
/// `weight × min(|new − old| / max(|old|, scale), max_improvement) × rep_factor × fraction`.
pub fn increment(
    spec: &DomainSpec,
    old: Metric,
    new: Metric,
    rep_factor: u64,
    fraction: u64,
    max_improvement: u128,
) -> Option<u128> {
    let gain = spec.direction.gain(new, old)?;
    if gain <= 0 {
        return Some(0);
    }
    let denominator = (old.0 as i128).unsigned_abs().max(spec.scale.0.max(1) as u128);
    let improvement = ((gain as u128).checked_mul(ONE)? / denominator).min(max_improvement);
    let weighted = improvement.checked_mul(spec.effective_weight() as u128)? / ONE;
    let with_rep = weighted.checked_mul(rep_factor as u128)? / ONE;
    Some(with_rep.checked_mul(fraction as u128)? / ONE)
}

/// Validates a certificate against `state` (the state inside the block being applied, at
/// `height`) and applies it. Signatures were verified with the block's batch.
pub(crate) fn apply_certificate(
    state: &mut State,
    cert: &Certificate,
    height: u64,
) -> Result<CertReceipt, CertError> {
    let commit_id = cert.commit.id();
    let commit = &cert.commit.body;
    let reveal = &cert.reveal.body;
    // 1. The reveal opens the commit.
    if reveal.commit != commit_id {
        return Err(CertError::Opening("reveal names another commit"));
    }
    if reveal.optimizer != commit.optimizer {
        return Err(CertError::Opening("reveal is signed by someone other than the committer"));
    }
    if poo::optimae_hash(&reveal.params, &reveal.salt, &reveal.optimizer) != commit.optimae_hash {
        return Err(CertError::Opening("H(params || salt || optimizer) differs from the committed hash"));
    }
    // 2. Domain and parameter space.
    let mut domain = state
        .domain(&commit.domain)
        .cloned()
        .ok_or_else(|| CertError::UnknownDomain(commit.domain.to_string()))?;
    let spec = domain.spec.clone();
    let spec = &spec;
    check_params(spec, &reveal.params)?;
    // 3. The commit is on this chain and sealed: included at some height, with the block after
    //    it applied before this one (its beacon draws the quorums).
    let params = state.params.clone();
    let included = state.committed_at(&commit_id).ok_or(CertError::NotCommitted(commit_id))?;
    let (inclusion, beacon) = quorum::sealed(state, &commit_id)
        .map(|s| (s.inclusion.clone(), s.beacon))
        .ok_or(CertError::Unsealed(commit_id))?;
    let sealed = quorum::Sealed { inclusion: &inclusion, beacon };
    // 4. First inclusion only; first revealer wins.
    if state.certified.contains_key(&commit_id) {
        return Err(CertError::Duplicate("commit already certified"));
    }
    let params_hash = Hash::of(&encode(&reveal.params));
    if state.params_seen.contains_key(&(commit.domain.clone(), params_hash)) {
        return Err(CertError::Duplicate("these parameters were already revealed for this domain"));
    }
    // 5. The optimizer is staked as an optimizer of the domain with its bond, checked on the
    //    accept path below: a reject must stay includable after the liar unstakes or drops
    //    the role, or changing its stake would let it escape the burn.
    let stake = state.stake(&commit.optimizer).map_or(Amount::ZERO, |s| s.amount);
    let role = state.stake(&commit.optimizer).is_some_and(|s| s.optimizes(&commit.domain));
    // 6. Quorums from the seal (none for a trusted domain: the claim stands).
    let (decisive_median, agreeing, outliers) = if spec.trusted() {
        if !cert.votes.is_empty() || cert.escalated() {
            return Err(CertError::Quorum("a trusted domain's certificate carries no votes".into()));
        }
        (commit.claimed, Vec::new(), Vec::new())
    } else if cert.escalated() {
        let q = quorum::quorums(&sealed, &spec.quorum, &commit.domain, &commit.optimizer, &commit_id);
        if q.first.is_empty() {
            return Err(CertError::NoEvaluators);
        }
        check_votes(&cert.votes, &commit_id, 0, &q.first)?;
        check_votes(&cert.escalation, &commit_id, 1, &q.escalation)
            .map_err(|e| CertError::Quorum(format!("escalation {e}")))?;
        let values: Vec<Metric> = cert.escalation.iter().map(|v| v.measured).collect();
        let m = median(&values);
        let tolerance = spec.tolerance_at(m);
        let agree_count = values.iter().filter(|v| within(**v, m, tolerance)).count();
        let size = q.escalation.len() as u128;
        let needed =
            (size * spec.quorum.fraction_num as u128).div_ceil(spec.quorum.fraction_den.max(1) as u128);
        if (agree_count as u128) < needed {
            return Err(CertError::Quorum(format!(
                "{agree_count} agreeing escalation votes, {needed} of {size} needed"
            )));
        }
        let (agreeing, outliers): (Vec<&Vote>, Vec<&Vote>) =
            cert.votes.iter().chain(cert.escalation.iter()).partition(|v| within(v.measured, m, tolerance));
        let (agreeing, outliers) = group_check(spec, &q, cert, agreeing, outliers);
        (m, agreeing, outliers)
    } else {
        let q = quorum::quorums(&sealed, &spec.quorum, &commit.domain, &commit.optimizer, &commit_id);
        if q.first.is_empty() {
            return Err(CertError::NoEvaluators);
        }
        check_votes(&cert.votes, &commit_id, 0, &q.first)?;
        if cert.votes.len() != q.first.len() {
            return Err(CertError::Quorum(format!(
                "{} of {} first-round votes; a partial quorum must escalate",
                cert.votes.len(),
                q.first.len()
            )));
        }
        let values: Vec<Metric> = cert.votes.iter().map(|v| v.measured).collect();
        let m = median(&values);
        let tolerance = spec.tolerance_at(m);
        if let Some(i) = values.iter().position(|v| !within(*v, m, tolerance)) {
            return Err(CertError::Quorum(format!(
                "vote {i} is outside the tolerance of the median; disagreement must escalate"
            )));
        }
        let (agreeing, outliers) = group_check(spec, &q, cert, cert.votes.iter().collect(), Vec::new());
        (m, agreeing, outliers)
    };
    let model_quality = model_quality(
        reveal.artifact.is_some(),
        if cert.escalated() { &cert.escalation } else { &cert.votes },
    )?;
    let noise = certificate_noise(spec, cert, decisive_median);
    // 7. Outcome: over-claim beyond the tolerance at the median is a reject; with a relative
    //    tolerance a claim off by a constant factor is refused at any scale.
    let tolerance = spec.tolerance_at(decisive_median);
    let overclaim =
        spec.direction.gain(commit.claimed, decisive_median).ok_or(CertError::Overflow("claim"))?;
    let computed = outcome(spec, commit.claimed, decisive_median).ok_or(CertError::Overflow("claim"))?;
    if computed == Outcome::Accept && (!role || stake < params.optimae_bond) {
        if stake < params.optimae_bond {
            return Err(CertError::NoBond { optimizer: commit.optimizer, stake, bond: params.optimae_bond });
        }
        return Err(CertError::Role { optimizer: commit.optimizer, domain: commit.domain.to_string() });
    }
    if computed != cert.outcome {
        return Err(CertError::Outcome { declared: cert.outcome, computed });
    }
    // Record certification until the commit's window closes.
    let expiry = included.saturating_add(params.max_reference_age);
    state.certified.insert(commit_id, expiry);
    state.expire_at(expiry, StateKey::Certified(commit_id));
    state.params_seen.insert((commit.domain.clone(), params_hash), expiry);
    state.expire_at(expiry, StateKey::ParamsSeen(commit.domain.clone(), params_hash));

    // 8. Reputation of voters.
    let agreeing: Vec<Address> = agreeing.iter().map(|v| v.evaluator).collect();
    let outliers: Vec<Address> = outliers.iter().map(|v| v.evaluator).collect();
    for a in &agreeing {
        state.adjust_reputation(*a, &commit.domain, params.rep_vote_agree, 0);
    }
    for a in &outliers {
        state.adjust_reputation(*a, &commit.domain, 0, params.rep_vote_outlier);
    }

    let mut receipt = CertReceipt {
        commit: commit_id,
        domain: commit.domain.to_string(),
        optimizer: commit.optimizer,
        outcome: computed,
        escalated: cert.escalated(),
        claimed: commit.claimed,
        median: decisive_median,
        previous: domain.champion.as_ref().map(|c| c.performance),
        improved: false,
        increment: 0,
        reward_fraction: 0,
        agreeing,
        outliers,
        bond_burned: Amount::ZERO,
        bounty_paid: Amount::ZERO,
        optimizer_reward: Amount::ZERO,
        evaluator_rewards: Vec::new(),
    };
    if cert.escalated() {
        domain.stats.escalated = domain.stats.escalated.saturating_add(1);
    }
    match computed {
        Outcome::Reject => {
            state.adjust_reputation(commit.optimizer, &commit.domain, 0, params.rep_reject);
            // The bond is taken from active stake, then from unbonding entries: unstaking after
            // committing a lie does not protect it.
            let burn = Amount(fixed::ppm(params.optimae_bond.0, params.reject_burn_ppm));
            receipt.bond_burned =
                state.burn_stake(commit.optimizer, burn).ok_or(CertError::Overflow("bond burn"))?;
            domain.stats.rejected = domain.stats.rejected.saturating_add(1);
        }
        Outcome::Accept => {
            let old = domain.champion.as_ref().map_or(spec.baseline, |c| c.performance);
            // A gain inside the margin, or inside the quorum's own spread, earns nothing.
            if improves(spec, old, decisive_median, noise).ok_or(CertError::Overflow("gain"))? {
                let fraction = if overclaim <= 0 || tolerance == 0 {
                    FIXED_ONE as u64
                } else {
                    ((tolerance - overclaim) as u128 * ONE / tolerance as u128) as u64
                };
                let rep = state.reputation(&commit.optimizer, &commit.domain);
                let factor = fixed::rep_factor(rep, params.rep_factor_floor);
                receipt.increment =
                    increment(spec, old, decisive_median, factor, fraction, params.max_improvement)
                        .ok_or(CertError::Overflow("increment"))?;
                receipt.reward_fraction = fraction;
                receipt.improved = true;
                if !spec.trusted() {
                    state.adjust_reputation(commit.optimizer, &commit.domain, params.rep_accept, 0);
                }
                // The displaced model stays disputable for the window (its served receipts).
                let until = height.saturating_add(params.dispute_window_blocks);
                domain.past_models.retain(|m| m.until >= height);
                if let Some(Champion { commit, artifact: Some(artifact), model_quality: Some(_), .. }) =
                    domain.champion.take()
                {
                    crate::disputes::keep_disputable(&mut domain, commit, artifact, until, height);
                }
                domain.champion = Some(Champion {
                    performance: decisive_median,
                    commit: commit_id,
                    optimizer: commit.optimizer,
                    params_hash,
                    artifact: reveal.artifact,
                    model_quality,
                    height,
                });
                // Unverified claims draw nothing from the escrow.
                let bounty = if spec.trusted() {
                    Amount::ZERO
                } else {
                    spec.bounty_per_accept.min(domain.bounty_left)
                };
                domain.bounty_left = domain.bounty_left.saturating_sub(bounty);
                state.credit(commit.optimizer, bounty).ok_or(CertError::Overflow("bounty"))?;
                receipt.bounty_paid = bounty;
                domain.stats.improvements = domain.stats.improvements.saturating_add(1);
                domain.stats.total_work = domain.stats.total_work.saturating_add(receipt.increment);
            } else {
                // Honest but late: another improvement landed first.
                domain.stats.late = domain.stats.late.saturating_add(1);
            }
        }
    }
    state.set_domain(commit.domain.clone(), domain);
    Ok(receipt)
}

/// Whether the double vote in `evidence` was slashed already (evidence of it is then useless,
/// not invalid news).
pub fn already_slashed(state: &State, evidence: &doin_primitives::DoubleVoteEvidence) -> bool {
    let v = &evidence.first.body;
    state.slashed.contains(&(v.evaluator, v.commit, v.round))
}

/// Checks double-vote evidence against `state` without applying it (signatures are the
/// caller's): two different votes by one evaluator for one commit and round, not slashed
/// before, against an account with something staked or unbonding. Returns that total.
pub fn check_evidence(state: &State, evidence: &doin_primitives::DoubleVoteEvidence) -> Result<u128, String> {
    let (a, b) = (&evidence.first.body, &evidence.second.body);
    if a.evaluator != b.evaluator || a.commit != b.commit || a.round != b.round {
        return Err("the two votes are not by one evaluator for one commit and round".into());
    }
    if a == b {
        return Err("the two votes are identical".into());
    }
    if already_slashed(state, evidence) {
        return Err("this double vote was already slashed".into());
    }
    let total = state.slashable(&a.evaluator);
    if total == 0 {
        return Err("the evaluator has no stake to slash".into());
    }
    Ok(total)
}

/// Validates and applies double-vote evidence: slashes the evaluator once per commit and round.
pub(crate) fn apply_evidence(
    state: &mut State,
    evidence: &doin_primitives::DoubleVoteEvidence,
) -> Result<(Address, Amount), String> {
    let total = check_evidence(state, evidence)?;
    let a = &evidence.first.body;
    let key = (a.evaluator, a.commit, a.round);
    let amount = Amount(fixed::ppm(total, state.params.double_vote_slash_ppm).max(1));
    let slashed = state.burn_stake(a.evaluator, amount).ok_or("slash overflow")?;
    state.slashed.insert(key);
    state.touch(StateKey::Slashed(key.0, key.1, key.2));
    Ok((a.evaluator, slashed))
}
