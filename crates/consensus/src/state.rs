//! The chain state: typed records in persistent maps (O(1) clone), mirrored into the
//! authenticated tree whose root every header commits to.

use std::{collections::BTreeSet, sync::Arc};

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{
    Address, Amount, BoundedBytes, BoundedVec, DomainId, DomainSpec, Hash, Metric, Roles, encode,
    tx::{Capabilities, MAX_STAKE_DOMAINS},
};
use imbl::{OrdMap, OrdSet, Vector};
use jmt::KeyHash;
use serde::{Deserialize, Serialize};

use crate::{
    fixed,
    params::ProtocolParams,
    tree::{NodeStore, StateProof, TreeError},
};

/// An account's spendable coins and transaction counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: Amount,
    /// Next expected transaction nonce.
    pub nonce: u64,
}

/// An account's stake, roles and advertised capabilities.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct StakeRecord {
    /// Bonded amount.
    pub amount: Amount,
    /// Roles served.
    pub roles: Roles,
    /// Domains served.
    pub domains: BoundedVec<DomainId, MAX_STAKE_DOMAINS>,
    /// Advertised capabilities.
    pub capabilities: Capabilities,
    /// The staking ticket: id of the latest stake transaction.
    pub ticket: Hash,
    /// Height of the first stake.
    pub since: u64,
}

impl StakeRecord {
    /// Whether this stake makes its owner an evaluator of `domain`.
    pub fn evaluates(&self, domain: &DomainId) -> bool {
        self.roles.contains(Roles::EVALUATOR) && self.domains.contains(domain)
    }

    /// Whether this stake makes its owner an optimizer of `domain`.
    pub fn optimizes(&self, domain: &DomainId) -> bool {
        self.roles.contains(Roles::OPTIMIZER) && self.domains.contains(domain)
    }

    /// Whether this stake lets its owner supervise `domain`'s federated rounds.
    pub fn supervises(&self, domain: &DomainId) -> bool {
        self.roles.contains(Roles::SUPERVISOR) && self.domains.contains(domain)
    }

    /// Whether this stake makes its owner a validator: drawn for block slots and weighed in
    /// finality. An account staked only as a federated contributor (a trainer, not a node)
    /// is neither, so contributors joining a job never stall blocks or finality.
    pub fn validates(&self) -> bool {
        self.amount > Amount::ZERO && self.roles.0 & !Roles::CONTRIBUTOR.0 != 0
    }

    /// Whether this stake registers its owner as a contributor to `domain`'s federated rounds.
    pub fn contributes(&self, domain: &DomainId) -> bool {
        self.roles.contains(Roles::CONTRIBUTOR) && self.domains.contains(domain)
    }
}

/// Where a federated domain's training stands.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct FederatedState {
    /// Rounds recorded so far (the next round's number).
    pub rounds: u64,
    /// Hash of the current global model (zero before the first round).
    pub model: Hash,
    /// Its quality on its round's scoring rows (micro units of the metric).
    pub model_quality_micro: i64,
    /// Supervisor of the last round.
    pub supervisor: Address,
    /// Height of the last round.
    pub height: u64,
    /// Paid to contributors over all rounds.
    pub paid: Amount,
    /// The last recorded round while its audit quorum re-measures it (its pool not yet paid).
    pub pending: Option<Box<PendingRound>>,
    /// Rounds settled by their audit quorum's majority (paid by the quorum's measurements).
    pub audited: u64,
    /// Rounds paid by the supervisor's own measurements: no evaluator was eligible to audit.
    pub unaudited: u64,
    /// Rounds whose quorum did not decide by the deadline: their pool stayed in the escrow.
    pub unpaid: u64,
    /// Rounds the quorum found were not the aggregate of their updates: unpaid, the model
    /// rewound to the round's base, the supervisor slashed.
    pub rejected: u64,
    /// Rounds settled so far (all outcomes), the last one's number and what it paid.
    pub settled: u64,
    /// See `settled`.
    pub last_settled_round: u64,
    /// See `settled`.
    pub last_paid: Vec<(Address, Amount)>,
    /// Evaluators drawn for an audit that expired without their vote, and the height until
    /// which they are not drawn again for this domain (a stopped node stops being drawn).
    pub absent: Vec<(Address, u64)>,
    /// The model of the newest round its audit quorum settled as the aggregate of its updates
    /// (`None` before one): the job's verified model, the one nodes serve for inference
    /// (`docs/design.md` §22g). Rounds paid unaudited, unpaid or rejected never set it.
    pub verified: Option<VerifiedModel>,
    /// The last recorded round's contributor standings (its record's `standing`): what a
    /// standby restores before it takes the job over.
    pub standing: Hash,
}

/// A federated job's model an audit quorum verified.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct VerifiedModel {
    /// Its hash (`weights_hash`: the artifact).
    pub model: Hash,
    /// The quorum's median measurement of it (micro units of the metric).
    pub quality_micro: i64,
    /// The round that produced it.
    pub round: u64,
    /// The height its audit settled at.
    pub height: u64,
}

/// A recorded round waiting for its audit (`docs/design.md` §21c).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PendingRound {
    /// The record as included.
    pub record: doin_primitives::FederatedRound,
    /// Its supervisor.
    pub supervisor: Address,
    /// Inclusion height: the quorum is drawn from the evaluators eligible there, with the
    /// beacon after the next block.
    pub height: u64,
    /// The domain's model quality before the round (restored if the round is rejected).
    pub previous_quality_micro: i64,
    /// Votes of quorum members so far, in arrival order.
    pub votes: Vec<(Address, doin_primitives::RoundVote)>,
}

/// Reputation of an account in one domain, decaying with a half-life in blocks.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize,
)]
pub struct Reputation {
    /// Value (fixed point) as of `updated`.
    pub value: u64,
    /// Height of the last change.
    pub updated: u64,
}

