//! CMA-ES with increasing-population restarts (IPOP-CMA-ES: Hansen & Ostermeier 2001, Auger &
//! Hansen 2005) in ask/tell form over the unit cube.
//!
//! A generation samples λ points `x = m + σ·B·D·z`; asked points are clipped to the cube and
//! ranked by loss plus a small penalty for the clipped distance, so the mean is pulled back
//! inside. When a run stagnates (step size or function spread below tolerance, or the covariance
//! becomes ill-conditioned) it restarts from a random mean with λ doubled; the best point over
//! all runs is kept. A migrant enters the next generation's ranking in place of its worst sample
//! (injection, Hansen 2011), with its step clipped to the typical sample length.

use borsh::{BorshDeserialize, BorshSerialize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Evaluated, Optimizer, SnapshotError, normal};

/// Strategy state of one CMA-ES run.
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
struct Run {
    lambda: u32,
    mean: Vec<f64>,
    sigma: f64,
    /// Covariance, row-major d×d.
    c: Vec<f64>,
    /// Eigenvectors (columns), row-major d×d.
    b: Vec<f64>,
    /// Square roots of the eigenvalues.
    d: Vec<f64>,
    pc: Vec<f64>,
    ps: Vec<f64>,
    evals: u64,
    eigen_at: u64,
    generation: u64,
    /// Best loss of each recent generation (stagnation test).
    history: Vec<f64>,
}

/// The persistent state (what a snapshot holds).
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
struct Core {
    dim: u32,
    seed: u64,
    base_lambda: u32,
    restarts: u32,
    run: Run,
    /// Generations over all runs (drives the random stream).
    generation: u64,
    best: Option<Evaluated>,
    migrant: Option<(Vec<f64>, f64)>,
}

#[derive(Clone, Debug)]
struct Sample {
    /// Raw point (may leave the cube).
    raw: Vec<f64>,
    /// Clipped point (what was asked).
    x: Vec<f64>,
    asked: bool,
    loss: Option<f64>,
}

/// IPOP-CMA-ES over the unit cube.
#[derive(Debug)]
pub struct CmaEs {
    core: Core,
    rng: ChaCha8Rng,
    samples: Vec<Sample>,
}

const INITIAL_SIGMA: f64 = 0.3;
const MAX_LAMBDA_FACTOR: u32 = 64;

impl CmaEs {
    /// A new optimizer for `dim` dimensions; `lambda = 0` picks the default `4 + ⌊3 ln d⌋`.
    pub fn new(dim: usize, lambda: usize, seed: u64) -> Self {
        let dim = dim.max(1);
        let base = if lambda == 0 { 4 + (3.0 * (dim as f64).ln()).floor() as usize } else { lambda.max(4) };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let run = new_run(dim, base as u32, &mut rng);
        let core = Core {
            dim: dim as u32,
            seed,
            base_lambda: base as u32,
            restarts: 0,
            run,
            generation: 0,
            best: None,
            migrant: None,
        };
        let mut s = Self { core, rng, samples: Vec::new() };
        s.start_generation();
        s
    }

    /// Restarts done so far.
    pub fn restarts(&self) -> u32 {
        self.core.restarts
    }

    fn start_generation(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(
            self.core.seed ^ self.core.generation.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x00c3_a0e5,
        );
        let n = self.core.dim as usize;
        let run = &self.core.run;
        let mut samples = Vec::with_capacity(run.lambda as usize);
        for _ in 0..run.lambda {
            let z: Vec<f64> = (0..n).map(|_| normal(&mut self.rng)).collect();
            let mut raw = run.mean.clone();
            for (i, r) in raw.iter_mut().enumerate() {
                let mut y = 0.0;
                for (j, zj) in z.iter().enumerate() {
                    y += run.b[i * n + j] * run.d[j] * zj;
                }
                *r += run.sigma * y;
            }
            let x = raw.iter().map(|v| v.clamp(0.0, 1.0)).collect();
            samples.push(Sample { raw, x, asked: false, loss: None });
        }
        self.samples = samples;
    }

