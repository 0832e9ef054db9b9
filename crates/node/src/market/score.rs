//! The matching score (`docs/design.md` §22e): which admitted provider a job goes to.
//!
//! A provider is **eligible** for a job when its latest challenge passed and is recent, it
//! serves the job's domain, its *measured* cores and memory reach the job's minimums, and its
//! price is within the job's fee. Among the eligible, the highest score wins (ties: the lower
//! address), each term in `[0, 1]`:
//!
//! | term | weight | value |
//! |---|---|---|
//! | fit | 0.35 | `min_cores / cores` (the smallest machine that fits; 1 when `min_cores` is 0) |
//! | price | 0.25 | `1 − price / fee` (1 for a free provider) |
//! | reputation | 0.15 | `r / (r + 1)`, `r` the provider's on-chain reputation in the domain |
//! | load | 0.15 | `1 / (1 + jobs matched to it in the last 10 minutes)` |
//! | cached | 0.10 | 1 when the provider holds the domain champion's model (probed at its check) |

use serde::Serialize;

/// Weights of the terms (sum 1).
pub const WEIGHTS: Weights = Weights { fit: 0.35, price: 0.25, reputation: 0.15, load: 0.15, cached: 0.10 };

/// The terms' weights.
#[derive(Clone, Copy, Debug)]
pub struct Weights {
    /// Fit.
    pub fit: f64,
    /// Price.
    pub price: f64,
    /// Reputation.
    pub reputation: f64,
    /// Load.
    pub load: f64,
    /// Cached model.
    pub cached: f64,
}

/// What a job asks for.
#[derive(Clone, Debug, PartialEq)]
pub struct Need {
    /// Cores at least (measured).
    pub min_cores: f64,
    /// Memory at least, MiB (measured).
    pub min_mem_mb: u32,
    /// Most the job pays, base units.
    pub fee: u128,
}

/// What is known of a provider.
#[derive(Clone, Debug, PartialEq)]
pub struct Provider {
    /// Measured cores.
    pub cores: f64,
    /// Measured memory, MiB.
    pub mem_mb: u32,
    /// Asking price, base units.
    pub price: u128,
    /// On-chain reputation in the job's domain.
    pub reputation: f64,
    /// Jobs matched to it recently.
    pub recent_jobs: u32,
    /// Whether it holds the domain champion's model.
    pub cached: bool,
}

/// A provider's score for a job, term by term.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Score {
    /// The weighted sum.
    pub total: f64,
    /// Fit term.
    pub fit: f64,
    /// Price term.
    pub price: f64,
    /// Reputation term.
    pub reputation: f64,
    /// Load term.
    pub load: f64,
    /// Cached-model term.
    pub cached: f64,
}

/// Why a provider cannot take a job, or its score.
pub fn score(need: &Need, p: &Provider) -> Result<Score, String> {
    if p.cores < need.min_cores {
        return Err(format!("measured {:.2} cores, the job needs {:.2}", p.cores, need.min_cores));
    }
    if p.mem_mb < need.min_mem_mb {
        return Err(format!("measured {} MiB, the job needs {}", p.mem_mb, need.min_mem_mb));
    }
    if p.price > need.fee {
        return Err(format!("asks {} base units, the job pays at most {}", p.price, need.fee));
    }
    let fit = if need.min_cores <= 0.0 { 1.0 } else { (need.min_cores / p.cores.max(1e-9)).min(1.0) };
    let price = if need.fee == 0 { 1.0 } else { 1.0 - p.price as f64 / need.fee as f64 };
    let reputation = p.reputation.max(0.0) / (p.reputation.max(0.0) + 1.0);
    let load = 1.0 / (1.0 + f64::from(p.recent_jobs));
    let cached = if p.cached { 1.0 } else { 0.0 };
    let w = WEIGHTS;
    let total = w.fit * fit + w.price * price + w.reputation * reputation + w.load * load + w.cached * cached;
    Ok(Score { total, fit, price, reputation, load, cached })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(cores: f64, price: u128) -> Provider {
        Provider { cores, mem_mb: 1024, price, reputation: 0.0, recent_jobs: 0, cached: false }
    }

    #[test]
    fn the_smallest_cheapest_idle_machine_that_fits_wins() {
        let need = Need { min_cores: 2.0, min_mem_mb: 512, fee: 100 };
        // Too small, too little memory, too dear: not eligible, and each says why.
        assert!(score(&need, &provider(1.5, 10)).unwrap_err().contains("1.50 cores"));
        let small_mem = Provider { mem_mb: 256, ..provider(4.0, 10) };
        assert!(score(&need, &small_mem).unwrap_err().contains("256 MiB"));
        assert!(score(&need, &provider(4.0, 101)).unwrap_err().contains("at most 100"));
        // A fitting machine beats a bigger one at the same price; a cheaper one beats a dearer.
        let fits = score(&need, &provider(2.0, 50)).unwrap();
        let big = score(&need, &provider(8.0, 50)).unwrap();
        assert!(fits.total > big.total && fits.fit == 1.0 && big.fit == 0.25);
        let cheap = score(&need, &provider(2.0, 10)).unwrap();
        assert!(cheap.total > fits.total);
        // Load and a cached model count; reputation too.
        let busy = score(&need, &Provider { recent_jobs: 3, ..provider(2.0, 10) }).unwrap();
        assert!(busy.total < cheap.total && busy.load == 0.25);
        let cached = score(&need, &Provider { cached: true, ..provider(2.0, 10) }).unwrap();
        assert!((cached.total - cheap.total - WEIGHTS.cached).abs() < 1e-12);
        let known = score(&need, &Provider { reputation: 3.0, ..provider(2.0, 10) }).unwrap();
        assert!((known.reputation - 0.75).abs() < 1e-12 && known.total > cheap.total);
        let sum = WEIGHTS.fit + WEIGHTS.price + WEIGHTS.reputation + WEIGHTS.load + WEIGHTS.cached;
        assert!((sum - 1.0).abs() < 1e-12);
    }
}