impl Reputation {
    /// The value decayed to `height`.
    pub fn at(&self, height: u64, half_life: u64) -> u64 {
        fixed::decay(self.value, height.saturating_sub(self.updated), half_life)
    }
}

/// The best verified optimae of a domain.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Champion {
    /// Verified median performance.
    pub performance: Metric,
    /// The certificate's commit id.
    pub commit: Hash,
    /// Who found it.
    pub optimizer: Address,
    /// `H(encode(params))`.
    pub params_hash: Hash,
    /// Model artifact, if any.
    pub artifact: Option<Hash>,
    /// The artifact's quality: the median of the deciding quorum's measurements of it on the
    /// domain's held-out data, when a majority of that quorum measured it (otherwise `None`,
    /// and no node serves the artifact).
    pub model_quality: Option<Metric>,
    /// Height it was accepted at.
    pub height: u64,
}

/// Per-domain counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DomainStats {
    /// Accepted certificates that improved the champion.
    pub improvements: u64,
    /// Accepted certificates that arrived after a better champion (no work, no penalty).
    pub late: u64,
    /// Rejected certificates.
    pub rejected: u64,
    /// Certificates decided by an escalation quorum.
    pub escalated: u64,
    /// Total effective increment contributed (fixed point).
    pub total_work: u128,
}

/// A registered domain and its progress.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct DomainState {
    /// The spec.
    pub spec: DomainSpec,
    /// Who registered it (the zero address for genesis domains).
    pub registered_by: Address,
    /// Registration height.
    pub registered_at: u64,
    /// Current champion.
    pub champion: Option<Champion>,
    /// Bounty escrow left.
    pub bounty_left: Amount,
    /// Counters.
    pub stats: DomainStats,
    /// Federated training progress (federated domains only).
    pub federated: Option<FederatedState>,
    /// Champion models displaced within `dispute_window_blocks`: receipts naming them can
    /// still be disputed (at most [`MAX_PAST_MODELS`], newest last).
    pub past_models: Vec<PastModel>,
    /// Evaluators drawn for a dispute of this domain that reached its deadline without their
    /// vote, and the height until which they are not drawn for its disputes again (at most one
    /// entry per evaluator; expired ones are dropped when the next absence is recorded).
    pub dispute_absent: Vec<(Address, u64)>,
}

/// Most displaced champion models a domain keeps disputable.
pub const MAX_PAST_MODELS: usize = 16;

/// A displaced champion's model, disputable until a height.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct PastModel {
    /// The champion's commit id.
    pub optimae: Hash,
    /// Its model artifact.
    pub artifact: Hash,
    /// Last height at which a receipt naming it may be disputed.
    pub until: u64,
}

/// A payer-posted close waiting out its challenge window.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Closing {
    /// Nonce of the posted update (0 when closed by expiry without one).
    pub nonce: u64,
    /// Amount the posted update pays the payee.
    pub paid_total: Amount,
    /// Height at which it settles unless challenged.
    pub deadline: u64,
}

/// An open payment channel.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Channel {
    /// Payer.
    pub payer: Address,
    /// Payee.
    pub payee: Address,
    /// Locked deposit.
    pub deposit: Amount,
    /// Expiry height.
    pub expiry_height: u64,
    /// Opening height.
    pub opened_at: u64,
    /// Set once a close is pending.
    pub closing: Option<Closing>,
}

/// An anchored checkpoint record.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct AnchorRecord {
    /// Checkpoint hash.
    pub block_hash: Hash,
    /// Where it was published.
    pub external_ref: BoundedBytes<256>,
    /// Who recorded it.
    pub by: Address,
    /// Height of the recording block.
    pub recorded_at: u64,
}

/// Difficulty state, recomputed by every validator.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Difficulty {
    /// Work the next work block must carry.
    pub threshold: u128,
    /// Exponential moving average of the time between work blocks, ms.
    pub ema_block_time_ms: u64,
    /// Work blocks so far.
    pub work_blocks: u64,
    /// Timestamp of the last work block (genesis at first), ms.
    pub last_work_ms: u64,
    /// Timestamp at which the current epoch started, ms.
    pub epoch_start_ms: u64,
}

/// Coins created and destroyed since genesis.
#[derive(Clone, Debug, Default, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct Supply {
    /// Genesis allocations plus block rewards.
    pub minted: Amount,
    /// Base fees, bond burns and slashes.
    pub burned: Amount,
}

/// A finality checkpoint (height and block hash).
pub use doin_primitives::Checkpoint;

/// Chain-wide values.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
pub struct ChainMeta {
    /// Chain id.
    pub chain_id: u64,
    /// Height of the last applied block.
    pub height: u64,
    /// Its parent's hash (the block's own hash cannot be inside the root it commits to).
    pub parent_hash: Hash,
    /// Its timestamp.
    pub timestamp_ms: u64,
    /// Cumulative work up to it.
    pub cumulative_work: u128,
    /// Base fee of the next block.
    pub base_fee: Amount,
    /// Difficulty of the next work block.
    pub difficulty: Difficulty,
    /// Latest finalized checkpoint: justified, and the source of a ≥ 2/3-stake link to the
    /// next checkpoint (never reverted by fork choice).
    pub finalized: Checkpoint,
    /// Latest justified checkpoint: the target of a ≥ 2/3-stake link from a justified one
    /// (genesis is justified). Finality votes included on this chain must name it as source.
    pub justified: Checkpoint,
    /// Supply accounting.
    pub supply: Supply,
    /// The chain's randomness after the last block: each block's VRF output chained onto its
    /// parent's beacon (`doin_primitives::vrf::next_beacon`). Seeds the heartbeat and seal
    /// leader draws, and (one block after their inclusion) quorums.
    pub beacon: Hash,
    /// Commits the last block included: when non-zero the next block seals them and must come
    /// from the seal leader of its slot.
    pub commits_in_tip: u32,
}