    fn end_generation(&mut self) {
        let n = self.core.dim as usize;
        let nf = n as f64;
        // Ranking: loss plus a penalty for the distance the clip moved the point.
        let mut ranked: Vec<(f64, Vec<f64>)> = self
            .samples
            .iter()
            .map(|s| {
                let loss = s.loss.unwrap_or(f64::INFINITY);
                let clip: f64 = s.raw.iter().zip(&s.x).map(|(r, x)| (r - x).powi(2)).sum();
                let penalty = if clip > 0.0 { (loss.abs() + 1.0) * clip * 1e3 } else { 0.0 };
                (
                    loss + penalty,
                    s.x.iter().zip(&s.raw).map(|(x, r)| if clip > 0.0 { *x } else { *r }).collect(),
                )
            })
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        let gen_best = ranked.first().map_or(f64::INFINITY, |r| r.0);
        if let Some((x, loss)) = self.core.migrant.take()
            && let Some(worst) = ranked.last_mut()
            && loss < worst.0
        {
            // Injection: clip the migrant's step to the typical sample length.
            let run = &self.core.run;
            let step: Vec<f64> = x.iter().zip(&run.mean).map(|(a, m)| (a - m) / run.sigma).collect();
            let len = mahalanobis(run, &step).max(f64::MIN_POSITIVE);
            let cap = nf.sqrt() + 2.0 * nf / (nf + 2.0);
            let k = (cap / len).min(1.0);
            *worst = (loss, run.mean.iter().zip(&step).map(|(m, s)| m + run.sigma * s * k).collect());
            ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        }

        let run = &mut self.core.run;
        let lambda = run.lambda as usize;
        let mu = lambda / 2;
        let raw_w: Vec<f64> =
            (0..mu).map(|i| ((lambda as f64 + 1.0) / 2.0).ln() - ((i + 1) as f64).ln()).collect();
        let wsum: f64 = raw_w.iter().sum();
        let w: Vec<f64> = raw_w.iter().map(|v| v / wsum).collect();
        let mueff = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
        let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
        let cs = (mueff + 2.0) / (nf + mueff + 5.0);
        let c1 = 2.0 / ((nf + 1.3).powi(2) + mueff);
        let cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / ((nf + 2.0).powi(2) + mueff));
        let damps = 1.0 + 2.0 * (0.0f64).max(((mueff - 1.0) / (nf + 1.0)).sqrt() - 1.0) + cs;
        let chin = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));

        let old = run.mean.clone();
        let mut mean = vec![0.0; n];
        for (wi, (_, x)) in w.iter().zip(&ranked) {
            for (m, xi) in mean.iter_mut().zip(x) {
                *m += wi * xi;
            }
        }
        let ystep: Vec<f64> = mean.iter().zip(&old).map(|(a, b)| (a - b) / run.sigma).collect();
        // C^{-1/2} · ystep = B · D^{-1} · Bᵀ · ystep.
        let bty: Vec<f64> =
            (0..n).map(|j| (0..n).map(|i| run.b[i * n + j] * ystep[i]).sum::<f64>()).collect();
        let inv: Vec<f64> =
            (0..n).map(|i| (0..n).map(|j| run.b[i * n + j] * bty[j] / run.d[j]).sum::<f64>()).collect();
        let ks = (cs * (2.0 - cs) * mueff).sqrt();
        for (p, v) in run.ps.iter_mut().zip(&inv) {
            *p = (1.0 - cs) * *p + ks * v;
        }
        run.evals += lambda as u64;
        run.generation += 1;
        let ps_norm = run.ps.iter().map(|v| v * v).sum::<f64>().sqrt();
        let hsig = ps_norm / (1.0 - (1.0 - cs).powf(2.0 * run.generation as f64)).sqrt() / chin
            < 1.4 + 2.0 / (nf + 1.0);
        let hs = if hsig { 1.0 } else { 0.0 };
        let kc = (cc * (2.0 - cc) * mueff).sqrt();
        for (p, v) in run.pc.iter_mut().zip(&ystep) {
            *p = (1.0 - cc) * *p + hs * kc * v;
        }
        let steps: Vec<Vec<f64>> = ranked
            .iter()
            .take(mu)
            .map(|(_, x)| x.iter().zip(&old).map(|(a, b)| (a - b) / run.sigma).collect())
            .collect();
        let decay = 1.0 - c1 - cmu;
        let extra = (1.0 - hs) * cc * (2.0 - cc);
        for i in 0..n {
            for j in 0..=i {
                let mut rank_mu = 0.0;
                for (wk, y) in w.iter().zip(&steps) {
                    rank_mu += wk * y[i] * y[j];
                }
                let v = decay * run.c[i * n + j]
                    + c1 * (run.pc[i] * run.pc[j] + extra * run.c[i * n + j])
                    + cmu * rank_mu;
                run.c[i * n + j] = v;
                run.c[j * n + i] = v;
            }
        }
        run.sigma *= ((cs / damps) * (ps_norm / chin - 1.0)).min(1.0).exp();
        run.mean = mean;
        if (run.evals - run.eigen_at) as f64 > lambda as f64 / (c1 + cmu) / nf / 10.0 {
            run.eigen_at = run.evals;
            let (vals, vecs) = jacobi_eigen(&run.c, n);
            run.b = vecs;
            run.d = vals.iter().map(|v| v.max(1e-30).sqrt()).collect();
        }
        run.history.push(gen_best);
        let window = 10 + (30.0 * nf / lambda as f64).ceil() as usize;
        if run.history.len() > window {
            let excess = run.history.len() - window;
            run.history.drain(..excess);
        }

        // Stop tests → restart with a doubled population.
        let max_d = run.d.iter().cloned().fold(0.0, f64::max);
        let min_d = run.d.iter().cloned().fold(f64::INFINITY, f64::min);
        let spread = run.history.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
            - run.history.iter().cloned().fold(f64::INFINITY, f64::min);
        let stalled = run.history.len() >= window && spread.abs() <= 1e-12 * gen_best.abs().max(1e-300);
        let tiny_step = run.sigma * max_d < 1e-13;
        let ill = max_d / min_d.max(f64::MIN_POSITIVE) > 1e7;
        let flat = ranked.len() > 1 && ranked[0].0 == ranked[ranked.len() / 2].0 && ranked[0].0.is_finite();
        let broken = !run.sigma.is_finite() || run.sigma <= 0.0 || run.mean.iter().any(|v| !v.is_finite());
        if stalled || tiny_step || ill || flat || broken {
            self.core.restarts += 1;
            let factor = 2u32.saturating_pow(self.core.restarts).min(MAX_LAMBDA_FACTOR);
            let lambda = self.core.base_lambda.saturating_mul(factor);
            let mut rng = ChaCha8Rng::seed_from_u64(self.core.seed ^ u64::from(self.core.restarts) << 32);
            self.core.run = new_run(n, lambda, &mut rng);
        }
        self.core.generation += 1;
        self.start_generation();
    }

    fn note_best(&mut self, x: &[f64], loss: f64) {
        crate::note_best(&mut self.core.best, x, loss);
    }
}

