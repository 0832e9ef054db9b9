//! A round's reward pool split among its contributors (the Co-Train seed's formula), integer
//! only and deterministic, so that any node recomputes it from the round's published inputs.
//!
//! Each contributor's score, in parts per million:
//! `40 % compute + 35 % quality + 15 % data + 10 % uptime`, where compute and data are relative
//! to the round's largest (`x · 10⁶ / max`), quality is the contribution's loss-change score
//! relative to the round's best positive one, and uptime is a share in ppm. **A contribution
//! whose quality is not positive scores 0** (dropped, harmful or worthless updates earn nothing,
//! whatever compute they declare).
//!
//! The pool: 80 % base, split in proportion to scores; 10 % among the top quarter by score
//! (at least one contributor; ties by address); 10 % among contributions of quality ≥ 90 %, in
//! proportion to scores. A bonus nobody qualifies for goes to the base. Integer division dust goes
//! to the highest scorer, so the payouts always sum to the pool exactly.

use doin_primitives::Address;

/// Parts per million.
pub const PPM: u64 = 1_000_000;

/// One contribution's published inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inputs {
    /// The contributor.
    pub contributor: Address,
    /// Local training time, ms (measured by the node where it can be, else declared and capped).
    pub compute_ms: u64,
    /// Quality: the loss-change score in micro-nats (negative: harmful).
    pub quality_micro: i64,
    /// Bytes of the update sent.
    pub bytes: u64,
    /// Share of the round it was reachable, ppm.
    pub uptime_ppm: u64,
}

/// One contributor's score (ppm) and payout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Payout {
    /// The contributor.
    pub contributor: Address,
    /// Its score, ppm.
    pub score_ppm: u64,
    /// Its share of the pool.
    pub amount: u128,
}

fn relative(x: u64, max: u64) -> u64 {
    if max == 0 { 0 } else { (u128::from(x) * u128::from(PPM) / u128::from(max)) as u64 }
}

/// Scores, ppm, of each contribution (in input order).
pub fn scores(inputs: &[Inputs]) -> Vec<u64> {
    let max_compute = inputs.iter().map(|i| i.compute_ms).max().unwrap_or(0);
    let max_bytes = inputs.iter().map(|i| i.bytes).max().unwrap_or(0);
    let best = inputs.iter().map(|i| i.quality_micro).max().unwrap_or(0).max(0) as u64;
    inputs
        .iter()
        .map(|i| {
            if i.quality_micro <= 0 {
                return 0;
            }
            let quality = relative(i.quality_micro as u64, best);
            (40 * relative(i.compute_ms, max_compute)
                + 35 * quality
                + 15 * relative(i.bytes, max_bytes)
                + 10 * i.uptime_ppm.min(PPM))
                / 100
        })
        .collect()
}

