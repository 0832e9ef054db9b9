//! The audit of a recorded federated round by an evaluator quorum (`docs/design.md` §21c).
//!
//! A round recorded while evaluators are staked for its domain is *pending*: its pool is not
//! paid. A quorum is drawn from the evaluators eligible at the record's block (never its
//! supervisor or one of its contributors) with the beacon after the next block, which nobody
//! knew when the record was included; the same seed fixes the audit's scoring rows. Each member
//! fetches the round's artifacts (base model, updates, new model), recomputes the rule's
//! aggregate bit for bit and re-measures every contribution's loss change, and sends a
//! [`RoundVote`]. Once a majority of the quorum agrees:
//! - the aggregate reproduces → the pool is paid by the formula with each contribution's
//!   **median measured quality** (the supervisor's own figures only rank nothing any more);
//! - it does not → nothing is paid, the job's model rewinds to the round's base and the
//!   supervisor's stake is slashed by the round's pool.
//!
//! The next round of the domain waits for the audit until [`deadline`]; a round recorded after
//! it first settles the pending one by the votes in hand (more agreeing than not: paid by their
//! medians; more refusing: rejected; otherwise — no votes, a tie — its pool stays in the
//! escrow). A domain with no eligible evaluator pays at once by the supervisor's figures
//! (counted as `unaudited`): a job's owner who stakes no evaluator trusts its supervisor.

use doin_primitives::{Address, Amount, DomainId, FederatedRound, Hash, RoundVote};
use serde::{Deserialize, Serialize};

use crate::{
    error::TxError,
    payout,
    quorum::{self, Candidate},
    state::{FederatedState, PendingRound, State},
};

use super::{MAX_QUALITY_MICRO, inputs_of, rejected};

/// How a recorded round was settled.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RoundOutcome {
    /// Paid by the audit quorum's median measurements.
    Audited,
    /// Paid by the supervisor's measurements (no evaluator was eligible).
    Unaudited,
    /// The quorum did not decide by the deadline: nothing paid.
    Unpaid,
    /// The quorum found the model is not the aggregate of the recorded updates.
    Rejected,
}

/// A round settled by a transaction (in its receipt): the record with the qualities it was paid
/// by, and what the supervisor lost.
#[derive(
    Clone, Debug, PartialEq, Eq, borsh::BorshSerialize, borsh::BorshDeserialize, Serialize, Deserialize,
)]
pub struct Settled {
    /// The record, each contribution's `quality_micro` the one paid by (the quorum's median
    /// when audited), and `model_quality_micro` likewise.
    pub record: FederatedRound,
    /// Its supervisor.
    pub supervisor: Address,
    /// How it was settled.
    pub outcome: RoundOutcome,
    /// Slashed from the supervisor (a rejected round).
    pub slashed: Amount,
    /// What it paid each contributor (the payout formula's order).
    pub paid: Vec<(Address, Amount)>,
}

/// What settles a pending round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Paid by these qualities (record order) and model quality.
    Paid { qualities: Vec<i64>, model_quality_micro: i64, outcome: RoundOutcome },
    /// Not paid; the model stands.
    Unpaid,
    /// Not paid; the model rewinds; the supervisor is slashed.
    Rejected,
}

/// The height from which a pending round no longer holds the domain's next round: the
/// round's lease ([`super::takeover_blocks`]) after its inclusion.
pub fn deadline(spec: &doin_primitives::DomainSpec, pending: &PendingRound) -> u64 {
    pending.height.saturating_add(super::takeover_blocks(spec))
}

/// The audit seed: `H("doin/federated-audit" || beacon || H(record))`, where `beacon` is the
/// chain's beacon after the block following the record's inclusion. It draws the quorum and the
/// audit's scoring rows.
pub fn seed(beacon: &Hash, record: &FederatedRound) -> Hash {
    Hash::of_parts(&[b"doin/federated-audit", &beacon.0, &Hash::of_encoded(record).0])
}

fn excluded(record: &FederatedRound, supervisor: &Address, a: &Address) -> bool {
    a == supervisor || record.contributions.iter().any(|c| c.update.body.contributor == *a)
}

/// Blocks an evaluator that let an audit expire without its vote is not drawn again for the
/// domain: ten audit windows.
pub fn absence_blocks(spec: &doin_primitives::DomainSpec) -> u64 {
    super::takeover_blocks(spec).saturating_mul(10)
}

