//! Finality by stake (Casper FFG, simplified to one justified source per chain).
//!
//! Checkpoints are the blocks at multiples of `finality_depth`. A staker votes a link from the
//! chain's latest justified checkpoint (the source) to a checkpoint of its chain (the target);
//! votes are gossiped and included in blocks. A vote counts with the voter's stake at inclusion,
//! once per voter and target height. When the stake on a link reaches two thirds of the active
//! stake (`3 · tally ≥ 2 · total`, integers) the target is justified; when the link joins two
//! adjacent checkpoints its source is finalized, and fork choice never leaves it.
//!
//! Two finalized checkpoints that conflict need ≥ 1/3 of the stake to have signed two votes
//! for one target height (a double vote) or a link inside another (a surround vote). Either pair
//! is [`FinalityEvidence`] any node can include; it burns `finality_slash_ppm` of the signer's
//! stake, once per pair.

use doin_primitives::{
    Address, Amount, FinalityEvidence, FinalityVote,
    finality::{Conflict, conflict},
};

use crate::{
    fixed,
    state::{Checkpoint, State, StateKey},
};

/// Why a finality vote or evidence cannot be included.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FinalityError {
    /// Signed for another chain.
    #[error("the vote is for chain {got}, this chain is {expected}")]
    ChainId {
        /// The vote's chain id.
        got: u64,
        /// This chain's.
        expected: u64,
    },
    /// The target is not a checkpoint height.
    #[error("target height {height} is not a multiple of finality_depth {depth}")]
    NotCheckpoint {
        /// Target height.
        height: u64,
        /// `finality_depth`.
        depth: u64,
    },
    /// The target is not a block of this chain within the recent window.
    #[error("target {0:?} is not a recent block of this chain")]
    TargetNotOnChain(Checkpoint),
    /// The source is not this chain's latest justified checkpoint.
    #[error("source at height {got} is not this chain's justified checkpoint {expected:?}")]
    Source {
        /// The vote's source height (its hash may differ, too).
        got: u64,
        /// The chain's justified checkpoint.
        expected: Checkpoint,
    },
    /// The target is already justified (the vote would change nothing).
    #[error("target height {target} is not above the justified height {justified}")]
    AlreadyJustified {
        /// Target height.
        target: u64,
        /// Justified height.
        justified: u64,
    },
    /// The voter holds no stake.
    #[error("voter {0:?} holds no stake")]
    NoStake(Address),
    /// The voter's vote for this height is counted already (a different one is evidence).
    #[error("voter {voter:?} already has a vote counted for height {height}")]
    AlreadyCounted {
        /// Voter.
        voter: Address,
        /// Target height.
        height: u64,
    },
    /// The evidence's two votes do not conflict.
    #[error("the two votes are not by one key or do not conflict (neither double nor surround)")]
    NotConflicting,
    /// The offence was slashed already.
    #[error("this offence was slashed already")]
    AlreadySlashed,
    /// Nothing left to slash.
    #[error("voter {0:?} has no stake left to slash")]
    NothingToSlash(Address),
}

/// Whether `height` is a finality checkpoint height.
pub fn is_checkpoint(state: &State, height: u64) -> bool {
    height.is_multiple_of(state.params.finality_depth.max(1))
}

/// The newest checkpoint height at least `depth` blocks below `tip_height`.
pub fn checkpoint_below(state: &State, tip_height: u64, depth: u64) -> Option<u64> {
    let h = tip_height.checked_sub(depth)?;
    let d = state.params.finality_depth.max(1);
    Some(h - h % d)
}

/// Checks a finality vote (signature already verified) for inclusion in the block after
/// `state`; returns the voter's stake, the weight it counts with.
pub fn check_vote(state: &State, vote: &FinalityVote) -> Result<u128, FinalityError> {
    let v = &vote.body;
    if v.chain_id != state.meta.chain_id {
        return Err(FinalityError::ChainId { got: v.chain_id, expected: state.meta.chain_id });
    }
    let depth = state.params.finality_depth.max(1);
    if !v.target.height.is_multiple_of(depth) || v.target.height == 0 {
        return Err(FinalityError::NotCheckpoint { height: v.target.height, depth });
    }
    if state.recent_hash_at(v.target.height) != Some(v.target.hash) {
        return Err(FinalityError::TargetNotOnChain(v.target));
    }
    if v.target.height <= state.meta.justified.height {
        return Err(FinalityError::AlreadyJustified {
            target: v.target.height,
            justified: state.meta.justified.height,
        });
    }
    if v.source != state.meta.justified {
        return Err(FinalityError::Source { got: v.source.height, expected: state.meta.justified });
    }
    if state.finality_voted(&v.voter, v.target.height).is_some() {
        return Err(FinalityError::AlreadyCounted { voter: v.voter, height: v.target.height });
    }
    // Only validators' stake counts (a contributor-only stake is not in the active total).
    let stake = state.stake(&v.voter).filter(|s| s.validates()).map_or(0, |s| s.amount.0);
    if stake == 0 {
        return Err(FinalityError::NoStake(v.voter));
    }
    Ok(stake)
}

