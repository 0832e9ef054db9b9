//! A genetic algorithm in ask/tell form: tournament selection, simulated binary crossover (SBX),
//! polynomial mutation, elitism, and staged search — after `patience` generations without
//! improvement the next stage starts with finer mutation (`optimization_patience`).

use borsh::{BorshDeserialize, BorshSerialize};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Evaluated, Optimizer, SnapshotError};

/// GA settings.
#[derive(Clone, Copy, Debug, BorshSerialize, BorshDeserialize)]
pub struct GaConfig {
    /// Population size (`population_size`).
    pub population: u32,
    /// Members carried unchanged into the next generation.
    pub elites: u32,
    /// Tournament size.
    pub tournament: u32,
    /// Crossover probability.
    pub crossover: f64,
    /// SBX distribution index.
    pub eta_crossover: f64,
    /// Polynomial-mutation distribution index of stage 0 (larger = finer).
    pub eta_mutation: f64,
    /// Generations without improvement before the next stage (`optimization_patience`).
    pub patience: u32,
    /// Stages at most.
    pub stages: u32,
}

impl Default for GaConfig {
    fn default() -> Self {
        Self {
            population: 40,
            elites: 2,
            tournament: 3,
            crossover: 0.9,
            eta_crossover: 15.0,
            eta_mutation: 20.0,
            patience: 8,
            stages: 4,
        }
    }
}

#[derive(Clone, Debug, BorshSerialize, BorshDeserialize)]
struct Core {
    config: GaConfig,
    dim: u32,
    seed: u64,
    generation: u64,
    stage: u32,
    stall: u32,
    population: Vec<(Vec<f64>, f64)>,
    best: Option<Evaluated>,
    migrant: Option<(Vec<f64>, f64)>,
}

/// The genetic algorithm.
#[derive(Debug)]
pub struct Ga {
    core: Core,
    rng: ChaCha8Rng,
    /// This generation's candidates: point, asked, loss once told.
    pending: Vec<(Vec<f64>, bool, Option<f64>)>,
}

impl Ga {
    /// A GA for `dim` dimensions.
    pub fn new(dim: usize, config: GaConfig, seed: u64) -> Self {
        let core = Core {
            config,
            dim: dim as u32,
            seed,
            generation: 0,
            stage: 0,
            stall: 0,
            population: Vec::new(),
            best: None,
            migrant: None,
        };
        let mut ga = Self { core, rng: ChaCha8Rng::seed_from_u64(seed), pending: Vec::new() };
        ga.breed();
        ga
    }

    fn tournament(&mut self) -> usize {
        let n = self.core.population.len();
        let mut best = self.rng.random_range(0..n);
        for _ in 1..self.core.config.tournament.max(1) {
            let c = self.rng.random_range(0..n);
            if self.core.population[c].1 < self.core.population[best].1 {
                best = c;
            }
        }
        best
    }

    fn breed(&mut self) {
        self.rng = ChaCha8Rng::seed_from_u64(
            self.core.seed ^ self.core.generation.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        let (n, d) = (self.core.config.population.max(2) as usize, self.core.dim as usize);
        if self.core.population.is_empty() {
            self.pending =
                (0..n).map(|_| ((0..d).map(|_| self.rng.random::<f64>()).collect(), false, None)).collect();
            return;
        }
        let eta_m = self.core.config.eta_mutation * 2f64.powi(self.core.stage as i32);
        let eta_c = self.core.config.eta_crossover;
        let mut children = Vec::with_capacity(n);
        let elites = (self.core.config.elites as usize).min(n);
        while children.len() < n - elites {
            let (a, b) = (self.tournament(), self.tournament());
            let (mut c1, mut c2) = (self.core.population[a].0.clone(), self.core.population[b].0.clone());
            if self.rng.random::<f64>() < self.core.config.crossover {
                for j in 0..d {
                    let u: f64 = self.rng.random();
                    let beta = if u <= 0.5 {
                        (2.0 * u).powf(1.0 / (eta_c + 1.0))
                    } else {
                        (1.0 / (2.0 * (1.0 - u))).powf(1.0 / (eta_c + 1.0))
                    };
                    let (x1, x2) = (c1[j], c2[j]);
                    c1[j] = 0.5 * ((1.0 + beta) * x1 + (1.0 - beta) * x2);
                    c2[j] = 0.5 * ((1.0 - beta) * x1 + (1.0 + beta) * x2);
                }
            }
            for c in [&mut c1, &mut c2] {
                for v in c.iter_mut() {
                    if self.rng.random::<f64>() < 1.0 / d.max(1) as f64 {
                        let u: f64 = self.rng.random();
                        let delta = if u < 0.5 {
                            (2.0 * u).powf(1.0 / (eta_m + 1.0)) - 1.0
                        } else {
                            1.0 - (2.0 * (1.0 - u)).powf(1.0 / (eta_m + 1.0))
                        };
                        *v += delta;
                    }
                    *v = v.clamp(0.0, 1.0);
                }
            }
            children.push((c1, false, None));
            if children.len() < n - elites {
                children.push((c2, false, None));
            }
        }
        self.pending = children;
    }

    fn next_generation(&mut self) {
        let n = self.core.config.population.max(2) as usize;
        let before = self.core.best.as_ref().map_or(f64::INFINITY, |b| b.loss);
        let mut pool: Vec<(Vec<f64>, f64)> = std::mem::take(&mut self.core.population);
        let elites = (self.core.config.elites as usize).min(n);
        pool.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mut next: Vec<(Vec<f64>, f64)> = pool.into_iter().take(elites).collect();
        next.extend(self.pending.drain(..).map(|(x, _, l)| (x, l.unwrap_or(f64::INFINITY))));
        next.sort_by(|a, b| a.1.total_cmp(&b.1));
        next.truncate(n);
        if let Some((x, loss)) = self.core.migrant.take()
            && let Some(worst) = next.last_mut()
            && loss < worst.1
        {
            *worst = (x, loss);
        }
        self.core.population = next;
        let after = self.core.best.as_ref().map_or(f64::INFINITY, |b| b.loss);
        if after < before {
            self.core.stall = 0;
        } else {
            self.core.stall += 1;
            if self.core.stall >= self.core.config.patience && self.core.stage + 1 < self.core.config.stages {
                self.core.stage += 1;
                self.core.stall = 0;
            }
        }
        self.core.generation += 1;
        self.breed();
    }
}

impl Optimizer for Ga {
    fn stage(&self) -> u32 {
        self.core.stage
    }

    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        for p in self.pending.iter_mut().filter(|p| !p.1).take(n) {
            p.1 = true;
            out.push(p.0.clone());
        }
        out
    }