fn absent_at(fed: &FederatedState, a: &Address, height: u64) -> bool {
    fed.absent.iter().any(|(who, until)| who == a && *until > height)
}

/// Evaluators eligible now to audit `record` by `supervisor` (staked as evaluators of the
/// domain, neither the supervisor nor a contributor of the round, not absent).
pub fn candidates(state: &State, record: &FederatedRound, supervisor: &Address) -> Vec<Candidate> {
    let members = state.evaluators(&record.domain);
    let fed = state.domain(&record.domain).and_then(|d| d.federated.clone()).unwrap_or_default();
    let height = state.height();
    quorum::eligible_at(state, &record.domain, members.iter())
        .into_iter()
        .filter(|c| !excluded(record, supervisor, &c.address) && !absent_at(&fed, &c.address, height))
        .collect()
}

/// Marks the members of `domain`'s pending quorum that did not vote as absent from `height`
/// (its audit expired); forgets absences that are over.
pub(crate) fn mark_absent(state: &State, domain: &DomainId, fed: &mut FederatedState, height: u64) {
    let Some(p) = fed.pending.as_ref() else { return };
    let until = state.domain(domain).map_or(height, |d| height.saturating_add(absence_blocks(&d.spec)));
    let silent: Vec<Address> = quorum_of(state, domain)
        .map(|(members, _)| members.into_iter().filter(|m| !p.votes.iter().any(|(a, _)| a == m)).collect())
        .unwrap_or_default();
    fed.absent.retain(|(a, u)| *u > height && !silent.contains(a));
    fed.absent.extend(silent.into_iter().map(|a| (a, until)));
}

/// The pending round's quorum and seed, once the block after its inclusion exists (`None`
/// before, or when the domain has nothing pending).
pub fn quorum_of(state: &State, domain: &DomainId) -> Option<(Vec<Address>, Hash)> {
    let d = state.domain(domain)?;
    let p = d.federated.as_ref()?.pending.as_ref()?;
    let inclusion = state.recent_at(p.height)?;
    let beacon = state.recent_at(p.height.checked_add(1)?)?.beacon;
    let fed = d.federated.as_ref()?;
    let candidates: Vec<Candidate> = inclusion
        .eligible(domain)
        .iter()
        .filter(|c| !excluded(&p.record, &p.supervisor, &c.address) && !absent_at(fed, &c.address, p.height))
        .copied()
        .collect();
    let k = quorum::quorum_size(candidates.len(), &d.spec.quorum);
    let seed = seed(&beacon, &p.record);
    Some((quorum::draw(&candidates, k, &seed), seed))
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    match v.len() {
        0 => 0,
        n if n % 2 == 1 => v[n / 2],
        n => ((i128::from(v[n / 2 - 1]) + i128::from(v[n / 2])).div_euclid(2)) as i64,
    }
}

fn paid_by(votes: &[&RoundVote], contributions: usize) -> Verdict {
    let qualities =
        (0..contributions).map(|i| median(votes.iter().map(|v| v.qualities[i]).collect())).collect();
    let model_quality_micro = median(votes.iter().map(|v| v.model_quality_micro).collect());
    Verdict::Paid { qualities, model_quality_micro, outcome: RoundOutcome::Audited }
}

/// The verdict of `pending`'s votes for a quorum of `k`: a majority of `k` agreeing or
/// refusing decides; once every member voted, or `expired`, the larger side decides and a tie
/// (or no vote) leaves the pool unpaid. `None`: not decided yet.
pub fn decide(pending: &PendingRound, k: usize, expired: bool) -> Option<Verdict> {
    let need = k / 2 + 1;
    let agreeing: Vec<&RoundVote> = pending.votes.iter().map(|(_, v)| v).filter(|v| v.aggregate_ok).collect();
    let refusing = pending.votes.len() - agreeing.len();
    let n = pending.record.contributions.len();
    if agreeing.len() >= need {
        return Some(paid_by(&agreeing, n));
    }
    if refusing >= need {
        return Some(Verdict::Rejected);
    }
    if !(expired || pending.votes.len() >= k) {
        return None;
    }
    Some(match agreeing.len().cmp(&refusing) {
        std::cmp::Ordering::Greater => paid_by(&agreeing, n),
        std::cmp::Ordering::Less => Verdict::Rejected,
        std::cmp::Ordering::Equal => Verdict::Unpaid,
    })
}

