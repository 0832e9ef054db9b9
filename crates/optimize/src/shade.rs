//! SHADE: success-history based adaptive differential evolution (Tanabe & Fukunaga, 2013),
//! current-to-pbest/1/bin with an external archive, in ask/tell form. A generation asks one
//! trial per population member; when all trials of a generation are told, selection and the
//! parameter-memory update run, and a pending migrant replaces the worst member.

use borsh::{BorshDeserialize, BorshSerialize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Evaluated, Optimizer, SnapshotError, normal};

/// The persistent part of the optimizer (what a snapshot holds).
#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
struct Core {
    dim: u32,
    np: u32,
    seed: u64,
    generation: u64,
    population: Vec<Vec<f64>>,
    losses: Vec<f64>,
    archive: Vec<Vec<f64>>,
    memory_f: Vec<f64>,
    memory_cr: Vec<f64>,
    memory_k: u32,
    best: Option<Evaluated>,
    migrant: Option<(Vec<f64>, f64)>,
}

/// One trial of the current generation.
#[derive(Clone, Debug)]
struct Trial {
    x: Vec<f64>,
    target: usize,
    f: f64,
    cr: f64,
    asked: bool,
    loss: Option<f64>,
}

/// SHADE over the unit cube.
#[derive(Debug)]
pub struct Shade {
    core: Core,
    rng: ChaCha8Rng,
    trials: Vec<Trial>,
}

impl Shade {
    /// A new optimizer for `dim` dimensions with population `np` (≥ 4), seeded.
    pub fn new(dim: usize, np: usize, seed: u64) -> Self {
        let np = np.max(4);
        let h = 10usize;
        let core = Core {
            dim: dim as u32,
            np: np as u32,
            seed,
            generation: 0,
            population: Vec::new(),
            losses: Vec::new(),
            archive: Vec::new(),
            memory_f: vec![0.5; h],
            memory_cr: vec![0.5; h],
            memory_k: 0,
            best: None,
            migrant: None,
        };
        let mut s = Self { rng: ChaCha8Rng::seed_from_u64(seed), core, trials: Vec::new() };
        s.start_generation();
        s
    }

    /// The usual population size for `dim` dimensions.
    pub fn default_population(dim: usize) -> usize {
        (10 * dim).clamp(20, 100)
    }