/// Applies a block's finality votes in order: counts each, justifies a target whose link
/// reaches two thirds of the active stake, finalizes its source when the two are adjacent.
pub(crate) fn apply_votes(state: &mut State, votes: &[FinalityVote]) -> Result<(), (usize, FinalityError)> {
    if votes.is_empty() {
        return Ok(());
    }
    let total = state.active_stake();
    for (index, vote) in votes.iter().enumerate() {
        let weight = check_vote(state, vote).map_err(|e| (index, e))?;
        let v = &vote.body;
        let (source, target) = (v.source, v.target);
        let voted = StateKey::FinalityVoted(v.voter, target.height);
        state.finality_voted.insert((v.voter, target.height), vote.id());
        state.expire_at(state.finality_expiry(target.height), voted);
        let tally = state.finality_tally(source.height, target.height).saturating_add(weight);
        state.finality_tallies.insert((source.height, target.height), tally);
        state.expire_at(
            state.finality_expiry(target.height),
            StateKey::FinalityTally(source.height, target.height),
        );
        if tally.saturating_mul(3) >= total.saturating_mul(2) {
            justify(state, source, target);
        }
    }
    Ok(())
}

fn justify(state: &mut State, source: Checkpoint, target: Checkpoint) {
    state.meta.justified = target;
    let adjacent = source.height.checked_add(state.params.finality_depth) == Some(target.height);
    if adjacent && source.height > state.meta.finalized.height {
        let previous = state.meta.finalized.height;
        state.meta.finalized = source;
        record_anchors(state, previous, source.height);
    }
}

/// Records the anchor checkpoints (multiples of `anchor_interval`) that became final.
fn record_anchors(state: &mut State, from: u64, to: u64) {
    let interval = state.params.anchor_interval.max(1);
    let oldest = state.recent.front().map_or(0, |b| b.height);
    let mut h = from.max(oldest).saturating_add(1);
    h = h.div_ceil(interval).saturating_mul(interval);
    while h <= to && h > 0 {
        if let Some(hash) = state.recent_hash_at(h) {
            state.checkpoints.insert(h, hash);
            state.touch(StateKey::Checkpoint(h));
        }
        h = h.saturating_add(interval);
    }
}

/// Checks finality evidence (signatures already verified); returns the stake it slashes from.
pub fn check_evidence(state: &State, evidence: &FinalityEvidence) -> Result<(Address, u128), FinalityError> {
    let (a, b) = (&evidence.first.body, &evidence.second.body);
    if a.chain_id != state.meta.chain_id {
        return Err(FinalityError::ChainId { got: a.chain_id, expected: state.meta.chain_id });
    }
    let Some(Conflict::Double | Conflict::Surround) = conflict(a, b) else {
        return Err(FinalityError::NotConflicting);
    };
    if state.finality_slashed(&evidence.offence()) {
        return Err(FinalityError::AlreadySlashed);
    }
    let total = state.slashable(&a.voter);
    if total == 0 {
        return Err(FinalityError::NothingToSlash(a.voter));
    }
    Ok((a.voter, total))
}

/// Applies finality evidence: burns `finality_slash_ppm` of the signer's stake, once per offence.
pub(crate) fn apply_evidence(
    state: &mut State,
    evidence: &FinalityEvidence,
) -> Result<(Address, Amount), FinalityError> {
    let (voter, total) = check_evidence(state, evidence)?;
    let amount = Amount(fixed::ppm(total, state.params.finality_slash_ppm).max(1));
    let slashed = state.burn_stake(voter, amount).ok_or(FinalityError::NothingToSlash(voter))?;
    let offence = evidence.offence();
    state.finality_slashed.insert(offence);
    state.touch(StateKey::FinalitySlashed(offence));
    Ok((voter, slashed))
}

/// The votes of `pool` that a block on `state` can include, in order (each checked on the state
/// the ones before it leave), at most `max`.
pub fn includable<'a>(
    state: &State,
    pool: impl IntoIterator<Item = &'a FinalityVote>,
    max: usize,
) -> Vec<FinalityVote> {
    let mut s = state.clone();
    let mut out = Vec::new();
    for vote in pool {
        if out.len() >= max {
            break;
        }
        if apply_votes(&mut s, std::slice::from_ref(vote)).is_ok() {
            out.push(vote.clone());
        }
    }
    out
}