/// The domain's federated state once an expired pending round is settled (what a round
/// recorded at `height` builds on). `Err` while a round still awaits its audit.
pub fn after_expiry(
    spec: &doin_primitives::DomainSpec,
    fed: &FederatedState,
    height: u64,
) -> Result<FederatedState, TxError> {
    let Some(p) = &fed.pending else { return Ok(fed.clone()) };
    let until = deadline(spec, p);
    if height < until {
        return Err(rejected(format!(
            "round {} of {:?} awaits its audit until height {until}",
            p.record.round, p.record.domain
        )));
    }
    let mut next = fed.clone();
    next.pending = None;
    if decide(p, usize::MAX, true) == Some(Verdict::Rejected) {
        next.rounds = p.record.round;
        next.model = p.record.base;
        next.model_quality_micro = p.previous_quality_micro;
    }
    Ok(next)
}

/// What a takeover by `supervisor` at `height` may build on instead of the last round: that
/// round's base, when the round awaits its audit past the deadline with no verdict (no vote, or
/// a tie: unpaid) and another supervisor recorded it. Its model may be held only by the
/// supervisor that vanished (recorded just before it did, fetched by no one), and nobody
/// verified it or was paid for it, so the new supervisor records that round again from its
/// base. `None` otherwise: a round audited or rejected, not yet expired, or this supervisor's
/// own.
pub fn takeover_rewind(
    spec: &doin_primitives::DomainSpec,
    fed: &FederatedState,
    height: u64,
    supervisor: Address,
) -> Option<FederatedState> {
    let p = fed.pending.as_ref()?;
    if p.supervisor == supervisor
        || height < deadline(spec, p)
        || decide(p, usize::MAX, true) != Some(Verdict::Unpaid)
    {
        return None;
    }
    let mut next = fed.clone();
    next.pending = None;
    next.rounds = p.record.round;
    next.model = p.record.base;
    next.model_quality_micro = p.previous_quality_micro;
    Some(next)
}

/// Settles `record` of `supervisor` by `verdict` on the domain's state (its pending round
/// already cleared by the caller): pays, or rewinds and slashes. Returns the settlement and
/// the payouts.
pub(crate) fn settle(
    state: &mut State,
    record: FederatedRound,
    supervisor: Address,
    previous_quality_micro: i64,
    verdict: Verdict,
    height: u64,
) -> Result<(Settled, Vec<(Address, Amount)>), TxError> {
    let mut domain = state
        .domain(&record.domain)
        .cloned()
        .ok_or_else(|| rejected(format!("domain {:?} is not registered", record.domain)))?;
    let mut fed = domain.federated.clone().unwrap_or_default();
    let mut record = record;
    let mut payouts = Vec::new();
    let mut slashed = Amount::ZERO;
    let outcome = match verdict {
        Verdict::Paid { qualities, model_quality_micro, outcome } => {
            let mut contributions = std::mem::take(&mut record.contributions).into_inner();
            for (c, q) in contributions.iter_mut().zip(&qualities) {
                c.quality_micro = (*q).clamp(-MAX_QUALITY_MICRO, MAX_QUALITY_MICRO);
            }
            record.contributions = doin_primitives::BoundedVec::try_from_vec(contributions)
                .map_err(|_| TxError::Overflow("round contributions"))?;
            record.model_quality_micro = model_quality_micro;
            let max_wall_ms = domain.spec.limits.max_wall_ms;
            let inputs: Vec<payout::Inputs> = record
                .contributions
                .iter()
                .map(|c| {
                    let mut input = inputs_of(c, max_wall_ms);
                    // A receipt from an account no longer staked as a contributor earns nothing
                    // (it does not void the round: one contributor cannot grief the others).
                    if !state.stake(&c.update.body.contributor).is_some_and(|s| s.contributes(&record.domain))
                    {
                        input.quality_micro = input.quality_micro.min(0);
                    }
                    input
                })
                .collect();
            let pool = domain.spec.bounty_per_accept.min(domain.bounty_left);
            let mut paid = Amount::ZERO;
            for p in payout::payouts(pool.0, &inputs) {
                state
                    .credit(p.contributor, Amount(p.amount))
                    .ok_or(TxError::Overflow("contributor balance"))?;
                paid = paid.checked_add(Amount(p.amount)).ok_or(TxError::Overflow("round payout"))?;
                payouts.push((p.contributor, Amount(p.amount)));
            }
            domain.bounty_left =
                domain.bounty_left.checked_sub(paid).ok_or(TxError::Overflow("bounty escrow"))?;
            fed.paid = fed.paid.checked_add(paid).ok_or(TxError::Overflow("federated paid"))?;
            fed.model_quality_micro = model_quality_micro;
            match outcome {
                RoundOutcome::Unaudited => fed.unaudited += 1,
                _ => {
                    fed.audited += 1;
                    // The audited model is the job's verified one; the one it replaces stays
                    // disputable for the window (receipts served from it).
                    let verified = crate::state::VerifiedModel {
                        model: record.model,
                        quality_micro: model_quality_micro,
                        round: record.round,
                        height,
                    };
                    if let Some(old) = fed.verified.replace(verified) {
                        crate::disputes::keep_disputable(
                            &mut domain,
                            old.model,
                            old.model,
                            height.saturating_add(state.params.dispute_window_blocks),
                            height,
                        );
                    }
                }
            }
            outcome
        }
        Verdict::Unpaid => {
            fed.unpaid += 1;
            RoundOutcome::Unpaid
        }
        Verdict::Rejected => {
            fed.rejected += 1;
            fed.rounds = record.round;
            fed.model = record.base;
            fed.model_quality_micro = previous_quality_micro;
            let fine = domain.spec.bounty_per_accept.max(Amount(1));
            slashed = state.burn_stake(supervisor, fine).ok_or(TxError::Overflow("supervisor slash"))?;
            RoundOutcome::Rejected
        }
    };
    fed.settled += 1;
    fed.last_settled_round = record.round;
    fed.last_paid = payouts.clone();
    domain.federated = Some(fed);
    state.set_domain(record.domain.clone(), domain);
    Ok((Settled { record, supervisor, outcome, slashed, paid: payouts.clone() }, payouts))
}

