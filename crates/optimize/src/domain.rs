//! Domains: what is optimized and how a candidate is measured. An optimizer measures on its own
//! data (`seed = None`); an evaluator measures on data derived from its seed, which the
//! optimizer could not have seen (DESIGN §4.1 step 4).

use std::{collections::BTreeMap, time::Instant};

use doin_primitives::Hash;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{
    functions::Function,
    space::{Space, Value},
};

/// What one evaluation produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The domain's performance metric (higher is better unless the domain says otherwise).
    pub performance: f64,
    /// Extra metrics (train/validation/test MAE, epochs, …).
    pub metrics: BTreeMap<String, f64>,
}

/// A model's answer to input rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Inference {
    /// One output vector per row (logits for classifiers).
    pub outputs: Vec<Vec<f64>>,
    /// The predicted class per row, for classifiers.
    pub labels: Option<Vec<u32>>,
}

/// Limits one evaluation runs under. Domains check the deadline and epochs cooperatively and
/// refuse a candidate whose memory estimate is over the limit before they start it.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Give up after this instant.
    pub deadline: Instant,
    /// Training epochs at most.
    pub max_epochs: u32,
    /// Estimated memory of one evaluation at most, in bytes.
    pub max_memory_bytes: u64,
}

impl Budget {
    /// A budget of `wall` from now, `max_epochs` epochs and no memory limit to speak of.
    pub fn new(wall: std::time::Duration, max_epochs: u32) -> Self {
        Self { deadline: Instant::now() + wall, max_epochs, max_memory_bytes: u64::MAX }
    }

    /// Whether the deadline passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Refuses an evaluation whose estimated memory is over the limit.
    pub fn check_memory(&self, estimate_bytes: u64) -> Result<(), EvalError> {
        if estimate_bytes > self.max_memory_bytes {
            return Err(EvalError::ResourceLimit(format!(
                "memory estimate {} MiB over the limit of {} MiB",
                estimate_bytes >> 20,
                self.max_memory_bytes >> 20
            )));
        }
        Ok(())
    }
}

/// Why an evaluation failed (reported, never a crash).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The wall-clock limit was hit.
    #[error("evaluation exceeded its time limit")]
    Timeout,
    /// The parameters are unusable (wrong count, out of range).
    #[error("bad parameters: {0}")]
    BadParams(String),
    /// A resource limit other than time (memory estimate, epochs) refused the candidate.
    #[error("resource limit: {0}")]
    ResourceLimit(String),
    /// The domain does not offer this operation.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The domain failed.
    #[error("evaluation failed: {0}")]
    Failed(String),
    /// The domain cannot evaluate now (its plugin waits out a restart backoff); retry after
    /// the duration.
    #[error("domain unavailable for {0:?}: {1}")]
    Unavailable(std::time::Duration, String),
}

/// An optimization target.
pub trait Domain: Send + Sync {
    /// The domain id.
    fn id(&self) -> &str;
    /// The parameter space.
    fn space(&self) -> &Space;
    /// The parameters' names, in the space's order (what `param_bounds` and the chain's domain
    /// spec call them); `p0`, `p1`, … unless the domain names them.
    fn param_names(&self) -> Vec<String> {
        (0..self.space().len()).map(|i| format!("p{i}")).collect()
    }
    /// Whether higher performance is better.
    fn higher_is_better(&self) -> bool;
    /// Measures `params` on the optimizer's data (`seed = None`) or on data derived from an
    /// evaluator's seed.
    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError>;
    /// Trains the model `params` describe and returns it as an artifact (for inference);
    /// domains without a model say [`EvalError::Unsupported`].
    fn train(&self, _params: &[Value], _seed: Option<&Hash>, _budget: Budget) -> Result<Vec<u8>, EvalError> {
        Err(EvalError::Unsupported(format!("domain {} has no trained artifact", self.id())))
    }
    /// Whether [`Domain::train`], [`Domain::measure_artifact`] and [`Domain::infer`] work.
    fn has_model(&self) -> bool {
        false
    }
    /// Measures a trained model artifact (from [`Domain::train`]) on the domain's held-out data:
    /// the figure an evaluator votes for a reveal's artifact. Deterministic: every honest
    /// evaluator gets the same figure from the same bytes.
    fn measure_artifact(&self, _artifact: &[u8]) -> Result<f64, EvalError> {
        Err(EvalError::Unsupported(format!("domain {} has no trained artifact", self.id())))
    }
    /// Runs a trained model artifact on input rows: one output vector per row (and a label per
    /// row for classifiers). Deterministic, so another node can re-execute an answer.
    fn infer(&self, _artifact: &[u8], _rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        Err(EvalError::Unsupported(format!("domain {} has no trained artifact", self.id())))
    }
    /// [`Domain::infer`] for an artifact the caller holds under its content address `hash`
    /// (`Hash::of_artifact(artifact)`, checked when it was fetched): a domain that keeps models
    /// loaded by hash (a plugin) does not hash the bytes again on every request. The caller
    /// answers for `hash` naming these bytes.
    fn infer_known(&self, hash: &Hash, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        let _ = hash;
        self.infer(artifact, rows)
    }
    /// How far an output of [`Domain::infer`] may be from another node's for the same model and
    /// row and still count as the same answer: 0 (the default) means equal as `f32` — the
    /// built-in models' forward passes are deterministic; a plugin declares its own bound
    /// (`inference_tolerance`) when its model runs on hardware that is not.
    fn inference_tolerance(&self) -> f64 {
        0.0
    }
    /// The loss an optimizer minimizes for a measurement.
    fn loss(&self, m: &Measurement) -> f64 {
        if self.higher_is_better() { -m.performance } else { m.performance }
    }
}