fn new_run(n: usize, lambda: u32, rng: &mut ChaCha8Rng) -> Run {
    let mut ident = vec![0.0; n * n];
    for i in 0..n {
        ident[i * n + i] = 1.0;
    }
    Run {
        lambda,
        mean: (0..n).map(|_| rng.random_range(0.1..0.9)).collect(),
        sigma: INITIAL_SIGMA,
        c: ident.clone(),
        b: ident,
        d: vec![1.0; n],
        pc: vec![0.0; n],
        ps: vec![0.0; n],
        evals: 0,
        eigen_at: 0,
        generation: 0,
        history: Vec::new(),
    }
}

/// ‖C^{-1/2} y‖.
fn mahalanobis(run: &Run, y: &[f64]) -> f64 {
    let n = y.len();
    (0..n)
        .map(|j| {
            let proj: f64 = (0..n).map(|i| run.b[i * n + j] * y[i]).sum();
            (proj / run.d[j]).powi(2)
        })
        .sum::<f64>()
        .sqrt()
}

/// Eigen-decomposition of a symmetric matrix (cyclic Jacobi): eigenvalues and eigenvectors as
/// columns of a row-major matrix.
fn jacobi_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

impl Optimizer for CmaEs {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for s in self.samples.iter_mut().filter(|s| !s.asked).take(n) {
            s.asked = true;
            out.push(s.x.clone());
        }
        out
    }

    fn tell(&mut self, results: &[Evaluated]) {
        for r in results {
            let loss = if r.loss.is_nan() { f64::INFINITY } else { r.loss };
            if let Some(s) = self.samples.iter_mut().find(|s| s.loss.is_none() && s.asked && s.x == r.x) {
                s.loss = Some(loss);
            }
            self.note_best(&r.x, loss);
        }
        if !self.samples.is_empty() && self.samples.iter().all(|s| s.loss.is_some()) {
            self.end_generation();
        }
    }

    fn inject(&mut self, migrant: Evaluated) {
        crate::keep_better_migrant(&mut self.core.migrant, migrant);
    }

    fn best(&self) -> Option<&Evaluated> {
        self.core.best.as_ref()
    }

    fn kind(&self) -> &'static str {
        "cma-es"
    }

    fn snapshot(&self) -> Vec<u8> {
        borsh::to_vec(&self.core).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let core: Core = borsh::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        let n = core.dim as usize;
        let run = &core.run;
        if [run.c.len(), run.b.len()].iter().any(|l| *l != n * n)
            || [run.mean.len(), run.d.len(), run.pc.len(), run.ps.len()].iter().any(|l| *l != n)
            || run.lambda < 2
        {
            return Err(SnapshotError("CMA-ES state has inconsistent dimensions".into()));
        }
        self.core = core;
        self.start_generation();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{domain::Benchmark, functions::Function};

    fn run(f: Function, d: usize, budget: usize, seed: u64) -> (f64, u32) {
        let problem = Benchmark::new(f, d, seed);
        let mut opt = CmaEs::new(d, 0, seed);
        let mut used = 0;
        while used < budget && opt.best().is_none_or(|b| b.loss >= 1e-10) {
            let r = problem.evaluate_unit(opt.ask(64));
            used += r.len();
            opt.tell(&r);
        }
        (opt.best().map_or(f64::INFINITY, |b| b.loss), opt.restarts())
    }

    #[test]
    fn eigen_decomposition_reconstructs_the_matrix() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let (vals, vecs) = jacobi_eigen(&a, 3);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| vecs[i * 3 + k] * vals[k] * vecs[j * 3 + k]).sum();
                assert!((r - a[i * 3 + j]).abs() < 1e-10, "({i},{j}) {r} vs {}", a[i * 3 + j]);
            }
        }
    }

    #[test]
    fn solves_sphere_and_rosenbrock_in_10d() {
        for seed in 0..3 {
            assert!(run(Function::Sphere, 10, 20_000, seed).0 < 1e-10, "sphere seed {seed}");
            assert!(run(Function::Rosenbrock, 10, 100_000, seed).0 < 1e-8, "rosenbrock seed {seed}");
        }
    }

    #[test]
    fn restarts_escape_a_multimodal_landscape() {
        // Rastrigin in 5-D traps a single run; IPOP restarts with growing populations.
        let (err, restarts) = run(Function::Rastrigin, 5, 200_000, 3);
        assert!(restarts >= 1);
        assert!(err < 1e-8, "{err}");
    }

    #[test]
    fn snapshot_restore_and_injection() {
        let mut a = CmaEs::new(4, 8, 5);
        for _ in 0..6 {
            let xs = a.ask(8);
            let r: Vec<_> = xs
                .into_iter()
                .map(|x| Evaluated { loss: x.iter().map(|v| (v - 0.3).powi(2)).sum(), x })
                .collect();
            a.tell(&r);
        }
        let mut b = CmaEs::new(4, 8, 1234);
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(a.ask(8), b.ask(8), "a restored optimizer asks the same generation");
        assert!(b.restore(b"garbage").is_err());
        // A migrant at the optimum pulls the mean toward it.
        let mut c = CmaEs::new(4, 8, 9);
        let before = c.core.run.mean.clone();
        c.inject(Evaluated { x: vec![0.9; 4], loss: -1.0 });
        let xs = c.ask(8);
        c.tell(&xs.into_iter().map(|x| Evaluated { x, loss: 1.0 }).collect::<Vec<_>>());
        let moved: f64 = c.core.run.mean.iter().zip(&before).map(|(a, b)| a - b).sum();
        assert!(moved > 0.0, "the mean moves toward the migrant");
        assert_eq!(c.best().unwrap().loss, 1.0, "the migrant is not this optimizer's own find");
    }
}
