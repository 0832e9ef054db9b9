//! Federated training objects: a contributor's signed update receipt and the supervisor's
//! record of a finished round (DESIGN §6, `docs/design.md` §21b).
//!
//! The weights themselves never go on chain. A contributor signs an [`UpdateBody`] naming the
//! domain, the round, the global model it trained from and the hash of the weights it sent; the
//! supervisor gathers the signed receipts of the updates it aggregated into a [`FederatedRound`]
//! transaction with its own measurements of each (the loss-change quality and uptime), and
//! consensus pays the round's pool by the published formula from exactly these inputs.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::BoundedVec,
    crypto::{Address, Hash, SigTag},
    domain::DomainId,
    signed::{Signable, Signed},
};

/// Most contributions one round records.
pub const MAX_ROUND_CONTRIBUTIONS: usize = 128;

/// A contributor's signed statement of one update it sent.
pub type SignedUpdate = Signed<UpdateBody>;

/// What a contributor signs for one update.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct UpdateBody {
    /// The federated domain (the job).
    pub domain: DomainId,
    /// The round it was trained for.
    pub round: u64,
    /// Hash of the global model it trained from.
    pub base: Hash,
    /// Artifact hash ([`Hash::of_artifact`]) of the update's weights as sent (little-endian `f32`s).
    pub weights: Hash,
    /// The contributor (signer, and who is paid).
    pub contributor: Address,
    /// Training rows it declares it used.
    pub samples: u32,
    /// Local training time it declares, ms (capped by consensus at the domain's
    /// `max_wall_ms`).
    pub compute_ms: u64,
    /// Size of the update as sent, bytes (the supervisor checks it against what arrived).
    pub bytes: u64,
}

impl Signable for UpdateBody {
    const TAG: SigTag = SigTag::FederatedUpdate;
    fn signer(&self) -> &Address {
        &self.contributor
    }
}

/// A contributor's "still here" to a job's supervisor (the Co-Train seed's heartbeats; off
/// chain): the supervisor marks it online, and offline after three rounds' wait without one.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct HeartbeatBody {
    /// The job.
    pub domain: DomainId,
    /// The contributor (signer).
    pub contributor: Address,
    /// When it was sent, Unix ms (the supervisor takes it within ±2 minutes of its own clock,
    /// and each contributor's increasing: a replay is refused).
    pub sent_ms: u64,
}

impl Signable for HeartbeatBody {
    const TAG: SigTag = SigTag::FederatedHeartbeat;
    fn signer(&self) -> &Address {
        &self.contributor
    }
}

/// A signed heartbeat.
pub type SignedHeartbeat = Signed<HeartbeatBody>;

/// One contribution as the round records it: the contributor's signed receipt and the
/// supervisor's measurements of it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RoundContribution {
    /// The contributor's signed receipt.
    pub update: SignedUpdate,
    /// Quality measured by the supervisor: the loss change (micro-nats) the update causes on
    /// the round's seeded scoring rows; negative for a harmful update, 0 for a dropped one.
    pub quality_micro: i64,
    /// Share of the round the contributor was reachable, ppm (≤ 10⁶).
    pub uptime_ppm: u32,
    /// Whether the aggregation rule kept the update.
    pub kept: bool,
    /// The say the rule gave it, ppm (≤ 10⁶): its weight is `samples × say`. With the kept
    /// flags and the updates this fixes the aggregate, so an evaluator recomputes the model.
    pub say_ppm: u32,
}

/// A finished round: the new global model and what each contribution was worth.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FederatedRound {
    /// The federated domain.
    pub domain: DomainId,
    /// The round number (the domain's next round).
    pub round: u64,
    /// Hash of the global model the round started from (the domain's current one).
    pub base: Hash,
    /// Hash of the new global model.
    pub model: Hash,
    /// Quality of the new global model on the round's scoring rows (micro units of the
    /// domain's metric).
    pub model_quality_micro: i64,
    /// The contributions aggregated (in any order; each contributor once).
    pub contributions: BoundedVec<RoundContribution, MAX_ROUND_CONTRIBUTIONS>,
    /// Content address of the supervisor's contributor standings after the round (reputation,
    /// quarantines, strikes: an artifact it serves), so a standby taking the job over admits
    /// contributors as the supervisor did; zero when none was published.
    #[serde(default)]
    pub standing: Hash,
}

/// An evaluator's re-measurement of a recorded round from its artifacts (the base model, the
/// updates its receipts name, the new model): the transaction's sender is the evaluator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RoundVote {
    /// The federated domain.
    pub domain: DomainId,
    /// The round re-measured.
    pub round: u64,
    /// The model its record names.
    pub model: Hash,
    /// Whether the record's model is, bit for bit, the rule's aggregate of the recorded updates
    /// with their recorded say and kept flags.
    pub aggregate_ok: bool,
    /// The model's quality on the audit's scoring rows (micro units).
    pub model_quality_micro: i64,
    /// Each contribution's loss change on the audit's scoring rows, in the record's order.
    pub qualities: BoundedVec<i64, MAX_ROUND_CONTRIBUTIONS>,
}