/// The key of a state record in the authenticated tree.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, BorshSerialize, BorshDeserialize)]
pub enum StateKey {
    /// [`ChainMeta`].
    Meta,
    /// [`ProtocolParams`].
    Params,
    /// [`Account`].
    Account(Address),
    /// [`StakeRecord`].
    Stake(Address),
    /// [`Reputation`] of an account in a domain.
    Reputation(Address, DomainId),
    /// [`DomainState`].
    Domain(DomainId),
    /// [`Channel`].
    Channel(Hash),
    /// Unbonding amount released at a height to an account.
    Unbonding(u64, Address),
    /// A commit included in a certificate (value: expiry height).
    Certified(Hash),
    /// A parameters hash already revealed in a domain (value: expiry height).
    ParamsSeen(DomainId, Hash),
    /// An evaluator already slashed for a commit and round.
    Slashed(Address, Hash, u8),
    /// A checkpoint eligible for anchoring.
    Checkpoint(u64),
    /// An anchor record.
    Anchor(u64),
    /// A commit included on chain (value: the inclusion height; remembered for
    /// `max_reference_age` blocks, the window its certificate has).
    Committed(Hash),
    /// Stake that voted the finality link from the checkpoint at the first height to the one at
    /// the second (value: `u128` weight; dropped once the target leaves the recent window).
    FinalityTally(u64, u64),
    /// A staker's finality vote counted for the checkpoint at a height (value: the vote id;
    /// dropped with the tally).
    FinalityVoted(Address, u64),
    /// A finality offence already slashed (`FinalityEvidence::offence`; kept for good).
    FinalitySlashed(Hash),
    /// A dispute of an inference receipt, by the receipt's hash (kept for good once settled).
    Dispute(Hash),
}

impl StateKey {
    /// The tree key.
    pub fn key_hash(&self) -> KeyHash {
        KeyHash(Hash::of_encoded(self).0)
    }
}

fn decode_record<T: BorshDeserialize>(key: &StateKey, bytes: &[u8]) -> Result<T, RecordError> {
    borsh::from_slice(bytes).map_err(|source| RecordError::Decode { key: key.clone(), source })
}

/// What a block left behind for certificates that reference it: the evaluators eligible in
/// each domain at its post-state, with their draw weights (`quorum::eligible_at`).
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize)]
pub struct RecentBlock {
    /// Height.
    pub height: u64,
    /// Hash.
    pub hash: Hash,
    /// Timestamp.
    pub timestamp_ms: u64,
    /// The chain's beacon after this block (quorums of the commits its parent included).
    pub beacon: Hash,
    /// Eligible evaluators per domain, in domain then address order.
    pub eligible: Vec<(DomainId, Vec<crate::quorum::Candidate>)>,
}

impl RecentBlock {
    /// The eligible evaluators of `domain` at this block.
    pub fn eligible(&self, domain: &DomainId) -> &[crate::quorum::Candidate] {
        self.eligible
            .binary_search_by(|(d, _)| d.cmp(domain))
            .map(|i| self.eligible[i].1.as_slice())
            .unwrap_or(&[])
    }
}

/// The tip a state sits on (outside the root: a block cannot commit to its own hash).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    /// Hash of the last applied block.
    pub hash: Hash,
    /// Its height.
    pub height: u64,
}

/// The whole consensus state after some block.
#[derive(Clone, Debug)]
pub struct State {
    pub(crate) params: Arc<ProtocolParams>,
    pub(crate) meta: ChainMeta,
    pub(crate) tip: Tip,
    pub(crate) root: Hash,
    pub(crate) accounts: OrdMap<Address, Account>,
    pub(crate) stakes: OrdMap<Address, StakeRecord>,
    pub(crate) reputation: OrdMap<(Address, DomainId), Reputation>,
    pub(crate) domains: OrdMap<DomainId, DomainState>,
    pub(crate) channels: OrdMap<Hash, Channel>,
    pub(crate) unbonding: OrdMap<(u64, Address), Amount>,
    pub(crate) certified: OrdMap<Hash, u64>,
    pub(crate) committed: OrdMap<Hash, u64>,
    pub(crate) params_seen: OrdMap<(DomainId, Hash), u64>,
    pub(crate) slashed: OrdSet<(Address, Hash, u8)>,
    pub(crate) checkpoints: OrdMap<u64, Hash>,
    pub(crate) anchors: OrdMap<u64, AnchorRecord>,
    pub(crate) finality_tallies: OrdMap<(u64, u64), u128>,
    pub(crate) finality_voted: OrdMap<(Address, u64), Hash>,
    pub(crate) finality_slashed: OrdSet<Hash>,
    pub(crate) disputes: OrdMap<Hash, crate::disputes::Dispute>,
    // Derived indexes (not in the root; rebuilt from the records above).
    pub(crate) evaluators: OrdMap<DomainId, OrdSet<Address>>,
    pub(crate) channel_expiries: OrdSet<(u64, Hash)>,
    pub(crate) channel_deadlines: OrdSet<(u64, Hash)>,
    pub(crate) dispute_draws: OrdSet<(u64, Hash)>,
    pub(crate) dispute_deadlines: OrdSet<(u64, Hash)>,
    pub(crate) expiries: OrdSet<(u64, StateKey)>,
    pub(crate) recent: Vector<RecentBlock>,
    pub(crate) tree: NodeStore,
    pub(crate) dirty: BTreeSet<StateKey>,
    /// The records the last block (or record update) wrote, for storage.
    pub(crate) last_changes: Arc<Vec<RecordChange>>,
    /// Whether `last_changes` are the changes of the block that made this state. A state
    /// rebuilt from records (a store's tip after a restart, a canonical state rebuilt from undo
    /// records) holds the records it was rebuilt with instead, and misses the block's deletions.
    pub(crate) block_diff: bool,
}

