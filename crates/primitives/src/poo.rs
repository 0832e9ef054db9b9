//! Proof-of-Optimization objects: commit, reveal, vote, certificate and double-vote evidence.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::{BoundedString, BoundedVec},
    crypto::{Address, Hash, SigTag},
    domain::{DomainId, MAX_PARAMS, MAX_QUORUM},
    signed::{Signable, Signed},
    units::Metric,
};

/// Most first-round votes a certificate carries.
pub const MAX_VOTES: usize = MAX_QUORUM as usize;
/// Most escalation votes a certificate carries (`2k + 1`).
pub const MAX_ESCALATION_VOTES: usize = 2 * MAX_QUORUM as usize + 1;

/// A signed commitment to an optimae.
pub type Commit = Signed<CommitBody>;
/// A signed opening of a commit.
pub type Reveal = Signed<RevealBody>;
/// A signed measurement.
pub type Vote = Signed<VoteBody>;

/// "I have parameters that reach `claimed` on `domain`" without saying what they are.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct CommitBody {
    /// Domain.
    pub domain: DomainId,
    /// The optimizer (signer).
    pub optimizer: Address,
    /// `H(encode(params) || salt || optimizer)`, see [`optimae_hash`].
    pub optimae_hash: Hash,
    /// Claimed performance.
    pub claimed: Metric,
    /// A recent block; fixes the quorum and the evaluation seeds.
    pub reference_block: Hash,
}

impl Signable for CommitBody {
    const TAG: SigTag = SigTag::Commit;
    fn signer(&self) -> &Address {
        &self.optimizer
    }
}

/// The hash a commit binds: parameters, salt and optimizer together, so a copied reveal cannot
/// be re-committed under another name without changing the hash.
pub fn optimae_hash(params: &Params, salt: &[u8; 32], optimizer: &Address) -> Hash {
    Hash::of_parts(&[&crate::codec::encode(params), salt, &optimizer.0])
}

/// Optimae parameters: one `i64` per parameter of the domain (see `ParamKind`).
pub type Params = BoundedVec<i64, MAX_PARAMS>;

/// Experiment metadata carried with a reveal (for the analytics cube).
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ExperimentMeta {
    /// Experiment id.
    pub experiment_id: BoundedString<64>,
    /// Round number within the experiment.
    pub round: u64,
    /// Hash of the optimizer's configuration.
    pub config_hash: Hash,
}

/// The opening of a commit.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct RevealBody {
    /// The commit's id.
    pub commit: Hash,
    /// The optimizer (signer; must equal the commit's).
    pub optimizer: Address,
    /// Parameters.
    pub params: Params,
    /// Salt.
    pub salt: [u8; 32],
    /// Trained model artifact, if the domain evaluates artifacts.
    pub artifact: Option<Hash>,
    /// Experiment metadata.
    pub experiment: ExperimentMeta,
}

impl Signable for RevealBody {
    const TAG: SigTag = SigTag::Reveal;
    fn signer(&self) -> &Address {
        &self.optimizer
    }
}

/// An evaluator's measurement of a revealed optimae on seed-derived data.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct VoteBody {
    /// The commit's id.
    pub commit: Hash,
    /// The evaluator (signer).
    pub evaluator: Address,
    /// 0 for the first quorum, 1 for the escalation quorum.
    pub round: u8,
    /// Measured performance.
    pub measured: Metric,
    /// Hash of the evaluation data the evaluator built from its seed.
    pub data_hash: Hash,
    /// The reveal's model artifact measured on the domain's held-out data (`None`: the reveal
    /// attaches none, or this evaluator could not fetch or run it).
    pub artifact_measured: Option<Metric>,
}

impl Signable for VoteBody {
    const TAG: SigTag = SigTag::Vote;
    fn signer(&self) -> &Address {
        &self.evaluator
    }
}

/// A certificate's declared outcome; validators recompute it and refuse a mismatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The claim reproduces (within tolerance).
    Accept,
    /// The claim over-states the verified median by more than the tolerance.
    Reject,
}

/// A reveal with the votes that decide it.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Certificate {
    /// The commit (its `reference_block` fixes the quorum).
    pub commit: Commit,
    /// The reveal.
    pub reveal: Reveal,
    /// First-round votes. Without escalation these are all `k` members' votes.
    pub votes: BoundedVec<Vote, MAX_VOTES>,
    /// Escalation-quorum votes; non-empty means the certificate is escalated.
    pub escalation: BoundedVec<Vote, MAX_ESCALATION_VOTES>,
    /// Declared outcome.
    pub outcome: Outcome,
}

impl Certificate {
    /// The certificate id.
    pub fn id(&self) -> Hash {
        Hash::of_encoded(self)
    }

    /// Whether the certificate went to the escalation quorum.
    pub fn escalated(&self) -> bool {
        !self.escalation.is_empty()
    }
}

/// Two different votes signed by one evaluator for the same commit and round.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DoubleVoteEvidence {
    /// One vote.
    pub first: Vote,
    /// A different vote by the same evaluator for the same commit and round.
    pub second: Vote,
}

impl DoubleVoteEvidence {
    /// Evidence id.
    pub fn id(&self) -> Hash {
        Hash::of_encoded(self)
    }
}