    fn tell(&mut self, results: &[Evaluated]) {
        for r in results {
            let loss = if r.loss.is_nan() { f64::INFINITY } else { r.loss };
            if let Some(p) = self.pending.iter_mut().find(|p| p.2.is_none() && p.0 == r.x) {
                p.2 = Some(loss);
            }
            crate::note_best(&mut self.core.best, &r.x, loss);
        }
        if !self.pending.is_empty() && self.pending.iter().all(|p| p.2.is_some()) {
            self.next_generation();
        }
    }

    fn inject(&mut self, migrant: Evaluated) {
        crate::keep_better_migrant(&mut self.core.migrant, migrant);
    }

    fn best(&self) -> Option<&Evaluated> {
        self.core.best.as_ref()
    }

    fn kind(&self) -> &'static str {
        "ga"
    }

    fn snapshot(&self) -> Vec<u8> {
        borsh::to_vec(&self.core).unwrap_or_default()
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.core = borsh::from_slice(bytes).map_err(|e| SnapshotError(e.to_string()))?;
        self.breed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        domain::Benchmark,
        driver::{NoHooks, RunConfig, run},
        functions::Function,
    };

    fn cfg(budget: usize) -> RunConfig {
        RunConfig {
            budget,
            batch: 40,
            workers: 1,
            max_wall: std::time::Duration::from_secs(5),
            ..RunConfig::default()
        }
    }

    #[derive(Default)]
    struct Stages(Vec<(bool, u32)>);
    impl crate::driver::Hooks for Stages {
        fn stage_start(&mut self, stage: u32) {
            self.0.push((true, stage));
        }
        fn stage_end(&mut self, stage: u32) {
            self.0.push((false, stage));
        }
    }

    #[test]
    fn ga_makes_steady_progress_and_advances_stages() {
        let domain = Benchmark::new(Function::Sphere, 5, 9);
        let mut ga = Ga::new(5, GaConfig { patience: 3, ..GaConfig::default() }, 5);
        let first = run(&domain, &mut ga, cfg(400), &mut NoHooks).best_loss;
        let later = run(&domain, &mut ga, cfg(20_000), &mut NoHooks).best_loss;
        assert!(later < first / 1000.0, "{first} -> {later}");
        assert!(later < 1e-2, "{later}");
        assert!(ga.stage() > 0, "stalls must have advanced the stage");
        // The stage hooks bracket every stage a run goes through, in order.
        let mut ga = Ga::new(5, GaConfig { patience: 3, ..GaConfig::default() }, 6);
        let mut stages = Stages::default();
        run(&domain, &mut ga, cfg(20_000), &mut stages);
        let last = ga.stage();
        assert_eq!(stages.0.last(), Some(&(false, last)));
        assert!(stages.0.len() >= 4 && stages.0.len() % 2 == 0, "{:?}", stages.0);
        for pair in stages.0.chunks(2) {
            assert_eq!((pair[0].0, pair[1].0), (true, false));
            assert_eq!(pair[0].1, pair[1].1);
        }
    }

    #[test]
    fn snapshot_and_migration() {
        let mut a = Ga::new(3, GaConfig::default(), 1);
        let xs = a.ask(100);
        let told: Vec<_> = xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect();
        a.tell(&told);
        let snap = a.snapshot();
        let mut b = Ga::new(3, GaConfig::default(), 77);
        b.restore(&snap).unwrap();
        let xs = b.ask(40);
        assert_eq!(a.ask(40), xs);
        assert_eq!(a.best(), b.best());
        // A migrant better than everyone replaces the worst member.
        b.inject(Evaluated { x: vec![0.0, 0.0, 0.0], loss: -1.0 });
        let told: Vec<_> = xs.into_iter().map(|x| Evaluated { loss: 5.0, x }).collect();
        b.tell(&told);
        assert!(b.core.population.iter().any(|(x, l)| *l == -1.0 && x == &vec![0.0, 0.0, 0.0]));
    }
}
