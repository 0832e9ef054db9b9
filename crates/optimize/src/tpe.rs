//! TPE: the tree-structured Parzen estimator (Bergstra et al., 2011) as Optuna's
//! `TPESampler(constant_liar=True)` runs it — the sample-efficient choice for expensive
//! evaluations (training a model), where SHADE would spend its first generation on random
//! points.
//!
//! After `startup` random points, the history is split at the γ-quantile of the losses
//! (`γ(n) = min(⌈n / 10⌉, 25)` good points, the rest bad). By default (Optuna's default too)
//! each dimension gets its own pair of densities ([`Parzen`]): a prior N(0.5, 1) plus one
//! truncated Gaussian per point whose bandwidth is its larger gap to a neighbour. Per
//! dimension, [`CANDIDATES`] draws from the good density are scored by `log l(x) − log g(x)`
//! and the best is proposed. [`Tpe::multivariate`] uses one joint density instead (a uniform
//! prior plus one product of Gaussians per point, Scott's-rule bandwidths: [`bandwidths`]). On
//! `mlp_digits` to 0.97 (seeds 0–14) per dimension needed a median of 62 evaluations, the joint
//! density 74. Integer dimensions stay continuous in the cube: kernels that put their mass on
//! whole cells (as Optuna's discrete distributions do) measured worse (median 60 against 48
//! over 35 seeds).
//!
//! Points asked and not yet told count as bad ("constant liar"), so a batch, or several nodes
//! sharing their pending points, does not propose one region twice. Migrants (verified
//! champions, other nodes' trials) join the history like the node's own evaluations.
//!
//! Other nodes' trials (shared history) join the densities with their source's weight (how far
//! the node believes that source, [`Optimizer::trust`]); their points in flight count as bad
//! like this node's own, so nodes sharing a domain do not propose one region twice. They never
//! become this optimizer's best (that is measured here) and a source trusted 0 is forgotten.
//!
//! Cost per proposal: `candidates × history × d` kernel evaluations (per dimension, plus a sort
//! of the history); the history is bounded at [`MAX_HISTORY`] (the best [`MAX_GOOD`] always
//! kept, then the newest) and the shared trials at [`MAX_SHARED`].

use borsh::{BorshDeserialize, BorshSerialize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Evaluated, Optimizer, SnapshotError, normal, note_best};

/// Evaluations kept at most (the best [`MAX_GOOD`] and the newest others).
pub const MAX_HISTORY: usize = 1_000;
/// Good points at most (γ's cap, as Optuna's default).
pub const MAX_GOOD: usize = 25;
/// Candidates drawn from the good density per proposal (Optuna's `n_ei_candidates`).
pub const CANDIDATES: usize = 24;
/// Points asked and not told that are remembered (older ones are forgotten).
const MAX_PENDING: usize = 256;
/// Other nodes' trials kept at most (the newest), and per source.
pub const MAX_SHARED: usize = 1_000;
/// Trials kept per source at most (one source cannot crowd out the others).
pub const MAX_SHARED_PER_SOURCE: usize = 250;
/// Points in flight remembered per other node.
pub const MAX_ELSEWHERE: usize = 16;
/// Proposals per ask at most: more in flight only dilutes the model (the loop asks again as
/// soon as these are told).
pub const MAX_BATCH: usize = 4;
/// A migrant within this of a trusted shared trial in every coordinate is that trial.
const SAME_POINT: f64 = 1e-3;

/// The persistent part (what a snapshot holds).
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
struct Core {
    dim: u32,
    seed: u64,
    startup: u32,
    asked: u64,
    history: Vec<Evaluated>,
    best: Option<Evaluated>,
}

/// Multivariate TPE over the unit cube.
#[derive(Debug)]
pub struct Tpe {
    core: Core,
    /// One joint density over the cube (true) or one per dimension (Optuna's default).
    multivariate: bool,
    rng: ChaCha8Rng,
    /// Asked, not told yet.
    pending: Vec<Vec<f64>>,
    /// Other nodes' trials: (source, trial), oldest first.
    shared: Vec<(u32, Evaluated)>,
    /// Each source's weight (a source missing or at 0 counts nothing).
    weights: std::collections::BTreeMap<u32, f64>,
    /// Points other nodes are measuring, by source.
    elsewhere: std::collections::BTreeMap<u32, Vec<Vec<f64>>>,
}

