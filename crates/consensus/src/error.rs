//! Why a block, transaction or certificate is invalid. Every message names the offending item
//! and value.

use doin_primitives::{Address, Amount, Hash};

/// A block failed validation; nothing of it was applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The header does not fit the parent state.
    #[error("bad header: {0}")]
    Header(String),
    /// The body exceeds a per-block limit.
    #[error("block limit exceeded: {0}")]
    Limit(String),
    /// A signature in the block does not verify.
    #[error("invalid signature on {0}")]
    Signature(String),
    /// A transaction is invalid.
    #[error("transaction {index} ({id}) is invalid: {source}")]
    Transaction {
        /// Position in the block.
        index: usize,
        /// Transaction id.
        id: Hash,
        /// Why.
        source: TxError,
    },
    /// A certificate is invalid.
    #[error("certificate {index} (commit {commit}) is invalid: {source}")]
    Certificate {
        /// Position in the block.
        index: usize,
        /// Commit id.
        commit: Hash,
        /// Why.
        source: CertError,
    },
    /// A commit cannot be included.
    #[error("commit {index} ({commit}) cannot be included: {source}")]
    Commit {
        /// Position in the block.
        index: usize,
        /// Commit id.
        commit: Hash,
        /// Why.
        source: CertError,
    },
    /// An evidence item is invalid.
    #[error("evidence {index} is invalid: {reason}")]
    Evidence {
        /// Position in the block.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A finality vote cannot be included.
    #[error("finality vote {index} cannot be included: {source}")]
    FinalityVote {
        /// Position in the block.
        index: usize,
        /// Why.
        source: crate::finality::FinalityError,
    },
    /// A finality evidence item is invalid.
    #[error("finality evidence {index} is invalid: {source}")]
    FinalityEvidence {
        /// Position in the block.
        index: usize,
        /// Why.
        source: crate::finality::FinalityError,
    },
    /// A work block's certificates do not reach the threshold.
    #[error("work {work} is below the threshold {threshold}")]
    BelowThreshold {
        /// Work carried.
        work: u128,
        /// Threshold required.
        threshold: u128,
    },
    /// A header field differs from what the state transition computes.
    #[error("header {field} is {got}, but the block computes {expected}")]
    Mismatch {
        /// Field name.
        field: &'static str,
        /// Header value.
        got: String,
        /// Computed value.
        expected: String,
    },
    /// An amount overflowed.
    #[error("arithmetic overflow in {0}")]
    Overflow(&'static str),
    /// The state tree failed (a bug, not bad input).
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
}

/// A transaction cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TxError {
    /// Wrong chain.
    #[error("chain id {got} does not match this chain ({expected})")]
    ChainId {
        /// Given.
        got: u64,
        /// Expected.
        expected: u64,
    },
    /// Nonce is not the account's next nonce (replay, gap or reorder).
    #[error("nonce {got} is not the sender's next nonce {expected}")]
    Nonce {
        /// Given.
        got: u64,
        /// Expected.
        expected: u64,
    },
    /// `max_fee` is below the base fee.
    #[error("max fee {max_fee:?} per unit is below the base fee {base_fee:?}")]
    FeeTooLow {
        /// Offered.
        max_fee: Amount,
        /// Required.
        base_fee: Amount,
    },
    /// The sender cannot pay.
    #[error("sender {sender:?} has {balance:?} but needs {needed:?}")]
    InsufficientBalance {
        /// Sender.
        sender: Address,
        /// Balance.
        balance: Amount,
        /// Needed.
        needed: Amount,
    },
    /// An amount overflowed.
    #[error("amount overflow in {0}")]
    Overflow(&'static str),
    /// The operation is not allowed in the current state.
    #[error("{0}")]
    Rejected(String),
}

/// A certificate cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The reveal does not open the commit.
    #[error("reveal does not open the commit: {0}")]
    Opening(&'static str),
    /// Unknown domain.
    #[error("domain {0:?} is not registered")]
    UnknownDomain(String),
    /// Parameters outside the domain's space.
    #[error("parameter {index} value {value} is outside [{min}, {max}]")]
    ParamOutOfBounds {
        /// Parameter index.
        index: usize,
        /// Value.
        value: i64,
        /// Lower bound.
        min: i64,
        /// Upper bound.
        max: i64,
    },
    /// Wrong parameter count.
    #[error("{got} parameters given, the domain has {expected}")]
    ParamCount {
        /// Given.
        got: usize,
        /// Expected.
        expected: usize,
    },
    /// Reference block unknown or too old.
    #[error("reference block {0} is not among this chain's last max_reference_age blocks")]
    Reference(Hash),
    /// The commit was not included on this chain (or its certificate window has closed).
    #[error("commit {0} is not on this chain within the last max_reference_age blocks")]
    NotCommitted(Hash),
    /// The commit's inclusion block has no successor yet: its quorum is not drawn.
    #[error("commit {0} is not sealed yet: its quorum comes from the block after its inclusion")]
    Unsealed(Hash),
    /// Too many commits by one optimizer in a block.
    #[error("more than max_account_commits ({0}) commits by one optimizer in a block")]
    TooManyCommits(u32),
    /// Commit already certified, or parameters already revealed.
    #[error("duplicate: {0}")]
    Duplicate(&'static str),
    /// The optimizer's stake does not cover the optimae bond.
    #[error("optimizer {optimizer:?} has stake {stake:?}, below the optimae bond {bond:?}")]
    NoBond {
        /// Optimizer.
        optimizer: Address,
        /// Its stake.
        stake: Amount,
        /// Required.
        bond: Amount,
    },
    /// The optimizer is not staked with the optimizer role for the domain.
    #[error("optimizer {optimizer:?} is not staked as an optimizer of domain {domain}")]
    Role {
        /// Optimizer.
        optimizer: Address,
        /// Domain.
        domain: String,
    },
    /// No eligible evaluators.
    #[error("the domain had no eligible evaluators at the commit's inclusion block")]
    NoEvaluators,
    /// A vote is malformed or from a non-member.
    #[error("vote {index}: {reason}")]
    Vote {
        /// Index in its list.
        index: usize,
        /// Why.
        reason: String,
    },
    /// Not enough (agreeing) votes.
    #[error("quorum not met: {0}")]
    Quorum(String),
    /// The declared outcome differs from the computed one.
    #[error("declared outcome {declared:?}, but the votes give {computed:?}")]
    Outcome {
        /// Declared.
        declared: doin_primitives::Outcome,
        /// Computed.
        computed: doin_primitives::Outcome,
    },
    /// An amount overflowed.
    #[error("overflow in {0}")]
    Overflow(&'static str),
}
