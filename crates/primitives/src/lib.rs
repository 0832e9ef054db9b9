//! DOIN primitives: the consensus objects and everything they are made of.
//!
//! - [`crypto`]: ed25519 accounts (the public key *is* the [`Address`], and converts to the
//!   libp2p `PeerId` of the same key), BLAKE3 [`Hash`]es, domain-tagged signatures.
//! - [`units`]: coin [`Amount`]s in integer base units and fixed-point [`Metric`]s.
//! - [`codec`]: the canonical borsh codec with bounds enforced while decoding.
//! - [`signed`]: [`Signed<T>`] objects and batch verification.
//! - [`tx`], [`poo`], [`block`], [`domain`]: transactions, Proof-of-Optimization objects
//!   (commit, reveal, vote, certificate, evidence), blocks and domain specs.
//! - [`finality`]: checkpoint votes by stake and the evidence that slashes conflicting ones.
//!
//! Everything here has one binary encoding (hashed and signed) and a JSON (serde) view for the
//! HTTP edge. Nothing here touches state; rules live in `doin-consensus`.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod block;
pub mod codec;
pub mod crypto;
pub mod domain;
pub mod federated;
pub mod finality;
pub mod inference;
pub mod market;
pub mod merkle;
pub mod poo;
pub mod signed;
pub mod trials;
pub mod tx;
pub mod units;
pub mod vrf;

pub use block::{Block, BlockBody, BlockHeader, BlockKind, HeaderBody};
pub use codec::{BoundedBytes, BoundedString, BoundedVec, DecodeError, decode, encode};
pub use crypto::{ARTIFACT_CHUNK_BYTES, Address, Hash, Keypair, SigTag, Signature};
pub use domain::{DomainId, DomainSpec};
pub use federated::{
    FederatedRound, HeartbeatBody, RoundContribution, RoundVote, SignedHeartbeat, SignedUpdate, UpdateBody,
};
pub use finality::{Checkpoint, FinalityEvidence, FinalityVote, FinalityVoteBody};
pub use inference::{
    InferenceDispute, InferenceReceipt, InferenceReceiptBody, answers_root, row_bits, row_values, same_output,
};
pub use poo::{
    Certificate, Commit, CommitBody, DoubleVoteEvidence, Outcome, Reveal, RevealBody, Vote, VoteBody,
};
pub use signed::{Signable, SignatureItem, Signed, verify_batch};
pub use trials::{SharedTrial, TrialBatch, TrialBatchBody};
pub use tx::{ChannelUpdate, ChannelUpdateBody, Roles, Transaction, TxBody, TxKind};
pub use units::{Amount, FIXED_ONE, Metric};