fn check(space: &Space, params: &[Value]) -> Result<Vec<f64>, EvalError> {
    if params.len() != space.len() {
        return Err(EvalError::BadParams(format!(
            "{} parameters, the domain has {}",
            params.len(),
            space.len()
        )));
    }
    Ok(params.iter().map(|v| v.as_f64()).collect())
}

/// The Python system's reference domain: `n` parameters in bounds, loss `Σ (x − target)²`,
/// performance `−loss`. An evaluator's data is a seed-drawn sample: each coordinate's error
/// weighs `1 ± noise` (uniform, drawn from the evaluator's seed), so every evaluator measures a
/// figure of its own that the optimizer cannot predict, unbiased (the weights average 1) and
/// with a spread relative to the loss at any scale.
#[derive(Clone, Debug)]
pub struct Quadratic {
    space: Space,
    target: Vec<f64>,
    noise: f64,
}

impl Quadratic {
    /// Evaluator noise of the built-in `quadratic` (each coordinate's error weighs 1 ± this).
    pub const NOISE: f64 = 0.1;

    /// `n` parameters in `[-bound, bound]`, target drawn from `target_seed`, evaluator weights
    /// spread by `noise` (relative, clamped to `[0, 1]`).
    pub fn new(n: usize, bound: f64, target_seed: u64, noise: f64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(target_seed);
        let target = (0..n).map(|_| rng.random_range(-0.5 * bound..0.5 * bound)).collect();
        Self { space: Space::cube(n, bound), target, noise: noise.clamp(0.0, 1.0) }
    }
}

/// `n` weights `1 ± noise` drawn from `seed` (all 1 without a seed: the optimizer's own data).
fn sample_weights(n: usize, seed: Option<&Hash>, noise: f64) -> Vec<f64> {
    match seed {
        None => vec![1.0; n],
        Some(s) => {
            let mut rng = ChaCha8Rng::from_seed(s.0);
            (0..n).map(|_| 1.0 + noise * (rng.random::<f64>() * 2.0 - 1.0)).collect()
        }
    }
}

impl Domain for Quadratic {
    fn id(&self) -> &str {
        "quadratic"
    }
    fn space(&self) -> &Space {
        &self.space
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn evaluate(&self, params: &[Value], seed: Option<&Hash>, _: Budget) -> Result<Measurement, EvalError> {
        let x = check(&self.space, params)?;
        let weights = sample_weights(x.len(), seed, self.noise);
        let loss: f64 = x.iter().zip(&self.target).zip(&weights).map(|((a, t), w)| w * (a - t).powi(2)).sum();
        Ok(Measurement { performance: -loss, metrics: BTreeMap::from([("loss".to_owned(), loss)]) })
    }
}

/// A benchmark function as a domain (minimize; the optimum is shifted by a seed).
#[derive(Clone, Debug)]
///
/// An evaluator's data is a seed-drawn measurement noise: the value is scaled by `1 ± noise`
/// (uniform, from the evaluator's seed), unbiased and relative, so no two evaluators report the
/// same figure and the optimizer cannot predict theirs. The functions are non-negative with
/// their minimum 0, so the scaled figure keeps the optimum.
pub struct Benchmark {
    function: Function,
    space: Space,
    shift: Vec<f64>,
    noise: f64,
}

impl Benchmark {
    /// Evaluator noise of [`Benchmark::new`].
    pub const NOISE: f64 = 0.05;

