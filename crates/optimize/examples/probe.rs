//! Quick look at the optimizers on the CEC-style protocol (30-D, 10 000 × D evaluations,
//! shifted optimum) and at the island model:
//! `cargo run --release -p doin-optimize --example probe -- SEEDS`.

use doin_optimize::{
    bench::{Algorithm, SOLVED, cec_runs, islands_to_target},
    functions::Function,
};

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let d = 30;
    for f in [Function::Sphere, Function::Ackley, Function::Rastrigin, Function::Rosenbrock] {
        for a in Algorithm::ALL {
            let t = std::time::Instant::now();
            let mut errors = cec_runs(a, f, d, 10_000 * d, seeds, 2);
            let solved = errors.iter().filter(|e| **e < SOLVED).count();
            errors.sort_by(f64::total_cmp);
            println!(
                "{:<10} {:<12} solved {solved}/{seeds}  median error {:.3e}  {:.1}s",
                f.name(),
                a.name(),
                errors[errors.len() / 2],
                t.elapsed().as_secs_f64()
            );
        }
    }
    for islands in [1, 4] {
        let runs: Vec<_> =
            (0..seeds).map(|s| islands_to_target(Function::Rastrigin, 10, islands, 400_000, s)).collect();
        let ok: Vec<_> = runs.iter().flatten().collect();
        let mean = |f: fn(&doin_optimize::bench::IslandRun) -> usize| {
            ok.iter().map(|r| f(r) as f64).sum::<f64>() / ok.len().max(1) as f64
        };
        println!(
            "islands {islands}: solved {}/{seeds}, mean total {:.0}, mean per island {:.0}",
            ok.len(),
            mean(|r| r.total),
            mean(|r| r.per_island)
        );
    }
}