/// A record (or its absence) with its proof against a state root.
pub type ProvenRecord = (Option<Vec<u8>>, StateProof);

/// One written record: its key and new encoded value (`None` = deleted).
pub type RecordChange = (StateKey, Option<Vec<u8>>);

/// Encoded records could not be turned into a state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A record does not decode as the type its key names.
    #[error("state record {key:?} does not decode: {source}")]
    Decode {
        /// The key.
        key: StateKey,
        /// Why.
        source: std::io::Error,
    },
    /// A required record is missing.
    #[error("state record {0:?} is missing")]
    Missing(StateKey),
    /// The rebuilt root differs from the expected one.
    #[error("rebuilt state root {got} differs from the expected {expected}")]
    Root {
        /// Rebuilt.
        got: Hash,
        /// Expected.
        expected: Hash,
    },
    /// The state tree failed.
    #[error(transparent)]
    Tree(#[from] TreeError),
}

impl State {
    /// The protocol parameters.
    pub fn params(&self) -> &ProtocolParams {
        &self.params
    }
    /// Chain-wide values.
    pub fn meta(&self) -> &ChainMeta {
        &self.meta
    }
    /// Height of the last applied block.
    pub fn height(&self) -> u64 {
        self.meta.height
    }
    /// The tip this state is the post-state of.
    pub fn tip(&self) -> Tip {
        self.tip
    }
    /// The authenticated state root.
    pub fn root(&self) -> Hash {
        self.root
    }
    /// An account (the default for one never seen).
    pub fn account(&self, address: &Address) -> Account {
        self.accounts.get(address).cloned().unwrap_or_default()
    }
    /// All accounts in address order.
    pub fn accounts(&self) -> impl Iterator<Item = (&Address, &Account)> {
        self.accounts.iter()
    }
    /// An account's stake.
    pub fn stake(&self, address: &Address) -> Option<&StakeRecord> {
        self.stakes.get(address)
    }
    /// All stakes in address order.
    pub fn stakes(&self) -> impl Iterator<Item = (&Address, &StakeRecord)> {
        self.stakes.iter()
    }
    /// Reputation of `address` in `domain`, decayed to the current height.
    pub fn reputation(&self, address: &Address, domain: &DomainId) -> u64 {
        self.reputation
            .get(&(*address, domain.clone()))
            .map_or(0, |r| r.at(self.meta.height, self.params.reputation_half_life_blocks))
    }
    /// A domain.
    pub fn domain(&self, id: &DomainId) -> Option<&DomainState> {
        self.domains.get(id)
    }
    /// All domains in id order.
    pub fn domains(&self) -> impl Iterator<Item = (&DomainId, &DomainState)> {
        self.domains.iter()
    }
    /// A dispute of an inference receipt (pending or settled).
    pub fn dispute(&self, id: &Hash) -> Option<&crate::disputes::Dispute> {
        self.disputes.get(id)
    }
    /// Disputes in id order.
    pub fn disputes(&self) -> impl Iterator<Item = (&Hash, &crate::disputes::Dispute)> {
        self.disputes.iter()
    }
    /// A payment channel.
    pub fn channel(&self, id: &Hash) -> Option<&Channel> {
        self.channels.get(id)
    }
    /// Open payment channels in id order.
    pub fn channels(&self) -> impl Iterator<Item = (&Hash, &Channel)> {
        self.channels.iter()
    }
    /// Pending unbonding entries `(release height, account) → amount`.
    pub fn unbonding(&self) -> impl Iterator<Item = (&(u64, Address), &Amount)> {
        self.unbonding.iter()
    }
    /// Finalized anchor checkpoints (multiples of `anchor_interval`) by height.
    pub fn checkpoints(&self) -> impl DoubleEndedIterator<Item = (&u64, &Hash)> {
        self.checkpoints.iter()
    }

    /// Anchor records by checkpoint height.
    pub fn anchors(&self) -> impl Iterator<Item = (&u64, &AnchorRecord)> {
        self.anchors.iter()
    }
    /// Evaluators staked for `domain`.
    pub fn evaluators(&self, domain: &DomainId) -> Vec<Address> {
        self.evaluators.get(domain).map(|s| s.iter().copied().collect()).unwrap_or_default()
    }
    /// A recent block of this chain (reference blocks, finality).
    pub fn recent_block(&self, hash: &Hash) -> Option<&RecentBlock> {
        self.recent.iter().rev().find(|b| b.hash == *hash)
    }
    /// The hash of the block at `height` if it is within the recent window.
    pub fn recent_hash_at(&self, height: u64) -> Option<Hash> {
        self.recent_at(height).map(|b| b.hash)
    }
    /// The recent block at `height` of this chain, if within the recent window.
    pub fn recent_at(&self, height: u64) -> Option<&RecentBlock> {
        let last = self.recent.back()?;
        let back = usize::try_from(last.height.checked_sub(height)?).ok()?;
        let b = self.recent.get(self.recent.len().checked_sub(1 + back)?)?;
        (b.height == height).then_some(b)
    }
    /// The height at which a commit was included on this chain, while its certificate window
    /// lasts.
    pub fn committed_at(&self, commit: &Hash) -> Option<u64> {
        self.committed.get(commit).copied()
    }
    /// Commits included on this chain whose certificate window is open.
    pub fn committed(&self) -> impl Iterator<Item = (&Hash, &u64)> {
        self.committed.iter()
    }
    /// Nodes in the authenticated tree (for metrics).
    pub fn tree_nodes(&self) -> usize {
        self.tree.len()
    }

