//! Shared trial history: a node's evaluated trials of a domain, signed, for the model-based
//! optimizers of the other nodes searching it (gossip only; never on chain).
//!
//! Points are the optimizer's unit cube, quantized to 1/65 535 of each dimension's range (the
//! space is the domain's, known to every node by its id); losses are fixed point. Nothing here
//! is trusted: a receiving node weighs a sender's trials by its standing on chain and by how
//! they agreed with its own measurements.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    crypto::{Address, SigTag},
    domain::{DomainId, MAX_PARAMS},
    signed::{Signable, Signed},
    units::Metric,
};

/// Trials per batch at most.
pub const MAX_BATCH_TRIALS: usize = 32;
/// Points in flight per batch at most.
pub const MAX_BATCH_PENDING: usize = 16;
/// A sender's batches are at least this far apart (`seq` is its clock in milliseconds).
pub const MIN_BATCH_GAP_MS: u64 = 1_000;

/// A signed batch of trials.
pub type TrialBatch = Signed<TrialBatchBody>;

/// One evaluated trial.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct SharedTrial {
    /// The point, quantized ([`quantize`]).
    pub x: Vec<u16>,
    /// The optimizer's loss on the sender's own data (lower is better).
    pub loss: Metric,
    /// What the evaluation cost the sender, in milliseconds.
    pub cost_ms: u32,
}

/// What a batch says.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct TrialBatchBody {
    /// The domain searched.
    pub domain: DomainId,
    /// The signer.
    pub sender: Address,
    /// Increasing per sender, at least [`MIN_BATCH_GAP_MS`] apart (its clock in ms).
    pub seq: u64,
    /// Trials evaluated since the last batch.
    pub trials: Vec<SharedTrial>,
    /// Points the sender is measuring now.
    pub pending: Vec<Vec<u16>>,
}

impl Signable for TrialBatchBody {
    const TAG: SigTag = SigTag::Trials;
    fn signer(&self) -> &Address {
        &self.sender
    }
}

impl TrialBatchBody {
    /// Checks the bounds: at most [`MAX_BATCH_TRIALS`] trials and [`MAX_BATCH_PENDING`] points,
    /// every point of one dimension count (1 to the domain bound).
    pub fn check_shape(&self) -> Result<(), String> {
        if self.trials.len() > MAX_BATCH_TRIALS {
            return Err(format!("{} trials, at most {MAX_BATCH_TRIALS}", self.trials.len()));
        }
        if self.pending.len() > MAX_BATCH_PENDING {
            return Err(format!("{} points in flight, at most {MAX_BATCH_PENDING}", self.pending.len()));
        }
        let mut dims = self.trials.iter().map(|t| t.x.len()).chain(self.pending.iter().map(Vec::len));
        if let Some(d) = dims.next() {
            if d == 0 || d > MAX_PARAMS {
                return Err(format!("points of {d} dimensions"));
            }
            if dims.any(|e| e != d) {
                return Err("points of different dimensions".into());
            }
        }
        Ok(())
    }
}

/// A unit-cube coordinate as 16 bits (clamped to `[0, 1]`; NaN as 0).
pub fn quantize(v: f64) -> u16 {
    if v.is_nan() { 0 } else { (v.clamp(0.0, 1.0) * f64::from(u16::MAX)).round() as u16 }
}

/// The coordinate a quantized value stands for.
pub fn unit(q: u16) -> f64 {
    f64::from(q) / f64::from(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Keypair;

    fn body(trials: usize, dims: usize) -> TrialBatchBody {
        TrialBatchBody {
            domain: DomainId::new("quadratic").unwrap(),
            sender: Keypair::from_seed([3; 32]).address(),
            seq: 1,
            trials: (0..trials)
                .map(|_| SharedTrial { x: vec![1; dims], loss: Metric(5), cost_ms: 2 })
                .collect(),
            pending: vec![vec![7; dims]],
        }
    }

    #[test]
    fn shapes_are_bounded_and_signatures_bind_the_sender() {
        assert!(body(MAX_BATCH_TRIALS, 4).check_shape().is_ok());
        assert!(body(MAX_BATCH_TRIALS + 1, 4).check_shape().is_err());
        assert!(body(1, 0).check_shape().is_err());
        assert!(body(1, MAX_PARAMS + 1).check_shape().is_err());
        let mut mixed = body(2, 3);
        mixed.pending = vec![vec![1; 4]];
        assert!(mixed.check_shape().is_err());
        let key = Keypair::from_seed([3; 32]);
        let signed = Signed::sign(body(2, 3), &key);
        assert!(signed.verify());
        let mut forged = signed.clone();
        forged.body.trials[0].loss = Metric(-1_000_000);
        assert!(!forged.verify(), "an altered figure breaks the signature");
        assert!(
            !Signed::sign(body(2, 3), &Keypair::from_seed([4; 32])).verify(),
            "another key is not the sender"
        );
    }

    #[test]
    fn quantization_round_trips_within_its_step() {
        for v in [0.0, 0.123_456, 0.5, 0.999_99, 1.0] {
            assert!((unit(quantize(v)) - v).abs() <= 0.5 / f64::from(u16::MAX) + 1e-12);
        }
        assert_eq!((quantize(-3.0), quantize(7.0), quantize(f64::NAN)), (0, u16::MAX, 0));
    }
}
