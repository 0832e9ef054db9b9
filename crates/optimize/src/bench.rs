//! `doin bench optimize`: CEC-style runs, optimizer overhead and the island comparison.

use std::time::Instant;

use crate::{Evaluated, Ga, GaConfig, Optimizer, Shade, domain::Benchmark, functions::Function};

/// Best error of SHADE on `f` in `d` dimensions with `budget` evaluations, shifted by `seed`.
pub fn cec_run(f: Function, d: usize, budget: usize, seed: u64) -> f64 {
    let problem = Benchmark::new(f, d, seed);
    let mut opt = Shade::new(d, Shade::default_population(d), seed);
    let mut used = 0;
    while used < budget {
        let results = problem.evaluate_unit(opt.ask(64.min(budget - used)));
        used += results.len();
        opt.tell(&results);
    }
    opt.best().map_or(f64::INFINITY, |b| b.loss)
}

/// Nanoseconds of GA bookkeeping per evaluation of a trivial objective.
pub fn overhead_ns_per_eval(evals: usize) -> f64 {
    let mut ga = Ga::new(10, GaConfig { population: 100, ..GaConfig::default() }, 1);
    let start = Instant::now();
    let mut used = 0;
    while used < evals {
        let xs = ga.ask(100);
        let results: Vec<Evaluated> = xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect();
        used += results.len();
        ga.tell(&results);
    }
    start.elapsed().as_nanos() as f64 / used.max(1) as f64
}

/// Evaluations until `f` (shifted by `seed`) reaches 1e-8 with `islands` SHADE populations that
/// share their best member after every round, or `None` within `budget` total evaluations.
pub fn islands_to_target(f: Function, d: usize, islands: usize, budget: usize, seed: u64) -> Option<usize> {
    let problem = Benchmark::new(f, d, seed);
    let np = (Shade::default_population(d) / islands).max(20);
    let mut opts: Vec<Shade> = (0..islands).map(|i| Shade::new(d, np, seed * 31 + i as u64)).collect();
    let mut used = 0;
    while used < budget {
        for o in opts.iter_mut() {
            let results = problem.evaluate_unit(o.ask(np));
            used += results.len();
            o.tell(&results);
            if o.best().is_some_and(|b| b.loss < 1e-8) {
                return Some(used);
            }
        }
        if islands > 1 {
            // Migration: every island receives the best member of the archipelago.
            let best = opts.iter().filter_map(|o| o.best().cloned()).min_by(|a, b| a.loss.total_cmp(&b.loss));
            if let Some(best) = best {
                for o in opts.iter_mut() {
                    o.inject(best.clone());
                }
            }
        }
    }
    None
}