    /// The encoded record under `key`, if present.
    pub fn record(&self, key: &StateKey) -> Option<Vec<u8>> {
        match key {
            StateKey::Meta => Some(encode(&self.meta)),
            StateKey::Params => Some(encode(&*self.params)),
            StateKey::Account(a) => self.accounts.get(a).map(encode),
            StateKey::Stake(a) => self.stakes.get(a).map(encode),
            StateKey::Reputation(a, d) => self.reputation.get(&(*a, d.clone())).map(encode),
            StateKey::Domain(d) => self.domains.get(d).map(encode),
            StateKey::Channel(c) => self.channels.get(c).map(encode),
            StateKey::Unbonding(h, a) => self.unbonding.get(&(*h, *a)).map(encode),
            StateKey::Certified(c) => self.certified.get(c).map(encode),
            StateKey::ParamsSeen(d, p) => self.params_seen.get(&(d.clone(), *p)).map(encode),
            StateKey::Slashed(a, c, r) => self.slashed.contains(&(*a, *c, *r)).then(|| vec![1u8]),
            StateKey::Checkpoint(h) => self.checkpoints.get(h).map(encode),
            StateKey::Anchor(h) => self.anchors.get(h).map(encode),
            StateKey::Committed(c) => self.committed.get(c).map(encode),
            StateKey::FinalityTally(a, b) => self.finality_tallies.get(&(*a, *b)).map(encode),
            StateKey::FinalityVoted(v, h) => self.finality_voted.get(&(*v, *h)).map(encode),
            StateKey::FinalitySlashed(o) => self.finality_slashed.contains(o).then(|| vec![1u8]),
            StateKey::Dispute(id) => self.disputes.get(id).map(encode),
        }
    }

    /// Proves the record under `key` (or its absence) against [`State::root`].
    pub fn prove(&self, key: &StateKey) -> Result<ProvenRecord, TreeError> {
        let value = self.record(key);
        let proof = self.tree.prove(key.key_hash(), value.clone())?;
        Ok((value, proof))
    }

    /// Every record key currently in the state, in a fixed order (snapshots, rebuilds).
    pub fn keys(&self) -> Vec<StateKey> {
        let mut keys = vec![StateKey::Meta, StateKey::Params];
        keys.extend(self.accounts.keys().map(|a| StateKey::Account(*a)));
        keys.extend(self.stakes.keys().map(|a| StateKey::Stake(*a)));
        keys.extend(self.reputation.keys().map(|(a, d)| StateKey::Reputation(*a, d.clone())));
        keys.extend(self.domains.keys().map(|d| StateKey::Domain(d.clone())));
        keys.extend(self.channels.keys().map(|c| StateKey::Channel(*c)));
        keys.extend(self.unbonding.keys().map(|(h, a)| StateKey::Unbonding(*h, *a)));
        keys.extend(self.certified.keys().map(|c| StateKey::Certified(*c)));
        keys.extend(self.params_seen.keys().map(|(d, p)| StateKey::ParamsSeen(d.clone(), *p)));
        keys.extend(self.slashed.iter().map(|(a, c, r)| StateKey::Slashed(*a, *c, *r)));
        keys.extend(self.checkpoints.keys().map(|h| StateKey::Checkpoint(*h)));
        keys.extend(self.anchors.keys().map(|h| StateKey::Anchor(*h)));
        keys.extend(self.committed.keys().map(|c| StateKey::Committed(*c)));
        keys.extend(self.finality_tallies.keys().map(|(a, b)| StateKey::FinalityTally(*a, *b)));
        keys.extend(self.finality_voted.keys().map(|(v, h)| StateKey::FinalityVoted(*v, *h)));
        keys.extend(self.finality_slashed.iter().map(|o| StateKey::FinalitySlashed(*o)));
        keys.extend(self.disputes.keys().map(|id| StateKey::Dispute(*id)));
        keys
    }

    /// Rebuilds the authenticated tree from scratch over every record and returns its root.
    /// Must equal [`State::root`]; used to check incremental updates and to verify snapshots.
    pub fn recompute_root(&self) -> Result<Hash, TreeError> {
        let changes = self.keys().into_iter().map(|k| (k.key_hash(), self.record(&k))).collect();
        let mut fresh = NodeStore::default();
        fresh.update(changes)
    }

    /// Coins accounted for: balances + stakes + unbonding + channel deposits + bounty escrow +
    /// burned. Equals `supply.minted` in every valid state.
    pub fn accounted_supply(&self) -> Option<u128> {
        let mut total = self.meta.supply.burned.0;
        for a in self.accounts.values() {
            total = total.checked_add(a.balance.0)?;
        }
        for s in self.stakes.values() {
            total = total.checked_add(s.amount.0)?;
        }
        for u in self.unbonding.values() {
            total = total.checked_add(u.0)?;
        }
        for c in self.channels.values() {
            total = total.checked_add(c.deposit.0)?;
        }
        for d in self.domains.values() {
            total = total.checked_add(d.bounty_left.0)?;
        }
        for d in self.disputes.values().filter(|d| d.outcome.is_none()) {
            total = total.checked_add(d.bond.0)?;
        }
        Some(total)
    }

    /// Writes the dirty records into the tree and remembers them as [`State::last_changes`].
    pub(crate) fn commit_tree(&mut self) -> Result<Hash, TreeError> {
        let dirty = std::mem::take(&mut self.dirty);
        let records: Vec<RecordChange> = dirty
            .into_iter()
            .map(|k| {
                let v = self.record(&k);
                (k, v)
            })
            .collect();
        let changes = records.iter().map(|(k, v)| (k.key_hash(), v.clone())).collect();
        self.root = self.tree.update(changes)?;
        self.last_changes = Arc::new(records);
        self.block_diff = true;
        Ok(self.root)
    }

