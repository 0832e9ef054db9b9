//! Typed access to a candidate's parameters.

use doin_optimize::{Space, Value, domain::EvalError};

/// A candidate's values, checked against the space.
pub(crate) struct Params<'a>(&'a [Value]);

impl<'a> Params<'a> {
    pub(crate) fn new(space: &Space, values: &'a [Value]) -> Result<Self, EvalError> {
        if values.len() != space.len() {
            return Err(EvalError::BadParams(format!(
                "{} parameters, the domain has {}",
                values.len(),
                space.len()
            )));
        }
        let back = space.decode(&space.encode(values));
        for (i, (v, b)) in values.iter().zip(&back).enumerate() {
            if (v.as_f64() - b.as_f64()).abs() > 1e-9 * v.as_f64().abs().max(1.0) {
                return Err(EvalError::BadParams(format!(
                    "parameter {i} = {} is outside its range",
                    v.as_f64()
                )));
            }
        }
        Ok(Self(values))
    }

    pub(crate) fn int(&self, i: usize) -> i64 {
        self.0[i].as_f64().round() as i64
    }

    pub(crate) fn real(&self, i: usize) -> f64 {
        self.0[i].as_f64()
    }
}
