//! Genesis: the chain id, allocations, initial stakes and roles, registered domains and
//! protocol parameters a chain starts from.

use doin_primitives::{
    Address, Amount, Block, BlockBody, BlockKind, BoundedVec, DomainId, DomainSpec, Hash, HeaderBody, Roles,
    Signature, Signed, block::HEADER_VERSION, tx::Capabilities,
};
use serde::{Deserialize, Serialize};

use crate::{
    params::{ParamsError, ProtocolParams},
    state::{
        Account, ChainMeta, Checkpoint, Difficulty, DomainState, DomainStats, StakeRecord, State, StateKey,
        Supply, Tip,
    },
};

/// A funded account at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Account.
    pub address: Address,
    /// Spendable balance.
    pub balance: Amount,
}

/// A stake at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisStake {
    /// Account.
    pub address: Address,
    /// Bonded amount.
    pub amount: Amount,
    /// Roles.
    pub roles: Roles,
    /// Domains served.
    pub domains: Vec<DomainId>,
}

/// A domain registered at genesis.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenesisDomain {
    /// The spec.
    pub spec: DomainSpec,
    /// Bounty escrow.
    #[serde(default)]
    pub bounty: Amount,
}

/// Everything a chain starts from (JSON in `genesis.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisSpec {
    /// Chain id (replay protection).
    pub chain_id: u64,
    /// Genesis timestamp, ms.
    pub timestamp_ms: u64,
    /// Protocol parameters.
    #[serde(default)]
    pub params: ProtocolParams,
    /// Funded accounts.
    #[serde(default)]
    pub allocations: Vec<Allocation>,
    /// Initial stakes.
    #[serde(default)]
    pub stakes: Vec<GenesisStake>,
    /// Registered domains.
    #[serde(default)]
    pub domains: Vec<GenesisDomain>,
}

/// A genesis spec is inconsistent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// A parameter is out of range.
    #[error(transparent)]
    Params(#[from] ParamsError),
    /// Anything else, described.
    #[error("invalid genesis: {0}")]
    Invalid(String),
    /// The state tree failed.
    #[error(transparent)]
    Tree(#[from] crate::tree::TreeError),
}

impl GenesisSpec {
    /// Builds the genesis state and block.
    pub fn build(&self) -> Result<(State, Block), GenesisError> {
        self.params.validate()?;
        let invalid = |m: String| GenesisError::Invalid(m);
        let params = &self.params;
        let mut s = State::empty(
            self.params.clone(),
            ChainMeta {
                chain_id: self.chain_id,
                height: 0,
                parent_hash: Hash::ZERO,
                timestamp_ms: self.timestamp_ms,
                cumulative_work: 0,
                base_fee: params.initial_base_fee,
                difficulty: Difficulty {
                    threshold: params.initial_threshold,
                    ema_block_time_ms: params.target_block_time_ms,
                    work_blocks: 0,
                    last_work_ms: self.timestamp_ms,
                    epoch_start_ms: self.timestamp_ms,
                },
                finalized: Checkpoint::default(),
                justified: Checkpoint::default(),
                supply: Supply::default(),
                beacon: Hash::of_parts(&[
                    b"doin/beacon/genesis",
                    &self.chain_id.to_le_bytes(),
                    &self.timestamp_ms.to_le_bytes(),
                ]),
                commits_in_tip: 0,
            },
        );
        let mut minted = Amount::ZERO;
        let mut mint = |amount: Amount| -> Result<(), GenesisError> {
            minted = minted.checked_add(amount).ok_or_else(|| invalid("total supply overflows".into()))?;
            Ok(())
        };
        for d in &self.domains {
            d.spec.validate().map_err(|e| invalid(e.to_string()))?;
            if s.domains.contains_key(&d.spec.id) {
                return Err(invalid(format!("domain {:?} is listed twice", d.spec.id)));
            }
            mint(d.bounty)?;
            s.set_domain(
                d.spec.id.clone(),
                DomainState {
                    spec: d.spec.clone(),
                    registered_by: Address::ZERO,
                    registered_at: 0,
                    champion: None,
                    bounty_left: d.bounty,
                    stats: DomainStats::default(),
                    federated: None,
                    past_models: Vec::new(),
                    dispute_absent: Vec::new(),
                },
            );
        }
        for a in &self.allocations {
            mint(a.balance)?;
            let mut acc = s.accounts.get(&a.address).cloned().unwrap_or(Account::default());
            acc.balance =
                acc.balance.checked_add(a.balance).ok_or_else(|| invalid("balance overflows".into()))?;
            s.set_account(a.address, acc);
        }
        for st in &self.stakes {
            if s.stakes.contains_key(&st.address) {
                return Err(invalid(format!("stake for {} is listed twice", st.address)));
            }
            for d in &st.domains {
                if !s.domains.contains_key(d) {
                    return Err(invalid(format!("stake of {} names unknown domain {d:?}", st.address)));
                }
            }
            mint(st.amount)?;
            let domains = BoundedVec::try_from_vec(st.domains.clone())
                .map_err(|e| invalid(format!("stake of {}: {e}", st.address)))?;
            let record = StakeRecord {
                amount: st.amount,
                roles: st.roles,
                domains,
                capabilities: Capabilities::default(),
                ticket: Hash::ZERO,
                since: 0,
            };
            s.set_stake(st.address, Some(record));
        }
        s.meta.supply.minted = minted;
        s.touch(StateKey::Meta);
        s.touch(StateKey::Params);
        let state_root = s.commit_tree()?;
        let body = BlockBody::default();
        let header = HeaderBody {
            version: HEADER_VERSION,
            chain_id: self.chain_id,
            height: 0,
            parent_hash: Hash::ZERO,
            timestamp_ms: self.timestamp_ms,
            generator: Address::ZERO,
            tx_root: body.tx_root(),
            cert_root: body.cert_root(),
            state_root,
            work: 0,
            threshold: params.initial_threshold,
            cumulative_work: 0,
            base_fee: params.initial_base_fee,
            kind: BlockKind::Heartbeat,
            vrf: doin_primitives::vrf::VrfProof::default(),
        };
        // Genesis is not signed: it is fixed by the spec every node starts from.
        let block = Block { header: Signed { body: header, signature: Signature::default() }, body };
        let hash = block.hash();
        s.tip = Tip { hash, height: 0 };
        s.snapshot_recent(hash);
        Ok((s, block))
    }
}
