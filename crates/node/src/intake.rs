//! Claim intake: the commits and reveals a node has seen, as a sans-I/O state machine.
//!
//! Commits and reveals go in with the time they arrived; what the verification pipeline may do
//! with them comes out — a reveal ready to be considered (its commit is here), a reveal that
//! overtook its commit and waits for it, a reveal that opens its commit or does not, a copy of
//! parameters another commit revealed first. No clock, network, store or signature check here
//! (the shell's gossip admission checked signatures and quotas first): the node
//! (`node/pipeline.rs`, `node/follow.rs`) feeds gossip and its own claims, tests feed sequences.
//!
//! The rules (DESIGN §4.1):
//! - **First revealer wins**: a parameter set belongs to the first reveal that carried it, in
//!   this node's arrival order — recorded even before that reveal's commit is here, so a copy
//!   revealed later under another commit is never evaluated or certified here. A certificate
//!   seen in a block takes its parameters too.
//! - **Settled commits stay settled**: a commit whose certificate reached the chain is
//!   remembered as done, and its commit or reveal arriving again is not taken in.
//! - **Bounded**: at most `limit` commits (the oldest seen leaves first) and reveals (those
//!   without their commit leave first, then the oldest), `4 × limit` parameter owners and
//!   settled commits (oldest first). Nothing here can be grown past that by gossip.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    time::Instant,
};

use doin_primitives::{Commit, Hash, Reveal, encode, poo};

/// A commit and when it first reached this node.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The commit.
    pub commit: Commit,
    /// When it arrived.
    pub at: Instant,
}

/// What a reveal arriving means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevealIn {
    /// Known already, or its commit settled: nothing to do.
    Old,
    /// Recorded; its commit has not reached this node (it is handed back when it does).
    Waiting,
    /// Recorded with its commit here: consider it now.
    Ready,
}

/// Whether a reveal may be evaluated for its commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// The commit or the reveal is not here.
    Missing,
    /// Signed by another optimizer, or its parameters and salt do not hash to the commitment.
    NotOpening,
    /// These parameters were revealed first under `first`.
    Copy {
        /// The commit of the first reveal of these parameters.
        first: Hash,
    },
    /// The first reveal of its parameters, opening its commit.
    Open,
}

/// The commits and reveals this node has seen and not settled.
#[derive(Debug)]
pub struct Intake {
    limit: usize,
    commits: HashMap<Hash, Seen>,
    reveals: HashMap<Hash, (Reveal, Instant)>,
    /// The commit of the first reveal of each parameter set (by parameters hash), with their
    /// order of arrival for eviction.
    params_first: HashMap<Hash, Hash>,
    params_order: VecDeque<Hash>,
    done: HashSet<Hash>,
    done_order: VecDeque<Hash>,
    /// Reveals whose commit is not sealed on this node's chain yet.
    awaiting_seal: HashSet<Hash>,
}

/// The hash a parameter set is known by.
pub fn params_hash(params: &poo::Params) -> Hash {
    Hash::of(&encode(params))
}