    /// The records the last applied block wrote (key, new value or `None` if deleted), in key
    /// order. Storage persists exactly these.
    pub fn last_changes(&self) -> &[RecordChange] {
        &self.last_changes
    }

    /// Whether [`Self::last_changes`] are exactly the changes of the block that made this state
    /// (false for a state rebuilt from records: storage must re-apply the block to learn them).
    pub fn has_block_diff(&self) -> bool {
        self.block_diff
    }

    /// The recent-block window (reference blocks for certificates, finality).
    pub fn recent(&self) -> impl Iterator<Item = &RecentBlock> {
        self.recent.iter()
    }

    /// An empty state with `params` (no records yet).
    pub(crate) fn empty(params: ProtocolParams, meta: ChainMeta) -> Self {
        Self {
            params: Arc::new(params),
            meta,
            tip: Tip { hash: Hash::ZERO, height: 0 },
            root: Hash::ZERO,
            accounts: Default::default(),
            stakes: Default::default(),
            reputation: Default::default(),
            domains: Default::default(),
            channels: Default::default(),
            unbonding: Default::default(),
            certified: Default::default(),
            committed: Default::default(),
            params_seen: Default::default(),
            slashed: Default::default(),
            checkpoints: Default::default(),
            anchors: Default::default(),
            finality_tallies: Default::default(),
            finality_voted: Default::default(),
            finality_slashed: Default::default(),
            disputes: Default::default(),
            evaluators: Default::default(),
            channel_expiries: Default::default(),
            channel_deadlines: Default::default(),
            dispute_draws: Default::default(),
            dispute_deadlines: Default::default(),
            expiries: Default::default(),
            recent: Default::default(),
            tree: Default::default(),
            dirty: Default::default(),
            last_changes: Default::default(),
            block_diff: false,
        }
    }

    /// Rebuilds a state from its encoded records (a snapshot or a store), sets its tip and
    /// recent window, and checks the rebuilt root against `expected_root`.
    pub fn from_records(
        records: impl IntoIterator<Item = (StateKey, Vec<u8>)>,
        tip: Tip,
        recent: Vec<RecentBlock>,
        expected_root: &Hash,
    ) -> Result<Self, RecordError> {
        let records = records.into_iter();
        let mut meta = None;
        let mut params = None;
        let mut rest = Vec::new();
        for (key, value) in records {
            match key {
                StateKey::Meta => meta = Some(decode_record::<ChainMeta>(&key, &value)?),
                StateKey::Params => params = Some(decode_record::<ProtocolParams>(&key, &value)?),
                _ => rest.push((key, Some(value))),
            }
        }
        let meta = meta.ok_or(RecordError::Missing(StateKey::Meta))?;
        let params = params.ok_or(RecordError::Missing(StateKey::Params))?;
        let mut state = Self::empty(params, meta);
        state.touch(StateKey::Meta);
        state.touch(StateKey::Params);
        for (key, value) in rest {
            state.set_record(key, value)?;
        }
        state.finish_records(tip, recent, expected_root)
    }

    /// A copy of this state with `changes` written over it (undoing or redoing blocks from
    /// stored record changes), at `tip` with `recent`, checked against `expected_root`.
    pub fn with_records(
        &self,
        changes: &[RecordChange],
        tip: Tip,
        recent: Vec<RecentBlock>,
        expected_root: &Hash,
    ) -> Result<Self, RecordError> {
        let mut state = self.clone();
        for (key, value) in changes {
            state.set_record(key.clone(), value.clone())?;
        }
        state.finish_records(tip, recent, expected_root)
    }

    fn finish_records(
        mut self,
        tip: Tip,
        recent: Vec<RecentBlock>,
        expected_root: &Hash,
    ) -> Result<Self, RecordError> {
        let root = self.commit_tree()?;
        // Rebuilt, not made by a block: its changes are the records it was rebuilt with.
        self.block_diff = false;
        if root != *expected_root {
            return Err(RecordError::Root { got: root, expected: *expected_root });
        }
        self.tip = tip;
        self.recent = recent.into_iter().collect();
        Ok(self)
    }