impl Tpe {
    /// A new optimizer for `dim` dimensions: `startup` random points (at least 2) before the
    /// model proposes, seeded.
    pub fn new(dim: usize, startup: usize, seed: u64) -> Self {
        let core = Core {
            dim: dim as u32,
            seed,
            startup: startup.max(2) as u32,
            asked: 0,
            history: Vec::new(),
            best: None,
        };
        Self {
            core,
            multivariate: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
            pending: Vec::new(),
            shared: Vec::new(),
            weights: Default::default(),
            elsewhere: Default::default(),
        }
    }

    /// One joint density over the cube (Optuna's `multivariate=True`) instead of one per
    /// dimension (its default, and ours: on `mlp_digits` it needed fewer evaluations).
    pub fn multivariate(mut self, on: bool) -> Self {
        self.multivariate = on;
        self
    }

    /// The usual random start for `dim` dimensions (Optuna's 10, more in many dimensions).
    pub fn default_startup(dim: usize) -> usize {
        10.max(dim + 1)
    }

    /// Evaluations in the history.
    pub fn history_len(&self) -> usize {
        self.core.history.len()
    }

    /// Other nodes' trials held (whatever their weight).
    pub fn shared_len(&self) -> usize {
        self.shared.len()
    }

    /// Shared trials of sources weighted above 0.
    fn trusted_shared(&self) -> usize {
        self.shared.iter().filter(|(s, _)| self.weights.get(s).is_some_and(|w| *w > 0.0)).count()
    }

    /// Whether a point fits this optimizer's cube.
    fn fits(&self, x: &[f64]) -> bool {
        x.len() == self.dim() && x.iter().all(|v| v.is_finite())
    }

    fn dim(&self) -> usize {
        self.core.dim as usize
    }

    fn random_point(&mut self) -> Vec<f64> {
        let d = self.dim();
        random_point(&mut self.rng, d)
    }

    /// One proposal from the model.
    fn propose(&mut self) -> Vec<f64> {
        let d = self.dim();
        let Self { core, rng, pending, shared, weights, elsewhere, multivariate } = self;
        let weight = |src: &u32| weights.get(src).copied().unwrap_or(0.0);
        // Every point with its weight: the own history (1), then the shared trials of sources
        // weighted above 0; in flight, this node's points (1) and other nodes' (their weight).
        let points: Vec<(&Evaluated, f64)> = core
            .history
            .iter()
            .map(|e| (e, 1.0))
            .chain(shared.iter().map(|(src, e)| (e, weight(src))).filter(|(_, w)| *w > 0.0))
            .collect();
        let flying: Vec<Weighted<'_>> = pending
            .iter()
            .map(|p| (p.as_slice(), 1.0))
            .chain(
                elsewhere
                    .iter()
                    .flat_map(|(src, ps)| ps.iter().map(move |p| (p.as_slice(), weight(src))))
                    .filter(|(_, w)| *w > 0.0),
            )
            .collect();
        let (good, bad) = split(&points, &flying);
        if !*multivariate {
            return (0..d).map(|j| propose_one(rng, &Parzen::new(&good, j), &Parzen::new(&bad, j))).collect();
        }
        let (bw_good, bw_bad) = (bandwidths(&good, d), bandwidths(&bad, d));
        let total: f64 = good.iter().map(|(_, w)| w).sum();
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..CANDIDATES {
            // Draw from l: the prior with weight 1/(W+1), else a kernel around a good point
            // chosen by weight.
            let mut pick = rng.random::<f64>() * (total + 1.0) - 1.0;
            let around = good.iter().find(|(_, w)| {
                pick -= w;
                pick < 0.0
            });
            let x: Vec<f64> = match around {
                Some((p, _)) if total > 0.0 => {
                    (0..d).map(|j| truncated_normal(rng, p[j], bw_good[j])).collect()
                }
                _ => random_point(rng, d),
            };
            let score = log_density(&x, &good, &bw_good) - log_density(&x, &bad, &bw_bad);
            if best.as_ref().is_none_or(|(s, _)| score > *s) {
                best = Some((score, x));
            }
        }
        best.map_or_else(|| random_point(rng, d), |(_, x)| x)
    }

