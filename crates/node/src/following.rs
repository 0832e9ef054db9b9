//! What a new tip means, as a sans-I/O state machine: the tip state (and the store's finalized
//! checkpoint) in; out, whether it is new at all, the checkpoints newly justified or finalized,
//! the domains whose verified champion changed and those whose target the champion now
//! reaches (or, after a reorg, no longer reaches). And which commits seen earlier are still
//! alive on the chain. No store, clock or network inside: the engine (`node/follow.rs`) prints,
//! emits, injects champions and pauses optimizer loops by what comes out.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use doin_consensus::{State, state::Champion};
use doin_primitives::{Checkpoint, Commit, DomainId, Hash};

/// What changed with a new tip.
#[derive(Debug, Default)]
pub struct NewTip {
    /// The tip's height.
    pub height: u64,
    /// The tip's hash.
    pub hash: Hash,
    /// The justified checkpoint, if it moved.
    pub justified: Option<Checkpoint>,
    /// The finalized checkpoint, if it moved.
    pub finalized: Option<Checkpoint>,
    /// Followed domains whose champion changed, with the new champion.
    pub champions: Vec<(DomainId, Champion)>,
    /// Followed domains whose champion now reaches the target (`true`) or no longer does
    /// (`false`, a reorg onto a branch with a worse champion).
    pub targets: Vec<(DomainId, bool)>,
}

/// The chain as this node last saw it.
#[derive(Debug, Default)]
pub struct Following {
    tip: Hash,
    /// Justified and finalized heights last reported.
    shown: (u64, u64),
    /// Per followed domain, the champion's commit last reported and whether it reached the
    /// target.
    domains: BTreeMap<DomainId, (Option<Hash>, bool)>,
}

impl Following {
    /// Follows `domains` (their champions and targets are reported); nothing seen yet.
    pub fn new(domains: impl IntoIterator<Item = DomainId>) -> Self {
        Self { domains: domains.into_iter().map(|d| (d, (None, false))).collect(), ..Self::default() }
    }

    /// The tip last seen.
    pub fn tip(&self) -> Hash {
        self.tip
    }

    /// Whether `domain`'s champion reaches its target on the tip last seen.
    pub fn target_reached(&self, domain: &DomainId) -> bool {
        self.domains.get(domain).is_some_and(|(_, reached)| *reached)
    }

    /// A tip state; `finalized` is the store's finalized checkpoint (not the state's: a reorg
    /// onto a heavier branch may carry an older one, and what was announced stays final).
    /// `None` when it is the tip last seen.
    pub fn on_tip(&mut self, state: &State, finalized: Checkpoint) -> Option<NewTip> {
        let hash = state.tip().hash;
        if hash == self.tip {
            return None;
        }
        self.tip = hash;
        let mut news = NewTip { height: state.height(), hash, ..NewTip::default() };
        let justified = state.meta().justified;
        if justified.height != self.shown.0 {
            news.justified = Some(justified);
        }
        if finalized.height != self.shown.1 {
            news.finalized = Some(finalized);
        }
        self.shown = (justified.height, finalized.height);
        for (id, (seen, reached)) in &mut self.domains {
            let Some(ds) = state.domain(id) else { continue };
            let Some(champion) = &ds.champion else { continue };
            if *seen == Some(champion.commit) {
                continue;
            }
            *seen = Some(champion.commit);
            news.champions.push((id.clone(), champion.clone()));
            let now_reached = ds
                .spec
                .target
                .is_some_and(|t| ds.spec.direction.gain(champion.performance, t).is_some_and(|g| g >= 0));
            if now_reached != *reached {
                *reached = now_reached;
                news.targets.push((id.clone(), now_reached));
            }
        }
        Some(news)
    }
}

/// Whether a commit first seen at `at` is still worth its pipeline state at `now` on `state`:
/// included (its certificate window is open), or its reference block still recent; a
/// reference not on this chain (a block still on its way, or on a fork the node may yet reorg
/// to) keeps it for `grace` — dropping it at the first tip change left a quorum member that
/// later reorged to the optimizer's chain unable to vote.
pub fn commit_alive(
    state: &State,
    id: &Hash,
    commit: &Commit,
    at: Instant,
    now: Instant,
    grace: Duration,
) -> bool {
    if state.committed_at(id).is_some() {
        return true;
    }
    match state.recent_block(&commit.body.reference_block) {
        Some(r) => state.height().saturating_sub(r.height) <= state.params().max_reference_age,
        None => now.saturating_duration_since(at) < grace,
    }
}

#[cfg(test)]
mod tests;
