//! The shipped data sets (see `data/README.md` for sources and licences) and the seeded splits
//! evaluators use: a held-out fold chosen by the seed for the tabular set, a seeded block
//! bootstrap for the series. The optimizer's own split (`seed = None`) is fixed.

use doin_primitives::Hash;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

const DIGITS_CSV: &str = include_str!("../data/digits.csv");
const CO2_CSV: &str = include_str!("../data/co2_mauna_loa_weekly.csv");

/// A labelled tabular data set, row-major.
#[derive(Clone, Debug)]
pub struct Tabular {
    /// Features, `rows × features`.
    pub x: Vec<f32>,
    /// Class labels.
    pub y: Vec<i64>,
    /// Features per row.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
}

impl Tabular {
    /// Rows.
    pub fn rows(&self) -> usize {
        self.y.len()
    }

    /// The rows at `idx`.
    pub fn select(&self, idx: &[usize]) -> Tabular {
        let mut x = Vec::with_capacity(idx.len() * self.features);
        for &i in idx {
            x.extend_from_slice(&self.x[i * self.features..(i + 1) * self.features]);
        }
        Tabular {
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            features: self.features,
            classes: self.classes,
        }
    }
}

/// The UCI optical digits set: 1797 rows, 64 features scaled to `[0, 1]`, 10 classes.
pub fn digits() -> Result<Tabular, String> {
    let mut x = Vec::with_capacity(1797 * 64);
    let mut y = Vec::with_capacity(1797);
    for (line_no, line) in DIGITS_CSV.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != 65 {
            return Err(format!("digits.csv line {}: {} fields, expected 65", line_no + 1, fields.len()));
        }
        for f in &fields[..64] {
            let v: f32 = f.trim().parse().map_err(|e| format!("digits.csv line {}: {e}", line_no + 1))?;
            x.push(v / 16.0);
        }
        let label: f32 =
            fields[64].trim().parse().map_err(|e| format!("digits.csv line {}: {e}", line_no + 1))?;
        y.push(label as i64);
    }
    Ok(Tabular { x, y, features: 64, classes: 10 })
}

/// Weekly Mauna Loa CO₂ in ppmv, missing weeks interpolated linearly.
pub fn co2() -> Result<Vec<f64>, String> {
    let mut raw: Vec<Option<f64>> = Vec::with_capacity(2300);
    for (line_no, line) in CO2_CSV.lines().enumerate().skip(1).filter(|(_, l)| !l.trim().is_empty()) {
        let value = line.split(',').nth(1).map(str::trim).unwrap_or("");
        raw.push(if value.is_empty() {
            None
        } else {
            Some(value.parse().map_err(|e| format!("co2 csv line {}: {e}", line_no + 1))?)
        });
    }
    let known: Vec<usize> = (0..raw.len()).filter(|i| raw[*i].is_some()).collect();
    let (Some(&first), Some(&last)) = (known.first(), known.last()) else {
        return Err("co2 csv has no values".into());
    };
    let mut out = Vec::with_capacity(last - first + 1);
    let mut k = 0;
    for i in first..=last {
        match raw[i] {
            Some(v) => out.push(v),
            None => {
                while known[k + 1] < i {
                    k += 1;
                }
                let (a, b) = (known[k], known[k + 1]);
                let (va, vb) = (raw[a].unwrap_or_default(), raw[b].unwrap_or_default());
                out.push(va + (vb - va) * (i - a) as f64 / (b - a) as f64);
            }
        }
    }
    Ok(out)
}

/// Indices of a train / validation / test split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    /// Training rows (may repeat under a bootstrap).
    pub train: Vec<usize>,
    /// Validation rows (early stopping).
    pub val: Vec<usize>,
    /// Held-out test rows.
    pub test: Vec<usize>,
}

fn rng_for(seed: Option<&Hash>, domain: &str) -> ChaCha8Rng {
    let mut material = domain.as_bytes().to_vec();
    match seed {
        None => material.extend_from_slice(b"/optimizer"),
        Some(s) => material.extend_from_slice(&s.0),
    }
    ChaCha8Rng::from_seed(Hash::of(&material).0)
}

/// The fixed split a domain's published model is trained on: a fifth of the rows, drawn once
/// from the domain's name, is held out (a published model never trains on it, and evaluators
/// measure the model there); the model validates on an eighth of the rest and trains on the
/// remainder. Every node draws the same split.
pub fn model_split(rows: usize, domain: &str) -> Split {
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng_for(Some(&Hash::of(b"doin/model-split")), domain));
    let (test, rest) = order.split_at(rows / 5);
    let v = rest.len() / 8;
    Split { train: rest[v..].to_vec(), val: rest[..v].to_vec(), test: test.to_vec() }
}