/// Applies an audit vote from `evaluator`; settles the round when the vote decides
/// it.
pub(crate) fn apply_vote(
    state: &mut State,
    evaluator: Address,
    vote: &RoundVote,
    height: u64,
) -> Result<Option<Settled>, TxError> {
    let d = state
        .domain(&vote.domain)
        .ok_or_else(|| rejected(format!("domain {:?} is not registered", vote.domain)))?;
    let fed = d.federated.clone().unwrap_or_default();
    let Some(mut pending) = fed.pending.clone() else {
        return Err(rejected(format!("no round of {:?} awaits an audit", vote.domain)));
    };
    if vote.round != pending.record.round || vote.model != pending.record.model {
        return Err(rejected(format!(
            "vote for round {} with model {}; the round awaiting its audit is {} with model {}",
            vote.round, vote.model, pending.record.round, pending.record.model
        )));
    }
    let (members, _) = quorum_of(state, &vote.domain).ok_or_else(|| {
        rejected(format!(
            "the audit quorum of round {} is drawn once the block after height {} exists",
            pending.record.round, pending.height
        ))
    })?;
    if !members.contains(&evaluator) {
        return Err(rejected(format!("sender is not in the audit quorum of round {}", pending.record.round)));
    }
    if pending.votes.iter().any(|(a, _)| *a == evaluator) {
        return Err(rejected(format!("sender already voted on round {}", pending.record.round)));
    }
    if vote.qualities.len() != pending.record.contributions.len() {
        return Err(rejected(format!(
            "{} qualities for a round of {} contributions",
            vote.qualities.len(),
            pending.record.contributions.len()
        )));
    }
    if vote
        .qualities
        .iter()
        .chain([&vote.model_quality_micro])
        .any(|q| q.unsigned_abs() > MAX_QUALITY_MICRO as u64)
    {
        return Err(rejected("a measured quality is out of range"));
    }
    pending.votes.push((evaluator, vote.clone()));
    let verdict = decide(&pending, members.len(), false);
    let mut domain = d.clone();
    let mut next = fed;
    next.pending = if verdict.is_some() { None } else { Some(pending.clone()) };
    domain.federated = Some(next);
    state.set_domain(vote.domain.clone(), domain);
    match verdict {
        None => Ok(None),
        Some(v) => {
            let PendingRound { record, supervisor, previous_quality_micro, .. } = *pending;
            Ok(Some(settle(state, record, supervisor, previous_quality_micro, v, height)?.0))
        }
    }
}
