//! Commits bound on chain (DESIGN §4.1 step 2). A commit must be included in a block before
//! its reveal counts: its quorum and every evaluator's data seed come from the beacon of the
//! block after its inclusion, which nobody knew when the commit — and its salt — were fixed.
//!
//! Who may produce the blocks around a commit is fixed too ([`seal_leader`]): a block that
//! includes commits, and the block after it, come from the stake-weighted leader of their slot,
//! drawn from the parent's beacon. An optimizer can therefore neither choose the producer key
//! whose VRF output seeds its quorum nor learn that output before its commit is fixed, unless
//! its own accounts lead both blocks (see `docs/design.md`, "Quorum randomness").

use std::collections::BTreeMap;

use doin_primitives::{Address, Amount, Commit};

use crate::{
    error::CertError,
    state::{State, StateKey},
};

/// Checks that `commit` may be included in the block after `state`'s tip: the domain exists,
/// the optimizer is staked as an optimizer of it with at least the optimae bond, the reference
/// block is one of this chain's last `max_reference_age` blocks, and the commit is neither
/// included nor certified already. Signatures are the caller's.
pub fn check_commit(state: &State, commit: &Commit) -> Result<(), CertError> {
    let id = commit.id();
    let body = &commit.body;
    if state.domain(&body.domain).is_none() {
        return Err(CertError::UnknownDomain(body.domain.to_string()));
    }
    let stake = state.stake(&body.optimizer);
    let amount = stake.map_or(Amount::ZERO, |s| s.amount);
    let bond = state.params().optimae_bond;
    if amount < bond {
        return Err(CertError::NoBond { optimizer: body.optimizer, stake: amount, bond });
    }
    if !stake.is_some_and(|s| s.optimizes(&body.domain)) {
        return Err(CertError::Role { optimizer: body.optimizer, domain: body.domain.to_string() });
    }
    // The including block's height: the tip's + 1 (inside a block being applied the state's
    // height is already the block's, its tip still the parent).
    let height = state.tip().height.saturating_add(1);
    state
        .recent_block(&body.reference_block)
        .filter(|r| height.saturating_sub(r.height) <= state.params().max_reference_age)
        .ok_or(CertError::Reference(body.reference_block))?;
    if state.committed.contains_key(&id) {
        return Err(CertError::Duplicate("commit already included"));
    }
    if state.certified.contains_key(&id) {
        return Err(CertError::Duplicate("commit already certified"));
    }
    Ok(())
}

/// Includes a block's commits (in the state inside the block being applied, at `height`):
/// each must pass [`check_commit`], at most `max_block_commits` per block and
/// `max_account_commits` per optimizer.
pub(crate) fn apply_commits(
    state: &mut State,
    commits: &[Commit],
    height: u64,
) -> Result<(), (usize, CertError)> {
    let params = state.params.clone();
    let mut per_account: BTreeMap<Address, u32> = BTreeMap::new();
    for (index, commit) in commits.iter().enumerate() {
        check_commit(state, commit).map_err(|e| (index, e))?;
        let count = per_account.entry(commit.body.optimizer).or_default();
        *count += 1;
        if *count > params.max_account_commits {
            return Err((index, CertError::TooManyCommits(params.max_account_commits)));
        }
        let id = commit.id();
        state.committed.insert(id, height);
        state.expire_at(height.saturating_add(params.max_reference_age), StateKey::Committed(id));
    }
    state.meta.commits_in_tip = u32::try_from(commits.len()).unwrap_or(u32::MAX);
    Ok(())
}

/// The stake-weighted seal leader of `slot` after the state's tip: slot `s` covers timestamps
/// `[parent + s·seal_slot_ms, parent + (s+1)·seal_slot_ms)`. Seeded by the tip's beacon, so the
/// producer of the tip chose neither it nor (having one VRF output per key and parent) the
/// beacon the next block adds. `None` when nobody is staked (anyone may produce).
pub fn seal_leader(state: &State, slot: u64) -> Option<Address> {
    crate::block::slot_leader(state, b"doin/seal-leader", slot)
}

/// The seal slot a timestamp falls in after the state's tip (`None` if not after it).
pub fn seal_slot(state: &State, timestamp_ms: u64) -> Option<u64> {
    let since = timestamp_ms.checked_sub(state.meta.timestamp_ms)?.checked_sub(1)?;
    Some(since / state.params.seal_slot_ms.max(1))
}

/// Whether a block after the state's tip at `timestamp_ms` that includes `commits` commits must
/// come from the seal leader: when it includes any, or when the tip included some (it seals
/// them).
pub fn needs_seal_leader(state: &State, commits: usize) -> bool {
    commits > 0 || state.meta.commits_in_tip > 0
}

/// Whether `generator` may produce the block after the state's tip at `timestamp_ms` carrying
/// `commits` commits, as far as the seal rule goes.
pub fn may_seal(state: &State, generator: &Address, timestamp_ms: u64, commits: usize) -> bool {
    if !needs_seal_leader(state, commits) {
        return true;
    }
    let Some(slot) = seal_slot(state, timestamp_ms) else { return false };
    seal_leader(state, slot).is_none_or(|l| l == *generator)
}
