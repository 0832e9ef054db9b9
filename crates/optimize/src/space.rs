//! Mixed parameter spaces. Optimizers search the unit cube `[0, 1]^d`; a [`Space`] maps points
//! to typed values (continuous, log-scaled, integer, categorical) and to the `i64` parameters
//! a reveal carries (nano-units for reals, plain integers, category indices).

use doin_primitives::{DomainSpec, FIXED_ONE, domain::ParamKind};

/// One dimension.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A real in `[lo, hi]`.
    Continuous {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// A real in `[lo, hi]` (both > 0) searched on a log scale.
    Log {
        /// Lower bound.
        lo: f64,
        /// Upper bound.
        hi: f64,
    },
    /// An integer in `[lo, hi]`.
    Integer {
        /// Lower bound.
        lo: i64,
        /// Upper bound.
        hi: i64,
    },
    /// One of `n` choices.
    Categorical {
        /// Number of choices.
        n: usize,
    },
}

/// A decoded value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    /// A real.
    Real(f64),
    /// An integer.
    Int(i64),
    /// A category index.
    Choice(usize),
}

impl Value {
    /// The value as a float (integers and indices converted).
    pub fn as_f64(self) -> f64 {
        match self {
            Self::Real(v) => v,
            Self::Int(v) => v as f64,
            Self::Choice(v) => v as f64,
        }
    }
}

/// A parameter space.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Space {
    /// Dimensions in order.
    pub dims: Vec<Dim>,
}

impl Space {
    /// `d` continuous dimensions in `[-b, b]`.
    pub fn cube(d: usize, b: f64) -> Self {
        Self { dims: vec![Dim::Continuous { lo: -b, hi: b }; d] }
    }

    /// The space of a registered domain.
    pub fn of(spec: &DomainSpec) -> Self {
        let f = |v: i64| v as f64 / FIXED_ONE as f64;
        let dims = spec
            .params
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Continuous { min, max } => Dim::Continuous { lo: f(min.0), hi: f(max.0) },
                ParamKind::LogContinuous { min, max } => Dim::Log { lo: f(min.0), hi: f(max.0) },
                ParamKind::Integer { min, max } => Dim::Integer { lo: *min, hi: *max },
                ParamKind::Categorical { choices } => Dim::Categorical { n: choices.len().max(1) },
            })
            .collect();
        Self { dims }
    }

    /// Dimensions.
    pub fn len(&self) -> usize {
        self.dims.len()
    }

    /// Whether the space has no dimensions.
    pub fn is_empty(&self) -> bool {
        self.dims.is_empty()
    }

    /// Decodes a unit-cube point (coordinates are clamped to `[0, 1]`).
    pub fn decode(&self, x: &[f64]) -> Vec<Value> {
        self.dims
            .iter()
            .zip(x)
            .map(|(d, u)| {
                let u = u.clamp(0.0, 1.0);
                match *d {
                    Dim::Continuous { lo, hi } => Value::Real(lo + u * (hi - lo)),
                    Dim::Log { lo, hi } => {
                        Value::Real((lo.ln() + u * (hi.ln() - lo.ln())).exp().clamp(lo, hi))
                    }
                    Dim::Integer { lo, hi } => {
                        let span = (hi - lo + 1) as f64;
                        Value::Int((lo + (u * span).floor() as i64).min(hi))
                    }
                    Dim::Categorical { n } => {
                        Value::Choice(((u * n as f64).floor() as usize).min(n.saturating_sub(1)))
                    }
                }
            })
            .collect()
    }

    /// Encodes values back into the unit cube (the centre of an integer's or category's cell).
    pub fn encode(&self, values: &[Value]) -> Vec<f64> {
        self.dims
            .iter()
            .zip(values)
            .map(|(d, v)| {
                let u = match *d {
                    Dim::Continuous { lo, hi } => (v.as_f64() - lo) / (hi - lo),
                    Dim::Log { lo, hi } => (v.as_f64().max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()),
                    Dim::Integer { lo, hi } => (v.as_f64() - lo as f64 + 0.5) / (hi - lo + 1) as f64,
                    Dim::Categorical { n } => (v.as_f64() + 0.5) / n as f64,
                };
                if u.is_finite() { u.clamp(0.0, 1.0) } else { 0.5 }
            })
            .collect()
    }

    /// The `i64` parameters a reveal carries for these values.
    pub fn to_params(&self, values: &[Value]) -> Vec<i64> {
        values
            .iter()
            .map(|v| match v {
                Value::Real(r) => (r * FIXED_ONE as f64).round() as i64,
                Value::Int(i) => *i,
                Value::Choice(c) => *c as i64,
            })
            .collect()
    }

    /// Values from a reveal's `i64` parameters (for injecting a chain champion).
    pub fn from_params(&self, params: &[i64]) -> Vec<Value> {
        self.dims
            .iter()
            .zip(params)
            .map(|(d, p)| match d {
                Dim::Continuous { .. } | Dim::Log { .. } => Value::Real(*p as f64 / FIXED_ONE as f64),
                Dim::Integer { .. } => Value::Int(*p),
                Dim::Categorical { .. } => Value::Choice((*p).max(0) as usize),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_space_round_trips_and_respects_bounds() {
        let space = Space {
            dims: vec![
                Dim::Continuous { lo: -2.0, hi: 2.0 },
                Dim::Log { lo: 1e-5, hi: 1e-1 },
                Dim::Integer { lo: 1, hi: 3 },
                Dim::Categorical { n: 4 },
            ],
        };
        for u in [0.0, 0.1, 0.5, 0.99, 1.0] {
            let v = space.decode(&[u; 4]);
            match (v[0], v[1], v[2], v[3]) {
                (Value::Real(a), Value::Real(b), Value::Int(c), Value::Choice(d)) => {
                    assert!((-2.0..=2.0).contains(&a));
                    assert!((1e-5..=1e-1 + 1e-12).contains(&b));
                    assert!((1..=3).contains(&c));
                    assert!(d < 4);
                }
                other => panic!("{other:?}"),
            }
            let back = space.decode(&space.encode(&v));
            assert_eq!(back[2], v[2]);
            assert_eq!(back[3], v[3]);
            assert!((back[0].as_f64() - v[0].as_f64()).abs() < 1e-9);
        }
        // Log scale: the midpoint is the geometric mean.
        assert!((space.decode(&[0.5; 4])[1].as_f64() - 1e-3).abs() < 1e-9);
        let params = space.to_params(&space.decode(&[0.5; 4]));
        assert_eq!(space.from_params(&params)[2], Value::Int(2));
    }

    #[test]
    fn space_of_a_domain_spec() {
        let spec = doin_primitives::DomainSpec::example("quadratic", 3);
        let space = Space::of(&spec);
        assert_eq!(space.dims, vec![Dim::Continuous { lo: -10.0, hi: 10.0 }; 3]);
    }
}
