//! Protocol parameters, fixed at genesis. Defaults are mainnet-like (600 s blocks, as the Python
//! system); devnets override them in their genesis spec.

use borsh::{BorshDeserialize, BorshSerialize};
use doin_primitives::{Amount, FIXED_ONE};
use serde::{Deserialize, Serialize};

/// Every consensus parameter. Part of the state root.
#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProtocolParams {
    /// Target time between work blocks, ms (`target_block_time`). Default 600 000.
    pub target_block_time_ms: u64,
    /// Work threshold of the first block, fixed point (`initial_threshold`). Default 1e-6.
    #[serde(with = "doin_primitives::units::u128_json")]
    pub initial_threshold: u128,
    /// Lowest threshold, fixed point. Default 1e-9 (one unit).
    #[serde(with = "doin_primitives::units::u128_json")]
    pub min_threshold: u128,
    /// Highest threshold, fixed point. Default 10^6.
    #[serde(with = "doin_primitives::units::u128_json")]
    pub max_threshold: u128,
    /// Work blocks per difficulty epoch. Default 100.
    pub epoch_blocks: u64,
    /// A heartbeat block may follow its parent after this long, ms. Default 1 800 000.
    pub max_block_interval_ms: u64,
    /// Length of one heartbeat leader slot, ms. Default 30 000.
    pub heartbeat_slot_ms: u64,
    /// Blocks between finality checkpoints: the epochs stakers vote on (`finality`).
    /// Default 6.
    pub finality_depth: u64,
    /// Blocks between anchored checkpoints. Default 100.
    pub anchor_interval: u64,
    /// How many blocks back a commit's reference block may lie. Default 32.
    pub max_reference_age: u64,
    /// Length of one seal-leader slot, ms: a block that includes commits, and the block after
    /// it, must come from the stake-weighted leader of its slot (`block::seal_leader`), which may
    /// produce it before `max_block_interval`. Default 2000.
    pub seal_slot_ms: u64,
    /// Commits per block at most. Default 64.
    pub max_block_commits: u32,
    /// Commits of one optimizer per block at most. Default 4.
    pub max_account_commits: u32,
    /// Off-chain: how long a quorum may take before escalation, ms. Default 120 000.
    pub quorum_timeout_ms: u64,
    /// Stake an evaluator needs to be drawn. Default 1 DOIN.
    pub min_evaluator_stake: Amount,
    /// Reputation an evaluator needs to be drawn, fixed point. Default 0.
    pub min_reputation: u64,
    /// Bond an optimizer's stake must cover for its certificate to be included. Default 1 DOIN.
    pub optimae_bond: Amount,
    /// Share of the bond burned on a rejected optimae, parts per million. Default 500 000.
    pub reject_burn_ppm: u32,
    /// Share of stake burned for a double vote, parts per million. Default 100 000.
    pub double_vote_slash_ppm: u32,
    /// Share of stake burned for a double or surround finality vote, parts per million.
    /// Default 500 000.
    pub finality_slash_ppm: u32,
    /// Blocks before unstaked coins are spendable. Default 1008.
    pub unbonding_blocks: u64,
    /// Reputation half-life in blocks. Default 1000.
    pub reputation_half_life_blocks: u64,
    /// Reputation change for an accepted optimae, fixed point. Default +1.0.
    pub rep_accept: u64,
    /// Reputation change for a rejected optimae, fixed point. Default −3.0.
    pub rep_reject: u64,
    /// Reputation change for a vote that agrees with the certificate median. Default +0.4.
    pub rep_vote_agree: u64,
    /// Reputation change for an outlying vote. Default −2.0.
    pub rep_vote_outlier: u64,
    /// Smallest reputation factor of a newcomer optimizer, fixed point. Default 0.1.
    pub rep_factor_floor: u64,
    /// Largest relative improvement one certificate may count, fixed point. Default 10.0.
    #[serde(with = "doin_primitives::units::u128_json")]
    pub max_improvement: u128,
    /// Block reward before any halving. Default 50 DOIN.
    pub initial_reward: Amount,
    /// Blocks between halvings. Default 210 000.
    pub halving_interval: u64,
    /// Whether the EIP-1559 base fee moves with demand (`fee_market_enabled`). Default true.
    pub fee_market_enabled: bool,
    /// Base fee per weight unit of the first block. Default 10 base units.
    pub initial_base_fee: Amount,
    /// Lowest base fee. Default 1 base unit.
    pub min_base_fee: Amount,
    /// Weight limit of a block; the base fee targets half of it. Default 16 000 000.
    pub max_block_weight: u64,
    /// Transactions per block at most. Default 10 000.
    pub max_block_txs: u32,
    /// Certificates per block at most. Default 64.
    pub max_block_certs: u32,
    /// Encoded block size at most, bytes. Default 4 MiB.
    pub max_block_bytes: u32,
    /// Blocks a payer-initiated channel close can be challenged. Default 100.
    pub challenge_window_blocks: u64,
    /// Bond a disputer of an inference receipt locks: back when upheld or undecided, to the
    /// server when refused. Default 1 DOIN.
    pub dispute_bond: Amount,
    /// Share of a server's stake slashed for an upheld dispute, parts per million (half to the
    /// disputer, half burned). Default 100 000.
    pub dispute_slash_ppm: u32,
    /// Blocks a displaced champion's model stays disputable, and a dispute's quorum has to
    /// vote. Default 100.
    pub dispute_window_blocks: u64,
}