    /// Writes one encoded record, keeping the derived indexes in step.
    fn set_record(&mut self, key: StateKey, value: Option<Vec<u8>>) -> Result<(), RecordError> {
        fn dec<T: BorshDeserialize>(key: &StateKey, v: &Option<Vec<u8>>) -> Result<Option<T>, RecordError> {
            v.as_deref().map(|bytes| decode_record(key, bytes)).transpose()
        }
        match &key {
            StateKey::Meta => {
                if let Some(m) = dec(&key, &value)? {
                    self.meta = m;
                }
            }
            StateKey::Params => {
                if let Some(p) = dec::<ProtocolParams>(&key, &value)? {
                    self.params = Arc::new(p);
                }
            }
            StateKey::Account(a) => match dec(&key, &value)? {
                Some(acc) => {
                    self.accounts.insert(*a, acc);
                }
                None => {
                    self.accounts.remove(a);
                }
            },
            StateKey::Stake(a) => {
                let record = dec(&key, &value)?;
                self.set_stake(*a, record);
            }
            StateKey::Reputation(a, d) => match dec(&key, &value)? {
                Some(r) => {
                    self.reputation.insert((*a, d.clone()), r);
                }
                None => {
                    self.reputation.remove(&(*a, d.clone()));
                }
            },
            StateKey::Domain(d) => match dec(&key, &value)? {
                Some(ds) => {
                    self.domains.insert(d.clone(), ds);
                }
                None => {
                    self.domains.remove(d);
                }
            },
            StateKey::Channel(c) => {
                let channel = dec(&key, &value)?;
                self.set_channel(*c, channel);
            }
            StateKey::Unbonding(h, a) => match dec(&key, &value)? {
                Some(amount) => {
                    self.unbonding.insert((*h, *a), amount);
                }
                None => {
                    self.unbonding.remove(&(*h, *a));
                }
            },
            StateKey::Certified(c) => {
                if let Some(old) = self.certified.remove(c) {
                    self.expiries.remove(&(old, key.clone()));
                }
                if let Some(expiry) = dec::<u64>(&key, &value)? {
                    self.certified.insert(*c, expiry);
                    self.expiries.insert((expiry, key.clone()));
                }
            }
            StateKey::ParamsSeen(d, p) => {
                if let Some(old) = self.params_seen.remove(&(d.clone(), *p)) {
                    self.expiries.remove(&(old, key.clone()));
                }
                if let Some(expiry) = dec::<u64>(&key, &value)? {
                    self.params_seen.insert((d.clone(), *p), expiry);
                    self.expiries.insert((expiry, key.clone()));
                }
            }
            StateKey::Slashed(a, c, r) => {
                if value.is_some() {
                    self.slashed.insert((*a, *c, *r));
                } else {
                    self.slashed.remove(&(*a, *c, *r));
                }
            }
            StateKey::Checkpoint(h) => match dec(&key, &value)? {
                Some(hash) => {
                    self.checkpoints.insert(*h, hash);
                }
                None => {
                    self.checkpoints.remove(h);
                }
            },
            StateKey::Anchor(h) => match dec(&key, &value)? {
                Some(a) => {
                    self.anchors.insert(*h, a);
                }
                None => {
                    self.anchors.remove(h);
                }
            },
            StateKey::Committed(c) => {
                let age = self.params.max_reference_age;
                if let Some(old) = self.committed.remove(c) {
                    self.expiries.remove(&(old.saturating_add(age), key.clone()));
                }
                if let Some(height) = dec::<u64>(&key, &value)? {
                    self.committed.insert(*c, height);
                    self.expiries.insert((height.saturating_add(age), key.clone()));
                }
            }
            StateKey::FinalityTally(a, b) => {
                let expiry = self.finality_expiry(*b);
                match dec::<u128>(&key, &value)? {
                    Some(w) => {
                        self.finality_tallies.insert((*a, *b), w);
                        self.expiries.insert((expiry, key.clone()));
                    }
                    None => {
                        self.finality_tallies.remove(&(*a, *b));
                        self.expiries.remove(&(expiry, key.clone()));
                    }
                }
            }
            StateKey::FinalityVoted(v, h) => {
                let expiry = self.finality_expiry(*h);
                match dec::<Hash>(&key, &value)? {
                    Some(id) => {
                        self.finality_voted.insert((*v, *h), id);
                        self.expiries.insert((expiry, key.clone()));
                    }
                    None => {
                        self.finality_voted.remove(&(*v, *h));
                        self.expiries.remove(&(expiry, key.clone()));
                    }
                }
            }
            StateKey::FinalitySlashed(o) => {
                if value.is_some() {
                    self.finality_slashed.insert(*o);
                } else {
                    self.finality_slashed.remove(o);
                }
            }
            StateKey::Dispute(id) => {
                let dispute = dec(&key, &value)?;
                self.set_dispute(*id, dispute);
            }
        }
        self.touch(key);
        Ok(())
    }

    pub(crate) fn touch(&mut self, key: StateKey) {
        self.dirty.insert(key);
    }

    pub(crate) fn set_account(&mut self, address: Address, account: Account) {
        self.accounts.insert(address, account);
        self.touch(StateKey::Account(address));
    }

    pub(crate) fn credit(&mut self, address: Address, amount: Amount) -> Option<()> {
        if amount == Amount::ZERO {
            return Some(());
        }
        let mut acc = self.account(&address);
        acc.balance = acc.balance.checked_add(amount)?;
        self.set_account(address, acc);
        Some(())
    }

    pub(crate) fn set_stake(&mut self, address: Address, record: Option<StakeRecord>) {
        // Keep the evaluator index in step with the record.
        if let Some(old) = self.stakes.get(&address).cloned() {
            for d in old.domains.iter() {
                if let Some(set) = self.evaluators.get_mut(d) {
                    set.remove(&address);
                }
            }
        }
        match record {
            Some(r) => {
                if r.roles.contains(Roles::EVALUATOR) {
                    for d in r.domains.iter() {
                        self.evaluators.entry(d.clone()).or_default().insert(address);
                    }
                }
                self.stakes.insert(address, r);
            }
            None => {
                self.stakes.remove(&address);
            }
        }
        self.touch(StateKey::Stake(address));
    }

    /// Adds `delta` (positive or negative, floored at 0) to a reputation, decaying it first.
    pub(crate) fn adjust_reputation(&mut self, address: Address, domain: &DomainId, up: u64, down: u64) {
        let height = self.meta.height;
        let half_life = self.params.reputation_half_life_blocks;
        let key = (address, domain.clone());
        let current = self.reputation.get(&key).map_or(0, |r| r.at(height, half_life));
        let value = current.saturating_add(up).saturating_sub(down);
        self.reputation.insert(key, Reputation { value, updated: height });
        self.touch(StateKey::Reputation(address, domain.clone()));
    }

    pub(crate) fn set_domain(&mut self, id: DomainId, domain: DomainState) {
        self.domains.insert(id.clone(), domain);
        self.touch(StateKey::Domain(id));
    }

    pub(crate) fn set_channel(&mut self, id: Hash, channel: Option<Channel>) {
        if let Some(old) = self.channels.get(&id) {
            self.channel_expiries.remove(&(old.expiry_height, id));
            if let Some(c) = &old.closing {
                self.channel_deadlines.remove(&(c.deadline, id));
            }
        }
        match channel {
            Some(c) => {
                match &c.closing {
                    Some(cl) => {
                        self.channel_deadlines.insert((cl.deadline, id));
                    }
                    None => {
                        self.channel_expiries.insert((c.expiry_height, id));
                    }
                }
                self.channels.insert(id, c);
            }
            None => {
                self.channels.remove(&id);
            }
        }
        self.touch(StateKey::Channel(id));
    }

