//! What a contributor may send for a round, and the supervisor's admission of it. An update is
//! the change a contributor's local training made to the round's global model (a flat vector
//! of the model's shape) with the rows it trained on. Refused, each with its reason: another
//! job, another round (a replay of an old round included), a second update from one
//! contributor in a round, the wrong shape, a weight that is not finite, no rows. Declared rows
//! are capped (a contributor cannot buy weight by declaring more data than a round allows).
//! Signatures and sizes on the wire are the shell's; nothing here stores anything.

use std::collections::HashSet;

use doin_primitives::{Address, Hash};

/// One contributor's update for one round.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// The job (federated domain) it belongs to.
    pub job: Hash,
    /// The round.
    pub round: u64,
    /// Who trained it (the signer).
    pub contributor: Address,
    /// Rows it trained on, as declared.
    pub samples: u32,
    /// New local weights minus the round's global weights.
    pub delta: Vec<f32>,
}

/// Why an update is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// For another job.
    #[error("update for job {got}, this round is job {expected}")]
    WrongJob {
        /// This round's job.
        expected: Hash,
        /// The update's.
        got: Hash,
    },
    /// For another round (an old one: a replay).
    #[error("update for round {got}, the open round is {expected}")]
    WrongRound {
        /// The open round.
        expected: u64,
        /// The update's.
        got: u64,
    },
    /// The contributor sent one already this round.
    #[error("a second update from {0} this round (replay)")]
    Duplicate(Address),
    /// Not the model's shape.
    #[error("update has {got} weights, the model has {expected}")]
    Shape {
        /// The model's parameters.
        expected: usize,
        /// The update's.
        got: usize,
    },
    /// A weight that is NaN or infinite.
    #[error("weight {index} is not finite")]
    NotFinite {
        /// Its index.
        index: usize,
    },
    /// Trained on nothing.
    #[error("update declares 0 training rows")]
    NoSamples,
    /// The round admits no more updates.
    #[error("round {0} is full")]
    Full(u64),
}

/// A supervisor's admission of updates for one open round.
#[derive(Debug)]
pub struct Admission {
    job: Hash,
    round: u64,
    params: usize,
    max_samples: u32,
    max_updates: usize,
    seen: HashSet<Address>,
}

impl Admission {
    /// Round `round` of `job` for a model of `params` weights, at most `max_updates` updates,
    /// declared rows capped at `max_samples`.
    pub fn new(job: Hash, round: u64, params: usize, max_samples: u32, max_updates: usize) -> Self {
        Self { job, round, params, max_samples, max_updates, seen: HashSet::new() }
    }

    /// Checks `u` and takes it in: its declared rows, capped. Refused updates leave no trace
    /// (a refused sender may send a valid one).
    pub fn admit(&mut self, u: &Update) -> Result<u32, UpdateError> {
        if u.job != self.job {
            return Err(UpdateError::WrongJob { expected: self.job, got: u.job });
        }
        if u.round != self.round {
            return Err(UpdateError::WrongRound { expected: self.round, got: u.round });
        }
        if self.seen.contains(&u.contributor) {
            return Err(UpdateError::Duplicate(u.contributor));
        }
        if u.delta.len() != self.params {
            return Err(UpdateError::Shape { expected: self.params, got: u.delta.len() });
        }
        if let Some(index) = u.delta.iter().position(|v| !v.is_finite()) {
            return Err(UpdateError::NotFinite { index });
        }
        if u.samples == 0 {
            return Err(UpdateError::NoSamples);
        }
        if self.seen.len() >= self.max_updates {
            return Err(UpdateError::Full(self.round));
        }
        self.seen.insert(u.contributor);
        Ok(u.samples.min(self.max_samples))
    }

    /// Updates admitted so far.
    pub fn admitted(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(who: u8) -> Update {
        Update {
            job: Hash::of(b"job"),
            round: 3,
            contributor: Address([who; 32]),
            samples: 100,
            delta: vec![0.1; 8],
        }
    }

    /// Every malformed update is refused with its reason and leaves the round as it was; a
    /// valid one is admitted once, its declared rows capped.
    #[test]
    fn bad_updates_are_refused_by_name_and_a_good_one_is_admitted_once() {
        let mut a = Admission::new(Hash::of(b"job"), 3, 8, 64, 3);
        let mut u = update(1);
        u.job = Hash::of(b"other");
        assert!(matches!(a.admit(&u), Err(UpdateError::WrongJob { .. })));
        let mut u = update(1);
        u.round = 2;
        assert_eq!(a.admit(&u), Err(UpdateError::WrongRound { expected: 3, got: 2 }));
        let mut u = update(1);
        u.delta.push(0.0);
        assert_eq!(a.admit(&u), Err(UpdateError::Shape { expected: 8, got: 9 }));
        let mut u = update(1);
        u.delta[5] = f32::NAN;
        assert_eq!(a.admit(&u), Err(UpdateError::NotFinite { index: 5 }));
        u.delta[5] = f32::INFINITY;
        assert_eq!(a.admit(&u), Err(UpdateError::NotFinite { index: 5 }));
        let mut u = update(1);
        u.samples = 0;
        assert_eq!(a.admit(&u), Err(UpdateError::NoSamples));
        assert_eq!(a.admitted(), 0, "refusals leave no trace");
        assert_eq!(a.admit(&update(1)), Ok(64), "declared rows capped");
        assert_eq!(a.admit(&update(1)), Err(UpdateError::Duplicate(Address([1; 32]))));
        assert_eq!(a.admit(&update(2)), Ok(64));
        assert_eq!(a.admit(&update(3)), Ok(64));
        assert_eq!(a.admit(&update(4)), Err(UpdateError::Full(3)));
        assert!(UpdateError::NotFinite { index: 5 }.to_string().contains("weight 5"));
    }
}
