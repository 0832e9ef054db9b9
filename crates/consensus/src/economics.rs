//! Fees, rewards and difficulty: the chain's integer economics (DESIGN §4.2–4.3).

use doin_primitives::Amount;

use crate::{params::ProtocolParams, state::Difficulty};

/// The per-unit fee a transaction pays: `min(max_fee, base_fee + priority_fee)`, of which
/// `base_fee` is burned and the rest tipped. `None` if `max_fee < base_fee`.
pub fn fee_per_unit(max_fee: Amount, priority_fee: Amount, base_fee: Amount) -> Option<(Amount, Amount)> {
    if max_fee < base_fee {
        return None;
    }
    let total = max_fee.min(base_fee.checked_add(priority_fee).unwrap_or(max_fee));
    Some((base_fee, total.checked_sub(base_fee)?))
}

/// EIP-1559 base fee of the next block: moves toward a target of half the weight limit by at most
/// 1/8 per block, never below `min_base_fee`.
pub fn next_base_fee(params: &ProtocolParams, base_fee: Amount, weight_used: u64) -> Amount {
    if !params.fee_market_enabled {
        return params.initial_base_fee;
    }
    let target = (params.max_block_weight / 2).max(1) as u128;
    let used = weight_used as u128;
    let base = base_fee.0;
    let next = if used > target {
        let delta = (base.saturating_mul(used - target) / target / 8).max(1);
        base.saturating_add(delta)
    } else {
        base - base.saturating_mul(target - used) / target / 8
    };
    Amount(next.max(params.min_base_fee.0))
}

/// The block reward at `height`: `initial_reward` halved every `halving_interval` blocks.
pub fn block_reward(params: &ProtocolParams, height: u64) -> Amount {
    let halvings = height / params.halving_interval.max(1);
    if halvings >= 128 { Amount::ZERO } else { Amount(params.initial_reward.0 >> halvings) }
}

/// The 65 / 30 / 5 split of a work block's reward: (optimizers, evaluators, generator).
pub fn split_reward(reward: Amount) -> (Amount, Amount, Amount) {
    // floor(r × p / 100) without overflow for any u128 reward.
    let share = |p: u128| reward.0 / 100 * p + reward.0 % 100 * p / 100;
    let optimizers = share(65);
    let evaluators = share(30);
    (Amount(optimizers), Amount(evaluators), Amount(reward.0 - optimizers - evaluators))
}

/// Difficulty after a work block at `timestamp_ms`: EMA of block times (α = 1/10), a
/// per-block correction clamped to ±2 %, an epoch retarget every `epoch_blocks` work blocks
/// clamped to ×4 either way, bounded to `[min_threshold, max_threshold]`.
pub fn next_difficulty(params: &ProtocolParams, d: &Difficulty, timestamp_ms: u64) -> Difficulty {
    let target = params.target_block_time_ms.max(1) as u128;
    let elapsed = timestamp_ms.saturating_sub(d.last_work_ms) as u128;
    let ema = ((elapsed + 9 * d.ema_block_time_ms as u128) / 10).max(1);
    // Blocks faster than target raise the threshold. Factor in per-mille, clamped to ±2 %.
    let factor = (target * 1000 / ema).clamp(980, 1020);
    let mut threshold = d.threshold.saturating_mul(factor) / 1000;
    let work_blocks = d.work_blocks.saturating_add(1);
    let mut epoch_start_ms = d.epoch_start_ms;
    if work_blocks.is_multiple_of(params.epoch_blocks.max(1)) {
        let actual = (timestamp_ms.saturating_sub(d.epoch_start_ms) as u128).max(1);
        let expected = target * params.epoch_blocks as u128;
        // threshold × expected / actual, clamped to [1/4, 4].
        let retarget = threshold.saturating_mul(expected) / actual;
        threshold = retarget.clamp(threshold / 4, threshold.saturating_mul(4));
        epoch_start_ms = timestamp_ms;
    }
    Difficulty {
        threshold: threshold.clamp(params.min_threshold, params.max_threshold),
        ema_block_time_ms: ema.min(u64::MAX as u128) as u64,
        work_blocks,
        last_work_ms: timestamp_ms,
        epoch_start_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fee_split() {
        assert_eq!(fee_per_unit(Amount(20), Amount(3), Amount(10)), Some((Amount(10), Amount(3))));
        assert_eq!(fee_per_unit(Amount(12), Amount(5), Amount(10)), Some((Amount(10), Amount(2))));
        assert_eq!(fee_per_unit(Amount(9), Amount(5), Amount(10)), None);
    }

    #[test]
    fn base_fee_moves_toward_target() {
        let p = ProtocolParams::default();
        let full = next_base_fee(&p, Amount(800), p.max_block_weight);
        assert_eq!(full, Amount(900), "a full block raises by 1/8");
        let empty = next_base_fee(&p, Amount(800), 0);
        assert_eq!(empty, Amount(700), "an empty block lowers by 1/8");
        assert_eq!(next_base_fee(&p, Amount(800), p.max_block_weight / 2), Amount(800));
        assert_eq!(next_base_fee(&p, Amount(1), 0), Amount(1), "floor");
        let fixed = ProtocolParams { fee_market_enabled: false, ..p };
        assert_eq!(next_base_fee(&fixed, Amount(800), 0), fixed.initial_base_fee);
    }

    #[test]
    fn halving_and_split() {
        let p = ProtocolParams::default();
        assert_eq!(block_reward(&p, 1), Amount::doin(50));
        assert_eq!(block_reward(&p, 210_000), Amount::doin(25));
        assert_eq!(block_reward(&p, 420_000), Amount(Amount::doin(25).0 / 2));
        assert_eq!(block_reward(&p, 210_000 * 200), Amount::ZERO);
        let (o, e, g) = split_reward(Amount::doin(50));
        assert_eq!((o, e, g), (Amount(32_500_000_000), Amount(15_000_000_000), Amount(2_500_000_000)));
        let (o, e, g) = split_reward(Amount(7));
        assert_eq!(o.0 + e.0 + g.0, 7);
        let (o, e, g) = split_reward(Amount(u128::MAX));
        assert_eq!(o.0.checked_add(e.0).and_then(|x| x.checked_add(g.0)), Some(u128::MAX));
    }

    #[test]
    fn difficulty_clamps() {
        let p = ProtocolParams { target_block_time_ms: 1000, epoch_blocks: 100, ..Default::default() };
        let d = Difficulty {
            threshold: 1_000_000,
            ema_block_time_ms: 1000,
            work_blocks: 0,
            last_work_ms: 0,
            epoch_start_ms: 0,
        };
        // A block far too fast raises the threshold by at most 2 %.
        let fast = next_difficulty(&p, &d, 1);
        assert_eq!(fast.threshold, 1_020_000);
        let slow = next_difficulty(&p, &d, 1_000_000);
        assert_eq!(slow.threshold, 980_000);
        // Epoch retarget clamps to ×4.
        let mut e = d.clone();
        e.work_blocks = 99;
        let retarget = next_difficulty(&p, &e, 10);
        assert_eq!(retarget.threshold, 1_020_000 * 4);
        assert_eq!(retarget.epoch_start_ms, 10);
    }
}