    /// Writes a dispute, keeping its draw and deadline entries in step.
    pub(crate) fn set_dispute(&mut self, id: Hash, dispute: Option<crate::disputes::Dispute>) {
        let window = self.params.dispute_window_blocks;
        if let Some(old) = self.disputes.get(&id) {
            self.dispute_draws.remove(&(old.draw_height(), id));
            self.dispute_deadlines.remove(&(old.deadline(window), id));
        }
        match dispute {
            Some(d) => {
                if d.outcome.is_none() {
                    if d.quorum.is_empty() {
                        self.dispute_draws.insert((d.draw_height(), id));
                    }
                    self.dispute_deadlines.insert((d.deadline(window), id));
                }
                self.disputes.insert(id, d);
            }
            None => {
                self.disputes.remove(&id);
            }
        }
        self.touch(StateKey::Dispute(id));
    }

    pub(crate) fn burn(&mut self, amount: Amount) -> Option<()> {
        self.meta.supply.burned = self.meta.supply.burned.checked_add(amount)?;
        Some(())
    }

    /// Takes up to `amount` from an account's stake, then from its unbonding entries (earliest
    /// release first), and burns it. Returns what was taken.
    pub(crate) fn burn_stake(&mut self, address: Address, amount: Amount) -> Option<Amount> {
        let mut left = amount;
        if let Some(mut s) = self.stakes.get(&address).cloned() {
            let take = left.min(s.amount);
            s.amount = s.amount.checked_sub(take)?;
            left = left.checked_sub(take)?;
            self.set_stake(address, Some(s));
        }
        let entries: Vec<_> =
            self.unbonding.iter().filter(|((_, a), _)| *a == address).map(|(k, v)| (*k, *v)).collect();
        for (key, value) in entries {
            if left == Amount::ZERO {
                break;
            }
            let take = left.min(value);
            left = left.checked_sub(take)?;
            let rest = value.checked_sub(take)?;
            if rest == Amount::ZERO {
                self.unbonding.remove(&key);
            } else {
                self.unbonding.insert(key, rest);
            }
            self.touch(StateKey::Unbonding(key.0, key.1));
        }
        let taken = amount.checked_sub(left)?;
        self.burn(taken)?;
        Some(taken)
    }

    /// The height after which finality records for the checkpoint at `target` are dropped: it
    /// has then left the recent window, so no vote for it can be included any more.
    pub(crate) fn finality_expiry(&self, target: u64) -> u64 {
        target.saturating_add(self.params.history_len())
    }

    /// What a slash can reach of `address`: its stake plus its unbonding entries.
    pub fn slashable(&self, address: &Address) -> u128 {
        let stake = self.stakes.get(address).map_or(0, |s| s.amount.0);
        let pending: u128 = self.unbonding.iter().filter(|((_, a), _)| a == address).map(|(_, v)| v.0).sum();
        stake.saturating_add(pending)
    }

    /// Total active stake: the weight finality thresholds are taken of (validators' only).
    pub fn active_stake(&self) -> u128 {
        self.stakes.values().filter(|s| s.validates()).fold(0u128, |t, s| t.saturating_add(s.amount.0))
    }

    /// Stake that voted the finality link `source → target` on this chain so far.
    pub fn finality_tally(&self, source: u64, target: u64) -> u128 {
        self.finality_tallies.get(&(source, target)).copied().unwrap_or(0)
    }

    /// The id of `voter`'s finality vote counted for the checkpoint at `height`, if any.
    pub fn finality_voted(&self, voter: &Address, height: u64) -> Option<Hash> {
        self.finality_voted.get(&(*voter, height)).copied()
    }

    /// Whether a finality offence has been slashed already.
    pub fn finality_slashed(&self, offence: &Hash) -> bool {
        self.finality_slashed.contains(offence)
    }

    /// Remembers `key` until `expiry` (then [`State::prune_expired`] drops it).
    pub(crate) fn expire_at(&mut self, expiry: u64, key: StateKey) {
        self.expiries.insert((expiry, key.clone()));
        self.touch(key);
    }

    /// Drops remembered commits and parameter hashes whose reference window has closed.
    pub(crate) fn prune_expired(&mut self, height: u64) {
        while let Some((expiry, key)) = self.expiries.get_min().cloned() {
            if expiry >= height {
                break;
            }
            self.expiries.remove(&(expiry, key.clone()));
            match &key {
                StateKey::Certified(c) => {
                    self.certified.remove(c);
                }
                StateKey::ParamsSeen(d, p) => {
                    self.params_seen.remove(&(d.clone(), *p));
                }
                StateKey::Committed(c) => {
                    self.committed.remove(c);
                }
                StateKey::FinalityTally(a, b) => {
                    self.finality_tallies.remove(&(*a, *b));
                }
                StateKey::FinalityVoted(v, h) => {
                    self.finality_voted.remove(&(*v, *h));
                }
                _ => {}
            }
            self.touch(key);
        }
    }

    pub(crate) fn snapshot_recent(&mut self, hash: Hash) {
        let eligible = self
            .evaluators
            .iter()
            .map(|(domain, set)| (domain.clone(), crate::quorum::eligible_at(self, domain, set.iter())))
            .filter(|(_, list)| !list.is_empty())
            .collect();
        self.recent.push_back(RecentBlock {
            height: self.meta.height,
            hash,
            timestamp_ms: self.meta.timestamp_ms,
            beacon: self.meta.beacon,
            eligible,
        });
        while self.recent.len() as u64 > self.params.history_len() {
            self.recent.pop_front();
        }
    }
}