    fn start_generation(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(
            self.core.seed ^ self.core.generation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let (np, d) = (self.core.np as usize, self.core.dim as usize);
        if self.core.population.is_empty() {
            // Initial population: uniform in the cube.
            self.trials = (0..np)
                .map(|i| Trial {
                    x: (0..d).map(|_| self.rng.random::<f64>()).collect(),
                    target: i,
                    f: 0.0,
                    cr: 0.0,
                    asked: false,
                    loss: None,
                })
                .collect();
            return;
        }
        let mut order: Vec<usize> = (0..np).collect();
        order.sort_by(|a, b| self.core.losses[*a].total_cmp(&self.core.losses[*b]));
        let h = self.core.memory_f.len();
        let mut trials = Vec::with_capacity(np);
        for i in 0..np {
            let r = self.rng.random_range(0..h);
            let cr = (self.core.memory_cr[r] + 0.1 * normal(&mut self.rng)).clamp(0.0, 1.0);
            let mut f = 0.0;
            while f <= 0.0 {
                f = self.core.memory_f[r] + 0.1 * cauchy(&mut self.rng);
            }
            let f = f.min(1.0);
            let p = self.rng.random_range((2.0 / np as f64).min(0.2)..=0.2);
            let top = ((p * np as f64).round() as usize).clamp(1, np);
            let pbest = order[self.rng.random_range(0..top)];
            let r1 = loop {
                let r = self.rng.random_range(0..np);
                if r != i {
                    break r;
                }
            };
            let pool = np + self.core.archive.len();
            let r2 = loop {
                let r = self.rng.random_range(0..pool);
                if r != i && r != r1 {
                    break r;
                }
            };
            let xi = &self.core.population[i];
            let xp = &self.core.population[pbest];
            let x1 = &self.core.population[r1];
            let x2 = if r2 < np { &self.core.population[r2] } else { &self.core.archive[r2 - np] };
            let jrand = self.rng.random_range(0..d.max(1));
            let mut u = xi.clone();
            for j in 0..d {
                if j == jrand || self.rng.random::<f64>() < cr {
                    let mut v = xi[j] + f * (xp[j] - xi[j]) + f * (x1[j] - x2[j]);
                    // Bounce halfway back toward the parent when leaving the cube.
                    if v < 0.0 {
                        v = xi[j] / 2.0;
                    } else if v > 1.0 {
                        v = (1.0 + xi[j]) / 2.0;
                    }
                    u[j] = v;
                }
            }
            trials.push(Trial { x: u, target: i, f, cr, asked: false, loss: None });
        }
        self.trials = trials;
    }

    fn end_generation(&mut self) {
        let np = self.core.np as usize;
        if self.core.population.is_empty() {
            self.core.population = self.trials.iter().map(|t| t.x.clone()).collect();
            self.core.losses = self.trials.iter().map(|t| t.loss.unwrap_or(f64::INFINITY)).collect();
        } else {
            let (mut s_f, mut s_cr, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for t in &self.trials {
                let loss = t.loss.unwrap_or(f64::INFINITY);
                let old = self.core.losses[t.target];
                if loss <= old {
                    if loss < old {
                        self.core.archive.push(self.core.population[t.target].clone());
                        s_f.push(t.f);
                        s_cr.push(t.cr);
                        w.push(old - loss);
                    }
                    self.core.population[t.target] = t.x.clone();
                    self.core.losses[t.target] = loss;
                }
            }
            while self.core.archive.len() > np {
                let k = self.rng.random_range(0..self.core.archive.len());
                self.core.archive.swap_remove(k);
            }
            if !s_f.is_empty() {
                let total: f64 = w.iter().sum::<f64>().max(f64::MIN_POSITIVE);
                let lehmer = s_f.iter().zip(&w).map(|(f, w)| w * f * f).sum::<f64>()
                    / s_f.iter().zip(&w).map(|(f, w)| w * f).sum::<f64>().max(f64::MIN_POSITIVE);
                let mean_cr = s_cr.iter().zip(&w).map(|(c, w)| w * c).sum::<f64>() / total;
                let k = self.core.memory_k as usize % self.core.memory_f.len();
                self.core.memory_f[k] = lehmer;
                self.core.memory_cr[k] = mean_cr;
                self.core.memory_k = self.core.memory_k.wrapping_add(1);
            }
        }
        // Island migration: the migrant replaces the worst member if it is better.
        if let Some((x, loss)) = self.core.migrant.take()
            && let Some(worst) = (0..np).max_by(|a, b| self.core.losses[*a].total_cmp(&self.core.losses[*b]))
            && loss < self.core.losses[worst]
        {
            self.core.population[worst] = x;
            self.core.losses[worst] = loss;
        }
        self.core.generation += 1;
        self.start_generation();
    }

    fn note_best(&mut self, x: &[f64], loss: f64) {
        crate::note_best(&mut self.core.best, x, loss);
    }
}

fn cauchy(rng: &mut ChaCha8Rng) -> f64 {
    (std::f64::consts::PI * (rng.random::<f64>() - 0.5)).tan()
}

impl Optimizer for Shade {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        let mut out = Vec::with_capacity(n);
        for t in self.trials.iter_mut().filter(|t| !t.asked).take(n) {
            t.asked = true;
            out.push(t.x.clone());
        }
        out
    }

    fn tell(&mut self, results: &[Evaluated]) {
        for r in results {
            let loss = if r.loss.is_nan() { f64::INFINITY } else { r.loss };
            if let Some(t) = self.trials.iter_mut().find(|t| t.loss.is_none() && t.x == r.x) {
                t.loss = Some(loss);
            }
            self.note_best(&r.x, loss);
        }
        if !self.trials.is_empty() && self.trials.iter().all(|t| t.loss.is_some()) {
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
        "shade"
    }

    fn snapshot(&self) -> Vec<u8> {
        borsh::to_vec(&self.core).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let core: Core = borsh::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        self.core = core;
        self.start_generation();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::Function;

    /// Runs `budget` evaluations of `f` (shifted) in `d` dimensions; returns the best error.
    fn run(f: Function, d: usize, budget: usize, seed: u64) -> f64 {
        crate::bench::cec_run(crate::bench::Algorithm::Shade, f, d, budget, seed).0
    }

    #[test]
    fn solves_shifted_sphere_and_ackley_in_10d() {
        for seed in 0..3 {
            assert!(run(Function::Sphere, 10, 60_000, seed) < 1e-8, "sphere seed {seed}");
            assert!(run(Function::Ackley, 10, 80_000, seed) < 1e-8, "ackley seed {seed}");
        }
    }

    #[test]
    fn snapshot_restore_resumes_the_same_search() {
        let mut a = Shade::new(5, 20, 7);
        for _ in 0..5 {
            let xs = a.ask(20);
            let r: Vec<_> = xs
                .into_iter()
                .map(|x| Evaluated { loss: x.iter().map(|v| (v - 0.3).powi(2)).sum(), x })
                .collect();
            a.tell(&r);
        }
        let snap = a.snapshot();
        let mut b = Shade::new(5, 20, 999);
        b.restore(&snap).unwrap();
        assert_eq!(a.ask(20), b.ask(20), "a restored optimizer asks the same next generation");
        assert!(b.restore(b"garbage").is_err());
    }

    #[test]
    fn an_injected_champion_enters_the_population() {
        let mut opt = Shade::new(3, 8, 1);
        let xs = opt.ask(8);
        let r: Vec<_> = xs.into_iter().map(|x| Evaluated { loss: 10.0, x }).collect();
        opt.tell(&r);
        opt.inject(Evaluated { x: vec![0.5, 0.5, 0.5], loss: 0.0 });
        let xs = opt.ask(8);
        let r: Vec<_> = xs.into_iter().map(|x| Evaluated { loss: 10.0, x }).collect();
        opt.tell(&r);
        assert!(opt.core.population.iter().any(|x| x == &vec![0.5, 0.5, 0.5]));
        assert!(opt.core.losses.contains(&0.0));
    }
}
