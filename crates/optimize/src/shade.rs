//! SHADE: success-history based adaptive differential evolution (Tanabe & Fukunaga, 2013),
//! current-to-pbest/1/bin with an external archive, in ask/tell form. A generation asks one
//! trial per population member; when all trials of a generation are told, selection and the
//! parameter-memory update run, and a pending migrant replaces the worst member.
//!
//! **Shared** ([`Shade::shared`]): the optimizers of a network run one population together.
//! Each measures trials for a random `1 / optimizers` of its members per generation, and the
//! trials other nodes measured (their shared trials, released by the node's trial book once
//! checked) enter the population too: each replaces the member nearest to it if it is better
//! (crowding, Thomsen 2004: a trial replaces what it resembles, so the population keeps its
//! niches instead of collapsing on the best few points). So the network spends one
//! population's evaluations per generation however many nodes share it, and each node's
//! share falls with the nodes; islands that share nothing but champions each need a
//! population of their own and stall when small. (The node splits a network's optimizers
//! into a few such shared islands: `doin_node::optimizer::Place`.)

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
    /// The population is the network's (`None`: an island of its own).
    shared: Option<Shared>,
}

/// A population shared with other optimizers.
#[derive(Debug)]
struct Shared {
    /// Trials this node measures per generation.
    generation: usize,
    /// Who measured each member (`None`: this node). Not in snapshots: after a restore, members
    /// count as this node's, and a later ban of their sender no longer reaches them.
    sources: Vec<Option<u32>>,
}

/// A trial of the first, uniform part of a shared population (it has no target).
const NO_TARGET: usize = usize::MAX;

/// Steps per unit of the grid shared trials travel on (`doin_primitives::trials`: 16 bits per
/// dimension). A shared population measures only points of the grid, so the point another
/// node checks is the point that was measured: off the grid, a population converged below
/// one step (a loss of 1e-9 on a quadratic) claims losses its rounded points do not have, and
/// honest nodes' spot checks ban each other (seen in the devnet test before this).
const GRID: f64 = 65_535.0;

