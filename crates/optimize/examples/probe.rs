//! Quick look at SHADE on the CEC-style protocol (30-D, 10 000 × D evaluations, shifted
//! optimum): `cargo run --release -p doin-optimize --example probe -- SEEDS`.

use doin_optimize::{Evaluated, Optimizer, Shade, Space, functions::Function};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() {
    let seeds: u64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let d = 30;
    for f in [Function::Sphere, Function::Ackley, Function::Rastrigin, Function::Rosenbrock] {
        let mut errors = Vec::new();
        for seed in 0..seeds {
            let b = f.bound();
            let space = Space::cube(d, b);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let shift: Vec<f64> = (0..d).map(|_| rng.random_range(-0.8 * b..0.8 * b)).collect();
            let mut opt = Shade::new(d, Shade::default_population(d), seed);
            let mut used = 0;
            while used < 10_000 * d {
                let xs = opt.ask(64);
                let results: Vec<Evaluated> = xs
                    .into_iter()
                    .map(|x| {
                        let v: Vec<f64> = space.decode(&x).iter().map(|v| v.as_f64()).collect();
                        Evaluated { loss: f.eval(&v, &shift), x }
                    })
                    .collect();
                used += results.len();
                opt.tell(&results);
            }
            errors.push(opt.best().map_or(f64::INFINITY, |b| b.loss));
        }
        let solved = errors.iter().filter(|e| **e < 1e-8).count();
        errors.sort_by(f64::total_cmp);
        println!("{:<10} solved {solved}/{seeds}  median error {:.3e}", f.name(), errors[errors.len() / 2]);
    }
}
