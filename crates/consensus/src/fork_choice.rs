//! Fork choice: the valid chain with the higher justified checkpoint (stake has voted for it:
//! a minority side of a partition cannot outweigh it with work), then the greatest cumulative
//! work, then the greater height, then the lower tip hash; never one that leaves the finalized
//! checkpoint.

use std::cmp::Ordering;

use doin_primitives::{Hash, HeaderBody};
use serde::{Deserialize, Serialize};

use crate::state::Checkpoint;

/// What fork choice needs of a chain tip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTip {
    /// Tip hash.
    pub hash: Hash,
    /// Tip height.
    pub height: u64,
    /// Cumulative work at the tip.
    pub cumulative_work: u128,
    /// Height of the justified checkpoint in the tip's state.
    pub justified: u64,
}

impl ChainTip {
    /// The tip described by a header with hash `hash` whose post-state has justified the
    /// checkpoint at height `justified`.
    pub fn of(header: &HeaderBody, hash: Hash, justified: u64) -> Self {
        Self { hash, height: header.height, cumulative_work: header.cumulative_work, justified }
    }
}

/// Total order of preference: `Greater` means `a` is the better tip.
pub fn compare(a: &ChainTip, b: &ChainTip) -> Ordering {
    a.justified
        .cmp(&b.justified)
        .then(a.cumulative_work.cmp(&b.cumulative_work))
        .then(a.height.cmp(&b.height))
        // Lower hash wins, so reverse the natural order.
        .then(b.hash.cmp(&a.hash))
}

/// Picks the preferred tip among those that contain the finalized checkpoint.
/// `ancestor_at(tip, height)` returns the hash of the tip's chain at `height`, if known.
pub fn select<'a>(
    tips: impl IntoIterator<Item = &'a ChainTip>,
    finalized: &Checkpoint,
    ancestor_at: impl Fn(&ChainTip, u64) -> Option<Hash>,
) -> Option<&'a ChainTip> {
    tips.into_iter()
        .filter(|t| {
            finalized.height == 0
                || (t.height >= finalized.height && ancestor_at(t, finalized.height) == Some(finalized.hash))
        })
        .max_by(|a, b| compare(a, b))
}

/// Whether switching from `current` to `candidate` is a move fork choice allows and wants.
pub fn should_switch(current: &ChainTip, candidate: &ChainTip) -> bool {
    compare(candidate, current) == Ordering::Greater
}