impl Default for ProtocolParams {
    fn default() -> Self {
        let one = FIXED_ONE as u64;
        Self {
            target_block_time_ms: 600_000,
            initial_threshold: 1_000,
            min_threshold: 1,
            max_threshold: 1_000_000 * FIXED_ONE as u128,
            epoch_blocks: 100,
            max_block_interval_ms: 1_800_000,
            heartbeat_slot_ms: 30_000,
            finality_depth: 6,
            anchor_interval: 100,
            max_reference_age: 32,
            seal_slot_ms: 2_000,
            max_block_commits: 64,
            max_account_commits: 4,
            quorum_timeout_ms: 120_000,
            min_evaluator_stake: Amount::doin(1),
            min_reputation: 0,
            optimae_bond: Amount::doin(1),
            reject_burn_ppm: 500_000,
            double_vote_slash_ppm: 100_000,
            finality_slash_ppm: 500_000,
            unbonding_blocks: 1_008,
            reputation_half_life_blocks: 1_000,
            rep_accept: one,
            rep_reject: 3 * one,
            rep_vote_agree: 4 * one / 10,
            rep_vote_outlier: 2 * one,
            rep_factor_floor: one / 10,
            max_improvement: 10 * FIXED_ONE as u128,
            initial_reward: Amount::doin(50),
            halving_interval: 210_000,
            fee_market_enabled: true,
            initial_base_fee: Amount(10),
            min_base_fee: Amount(1),
            max_block_weight: 16_000_000,
            max_block_txs: 10_000,
            max_block_certs: 64,
            max_block_bytes: 4 * 1024 * 1024,
            challenge_window_blocks: 100,
            dispute_bond: Amount::doin(1),
            dispute_slash_ppm: 100_000,
            dispute_window_blocks: 100,
        }
    }
}

/// A parameter is outside its allowed range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("protocol parameter {name} is invalid: {detail}")]
pub struct ParamsError {
    /// Parameter name.
    pub name: &'static str,
    /// What is allowed.
    pub detail: &'static str,
}

impl ProtocolParams {
    /// Checks every parameter's range.
    pub fn validate(&self) -> Result<(), ParamsError> {
        let check = |ok: bool, name: &'static str, detail: &'static str| {
            if ok { Ok(()) } else { Err(ParamsError { name, detail }) }
        };
        check(self.target_block_time_ms >= 100, "target_block_time_ms", "must be at least 100")?;
        check(self.min_threshold >= 1, "min_threshold", "must be at least 1")?;
        check(
            self.min_threshold <= self.initial_threshold && self.initial_threshold <= self.max_threshold,
            "initial_threshold",
            "must lie in [min_threshold, max_threshold]",
        )?;
        check(self.epoch_blocks >= 1, "epoch_blocks", "must be at least 1")?;
        check(self.heartbeat_slot_ms >= 1, "heartbeat_slot_ms", "must be at least 1")?;
        check(self.seal_slot_ms >= 1, "seal_slot_ms", "must be at least 1")?;
        check(
            (1..=doin_primitives::block::MAX_BLOCK_COMMITS as u32).contains(&self.max_block_commits),
            "max_block_commits",
            "must be in 1..=256",
        )?;
        check(
            (1..=self.max_block_commits).contains(&self.max_account_commits),
            "max_account_commits",
            "must be in 1..=max_block_commits",
        )?;
        check(self.finality_depth >= 1, "finality_depth", "must be at least 1")?;
        check(self.anchor_interval >= 1, "anchor_interval", "must be at least 1")?;
        check((1..=1024).contains(&self.max_reference_age), "max_reference_age", "must be in 1..=1024")?;
        check(self.reject_burn_ppm <= 1_000_000, "reject_burn_ppm", "must be at most 1 000 000")?;
        check(self.double_vote_slash_ppm <= 1_000_000, "double_vote_slash_ppm", "must be at most 1 000 000")?;
        check(self.finality_slash_ppm <= 1_000_000, "finality_slash_ppm", "must be at most 1 000 000")?;
        check(self.dispute_slash_ppm <= 1_000_000, "dispute_slash_ppm", "must be at most 1 000 000")?;
        check(self.dispute_bond.0 >= 1, "dispute_bond", "must be at least 1 base unit")?;
        check(
            (3..=100_000).contains(&self.dispute_window_blocks),
            "dispute_window_blocks",
            "must be in 3..=100000",
        )?;
        check(self.reputation_half_life_blocks >= 1, "reputation_half_life_blocks", "must be at least 1")?;
        check(
            self.rep_factor_floor >= 1 && self.rep_factor_floor <= FIXED_ONE as u64,
            "rep_factor_floor",
            "must be in (0, 1e9]",
        )?;
        check(self.halving_interval >= 1, "halving_interval", "must be at least 1")?;
        check(self.min_base_fee.0 >= 1, "min_base_fee", "must be at least 1 base unit")?;
        check(self.initial_base_fee >= self.min_base_fee, "initial_base_fee", "must be >= min_base_fee")?;
        check(self.max_block_weight >= 2, "max_block_weight", "must be at least 2")?;
        check(
            self.max_block_txs as usize <= doin_primitives::block::MAX_BLOCK_TXS,
            "max_block_txs",
            "must be at most 16384",
        )?;
        check(
            self.max_block_certs as usize <= doin_primitives::block::MAX_BLOCK_CERTS,
            "max_block_certs",
            "must be at most 256",
        )?;
        check(
            self.max_block_bytes as usize <= doin_primitives::block::MAX_BLOCK_BYTES,
            "max_block_bytes",
            "must be at most 8 MiB",
        )?;
        Ok(())
    }

    /// Blocks of history a state keeps for reference blocks and finality.
    pub fn history_len(&self) -> u64 {
        self.max_reference_age.max(self.finality_depth.saturating_mul(2)).saturating_add(1)
    }
}
