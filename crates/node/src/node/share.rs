//! Shared trials between the nodes searching one domain: other nodes' batches handed to the
//! domain's optimizer loop (whose [`crate::trials::TrialBook`] decides how far to believe
//! them), and this node's own trials signed and published on the domain's topic.

use doin_consensus::State;
use doin_net::{GossipMessage, Topic};
use doin_primitives::{
    Address, DomainId, FIXED_ONE, Metric, SharedTrial, Signed, TrialBatch, TrialBatchBody,
    trials::{MIN_BATCH_GAP_MS, quantize, unit},
};

use super::Engine;
use crate::trials::{Incoming, share::Outgoing};

/// Reputation at which a staked sender's trials get their full standing (five accepted claims).
pub(super) const FULL_STANDING_REPUTATION: u64 = 5 * FIXED_ONE as u64;

/// How far a sender's trials can be believed before any check, in `[0, 1]`: half for an
/// account staked for the domain, the other half by its reputation in it; 0 for an account
/// with neither (its batches never reach the book).
pub(super) fn standing(state: &State, who: &Address, domain: &DomainId) -> f64 {
    let staked =
        state.stake(who).is_some_and(|s| s.amount.0 > 0 && (s.optimizes(domain) || s.evaluates(domain)));
    let rep =
        state.reputation(who, domain).min(FULL_STANDING_REPUTATION) as f64 / FULL_STANDING_REPUTATION as f64;
    (if staked { 0.5 } else { 0.0 }) + 0.5 * rep
}

/// The seed of this node's spot-check schedule for `domain`: its own signature over the domain
/// (deterministic, and unknowable without its secret key: senders cannot tell which of their
/// batches will be checked).
pub(super) fn check_seed(key: &doin_primitives::Keypair, domain: &str) -> u64 {
    let sig = key.sign(doin_primitives::SigTag::Trials, &doin_primitives::Hash::of(domain.as_bytes()));
    let h = doin_primitives::Hash::of_parts(&[b"doin-trial-checks".as_slice(), sig.0.as_slice()]);
    u64::from_le_bytes(h.0[..8].try_into().unwrap_or_default())
}

impl Engine {
    /// A trial batch from another node (signature, bounds and sender already checked by the
    /// gossip check): to the domain's loop, if it shares trials and has room.
    pub(super) fn on_trials(&mut self, t: TrialBatch) {
        let domain = t.body.domain.as_str().to_owned();
        if t.body.sender == self.me {
            return;
        }
        let Some(tx) = self.domains.get(&domain).and_then(|rt| rt.trials_in.as_ref()) else { return };
        // Read under the store's lock: no copy of the state per batch.
        let standing = standing(self.store.lock().tip(), &t.body.sender, &t.body.domain);
        if standing <= 0.0 {
            return;
        }
        let point = |x: &[u16]| x.iter().map(|q| unit(*q)).collect::<Vec<f64>>();
        let batch = Incoming {
            sender: t.body.sender,
            standing,
            seq: t.body.seq,
            trials: t
                .body
                .trials
                .iter()
                .map(|s| doin_optimize::Evaluated { x: point(&s.x), loss: s.loss.to_f64() })
                .collect(),
            pending: t.body.pending.iter().map(|p| point(p)).collect(),
        };
        // A busy loop drops batches rather than holding the event loop up.
        let _ = tx.try_send(batch);
    }

    /// This node's trials from a domain's loop: signed and published on the domain's topic.
    pub(super) async fn on_own_trials(&mut self, out: Outgoing) {
        let Some(rt) = self.domains.get_mut(&out.domain) else { return };
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let seq = now_ms.max(rt.trial_seq.saturating_add(MIN_BATCH_GAP_MS));
        rt.trial_seq = seq;
        #[cfg(feature = "adversary")]
        let lie = if self.adversary == Some(super::Adversary::InflateTrials) { 1_000.0 } else { 0.0 };
        #[cfg(not(feature = "adversary"))]
        let lie = 0.0;
        let trials: Vec<SharedTrial> = out
            .trials
            .iter()
            .map(|(x, loss, cost_ms)| (x, loss - lie, cost_ms))
            .filter_map(|(x, loss, cost_ms)| {
                Some(SharedTrial {
                    x: x.iter().map(|v| quantize(*v)).collect(),
                    loss: Metric::from_f64(loss)?,
                    cost_ms: *cost_ms,
                })
            })
            .collect();
        let body = TrialBatchBody {
            domain: Self::domain_id(&out.domain),
            sender: self.me,
            seq,
            trials,
            pending: out.pending.iter().map(|p| p.iter().map(|v| quantize(*v)).collect()).collect(),
        };
        if let Err(e) = body.check_shape() {
            tracing::debug!(domain = %out.domain, error = %e, "own trial batch out of bounds; not sent");
            return;
        }
        let batch = Signed::sign(body, &self.key);
        self.publish(Topic::Optimae(out.domain.clone()), GossipMessage::Trials(Box::new(batch))).await;
    }
}

#[cfg(test)]
mod tests {
    use doin_consensus::testkit::{TestNet, domain_id};

    use super::*;

    #[test]
    fn standing_comes_from_stake_and_reputation_and_strangers_have_none() {
        let net = TestNet::new(4, 2, 1);
        let d = domain_id();
        let staked = (0..4).map(|i| net.addr(i)).find(|a| net.state.stake(a).is_some()).unwrap();
        let s = standing(&net.state, &staked, &d);
        assert!((0.5..=1.0).contains(&s), "a staked account: {s}");
        let stranger = doin_primitives::Keypair::from_seed([77; 32]).address();
        assert_eq!(standing(&net.state, &stranger, &d), 0.0);
    }
}