/// `k` shuffled cross-validation folds: fold `i` tests on the `i`-th slice of a seeded shuffle
/// (every row is tested exactly once), validates on an eighth of the rest and trains on the
/// remainder. Fixed for the optimizer, drawn from an evaluator's seed.
pub fn tabular_folds(rows: usize, k: usize, seed: Option<&Hash>, domain: &str) -> Vec<Split> {
    let k = k.clamp(2, rows.max(2));
    let mut order: Vec<usize> = (0..rows).collect();
    order.shuffle(&mut rng_for(seed, domain));
    (0..k)
        .map(|i| {
            let (a, b) = (rows * i / k, rows * (i + 1) / k);
            let rest: Vec<usize> = order[..a].iter().chain(&order[b..]).copied().collect();
            let v = rest.len() / 8;
            Split { train: rest[v..].to_vec(), val: rest[..v].to_vec(), test: order[a..b].to_vec() }
        })
        .collect()
}

/// Block length of the series splits (a year of weeks).
pub const BLOCK: usize = 52;

/// Splits `samples` time-ordered samples whose inputs reach `reach` steps back and whose
/// targets reach forward. The optimizer gets a chronological 70 / 15 / 15 split. An evaluator's
/// seed picks whole blocks of [`BLOCK`] samples for test (20 %) and validation (10 %), and the
/// training set is a block bootstrap (blocks drawn with replacement) of the blocks that stay
/// at least `reach` samples away from any held-out block, so no training window overlaps
/// held-out targets.
pub fn series_split(samples: usize, reach: usize, seed: Option<&Hash>, domain: &str) -> Split {
    let Some(seed) = seed else {
        let (a, b) = (samples * 70 / 100, samples * 85 / 100);
        return Split {
            train: (0..a.saturating_sub(reach)).collect(),
            val: (a..b.saturating_sub(reach)).collect(),
            test: (b..samples).collect(),
        };
    };
    let mut rng = rng_for(Some(seed), domain);
    let blocks = samples.div_ceil(BLOCK);
    let mut order: Vec<usize> = (0..blocks).collect();
    order.shuffle(&mut rng);
    let n_test = (blocks / 5).max(1);
    let n_val = (blocks / 10).max(1);
    let test_b = &order[..n_test];
    let val_b = &order[n_test..n_test + n_val];
    let rows = |bs: &[usize]| -> Vec<usize> {
        let mut v: Vec<usize> = bs.iter().flat_map(|b| b * BLOCK..((b + 1) * BLOCK).min(samples)).collect();
        v.sort_unstable();
        v
    };
    let held: Vec<usize> = rows(&order[..n_test + n_val]);
    let clear = |i: usize| held.iter().all(|h| i.abs_diff(*h) > reach);
    let free: Vec<usize> = order[n_test + n_val..].to_vec();
    let mut train = Vec::new();
    for _ in 0..free.len() {
        let b = free[rng.random_range(0..free.len())];
        train.extend((b * BLOCK..((b + 1) * BLOCK).min(samples)).filter(|i| clear(*i)));
    }
    Split { train, val: rows(val_b), test: rows(test_b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_data_loads() {
        let d = digits().unwrap();
        assert_eq!((d.rows(), d.features, d.classes), (1797, 64, 10));
        assert!(d.x.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!((0..10).all(|c| d.y.iter().filter(|y| **y == c).count() > 150));
        let s = co2().unwrap();
        assert!(s.len() > 2200, "{}", s.len());
        assert!(s.iter().all(|v| (300.0..400.0).contains(v)));
        assert!(s[s.len() - 1] - s[0] > 40.0, "CO2 rose by ~55 ppm over the record");
    }

    #[test]
    fn splits_are_fixed_for_the_optimizer_and_seeded_for_evaluators() {
        let own = tabular_folds(100, 3, None, "d");
        assert_eq!(own, tabular_folds(100, 3, None, "d"));
        let a = tabular_folds(100, 3, Some(&Hash::of(b"a")), "d");
        assert_ne!(a, own);
        assert_eq!(a.len(), 3);
        for f in &a {
            let mut all: Vec<usize> = [f.train.clone(), f.val.clone(), f.test.clone()].concat();
            all.sort_unstable();
            assert_eq!(all, (0..100).collect::<Vec<_>>());
        }
        let mut tested: Vec<usize> = a.iter().flat_map(|f| f.test.clone()).collect();
        tested.sort_unstable();
        assert_eq!(tested, (0..100).collect::<Vec<_>>(), "every row is tested exactly once");

        let s = series_split(1000, 30, Some(&Hash::of(b"b")), "f");
        assert_eq!(s, series_split(1000, 30, Some(&Hash::of(b"b")), "f"));
        assert_ne!(s, series_split(1000, 30, Some(&Hash::of(b"c")), "f"));
        for t in &s.train {
            assert!(
                s.test.iter().chain(&s.val).all(|h| t.abs_diff(*h) > 30),
                "train {t} too close to held-out"
            );
        }
        assert!(!s.train.is_empty() && s.test.len() >= BLOCK);
        let own = series_split(1000, 30, None, "f");
        assert!(
            own.train.iter().max() < own.val.iter().min() && own.val.iter().max() < own.test.iter().min()
        );
    }
}