    /// `function` in `d` dimensions with its optimum moved within 80 % of the bounds, evaluator
    /// noise [`Benchmark::NOISE`].
    pub fn new(function: Function, d: usize, shift_seed: u64) -> Self {
        let b = function.bound();
        let mut rng = ChaCha8Rng::seed_from_u64(shift_seed);
        let shift = (0..d).map(|_| rng.random_range(-0.8 * b..0.8 * b)).collect();
        Self { function, space: Space::cube(d, b), shift, noise: Self::NOISE }
    }

    /// The same with evaluator noise `noise` (relative, clamped to `[0, 1]`).
    pub fn with_noise(mut self, noise: f64) -> Self {
        self.noise = noise.clamp(0.0, 1.0);
        self
    }
}

impl Benchmark {
    /// Losses of unit-cube points (the fast path for benchmarks and tests).
    pub fn evaluate_unit(&self, xs: Vec<Vec<f64>>) -> Vec<crate::Evaluated> {
        xs.into_iter()
            .map(|x| {
                let v: Vec<f64> = self.space.decode(&x).iter().map(|v| v.as_f64()).collect();
                crate::Evaluated { loss: self.function.eval(&v, &self.shift), x }
            })
            .collect()
    }
}

impl Domain for Benchmark {
    fn id(&self) -> &str {
        self.function.name()
    }
    fn space(&self) -> &Space {
        &self.space
    }
    fn higher_is_better(&self) -> bool {
        false
    }
    fn evaluate(&self, params: &[Value], seed: Option<&Hash>, _: Budget) -> Result<Measurement, EvalError> {
        let x = check(&self.space, params)?;
        let scale = sample_weights(1, seed, self.noise)[0];
        Ok(Measurement { performance: scale * self.function.eval(&x, &self.shift), metrics: BTreeMap::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(d: &dyn Domain, x: &[f64], seed: Option<&Hash>) -> f64 {
        let params: Vec<Value> = x.iter().map(|v| Value::Real(*v)).collect();
        d.evaluate(&params, seed, Budget::new(std::time::Duration::from_secs(5), 1)).unwrap().performance
    }

    /// Every evaluator's data comes from its seed: figures differ between seeds, repeat for one
    /// seed, average to the optimizer's figure, and spread relative to it at every scale.
    #[test]
    fn evaluator_figures_come_from_the_seed_and_are_unbiased_at_every_scale() {
        let quadratic = Quadratic::new(4, 10.0, 3, 0.1);
        let sphere = Benchmark::new(Function::Sphere, 4, 3);
        let domains: [(&dyn Domain, Vec<f64>); 2] =
            [(&quadratic, quadratic.target.clone()), (&sphere, sphere.shift.clone())];
        for (domain, optimum) in domains {
            for offset in [3.0, 1e-2, 1e-4] {
                let x: Vec<f64> =
                    optimum.iter().enumerate().map(|(i, t)| t + offset * (i as f64 + 1.0)).collect();
                let own = figure(domain, &x, None);
                let seeds: Vec<Hash> = (0..400u32).map(|i| Hash::of(&i.to_le_bytes())).collect();
                let figures: Vec<f64> = seeds.iter().map(|s| figure(domain, &x, Some(s))).collect();
                assert_eq!(figures[0], figure(domain, &x, Some(&seeds[0])), "one seed, one figure");
                assert!(figures.windows(2).all(|w| w[0] != w[1]), "{}: seeds must matter", domain.id());
                let mean = figures.iter().sum::<f64>() / figures.len() as f64;
                assert!(((mean - own) / own).abs() < 0.02, "{}: mean {mean} vs own {own}", domain.id());
                let worst = figures.iter().map(|f| ((f - own) / own).abs()).fold(0.0, f64::max);
                assert!(worst > 0.01 && worst <= 0.1 + 1e-9, "{}: relative spread {worst}", domain.id());
            }
        }
    }
}