    /// Keeps the history within [`MAX_HISTORY`]: the best [`MAX_GOOD`] and the newest others.
    fn trim(&mut self) {
        let h = &mut self.core.history;
        if h.len() <= MAX_HISTORY {
            return;
        }
        let mut by_loss: Vec<usize> = (0..h.len()).collect();
        by_loss.sort_by(|a, b| h[*a].loss.total_cmp(&h[*b].loss));
        let keep_best: std::collections::BTreeSet<usize> = by_loss.into_iter().take(MAX_GOOD).collect();
        let extra = h.len() - MAX_HISTORY;
        let mut dropped = 0;
        let mut i = 0;
        h.retain(|_| {
            let keep = keep_best.contains(&i) || dropped >= extra;
            if !keep {
                dropped += 1;
            }
            i += 1;
            keep
        });
    }

    fn remember(&mut self, e: &Evaluated) {
        if e.x.len() != self.dim() || e.x.iter().any(|v| !v.is_finite()) {
            return;
        }
        // A failed evaluation is as bad as anything seen (its region is avoided).
        let loss = if e.loss.is_nan() { f64::INFINITY } else { e.loss };
        self.core.history.push(Evaluated { x: e.x.iter().map(|v| v.clamp(0.0, 1.0)).collect(), loss });
        if loss.is_finite() {
            note_best(&mut self.core.best, &e.x, loss);
        }
        self.trim();
    }
}

/// A uniform point of the unit cube.
fn random_point(rng: &mut ChaCha8Rng, d: usize) -> Vec<f64> {
    (0..d).map(|_| rng.random::<f64>()).collect()
}

/// A point of a density and its weight.
type Weighted<'a> = (&'a [f64], f64);