/// Splits `amount` in proportion to `weights` (integer shares, rounded down).
fn split(amount: u128, weights: &[u64]) -> Vec<u128> {
    let total: u128 = weights.iter().map(|w| u128::from(*w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    weights.iter().map(|w| amount * u128::from(*w) / total).collect()
}

/// Splits `pool` among the round's contributions.
pub fn payouts(pool: u128, inputs: &[Inputs]) -> Vec<Payout> {
    let s = scores(inputs);
    let n = inputs.len();
    let mut amounts = vec![0u128; n];
    if s.iter().all(|v| *v == 0) {
        return inputs
            .iter()
            .map(|i| Payout { contributor: i.contributor, score_ppm: 0, amount: 0 })
            .collect();
    }
    let (top_pool, quality_pool) = (pool / 10, pool / 10);
    // The top quarter by score (ties by address), scoring contributions only.
    let mut order: Vec<usize> = (0..n).filter(|i| s[*i] > 0).collect();
    order.sort_by(|a, b| s[*b].cmp(&s[*a]).then(inputs[*a].contributor.cmp(&inputs[*b].contributor)));
    let top: Vec<usize> = order.iter().copied().take(order.len().div_ceil(4).max(1)).collect();
    let best = inputs.iter().map(|i| i.quality_micro).max().unwrap_or(0).max(0) as u64;
    let high: Vec<usize> = (0..n)
        .filter(|i| s[*i] > 0 && relative(inputs[*i].quality_micro.max(0) as u64, best) >= 900_000)
        .collect();
    let mut base = pool - top_pool - quality_pool;
    if top.is_empty() {
        base += top_pool;
    } else {
        let share = top_pool / top.len() as u128;
        top.iter().for_each(|i| amounts[*i] += share);
        base += top_pool - share * top.len() as u128;
    }
    if high.is_empty() {
        base += quality_pool;
    } else {
        let weights: Vec<u64> = high.iter().map(|i| s[*i]).collect();
        let parts = split(quality_pool, &weights);
        high.iter().zip(&parts).for_each(|(i, p)| amounts[*i] += p);
        base += quality_pool - parts.iter().sum::<u128>();
    }
    let parts = split(base, &s);
    amounts.iter_mut().zip(&parts).for_each(|(a, p)| *a += p);
    // Dust to the highest scorer.
    let paid: u128 = amounts.iter().sum();
    if let Some(first) = order.first() {
        amounts[*first] += pool - paid;
    }
    inputs
        .iter()
        .zip(s.iter().zip(amounts))
        .map(|(i, (score, amount))| Payout { contributor: i.contributor, score_ppm: *score, amount })
        .collect()
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn input(who: u8, compute_ms: u64, quality_micro: i64, bytes: u64, uptime_ppm: u64) -> Inputs {
        Inputs { contributor: Address([who; 32]), compute_ms, quality_micro, bytes, uptime_ppm }
    }

    /// A worked example: two equal contributions and one harmful; the harmful one earns
    /// nothing whatever it declares, the equal ones split the pool evenly (the top-quarter bonus
    /// goes to one of them by address, the only asymmetry).
    #[test]
    fn the_formula_on_a_worked_example() {
        let inputs =
            [input(1, 1000, 500, 4000, PPM), input(2, 1000, 500, 4000, PPM), input(3, 5000, -900, 9000, PPM)];
        let p = payouts(1_000_000, &inputs);
        // Scores: 40 % · (1000/5000) + 35 % · 1 + 15 % · (4000/9000) + 10 % · 1.
        let expected = (40 * 200_000 + 35 * PPM + 15 * 444_444 + 10 * PPM) / 100;
        assert_eq!(p[0].score_ppm, expected);
        assert_eq!(p[1].score_ppm, expected);
        assert_eq!((p[2].score_ppm, p[2].amount), (0, 0));
        // Base 800 000 split evenly, quality 100 000 split evenly, top quarter (one) 100 000.
        assert_eq!(p[0].amount, 400_000 + 50_000 + 100_000);
        assert_eq!(p[1].amount, 400_000 + 50_000);
    }

    /// Any inputs: payouts sum to the pool exactly, nobody with a non-positive quality earns,
    /// and a better quality never earns less, other inputs equal.
    #[test]
    fn payouts_conserve_the_pool_and_never_pay_harm() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..500 {
            let n = rng.random_range(1..20usize);
            let inputs: Vec<Inputs> = (0..n)
                .map(|i| {
                    input(
                        i as u8,
                        rng.random_range(0..100_000),
                        rng.random_range(-50_000..50_000),
                        rng.random_range(0..10_000_000),
                        rng.random_range(0..=PPM),
                    )
                })
                .collect();
            let pool = rng.random_range(0..u128::from(u64::MAX));
            let p = payouts(pool, &inputs);
            let paid: u128 = p.iter().map(|x| x.amount).sum();
            let anyone = inputs.iter().any(|i| i.quality_micro > 0);
            assert_eq!(paid, if anyone { pool } else { 0 }, "{inputs:?}");
            for (i, x) in inputs.iter().zip(&p) {
                if i.quality_micro <= 0 {
                    assert_eq!(x.amount, 0, "{inputs:?}");
                }
            }
        }
        let a = payouts(
            1_000_000,
            &[input(1, 10, 100, 10, PPM), input(2, 10, 200, 10, PPM), input(3, 10, 300, 10, PPM)],
        );
        assert!(a[0].amount <= a[1].amount && a[1].amount <= a[2].amount, "{a:?}");
    }
}
