//! Quick look at SHADE on the CEC-style protocol (30-D, 10 000 × D evaluations, shifted
//! optimum): `cargo run --release -p doin-optimize --example probe -- SEEDS`.

use doin_optimize::{bench::cec_run, functions::Function};

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let d = 30;
    for f in [Function::Sphere, Function::Ackley, Function::Rastrigin, Function::Rosenbrock] {
        let mut errors: Vec<f64> = (0..seeds).map(|seed| cec_run(f, d, 10_000 * d, seed)).collect();
        let solved = errors.iter().filter(|e| **e < 1e-8).count();
        errors.sort_by(f64::total_cmp);
        println!("{:<10} solved {solved}/{seeds}  median error {:.3e}", f.name(), errors[errors.len() / 2]);
    }
}
