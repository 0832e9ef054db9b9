//! Benchmark functions on `R^d` (global minimum 0 at the shifted optimum).

use std::f64::consts::PI;

/// A benchmark function with its search bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// Σ x².
    Sphere,
    /// 10d + Σ (x² − 10 cos 2πx).
    Rastrigin,
    /// Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)² (minimum at 1).
    Rosenbrock,
    /// −20 exp(−0.2 √(Σx²/d)) − exp(Σ cos 2πx / d) + 20 + e.
    Ackley,
}

impl Function {
    /// Symmetric search bound: x ∈ [−b, b].
    pub fn bound(self) -> f64 {
        match self {
            Self::Sphere => 100.0,
            Self::Rastrigin => 5.12,
            Self::Rosenbrock => 30.0,
            Self::Ackley => 32.768,
        }
    }

    /// The name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sphere => "sphere",
            Self::Rastrigin => "rastrigin",
            Self::Rosenbrock => "rosenbrock",
            Self::Ackley => "ackley",
        }
    }

    /// Value at `x` with the optimum moved to `shift` (Rosenbrock's to `shift + 1`).
    pub fn eval(self, x: &[f64], shift: &[f64]) -> f64 {
        let z: Vec<f64> = x.iter().zip(shift).map(|(a, s)| a - s).collect();
        let d = z.len() as f64;
        match self {
            Self::Sphere => z.iter().map(|v| v * v).sum(),
            Self::Rastrigin => 10.0 * d + z.iter().map(|v| v * v - 10.0 * (2.0 * PI * v).cos()).sum::<f64>(),
            Self::Rosenbrock => {
                let z: Vec<f64> = z.iter().map(|v| v + 1.0).collect();
                z.windows(2).map(|w| 100.0 * (w[1] - w[0] * w[0]).powi(2) + (1.0 - w[0]).powi(2)).sum()
            }
            Self::Ackley => {
                let s1 = z.iter().map(|v| v * v).sum::<f64>() / d;
                let s2 = z.iter().map(|v| (2.0 * PI * v).cos()).sum::<f64>() / d;
                (-20.0 * (-0.2 * s1.sqrt()).exp() - s2.exp() + 20.0 + std::f64::consts::E).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minima_are_zero_at_the_shift() {
        let shift = [1.5, -2.0, 0.25];
        for f in [Function::Sphere, Function::Rastrigin, Function::Rosenbrock, Function::Ackley] {
            assert!(f.eval(&shift, &shift).abs() < 1e-12, "{}", f.name());
            assert!(f.eval(&[0.0, 0.0, 0.0], &shift) > 0.1, "{}", f.name());
        }
    }
}