fn on_grid(x: &mut [f64]) {
    for v in x {
        *v = (v.clamp(0.0, 1.0) * GRID).round() / GRID;
    }
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
        let mut s = Self { rng: ChaCha8Rng::seed_from_u64(seed), core, trials: Vec::new(), shared: None };
        s.start_generation();
        s
    }

    /// Runs the population together with `optimizers − 1` other nodes (see the module's
    /// documentation): this node measures `⌈np / optimizers⌉` trials per generation, and
    /// [`Optimizer::observe`] takes the others' trials in. One optimizer: unchanged.
    pub fn shared(mut self, optimizers: usize) -> Self {
        if optimizers > 1 {
            let np = self.core.np as usize;
            self.shared = Some(Shared { generation: np.div_ceil(optimizers).max(1), sources: Vec::new() });
            self.core.population.clear();
            self.core.losses.clear();
            self.start_generation();
        }
        self
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
        // A shared population fills from every node's uniform points (its own `generation`
        // at a time, the others' as they arrive) until it has `np` members.
        let filling = match &self.shared {
            None => self.core.population.is_empty().then_some(np),
            Some(sh) => (self.core.population.len() < np).then_some(sh.generation),
        };
        if let Some(count) = filling {
            let shared = self.shared.is_some();
            // Initial population: uniform in the cube.
            self.trials = (0..count)
                .map(|i| Trial {
                    x: (0..d).map(|_| self.rng.random::<f64>()).collect(),
                    target: if shared { NO_TARGET } else { i },
                    f: 0.0,
                    cr: 0.0,
                    asked: false,
                    loss: None,
                })
                .collect();
            if shared {
                self.trials.iter_mut().for_each(|t| on_grid(&mut t.x));
            }
            return;
        }
        let mut order: Vec<usize> = (0..np).collect();
        order.sort_by(|a, b| self.core.losses[*a].total_cmp(&self.core.losses[*b]));
        let targets: Vec<usize> = match &self.shared {
            None => (0..np).collect(),
            // A random `generation` of the members (a partial Fisher–Yates shuffle).
            Some(sh) => {
                let mut all: Vec<usize> = (0..np).collect();
                let g = sh.generation.min(np);
                for k in 0..g {
                    let j = self.rng.random_range(k..np);
                    all.swap(k, j);
                }
                all.truncate(g);
                all
            }
        };
        self.trials = targets.into_iter().map(|i| self.trial_for(i, &order)).collect();
        if self.shared.is_some() {
            self.trials.iter_mut().for_each(|t| on_grid(&mut t.x));
        }
    }

    /// A current-to-pbest/1/bin trial for member `i` (`order`: the members by loss).
    fn trial_for(&mut self, i: usize, order: &[usize]) -> Trial {
        let (np, d) = (self.core.np as usize, self.core.dim as usize);
        let h = self.core.memory_f.len();
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
        Trial { x: u, target: i, f, cr, asked: false, loss: None }
    }

    fn end_generation(&mut self) {
        let np = self.core.np as usize;
        if self.shared.is_some() && self.trials.iter().any(|t| t.target == NO_TARGET) {
            // Uniform points of a shared population that is filling up.
            for t in std::mem::take(&mut self.trials) {
                self.admit(None, Evaluated { x: t.x, loss: t.loss.unwrap_or(f64::INFINITY) });
            }
        } else if self.core.population.is_empty() {
            self.core.population = self.trials.iter().map(|t| t.x.clone()).collect();
            self.core.losses = self.trials.iter().map(|t| t.loss.unwrap_or(f64::INFINITY)).collect();
        } else {
            let (mut s_f, mut s_cr, mut w) = (Vec::new(), Vec::new(), Vec::new());
            for t in std::mem::take(&mut self.trials) {
                let loss = t.loss.unwrap_or(f64::INFINITY);
                let old = self.core.losses[t.target];
                if loss <= old {
                    if loss < old {
                        self.core.archive.push(self.core.population[t.target].clone());
                        s_f.push(t.f);
                        s_cr.push(t.cr);
                        w.push(old - loss);
                    }
                    self.set_member(t.target, t.x, loss, None);
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
        // Island migration: the migrant replaces the worst member if it is better (a shared
        // population still filling takes it as a member).
        if self.shared.is_some() && self.core.population.len() < np {
            if let Some((x, loss)) = self.core.migrant.take() {
                self.admit(None, Evaluated { x, loss });
            }
        } else if let Some((x, loss)) = self.core.migrant.take()
            && let Some(worst) = (0..np).max_by(|a, b| self.core.losses[*a].total_cmp(&self.core.losses[*b]))
            && loss < self.core.losses[worst]
        {
            self.set_member(worst, x, loss, None);
        }
        self.core.generation += 1;
        self.start_generation();
    }

    /// A measured point enters a shared population: appended while it fills, then in place
    /// of the member nearest to it if it is better (the old member goes to the archive).
    fn admit(&mut self, source: Option<u32>, t: Evaluated) {
        let np = self.core.np as usize;
        let Some(sh) = self.shared.as_mut() else { return };
        if self.core.population.len() < np {
            self.core.population.push(t.x);
            self.core.losses.push(t.loss);
            sh.sources.push(source);
            return;
        }
        let distance = |m: &[f64]| m.iter().zip(&t.x).map(|(a, b)| (a - b) * (a - b)).sum::<f64>();
        let Some(near) = (0..np).min_by(|a, b| {
            distance(&self.core.population[*a]).total_cmp(&distance(&self.core.population[*b]))
        }) else {
            return;
        };
        if t.loss < self.core.losses[near] {
            // A measured member goes to the archive (a forgotten one, a distrusted sender's,
            // does not).
            if self.core.losses[near].is_finite() {
                self.core.archive.push(self.core.population[near].clone());
                if self.core.archive.len() > np {
                    let k = self.rng.random_range(0..self.core.archive.len());
                    self.core.archive.swap_remove(k);
                }
            }
            self.set_member(near, t.x, t.loss, source);
        }
    }

    /// Member `k` becomes `x` at `loss`, measured by `source` (`None`: this node).
    fn set_member(&mut self, k: usize, x: Vec<f64>, loss: f64, source: Option<u32>) {
        self.core.population[k] = x;
        self.core.losses[k] = loss;
        if let Some(s) = self.shared.as_mut().and_then(|sh| sh.sources.get_mut(k)) {
            *s = source;
        }
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

    /// Another node's trials enter a shared population (an island ignores them).
    fn observe(&mut self, source: u32, trials: &[Evaluated]) {
        let d = self.core.dim as usize;
        for t in trials {
            if t.x.len() != d || t.x.iter().any(|v| !v.is_finite()) || t.loss.is_nan() {
                continue;
            }
            let x = t.x.iter().map(|v| v.clamp(0.0, 1.0)).collect();
            self.admit(Some(source), Evaluated { x, loss: t.loss });
        }
    }

    /// A source no longer trusted: its members count as unmeasured (the next trial in their
    /// place replaces them).
    fn trust(&mut self, source: u32, weight: f64) {
        if weight > 0.0 && weight.is_finite() {
            return;
        }
        let Some(sh) = self.shared.as_mut() else { return };
        for (k, s) in sh.sources.iter_mut().enumerate() {
            if *s == Some(source) {
                *s = None;
                if let Some(l) = self.core.losses.get_mut(k) {
                    *l = f64::INFINITY;
                }
            }
        }
    }

    fn learns_shared(&self) -> bool {
        self.shared.is_some()
    }

    fn in_flight(&self) -> Vec<Vec<f64>> {
        self.trials.iter().filter(|t| t.asked && t.loss.is_none()).map(|t| t.x.clone()).collect()
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
        if let Some(sh) = self.shared.as_mut() {
            sh.sources = vec![None; self.core.population.len()];
        }
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

    /// `k` optimizers sharing one population of `np` on shifted 10-d Rastrigin, each telling
    /// the others its trials at once; returns the evaluations per optimizer until one of them
    /// has a loss below `target` (at most `budget` each).
    fn shared_run(k: usize, np: usize, seed: u64, target: f64, budget: usize) -> usize {
        let problem = crate::domain::Benchmark::new(Function::Rastrigin, 10, seed);
        let mut opts: Vec<Shade> =
            (0..k).map(|i| Shade::new(10, np, seed * 100 + i as u64).shared(k)).collect();
        for used in 1..=budget {
            let mut told = Vec::new();
            for o in &mut opts {
                let x = o.ask(1);
                let r = problem.evaluate_unit(x);
                o.tell(&r);
                told.push(r);
            }
            for (i, o) in opts.iter_mut().enumerate() {
                for (j, r) in told.iter().enumerate().filter(|(j, _)| *j != i) {
                    o.observe(j as u32, r);
                }
            }
            if opts.iter().any(|o| o.best().is_some_and(|b| b.loss < target)) {
                return used;
            }
        }
        budget
    }

    /// Optimizers running one population together measure a share of each generation each:
    /// together they need about the evaluations one needs alone (so each needs a fraction).
    #[test]
    fn optimizers_sharing_a_population_split_its_evaluations() {
        let (mut alone, mut four) = (Vec::new(), Vec::new());
        for seed in 1..=5 {
            alone.push(shared_run(1, 40, seed, 20.0, 40_000));
            four.push(shared_run(4, 40, seed, 20.0, 40_000));
        }
        alone.sort_unstable();
        four.sort_unstable();
        let (a, f) = (alone[2], four[2]);
        assert!(a < 40_000, "alone reaches the target: {alone:?}");
        assert!(
            (f as f64) < a as f64 / 3.0,
            "four sharing need under a third of one's evaluations each: {four:?} against {alone:?}"
        );
    }

    /// Another node's trial enters a shared population in place of the member nearest to it
    /// when it is better; a source that loses its trust loses its members (they count as
    /// unmeasured); an island ignores other nodes' trials.
    #[test]
    fn a_shared_population_takes_trials_in_and_forgets_a_distrusted_source() {
        let mut opt = Shade::new(2, 4, 1).shared(2);
        assert!(opt.learns_shared());
        let xs = opt.ask(10);
        assert_eq!(xs.len(), 2, "its share of the first, uniform generation");
        opt.tell(&xs.iter().map(|x| Evaluated { x: x.clone(), loss: 5.0 }).collect::<Vec<_>>());
        assert_eq!(opt.core.population.len(), 2, "the population fills from its own points");
        opt.observe(
            7,
            &[Evaluated { x: vec![0.1, 0.1], loss: 4.0 }, Evaluated { x: vec![0.9, 0.9], loss: 4.0 }],
        );
        assert_eq!(opt.core.population.len(), 4, "and from the other node's");
        opt.observe(
            7,
            &[Evaluated { x: vec![0.11, 0.1], loss: 1.0 }, Evaluated { x: vec![0.89, 0.9], loss: 9.0 }],
        );
        assert!(opt.core.population.contains(&vec![0.11, 0.1]), "a better trial replaces the nearest member");
        assert!(!opt.core.population.contains(&vec![0.1, 0.1]));
        assert!(!opt.core.population.contains(&vec![0.89, 0.9]), "a worse one does not");
        opt.observe(
            7,
            &[Evaluated { x: vec![0.5, f64::NAN], loss: 0.0 }, Evaluated { x: vec![0.5], loss: 0.0 }],
        );
        assert!(opt.core.losses.iter().all(|l| *l >= 1.0), "malformed trials are ignored");
        opt.trust(7, 0.5);
        assert!(opt.core.losses.contains(&1.0), "a trusted source keeps its members");
        opt.trust(7, 0.0);
        assert_eq!(
            opt.core.losses.iter().filter(|l| l.is_infinite()).count(),
            2,
            "its members are forgotten"
        );
        assert!(opt.best().is_none_or(|b| b.loss == 5.0), "other nodes' trials are not this node's best");
        let mut island = Shade::new(2, 4, 1);
        assert!(!island.learns_shared());
        island.observe(7, &[Evaluated { x: vec![0.1, 0.1], loss: 0.0 }]);
        assert!(island.core.population.is_empty(), "an island ignores them");
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