/// The good points (the γ-quantile of the weighted history by loss) and the bad ones, the
/// points in flight (asked, not told: `pending`) among the bad.
fn split<'a>(
    history: &[(&'a Evaluated, f64)],
    pending: &[Weighted<'a>],
) -> (Vec<Weighted<'a>>, Vec<Weighted<'a>>) {
    let mut order: Vec<(&Evaluated, f64)> = history.to_vec();
    order.sort_by(|a, b| a.0.loss.total_cmp(&b.0.loss));
    let good = order.len().div_ceil(10).clamp(1, MAX_GOOD).min(order.len());
    let (g, b) = order.split_at(good);
    let bad = b.iter().map(|(e, w)| (e.x.as_slice(), *w)).chain(pending.iter().copied()).collect();
    (g.iter().map(|(e, w)| (e.x.as_slice(), *w)).collect(), bad)
}

/// Per-dimension kernel bandwidths for `points` in `d` dimensions, as Optuna's multivariate
/// TPE sets them: Scott's rule over the unit range, `0.2 · n^(-1/(d+4))`, with Optuna's floor
/// of 1/100 of the range. (Bandwidths from the points' own spread gathered too early: on a
/// 4-dimensional sphere they lost to SHADE in 8 of 9 seeds.) The floor bounds precision: TPE
/// is for coarse targets in expensive domains, SHADE for fine ones.
fn bandwidths(points: &[Weighted<'_>], d: usize) -> Vec<f64> {
    let n = points.len().max(1) as f64;
    vec![(0.2 * n.powf(-1.0 / (d as f64 + 4.0))).max(0.01); d]
}

/// One dimension's Parzen estimator as Optuna's univariate TPE builds it: a truncated Gaussian
/// per point, with its own bandwidth (the larger distance to its neighbours, the cube's ends
/// and the prior's centre counted as points; clipped to `[1 / min(100, n + 2), 1]`), plus a
/// prior N(0.5, 1) with weight 1.
struct Parzen {
    /// (centre, bandwidth, ln weight) per kernel, the prior last.
    kernels: Vec<(f64, f64, f64)>,
}

impl Parzen {
    fn new(points: &[Weighted<'_>], j: usize) -> Self {
        let n = points.len();
        // The prior's centre sits among the points when bandwidths are measured.
        let mut order: Vec<(f64, usize)> = points.iter().enumerate().map(|(i, (p, _))| (p[j], i)).collect();
        order.push((0.5, n));
        order.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |k: usize| order[k].0;
        let mut sigma = vec![0.0; n + 1];
        for k in 0..order.len() {
            let left = if k == 0 { at(0) } else { at(k) - at(k - 1) };
            let right = if k + 1 == order.len() { 1.0 - at(k) } else { at(k + 1) - at(k) };
            // Optuna's `consider_endpoints=False`: the outermost kernels use their inner gap.
            let s = match k {
                0 if order.len() >= 2 => right,
                _ if k + 1 == order.len() && order.len() >= 2 => left,
                _ => left.max(right),
            };
            sigma[order[k].1] = s;
        }
        let low = 1.0 / (n as f64 + 2.0).min(100.0);
        let total: f64 = points.iter().map(|(_, w)| w).sum::<f64>() + 1.0;
        let mut kernels: Vec<(f64, f64, f64)> = points
            .iter()
            .zip(&sigma)
            .map(|((p, w), s)| (p[j], s.clamp(low, 1.0), (w / total).ln()))
            .collect();
        kernels.push((0.5, 1.0, (1.0 / total).ln()));
        Self { kernels }
    }

    /// A draw: a kernel chosen by weight, then its truncated Gaussian.
    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        let mut pick = rng.random::<f64>();
        let (mu, sigma, _) = self
            .kernels
            .iter()
            .find(|(_, _, lw)| {
                pick -= lw.exp();
                pick < 0.0
            })
            .unwrap_or(&self.kernels[self.kernels.len() - 1]);
        truncated_normal(rng, *mu, *sigma)
    }

    /// `ln` of the density at `x` (each kernel normalized over `[0, 1]`).
    fn log_pdf(&self, x: f64) -> f64 {
        let terms: Vec<f64> = self
            .kernels
            .iter()
            .map(|(mu, sd, lw)| {
                let mass = phi((1.0 - mu) / sd) - phi(-mu / sd);
                let z = (x - mu) / sd;
                lw - 0.5 * z * z - (sd * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-12)).ln()
            })
            .collect();
        let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
    }
}

/// One coordinate: the best of [`CANDIDATES`] draws from `good` by `ln l(x) − ln g(x)`.
fn propose_one(rng: &mut ChaCha8Rng, good: &Parzen, bad: &Parzen) -> f64 {
    let mut best = (f64::NEG_INFINITY, 0.5);
    for _ in 0..CANDIDATES {
        let x = good.sample(rng);
        let score = good.log_pdf(x) - bad.log_pdf(x);
        if score > best.0 {
            best = (score, x);
        }
    }
    best.1
}

/// A normal draw around `mu` with deviation `sigma`, kept in `[0, 1]` (redrawn, then clamped).
fn truncated_normal(rng: &mut ChaCha8Rng, mu: f64, sigma: f64) -> f64 {
    for _ in 0..16 {
        let v = mu + sigma * normal(rng);
        if (0.0..=1.0).contains(&v) {
            return v;
        }
    }
    mu.clamp(0.0, 1.0)
}

/// `ln` of the mixture density at `x`: a uniform prior (weight 1/(W+1), W the points' total
/// weight) and one product of Gaussians (deviations `sigma` per dimension) truncated to the
/// unit cube per point, weighted w/(W+1).
fn log_density(x: &[f64], points: &[Weighted<'_>], sigma: &[f64]) -> f64 {
    let total: f64 = points.iter().map(|(_, w)| w).sum::<f64>() + 1.0;
    // Log-sum-exp over the kernels and the prior (ln 1 = 0 for the uniform density).
    let mut terms: Vec<f64> = Vec::with_capacity(points.len() + 1);
    terms.push(-total.ln());
    for (p, w) in points {
        let mut s = (w / total).ln();
        for ((xj, mu), sd) in x.iter().zip(p.iter()).zip(sigma) {
            let z = (xj - mu) / sd;
            let mass = phi((1.0 - mu) / sd) - phi(-mu / sd);
            s += -0.5 * z * z - (sd * (2.0 * std::f64::consts::PI).sqrt() * mass.max(1e-12)).ln();
        }
        terms.push(s);
    }
    let m = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + terms.iter().map(|t| (t - m).exp()).sum::<f64>().ln()
}

/// The standard normal CDF (Abramowitz–Stegun 7.1.26 for erf, error below 1.5e-7).
fn phi(z: f64) -> f64 {
    let x = z / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    0.5 * (1.0 + if x >= 0.0 { erf } else { -erf })
}

impl Optimizer for Tpe {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        let n = n.min(MAX_BATCH);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let known = self.core.history.len() + self.pending.len() + self.trusted_shared();
            let x = if known < self.core.startup as usize { self.random_point() } else { self.propose() };
            self.core.asked += 1;
            if self.pending.len() >= MAX_PENDING {
                self.pending.remove(0);
            }
            self.pending.push(x.clone());
            out.push(x);
        }
        out
    }

    fn tell(&mut self, results: &[Evaluated]) {
        for r in results {
            if let Some(i) = self.pending.iter().position(|p| *p == r.x) {
                self.pending.swap_remove(i);
            }
            self.remember(r);
        }
    }

    fn inject(&mut self, migrant: Evaluated) {
        // A migrant a trusted node already shared (a verified champion arrives as its claimer's
        // trial first: both are cell centres of the same values, 16-bit quantized) is known: a
        // second copy at full weight would make the good density collapse onto that one point
        // on every node, and every node would search the same region.
        let same = |x: &[f64]| {
            x.len() == migrant.x.len() && x.iter().zip(&migrant.x).all(|(a, b)| (a - b).abs() <= SAME_POINT)
        };
        let shared =
            self.shared.iter().any(|(s, e)| self.weights.get(s).is_some_and(|w| *w > 0.0) && same(&e.x));
        if !shared {
            self.remember(&migrant);
        }
    }

    fn observe(&mut self, source: u32, trials: &[Evaluated]) {
        for t in trials {
            if !self.fits(&t.x) || t.loss.is_nan() {
                continue;
            }
            let of_source = self.shared.iter().filter(|(s, _)| *s == source).count();
            if of_source >= MAX_SHARED_PER_SOURCE {
                if let Some(i) = self.shared.iter().position(|(s, _)| *s == source) {
                    self.shared.remove(i);
                }
            } else if self.shared.len() >= MAX_SHARED {
                self.shared.remove(0);
            }
            let x = t.x.iter().map(|v| v.clamp(0.0, 1.0)).collect();
            self.shared.push((source, Evaluated { x, loss: t.loss }));
        }
    }

    fn trust(&mut self, source: u32, weight: f64) {
        if weight > 0.0 && weight.is_finite() {
            self.weights.insert(source, weight.min(1.0));
        } else {
            self.weights.remove(&source);
            self.shared.retain(|(s, _)| *s != source);
            self.elsewhere.remove(&source);
        }
    }

    fn pending_elsewhere(&mut self, source: u32, points: &[Vec<f64>]) {
        let fit: Vec<Vec<f64>> = points
            .iter()
            .filter(|p| self.fits(p))
            .take(MAX_ELSEWHERE)
            .map(|p| p.iter().map(|v| v.clamp(0.0, 1.0)).collect())
            .collect();
        // Only sources it weighs are remembered: the map stays as small as the trusted set.
        if self.weights.contains_key(&source) {
            self.elsewhere.insert(source, fit);
        }
    }

    fn learns_shared(&self) -> bool {
        true
    }

    fn in_flight(&self) -> Vec<Vec<f64>> {
        self.pending.iter().rev().take(MAX_ELSEWHERE).cloned().collect()
    }

    fn sequential(&self) -> bool {
        true
    }

    fn best(&self) -> Option<&Evaluated> {
        self.core.best.as_ref()
    }

    fn kind(&self) -> &'static str {
        "tpe"
    }

    fn snapshot(&self) -> Vec<u8> {
        borsh::to_vec(&self.core).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let core: Core = borsh::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        if core.dim != self.core.dim {
            return Err(SnapshotError(format!(
                "a snapshot of {} dimensions, not {}",
                core.dim, self.core.dim
            )));
        }
        self.rng = ChaCha8Rng::seed_from_u64(core.seed ^ core.asked.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        self.core = core;
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Shade, functions::Function};

    /// Evaluations until `opt` finds a loss ≤ `target` on `f` (at most `budget`), one at a time.
    fn evaluations(
        mut opt: Box<dyn Optimizer>,
        f: impl Fn(&[f64]) -> f64,
        target: f64,
        budget: usize,
    ) -> usize {
        for n in 1..=budget {
            let x = opt.ask(1).remove(0);
            let loss = f(&x);
            if loss <= target {
                return n;
            }
            opt.tell(&[Evaluated { x, loss }]);
        }
        budget
    }

    fn sphere(x: &[f64]) -> f64 {
        x.iter().map(|v| (v - 0.3).powi(2)).sum()
    }

    #[test]
    fn phi_is_the_normal_cdf() {
        assert!((phi(0.0) - 0.5).abs() < 1e-7);
        assert!((phi(1.96) - 0.975).abs() < 1e-3);
        assert!((phi(-1.0) - 0.158_655).abs() < 1e-5);
    }

    #[test]
    fn the_density_ratio_prefers_the_good_region() {
        let good: [Weighted<'_>; 2] = [(&[0.2, 0.2], 1.0), (&[0.25, 0.2], 1.0)];
        let bad: [Weighted<'_>; 3] = [(&[0.8, 0.8], 1.0), (&[0.9, 0.7], 1.0), (&[0.7, 0.9], 1.0)];
        let ratio = |x: &[f64]| log_density(x, &good, &[0.1, 0.1]) - log_density(x, &bad, &[0.1, 0.1]);
        assert!(ratio(&[0.22, 0.2]) > ratio(&[0.8, 0.8]) + 5.0);
    }

    /// On a cheap-to-state but "expensive" budget (a few dozen evaluations), TPE reaches a
    /// 4-dimensional sphere's target in fewer evaluations than SHADE, in most seeds.
    #[test]
    fn tpe_needs_fewer_evaluations_than_shade_on_a_small_budget() {
        let (mut tpe_wins, mut tpe_total, mut shade_total) = (0, 0, 0);
        for seed in 0..9 {
            let t = evaluations(Box::new(Tpe::new(4, Tpe::default_startup(4), seed)), sphere, 0.01, 400);
            let s = evaluations(Box::new(Shade::new(4, 20, seed)), sphere, 0.01, 400);
            tpe_wins += usize::from(t < s);
            (tpe_total, shade_total) = (tpe_total + t, shade_total + s);
        }
        assert!(tpe_wins >= 7, "TPE won {tpe_wins} of 9 ({tpe_total} vs {shade_total} evaluations)");
    }

    #[test]
    fn a_batch_does_not_propose_one_point_twice_and_stays_in_the_cube() {
        let mut t = Tpe::new(3, 5, 1);
        for _ in 0..4 {
            let xs = t.ask(5);
            let r: Vec<Evaluated> = xs.iter().map(|x| Evaluated { loss: sphere(x), x: x.clone() }).collect();
            t.tell(&r);
        }
        let batch: Vec<Vec<f64>> = (0..2).flat_map(|_| t.ask(8)).collect();
        assert_eq!(batch.len(), 2 * MAX_BATCH);
        for (i, a) in batch.iter().enumerate() {
            assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
            for b in &batch[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(t.pending.len(), 8, "asked and not told: the constant liar's bad points");
    }

    #[test]
    fn failed_evaluations_and_malformed_migrants_do_not_break_it() {
        let mut t = Tpe::new(2, 3, 2);
        let xs = t.ask(3);
        t.tell(&xs.iter().map(|x| Evaluated { x: x.clone(), loss: f64::INFINITY }).collect::<Vec<_>>());
        t.inject(Evaluated { x: vec![0.5], loss: 0.0 });
        t.inject(Evaluated { x: vec![f64::NAN, 0.5], loss: 0.0 });
        assert!(t.best().is_none(), "no finite loss told");
        assert_eq!(t.history_len(), 3);
        t.inject(Evaluated { x: vec![0.3, 0.3], loss: 0.0 });
        assert_eq!(t.best().map(|b| b.loss), Some(0.0));
        assert!(t.ask(4).iter().all(|x| x.len() == 2 && x.iter().all(|v| v.is_finite())));
    }

    #[test]
    fn the_history_is_bounded_and_keeps_the_best() {
        let mut t = Tpe::new(2, 2, 3);
        for i in 0..(MAX_HISTORY + 300) {
            let x = vec![(i % 97) as f64 / 97.0, (i % 89) as f64 / 89.0];
            t.inject(Evaluated { loss: if i == 5 { -1.0 } else { sphere(&x) }, x });
        }
        assert_eq!(t.history_len(), MAX_HISTORY);
        assert!(t.core.history.iter().any(|e| e.loss == -1.0), "the best is kept");
    }

    /// Another node's trials, trusted, teach the model: a node that joins a search another
    /// node ran needs fewer evaluations of its own; trusting the source 0 forgets them.
    #[test]
    fn shared_trials_of_a_trusted_source_teach_it_and_distrust_forgets_them() {
        let (mut cold, mut warm) = (0, 0);
        for seed in 0..7 {
            let mut other = Tpe::new(4, Tpe::default_startup(4), 100 + seed);
            let mut trials = Vec::new();
            for _ in 0..40 {
                let x = other.ask(1).remove(0);
                let e = Evaluated { loss: sphere(&x), x };
                other.tell(std::slice::from_ref(&e));
                trials.push(e);
            }
            cold += evaluations(Box::new(Tpe::new(4, Tpe::default_startup(4), seed)), sphere, 0.01, 400);
            let mut t = Tpe::new(4, Tpe::default_startup(4), seed);
            t.trust(9, 1.0);
            t.observe(9, &trials);
            assert_eq!(t.shared_len(), 40);
            assert!(t.best().is_none(), "shared trials are not this node's best");
            warm += evaluations(Box::new(t), sphere, 0.01, 400);
        }
        assert!(warm * 3 < cold * 2, "40 shared trials saved a third: {warm} vs {cold} evaluations");
        let mut t = Tpe::new(2, 3, 1);
        t.trust(4, 0.5);
        t.observe(4, &[Evaluated { x: vec![0.1, 0.1], loss: 0.0 }, Evaluated { x: vec![0.1], loss: 0.0 }]);
        t.pending_elsewhere(4, &[vec![0.5, 0.5]]);
        assert_eq!((t.shared_len(), t.elsewhere.len()), (1, 1), "a point of another dimension is dropped");
        t.trust(4, 0.0);
        assert_eq!((t.shared_len(), t.elsewhere.len()), (0, 0));
        t.pending_elsewhere(5, &[vec![0.5, 0.5]]);
        assert!(t.elsewhere.is_empty(), "an untrusted source's points in flight are not kept");
    }

    /// Untrusted trials (a source never trusted, or weighted 0) change nothing: the same seed
    /// proposes the same points with or without them; one source cannot exceed its share.
    #[test]
    fn untrusted_trials_change_nothing_and_a_source_is_bounded() {
        let mut a = Tpe::new(3, 4, 11);
        let mut b = Tpe::new(3, 4, 11);
        let lies: Vec<Evaluated> =
            (0..50).map(|i| Evaluated { x: vec![0.9, 0.9, (i as f64) / 50.0], loss: -1e9 }).collect();
        b.observe(3, &lies);
        for _ in 0..10 {
            let (xa, xb) = (a.ask(2), b.ask(2));
            assert_eq!(xa, xb);
            let r: Vec<Evaluated> = xa.iter().map(|x| Evaluated { loss: sphere(x), x: x.clone() }).collect();
            a.tell(&r);
            b.tell(&r);
        }
        let many: Vec<Evaluated> = (0..MAX_SHARED_PER_SOURCE + 40)
            .map(|i| Evaluated { x: vec![0.5, 0.5, (i % 100) as f64 / 100.0], loss: 1.0 })
            .collect();
        b.trust(3, 1.0);
        b.observe(3, &many);
        assert_eq!(b.shared.iter().filter(|(s, _)| *s == 3).count(), MAX_SHARED_PER_SOURCE);
    }

    /// Points another node measures now count as bad: proposals move away from them (less
    /// so per dimension, where a busy point only marks its coordinates).
    /// A verified champion a trusted node already shared is not learned twice (its second copy
    /// would anchor the good density on one point on every node); an untrusted sender's
    /// trial, or a new point, is learned.
    #[test]
    fn a_migrant_already_shared_by_a_trusted_node_is_not_learned_twice() {
        let mut t = Tpe::new(2, 4, 1);
        let p = vec![0.25, 0.75];
        t.observe(7, &[Evaluated { x: p.clone(), loss: -0.97 }]);
        t.inject(Evaluated { x: vec![0.25 + 1e-5, 0.75], loss: -0.969 });
        assert_eq!(t.history_len(), 1, "the sender is not trusted yet: learned");
        t.trust(7, 0.5);
        t.inject(Evaluated { x: vec![0.25 + 1e-5, 0.75 - 1e-5], loss: -0.969 });
        assert_eq!(t.history_len(), 1, "shared by a trusted node: known");
        t.inject(Evaluated { x: vec![0.3, 0.75], loss: -0.96 });
        assert_eq!(t.history_len(), 2, "another point");
    }

    #[test]
    fn points_in_flight_elsewhere_are_avoided() {
        for (multivariate, margin) in [(true, 1.2), (false, 1.1)] {
            let (free, avoided) = in_flight_distances(multivariate);
            assert!(avoided > free * margin, "{avoided} vs {free}: proposals kept off the busy region");
        }
    }

    /// Summed distances of proposals from a busy region, without and with its points in flight.
    fn in_flight_distances(multivariate: bool) -> (f64, f64) {
        let near = |x: &[f64]| x.iter().map(|v| (v - 0.3).powi(2)).sum::<f64>().sqrt();
        let (mut free, mut avoided) = (0.0, 0.0);
        for seed in 0..10 {
            let mut t = Tpe::new(2, 4, seed).multivariate(multivariate);
            for i in 0..30 {
                let x = vec![(i * 7 % 30) as f64 / 30.0, (i * 11 % 30) as f64 / 30.0];
                t.inject(Evaluated { loss: sphere(&x), x });
            }
            let mut u = Tpe::new(2, 4, seed).multivariate(multivariate);
            u.restore(&t.snapshot()).unwrap();
            u.trust(1, 1.0);
            let busy: Vec<Vec<f64>> = (0..MAX_ELSEWHERE)
                .map(|i| vec![0.3 + 0.01 * (i % 4) as f64, 0.3 + 0.01 * (i / 4) as f64])
                .collect();
            u.pending_elsewhere(1, &busy);
            t.restore(&u.snapshot()).unwrap();
            free += t.ask(4).iter().map(|x| near(x)).sum::<f64>();
            avoided += u.ask(4).iter().map(|x| near(x)).sum::<f64>();
        }
        (free, avoided)
    }

    #[test]
    fn snapshot_restore_resumes_with_the_same_history() {
        let f = Function::Rastrigin;
        let mut a = Tpe::new(3, 5, 7);
        for _ in 0..6 {
            let xs = a.ask(2);
            let r: Vec<_> = xs
                .into_iter()
                .map(|x| Evaluated {
                    loss: f.eval(&x.iter().map(|v| v * 2.0 - 1.0).collect::<Vec<_>>(), &[0.0; 3]),
                    x,
                })
                .collect();
            a.tell(&r);
        }
        let mut b = Tpe::new(3, 5, 999);
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(b.history_len(), a.history_len());
        assert_eq!(b.best(), a.best());
        assert_eq!(b.ask(3), {
            let mut c = Tpe::new(3, 5, 1);
            c.restore(&a.snapshot()).unwrap();
            c.ask(3)
        });
        assert!(Tpe::new(4, 5, 1).restore(&a.snapshot()).is_err(), "another dimension is refused");
    }
}
