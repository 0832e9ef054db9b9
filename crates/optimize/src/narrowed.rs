//! A domain searched within narrower bounds than its own (`param_bounds`): the optimizer asks,
//! decodes and injects in the narrowed space; what it finds is a point of the domain's own
//! space, committed, revealed and verified like any other (evaluators use the domain's full
//! space, which is what the chain registered).

use std::{collections::BTreeMap, sync::Arc};

use doin_primitives::Hash;

use crate::{
    domain::{Budget, Domain, EvalError, Measurement},
    space::{Dim, Space, Value},
};

/// `inner` searched within bounds.
pub struct Narrowed {
    inner: Arc<dyn Domain>,
    space: Space,
}

impl std::fmt::Debug for Narrowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Narrowed").field("domain", &self.inner.id()).field("space", &self.space).finish()
    }
}

/// The index of parameter `name` of `domain`: one of its [`Domain::param_names`], or `p{i}`.
fn index_of(domain: &dyn Domain, name: &str) -> Result<usize, String> {
    let names = domain.param_names();
    if let Some(i) = names.iter().position(|n| n == name) {
        return Ok(i);
    }
    match name.strip_prefix('p').and_then(|i| i.parse::<usize>().ok()) {
        Some(i) if i < names.len() => Ok(i),
        _ => Err(format!(
            "{name:?} is not a parameter of {} (its parameters: {}, or p0..p{})",
            domain.id(),
            names.join(", "),
            names.len().saturating_sub(1)
        )),
    }
}

/// `dim` narrowed to `[lo, hi]`, which must lie within it.
fn narrow(dim: &Dim, lo: f64, hi: f64) -> Result<Dim, String> {
    if !(lo.is_finite() && hi.is_finite() && lo < hi) {
        return Err(format!("[{lo}, {hi}] is not a range (two finite numbers, low < high)"));
    }
    let inside = |a: f64, b: f64| {
        if a <= lo && hi <= b {
            Ok(())
        } else {
            Err(format!("[{lo}, {hi}] is outside the parameter's range [{a}, {b}]"))
        }
    };
    match *dim {
        Dim::Continuous { lo: a, hi: b } => inside(a, b).map(|()| Dim::Continuous { lo, hi }),
        Dim::Log { lo: a, hi: b } => inside(a, b).map(|()| Dim::Log { lo, hi }),
        Dim::Integer { lo: a, hi: b } => {
            if lo.fract() != 0.0 || hi.fract() != 0.0 {
                return Err(format!("[{lo}, {hi}]: an integer parameter takes integer bounds"));
            }
            inside(a as f64, b as f64).map(|()| Dim::Integer { lo: lo as i64, hi: hi as i64 })
        }
        Dim::Categorical { n } => Err(format!("a categorical parameter ({n} choices) takes no bounds")),
    }
}

impl Narrowed {
    /// `inner` searched within `bounds` (parameter name → `(low, high)`): every name one of the
    /// domain's parameters, every range inside the parameter's own. The error names the
    /// parameter.
    pub fn new(inner: Arc<dyn Domain>, bounds: &BTreeMap<String, (f64, f64)>) -> Result<Self, String> {
        let mut space = inner.space().clone();
        for (name, (lo, hi)) in bounds {
            let i = index_of(inner.as_ref(), name)?;
            space.dims[i] = narrow(&space.dims[i], *lo, *hi).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(Self { inner, space })
    }
}

impl Domain for Narrowed {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn param_names(&self) -> Vec<String> {
        self.inner.param_names()
    }

    fn higher_is_better(&self) -> bool {
        self.inner.higher_is_better()
    }

    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError> {
        self.inner.evaluate(params, seed, budget)
    }

    fn train(&self, params: &[Value], seed: Option<&Hash>, budget: Budget) -> Result<Vec<u8>, EvalError> {
        self.inner.train(params, seed, budget)
    }

    // The model is the inner domain's whatever the bounds: narrowing a search must not lose it.
    fn has_model(&self) -> bool {
        self.inner.has_model()
    }

    fn measure_artifact(&self, artifact: &[u8]) -> Result<f64, EvalError> {
        self.inner.measure_artifact(artifact)
    }

    fn infer(&self, artifact: &[u8], rows: &[Vec<f64>]) -> Result<crate::domain::Inference, EvalError> {
        self.inner.infer(artifact, rows)
    }

    fn infer_known(
        &self,
        hash: &Hash,
        artifact: &[u8],
        rows: &[Vec<f64>],
    ) -> Result<crate::domain::Inference, EvalError> {
        self.inner.infer_known(hash, artifact, rows)
    }

    fn inference_tolerance(&self) -> f64 {
        self.inner.inference_tolerance()
    }

