//! Label-skewed partitions for federated benchmarks: each class's rows are dealt to the clients
//! in Dirichlet(α) proportions (α = 0.5 is the usual "strong skew"; Flower's
//! `DirichletPartitioner`), redrawn until every client holds at least `min_rows`.

use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// Rows a federated job holds out to measure its global model (the digits benchmark's 360).
pub const HOLDOUT_ROWS: usize = 360;

/// A job's split of `rows` rows by its `seed`: (held-out test rows, training rows). The
/// supervisor measures on the first; contributors' shards (`doin fl split`) come from the second,
/// so both sides must use this one function.
pub fn holdout(rows: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let train = order.split_off(HOLDOUT_ROWS.min(rows / 2));
    (order, train)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let (u1, u2): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(`shape`, 1) draw (Marsaglia–Tsang; shapes below 1 boosted by `U^(1/shape)`).
fn gamma(shape: f64, rng: &mut ChaCha8Rng) -> f64 {
    if shape < 1.0 {
        let u: f64 = rng.random::<f64>().max(1e-300);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random::<f64>().max(1e-300);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Deals `rows` (with their `labels`) to `clients` in Dirichlet(`alpha`) proportions per
/// class, from `seed`; redrawn (at most 100 times) until every client has `min_rows`.
pub fn dirichlet(
    rows: &[usize],
    labels: &[i64],
    clients: usize,
    alpha: f64,
    min_rows: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut classes: Vec<i64> = rows.iter().map(|r| labels[*r]).collect();
    classes.sort_unstable();
    classes.dedup();
    let clients = clients.max(1);
    let mut best = vec![Vec::new(); clients];
    for _ in 0..100 {
        let mut parts = vec![Vec::new(); clients];
        for c in &classes {
            let mut of_class: Vec<usize> = rows.iter().copied().filter(|r| labels[*r] == *c).collect();
            of_class.shuffle(&mut rng);
            let p: Vec<f64> = (0..clients).map(|_| gamma(alpha, &mut rng)).collect();
            let total: f64 = p.iter().sum::<f64>().max(f64::MIN_POSITIVE);
            let mut start = 0usize;
            let mut acc = 0.0;
            for (k, pk) in p.iter().enumerate() {
                acc += pk / total;
                let end = if k + 1 == clients {
                    of_class.len()
                } else {
                    ((acc * of_class.len() as f64).round() as usize).min(of_class.len())
                };
                parts[k].extend_from_slice(&of_class[start..end.max(start)]);
                start = end.max(start);
            }
        }
        let ok = parts.iter().all(|p| p.len() >= min_rows);
        best = parts;
        if ok {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row is dealt exactly once, every client holds enough, and the split is skewed:
    /// some client's commonest class is most of its rows.
    #[test]
    fn a_dirichlet_split_deals_every_row_once_and_is_skewed() {
        let labels: Vec<i64> = (0..1000).map(|i| i % 10).collect();
        let rows: Vec<usize> = (0..1000).collect();
        let parts = dirichlet(&rows, &labels, 10, 0.5, 10, 7);
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, rows);
        assert!(parts.iter().all(|p| p.len() >= 10));
        let skew = parts
            .iter()
            .map(|p| {
                let mut counts = [0usize; 10];
                p.iter().for_each(|r| counts[labels[*r] as usize] += 1);
                *counts.iter().max().unwrap() as f64 / p.len() as f64
            })
            .fold(0.0, f64::max);
        assert!(skew > 0.4, "the most skewed client's top class share {skew}");
        assert_eq!(parts, dirichlet(&rows, &labels, 10, 0.5, 10, 7), "one seed, one split");
    }
}
