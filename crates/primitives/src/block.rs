//! Blocks: a signed header and a body of transactions, certificates and evidence.

use borsh::{BorshDeserialize, BorshSerialize};
use serde::{Deserialize, Serialize};

use crate::{
    codec::BoundedVec,
    crypto::{Address, Hash, SigTag},
    finality::{FinalityEvidence, FinalityVote, MAX_BLOCK_FINALITY_EVIDENCE, MAX_BLOCK_FINALITY_VOTES},
    merkle::merkle_root,
    poo::{Certificate, Commit, DoubleVoteEvidence},
    signed::{Signable, Signed},
    tx::Transaction,
    units::Amount,
};

/// Hard bound on transactions per block (the protocol limit may be lower).
pub const MAX_BLOCK_TXS: usize = 16_384;
/// Hard bound on certificates per block.
pub const MAX_BLOCK_CERTS: usize = 256;
/// Hard bound on evidence items per block.
pub const MAX_BLOCK_EVIDENCE: usize = 64;
/// Hard bound on commits per block.
pub const MAX_BLOCK_COMMITS: usize = 256;
/// Largest encoded block accepted from anywhere.
pub const MAX_BLOCK_BYTES: usize = 8 * 1024 * 1024;

/// Current header version.
pub const HEADER_VERSION: u16 = 1;

/// Whether a block carries verified work or only keeps the chain moving.
#[derive(Clone, Copy, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// Carries certificates whose work sums to at least the threshold.
    Work,
    /// No certificates that add work; produced by the slot leader after `max_block_interval`,
    /// or early by the seal leader to include or seal commits.
    Heartbeat,
}

/// A signed block header; the block hash is the hash of its body ([`Signed::id`]).
pub type BlockHeader = Signed<HeaderBody>;

/// The signed header fields.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct HeaderBody {
    /// Header format version.
    pub version: u16,
    /// Chain id.
    pub chain_id: u64,
    /// Height (genesis is 0).
    pub height: u64,
    /// Parent block hash.
    pub parent_hash: Hash,
    /// Generator's timestamp, milliseconds since the Unix epoch; strictly above the parent's.
    pub timestamp_ms: u64,
    /// Block producer (signer).
    pub generator: Address,
    /// Merkle root of transaction ids.
    pub tx_root: Hash,
    /// Merkle root of certificate, evidence, commit, finality vote and finality evidence ids.
    pub cert_root: Hash,
    /// State root after applying this block.
    pub state_root: Hash,
    /// Work carried (sum of effective increments, fixed point).
    #[serde(with = "crate::units::u128_json")]
    pub work: u128,
    /// The threshold this block had to meet (must equal the chain state's).
    #[serde(with = "crate::units::u128_json")]
    pub threshold: u128,
    /// Parent's cumulative work plus `work`.
    #[serde(with = "crate::units::u128_json")]
    pub cumulative_work: u128,
    /// Base fee per weight unit in force for this block.
    pub base_fee: Amount,
    /// Work or heartbeat.
    pub kind: BlockKind,
    /// The generator's VRF proof over [`crate::vrf::beacon_input`] of the parent's beacon and
    /// this height: the chain's randomness, which no producer can choose (genesis: zeros).
    pub vrf: crate::vrf::VrfProof,
}

impl Signable for HeaderBody {
    const TAG: SigTag = SigTag::BlockHeader;
    fn signer(&self) -> &Address {
        &self.generator
    }
}

/// The block body.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct BlockBody {
    /// Transactions, applied in order.
    pub transactions: BoundedVec<Transaction, MAX_BLOCK_TXS>,
    /// Certificates, applied in order after the transactions.
    pub certificates: BoundedVec<Certificate, MAX_BLOCK_CERTS>,
    /// Double-vote evidence, applied after the certificates.
    pub evidence: BoundedVec<DoubleVoteEvidence, MAX_BLOCK_EVIDENCE>,
    /// Optimae commits bound on chain here, applied last: their quorums and evaluator seeds
    /// come from the beacon of the next block, which nobody knew when they were included.
    pub commits: BoundedVec<Commit, MAX_BLOCK_COMMITS>,
    /// Finality votes (justifications), applied after the commits.
    pub finality_votes: BoundedVec<FinalityVote, MAX_BLOCK_FINALITY_VOTES>,
    /// Conflicting finality votes by one key, applied last: each slashes its signer.
    pub finality_evidence: BoundedVec<FinalityEvidence, MAX_BLOCK_FINALITY_EVIDENCE>,
}

impl Default for BlockBody {
    fn default() -> Self {
        Self {
            transactions: BoundedVec::new(),
            certificates: BoundedVec::new(),
            evidence: BoundedVec::new(),
            commits: BoundedVec::new(),
            finality_votes: BoundedVec::new(),
            finality_evidence: BoundedVec::new(),
        }
    }
}

impl BlockBody {
    /// Merkle root of the transaction ids.
    pub fn tx_root(&self) -> Hash {
        let ids: Vec<Hash> = self.transactions.iter().map(|t| t.id()).collect();
        merkle_root(&ids)
    }

    /// Merkle root of certificate ids, then evidence ids, commit ids, finality vote ids and
    /// finality evidence ids.
    pub fn cert_root(&self) -> Hash {
        let ids: Vec<Hash> = self
            .certificates
            .iter()
            .map(Certificate::id)
            .chain(self.evidence.iter().map(DoubleVoteEvidence::id))
            .chain(self.commits.iter().map(Commit::id))
            .chain(self.finality_votes.iter().map(FinalityVote::id))
            .chain(self.finality_evidence.iter().map(FinalityEvidence::id))
            .collect();
        merkle_root(&ids)
    }
}

/// A whole block.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Block {
    /// Header.
    pub header: BlockHeader,
    /// Body.
    pub body: BlockBody,
}

impl Block {
    /// The block hash.
    pub fn hash(&self) -> Hash {
        self.header.id()
    }

    /// Decodes a block from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        crate::codec::decode(bytes, MAX_BLOCK_BYTES, "block")
    }
}