    fn loss(&self, m: &Measurement) -> f64 {
        self.inner.loss(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Optimizer, Shade,
        domain::Quadratic,
        driver::{RunConfig, evaluate_batch},
    };

    fn bounds(items: &[(&str, f64, f64)]) -> BTreeMap<String, (f64, f64)> {
        items.iter().map(|(n, lo, hi)| ((*n).to_owned(), (*lo, *hi))).collect()
    }

    /// A quadratic with a "model": its answer to a row is the row's sum.
    struct Modelled(Quadratic);

    impl Domain for Modelled {
        fn id(&self) -> &str {
            self.0.id()
        }
        fn space(&self) -> &Space {
            self.0.space()
        }
        fn higher_is_better(&self) -> bool {
            self.0.higher_is_better()
        }
        fn evaluate(&self, p: &[Value], s: Option<&Hash>, b: Budget) -> Result<Measurement, EvalError> {
            self.0.evaluate(p, s, b)
        }
        fn has_model(&self) -> bool {
            true
        }
        fn measure_artifact(&self, artifact: &[u8]) -> Result<f64, EvalError> {
            Ok(artifact.len() as f64)
        }
        fn infer(&self, _: &[u8], rows: &[Vec<f64>]) -> Result<crate::domain::Inference, EvalError> {
            Ok(crate::domain::Inference {
                outputs: rows.iter().map(|r| vec![r.iter().sum()]).collect(),
                labels: None,
            })
        }
        fn inference_tolerance(&self) -> f64 {
            0.25
        }
    }

    /// Narrowing a search keeps the domain's model (a narrowed `mlp_digits` once claimed
    /// without one).
    #[test]
    fn a_narrowed_domain_keeps_its_model() {
        let d =
            Narrowed::new(Arc::new(Modelled(Quadratic::new(4, 10.0, 1, 0.0))), &bounds(&[("p0", 1.0, 2.0)]))
                .unwrap();
        assert!(d.has_model());
        assert_eq!(d.measure_artifact(b"abc"), Ok(3.0));
        assert_eq!(d.infer(b"", &[vec![1.0, 2.0]]).unwrap().outputs, vec![vec![3.0]]);
        assert_eq!(d.inference_tolerance(), 0.25);
    }

    #[test]
    fn the_optimizer_searches_only_inside_the_bounds() {
        let inner: Arc<dyn Domain> = Arc::new(Quadratic::new(4, 20.0, 7, 0.0));
        let d = Narrowed::new(inner.clone(), &bounds(&[("p0", 5.0, 6.0), ("p3", -1.0, -0.5)])).unwrap();
        assert_eq!(d.space().dims[1], inner.space().dims[1], "unnamed parameters keep their range");
        let mut opt = Shade::new(4, 16, 1);
        let run = RunConfig { batch: 16, ..RunConfig::default() };
        for _ in 0..20 {
            let xs = opt.ask(16);
            let outcomes = evaluate_batch(&d, &xs, run);
            for x in &xs {
                let v = d.space().decode(x);
                assert!((5.0..=6.0).contains(&v[0].as_f64()), "{v:?}");
                assert!((-1.0..=-0.5).contains(&v[3].as_f64()), "{v:?}");
                // Values of the narrowed space are values of the domain's own.
                assert_eq!(inner.space().to_params(&v), d.space().to_params(&v));
            }
            let told = xs
                .into_iter()
                .zip(&outcomes)
                .map(|(x, o)| crate::Evaluated { x, loss: o.as_ref().map_or(f64::INFINITY, |m| d.loss(m)) })
                .collect::<Vec<_>>();
            opt.tell(&told);
        }
    }

    #[test]
    fn bad_bounds_are_refused_naming_the_parameter() {
        let inner: Arc<dyn Domain> = Arc::new(Quadratic::new(2, 20.0, 7, 0.0));
        let err = |b: &[(&str, f64, f64)]| Narrowed::new(inner.clone(), &bounds(b)).unwrap_err();
        assert!(
            err(&[("p0", -30.0, 0.0)]).contains("p0: [-30, 0] is outside the parameter's range [-20, 20]")
        );
        assert!(err(&[("p1", 3.0, 3.0)]).contains("p1: [3, 3] is not a range"));
        assert!(err(&[("p2", 0.0, 1.0)]).contains("\"p2\" is not a parameter of quadratic"));
        assert!(err(&[("learning_rate", 0.0, 1.0)]).contains("its parameters: p0, p1"));
    }

    #[test]
    fn integer_and_log_parameters_narrow_within_their_kind() {
        let int = Dim::Integer { lo: 8, hi: 256 };
        assert_eq!(narrow(&int, 16.0, 64.0), Ok(Dim::Integer { lo: 16, hi: 64 }));
        assert!(narrow(&int, 16.5, 64.0).unwrap_err().contains("integer bounds"));
        let log = Dim::Log { lo: 1e-4, hi: 3e-2 };
        assert_eq!(narrow(&log, 1e-3, 1e-2), Ok(Dim::Log { lo: 1e-3, hi: 1e-2 }));
        assert!(narrow(&log, 0.0, 1e-2).unwrap_err().contains("outside"));
        assert!(narrow(&Dim::Categorical { n: 3 }, 0.0, 1.0).unwrap_err().contains("takes no bounds"));
        assert!(narrow(&int, f64::NAN, 1.0).unwrap_err().contains("not a range"));
    }
}