impl Intake {
    /// An empty intake keeping at most `limit` commits and `limit` reveals.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            commits: HashMap::new(),
            reveals: HashMap::new(),
            params_first: HashMap::new(),
            params_order: VecDeque::new(),
            done: HashSet::new(),
            done_order: VecDeque::new(),
            awaiting_seal: HashSet::new(),
        }
    }

    /// A commit arrived at `now` (gossiped, or this node's own). `None`: seen before or
    /// settled. Otherwise the reveal that overtook it, if one did (consider it now).
    pub fn commit(&mut self, commit: Commit, now: Instant) -> Option<Option<Reveal>> {
        let id = commit.id();
        if self.commits.contains_key(&id) || self.done.contains(&id) {
            return None;
        }
        if self.commits.len() >= self.limit
            && let Some(oldest) = self.commits.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k)
        {
            self.commits.remove(&oldest);
        }
        self.commits.insert(id, Seen { commit, at: now });
        Some(self.reveals.get(&id).map(|(r, _)| r.clone()))
    }

    /// A reveal arrived at `now`. Its parameters are taken by its commit if no earlier reveal
    /// carried them (in arrival order, before anything else is checked).
    pub fn reveal(&mut self, reveal: Reveal, now: Instant) -> RevealIn {
        let id = reveal.body.commit;
        self.take_params(params_hash(&reveal.body.params), id);
        if self.reveals.contains_key(&id) || self.done.contains(&id) {
            return RevealIn::Old;
        }
        if self.reveals.len() >= self.limit {
            // Reveals still waiting for their commit leave first (a commit that never comes
            // must not push out a claim in verification), then the oldest.
            let commits = &self.commits;
            let victim = self
                .reveals
                .iter()
                .min_by_key(|(k, (_, at))| (commits.contains_key(*k), *at))
                .map(|(k, _)| *k);
            if let Some(v) = victim {
                self.reveals.remove(&v);
                self.awaiting_seal.remove(&v);
            }
        }
        self.reveals.insert(id, (reveal, now));
        if self.commits.contains_key(&id) { RevealIn::Ready } else { RevealIn::Waiting }
    }

    fn take_params(&mut self, params: Hash, commit: Hash) {
        if self.params_first.contains_key(&params) {
            return;
        }
        if self.params_first.len() >= self.limit * 4
            && let Some(oldest) = self.params_order.pop_front()
        {
            self.params_first.remove(&oldest);
        }
        self.params_first.insert(params, commit);
        self.params_order.push_back(params);
    }

    /// Whether `id`'s reveal may be evaluated: it opens its commit and is the first reveal of
    /// its parameters.
    pub fn opening(&self, id: &Hash) -> Opening {
        let (Some(seen), Some((reveal, _))) = (self.commits.get(id), self.reveals.get(id)) else {
            return Opening::Missing;
        };
        let body = &reveal.body;
        if body.optimizer != seen.commit.body.optimizer
            || poo::optimae_hash(&body.params, &body.salt, &body.optimizer) != seen.commit.body.optimae_hash
        {
            return Opening::NotOpening;
        }
        match self.first_of(&params_hash(&body.params)) {
            Some(first) if first != *id => Opening::Copy { first },
            _ => Opening::Open,
        }
    }

    /// The commit whose reveal carried these parameters first, if any did.
    pub fn first_of(&self, params: &Hash) -> Option<Hash> {
        self.params_first.get(params).copied()
    }

    /// Whether `id`'s reveal is a copy of parameters another commit revealed first.
    pub fn is_copy(&self, id: &Hash) -> bool {
        self.reveals
            .get(id)
            .and_then(|(r, _)| self.first_of(&params_hash(&r.body.params)))
            .is_some_and(|first| first != *id)
    }

    /// A certificate for `id` revealing `params` reached the chain: the parameters are taken
    /// (if no reveal took them first) and the commit is settled.
    pub fn certified(&mut self, id: Hash, params: &poo::Params) {
        self.take_params(params_hash(params), id);
        self.settle(id);
    }

    /// Forgets `id`'s commit and reveal and remembers it as settled.
    pub fn settle(&mut self, id: Hash) {
        self.reveals.remove(&id);
        self.commits.remove(&id);
        self.awaiting_seal.remove(&id);
        if self.done.insert(id) {
            if self.done.len() > self.limit * 4
                && let Some(oldest) = self.done_order.pop_front()
            {
                self.done.remove(&oldest);
            }
            self.done_order.push_back(id);
        }
    }

    /// Whether `id` settled here (recently: the newest `4 × limit`).
    pub fn is_settled(&self, id: &Hash) -> bool {
        self.done.contains(id)
    }

    /// `id`'s commit, if pending here.
    pub fn commit_of(&self, id: &Hash) -> Option<&Seen> {
        self.commits.get(id)
    }

    /// `id`'s reveal and when it arrived, if here.
    pub fn reveal_of(&self, id: &Hash) -> Option<&(Reveal, Instant)> {
        self.reveals.get(id)
    }

    /// Whether `id`'s commit is pending here.
    pub fn has_commit(&self, id: &Hash) -> bool {
        self.commits.contains_key(id)
    }

    /// The pending commits.
    pub fn commits(&self) -> impl Iterator<Item = (&Hash, &Seen)> {
        self.commits.iter()
    }

    /// The reveals, each with when it arrived.
    pub fn reveals(&self) -> impl Iterator<Item = (&Hash, &(Reveal, Instant))> {
        self.reveals.iter()
    }

    /// Pending commits.
    pub fn len(&self) -> usize {
        self.commits.len()
    }

    /// Whether no commit is pending.
    pub fn is_empty(&self) -> bool {
        self.commits.is_empty()
    }

    /// `id`'s commit is not sealed on this node's chain yet: its reveal is considered again
    /// when the tip moves ([`Self::take_awaiting`]). False when it waits already, or too many do.
    pub fn await_seal(&mut self, id: Hash) -> bool {
        if self.awaiting_seal.len() >= self.limit || !self.reveals.contains_key(&id) {
            return false;
        }
        self.awaiting_seal.insert(id)
    }

    /// The reveals that waited for their commit's seal (the wait is over: consider them again).
    pub fn take_awaiting(&mut self) -> Vec<Reveal> {
        let ids = std::mem::take(&mut self.awaiting_seal);
        ids.into_iter().filter_map(|id| self.reveals.get(&id).map(|(r, _)| r.clone())).collect()
    }

    /// Keeps the commits `alive` says may still be certified (with when they arrived); their
    /// reveals and seal waits go with the others.
    pub fn retain(&mut self, mut alive: impl FnMut(&Hash, &Commit, Instant) -> bool) {
        self.commits.retain(|id, s| alive(id, &s.commit, s.at));
        let commits = &self.commits;
        self.reveals.retain(|k, _| commits.contains_key(k));
        self.awaiting_seal.retain(|k| commits.contains_key(k));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use doin_primitives::{
        BoundedVec, CommitBody, DomainId, Keypair, Metric, RevealBody, Signed, poo::ExperimentMeta,
    };

    use super::*;

    struct Claim {
        commit: Commit,
        reveal: Reveal,
    }

    fn claim(key: &Keypair, params: &[i64], salt: u8) -> Claim {
        let me = key.address();
        let params: poo::Params = BoundedVec::try_from_vec(params.to_vec()).unwrap();
        let salt = [salt; 32];
        let commit = Signed::sign(
            CommitBody {
                domain: DomainId::new("quadratic").unwrap(),
                optimizer: me,
                optimae_hash: poo::optimae_hash(&params, &salt, &me),
                claimed: Metric::from_f64(1.0).unwrap(),
                reference_block: Hash::ZERO,
            },
            key,
        );
        let reveal = Signed::sign(
            RevealBody {
                commit: commit.id(),
                optimizer: me,
                params,
                salt,
                artifact: None,
                experiment: ExperimentMeta::default(),
            },
            key,
        );
        Claim { commit, reveal }
    }

    fn key(i: u8) -> Keypair {
        Keypair::from_seed([i; 32])
    }

    #[test]
    fn a_reveal_that_overtook_its_commit_waits_for_it() {
        let (mut intake, t) = (Intake::new(8), Instant::now());
        let c = claim(&key(1), &[1, 2], 1);
        assert_eq!(intake.reveal(c.reveal.clone(), t), RevealIn::Waiting);
        assert_eq!(intake.opening(&c.commit.id()), Opening::Missing);
        assert_eq!(intake.commit(c.commit.clone(), t), Some(Some(c.reveal.clone())));
        assert_eq!(intake.opening(&c.commit.id()), Opening::Open);
        // Seen again: nothing new.
        assert_eq!(intake.commit(c.commit.clone(), t), None);
        assert_eq!(intake.reveal(c.reveal, t), RevealIn::Old);
    }

    #[test]
    fn the_first_revealer_owns_its_parameters_and_a_copy_is_refused() {
        let (mut intake, t) = (Intake::new(8), Instant::now());
        let honest = claim(&key(1), &[7, 7], 1);
        // The copier committed first (it committed to whatever it would copy) but revealed after.
        let copier = claim(&key(2), &[7, 7], 2);
        assert!(intake.commit(copier.commit.clone(), t).is_some());
        assert!(intake.commit(honest.commit.clone(), t).is_some());
        assert_eq!(intake.reveal(honest.reveal.clone(), t), RevealIn::Ready);
        assert_eq!(intake.reveal(copier.reveal.clone(), t), RevealIn::Ready);
        assert_eq!(intake.opening(&honest.commit.id()), Opening::Open);
        assert_eq!(intake.opening(&copier.commit.id()), Opening::Copy { first: honest.commit.id() });
        assert!(intake.is_copy(&copier.commit.id()) && !intake.is_copy(&honest.commit.id()));
        // Even once the honest claim settled, the parameters stay its own.
        intake.certified(honest.commit.id(), &honest.reveal.body.params);
        assert!(intake.is_copy(&copier.commit.id()));
        // A certificate seen in a block takes parameters no reveal here carried.
        let other = claim(&key(3), &[9, 9], 3);
        intake.certified(other.commit.id(), &other.reveal.body.params);
        let late = claim(&key(4), &[9, 9], 4);
        intake.commit(late.commit.clone(), t);
        intake.reveal(late.reveal, t);
        assert_eq!(intake.opening(&late.commit.id()), Opening::Copy { first: other.commit.id() });
    }

    #[test]
    fn a_reveal_that_does_not_open_its_commit_is_refused() {
        let (mut intake, t) = (Intake::new(8), Instant::now());
        let c = claim(&key(1), &[1, 1], 1);
        let mut forged = claim(&key(1), &[2, 2], 9).reveal;
        forged.body.commit = c.commit.id();
        intake.commit(c.commit.clone(), t);
        assert_eq!(intake.reveal(forged, t), RevealIn::Ready);
        assert_eq!(intake.opening(&c.commit.id()), Opening::NotOpening);
        // Signed by another optimizer: the same.
        let (mut intake, c) = (Intake::new(8), claim(&key(1), &[3, 3], 1));
        let mut theirs = claim(&key(2), &[3, 3], 1).reveal;
        theirs.body.commit = c.commit.id();
        intake.commit(c.commit.clone(), t);
        intake.reveal(theirs, t);
        assert_eq!(intake.opening(&c.commit.id()), Opening::NotOpening);
    }

    #[test]
    fn settled_commits_are_not_taken_in_again() {
        let (mut intake, t) = (Intake::new(8), Instant::now());
        let c = claim(&key(1), &[4, 4], 1);
        intake.commit(c.commit.clone(), t);
        intake.reveal(c.reveal.clone(), t);
        intake.settle(c.commit.id());
        assert!(intake.is_settled(&c.commit.id()) && intake.is_empty());
        assert_eq!(intake.commit(c.commit.clone(), t), None);
        assert_eq!(intake.reveal(c.reveal, t), RevealIn::Old);
        assert!(intake.reveal_of(&c.commit.id()).is_none());
    }

    #[test]
    fn a_flood_of_reveals_without_commits_never_pushes_out_a_claim_in_verification() {
        let (mut intake, t0) = (Intake::new(16), Instant::now());
        let real = claim(&key(1), &[5, 5], 1);
        intake.commit(real.commit.clone(), t0);
        intake.reveal(real.reveal.clone(), t0);
        let flooder = key(2);
        for i in 0..200u8 {
            let junk = claim(&flooder, &[i64::from(i), -1], i);
            intake.reveal(junk.reveal, t0 + Duration::from_millis(u64::from(i) + 1));
        }
        assert_eq!(intake.reveals().count(), 16);
        assert_eq!(intake.opening(&real.commit.id()), Opening::Open);
        // Commits are bounded too (the oldest leaves), and so are the parameter owners.
        for i in 0..200u8 {
            let c = claim(&flooder, &[i64::from(i), -2], i);
            intake.commit(c.commit, t0 + Duration::from_millis(u64::from(i) + 1));
        }
        assert_eq!(intake.len(), 16);
        assert!(intake.params_first.len() <= 64 && intake.params_order.len() <= 64);
        for i in 0..200u8 {
            intake.settle(Hash::of(&[i]));
        }
        assert!(intake.done.len() <= 64 && intake.done_order.len() <= 64);
    }

    /// Random sequences of arrivals, settlements and pruning over a small pool of claims (some
    /// sharing parameters, some reveals forged): the bounds hold, a reveal judged open is the
    /// first of its parameters, a copy is never judged open, and a settled commit is not taken
    /// in again while remembered.
    #[test]
    fn random_sequences_keep_the_rules_and_the_bounds() {
        use rand::{Rng, SeedableRng};
        let keys: Vec<Keypair> = (1..=4).map(key).collect();
        let pool: Vec<Claim> =
            (0..24u8).map(|i| claim(&keys[usize::from(i % 4)], &[i64::from(i % 6), 1], i)).collect();
        for seed in 0..40u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let (mut intake, t0) = (Intake::new(6), Instant::now());
            let mut opened: std::collections::BTreeMap<Hash, Hash> = Default::default();
            for step in 0..300u64 {
                let now = t0 + Duration::from_millis(step);
                let c = &pool[rng.random_range(0..pool.len())];
                let id = c.commit.id();
                match rng.random_range(0..10) {
                    0..=2 => {
                        let settled = intake.is_settled(&id);
                        let r = intake.commit(c.commit.clone(), now);
                        assert!(!(settled && r.is_some()), "a settled commit was taken in again");
                    }
                    3..=5 => {
                        intake.reveal(c.reveal.clone(), now);
                    }
                    6 => {
                        let mut forged = pool[rng.random_range(0..pool.len())].reveal.clone();
                        forged.body.commit = id;
                        intake.reveal(forged, now);
                    }
                    7 => intake.settle(id),
                    8 => {
                        let _ = intake.await_seal(id);
                    }
                    _ => {
                        let keep = rng.random_range(0..4) != 0;
                        intake.retain(|_, _, _| keep);
                        let _ = intake.take_awaiting();
                    }
                }
                assert!(intake.len() <= 6 && intake.reveals().count() <= 6);
                assert!(intake.params_first.len() <= 24 && intake.done.len() <= 24);
                assert!(intake.awaiting_seal.len() <= 6);
                for (id, (reveal, _)) in intake.reveals() {
                    let ph = params_hash(&reveal.body.params);
                    match intake.opening(id) {
                        Opening::Open => {
                            assert_eq!(intake.first_of(&ph), Some(*id), "open but not the first");
                            // Once a parameter set had an owner here, no other commit opens it
                            // while that owner is remembered.
                            if let Some(owner) = opened.get(&ph)
                                && intake.first_of(&ph) == Some(*owner)
                            {
                                assert_eq!(owner, id);
                            }
                            opened.insert(ph, *id);
                        }
                        Opening::Copy { first } => assert_ne!(first, *id),
                        Opening::NotOpening | Opening::Missing => {}
                    }
                }
            }
        }
    }

    #[test]
    fn reveals_waiting_for_their_seal_come_back_once_and_leave_with_their_commit() {
        let (mut intake, t) = (Intake::new(8), Instant::now());
        let (a, b) = (claim(&key(1), &[1, 0], 1), claim(&key(2), &[2, 0], 2));
        for c in [&a, &b] {
            intake.commit(c.commit.clone(), t);
            intake.reveal(c.reveal.clone(), t);
            assert!(intake.await_seal(c.commit.id()));
        }
        assert!(!intake.await_seal(a.commit.id()), "waits once");
        // `b`'s reference left the window: its commit, reveal and wait go.
        intake.retain(|id, _, _| *id == a.commit.id());
        assert_eq!(intake.take_awaiting(), vec![a.reveal.clone()]);
        assert!(intake.take_awaiting().is_empty());
        assert!(intake.reveal_of(&b.commit.id()).is_none());
    }
}
