//! `co2_forecast`: hyperparameter search for an MLP forecaster on the weekly Mauna Loa CO₂
//! series. From the last `window` weekly changes it predicts the change over the next
//! [`HORIZON`] weeks. Reported like the Python predictor: train / validation / test MAE (ppmv)
//! next to the naive forecast's (no change) test MAE; performance is −test MAE.

use std::collections::BTreeMap;

use doin_optimize::{
    Dim, Space, Value,
    domain::{Budget, Domain, EvalError, Measurement},
};
use doin_primitives::Hash;

use crate::{
    data,
    net::{self, Targets, Task, TrainConfig},
    params::Params,
};

/// Weeks ahead.
pub const HORIZON: usize = 4;
/// The longest input window; every candidate is scored on the same target weeks.
pub const MAX_WINDOW: usize = 104;

/// The forecaster domain.
#[derive(Debug)]
pub struct Co2Forecaster {
    series: Vec<f64>,
    space: Space,
    early_patience: u32,
}

impl Co2Forecaster {
    /// The domain id.
    pub const ID: &'static str = "co2_forecast";

    /// The domain on the shipped series.
    pub fn new(early_patience: u32) -> Result<Self, String> {
        Ok(Self { series: data::co2()?, space: Self::search_space(), early_patience: early_patience.max(1) })
    }

    /// Window, hidden layers, width, learning rate, weight decay, dropout, batch size, epochs.
    pub fn search_space() -> Space {
        Space {
            dims: vec![
                Dim::Integer { lo: 4, hi: MAX_WINDOW as i64 },
                Dim::Integer { lo: 1, hi: 3 },
                Dim::Integer { lo: 8, hi: 128 },
                Dim::Log { lo: 1e-4, hi: 3e-2 },
                Dim::Log { lo: 1e-6, hi: 1e-1 },
                Dim::Continuous { lo: 0.0, hi: 0.5 },
                Dim::Integer { lo: 16, hi: 256 },
                Dim::Integer { lo: 2, hi: 100 },
            ],
        }
    }

    /// Samples: one per target week `t` (from `MAX_WINDOW` to the end less the horizon).
    fn samples(&self) -> usize {
        self.series.len() - MAX_WINDOW - HORIZON
    }

    /// Time index of sample `i`.
    fn time(i: usize) -> usize {
        MAX_WINDOW + i
    }
}

impl Domain for Co2Forecaster {
    fn id(&self) -> &str {
        Self::ID
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn param_names(&self) -> Vec<String> {
        [
            "window",
            "hidden_layers",
            "hidden_units",
            "learning_rate",
            "l2_reg",
            "dropout",
            "batch_size",
            "epochs",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    fn higher_is_better(&self) -> bool {
        true
    }

    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError> {
        let p = Params::new(&self.space, params)?;
        let window = p.int(0) as usize;
        let config = TrainConfig {
            hidden: vec![p.int(2) as usize; p.int(1) as usize],
            learning_rate: p.real(3),
            weight_decay: p.real(4),
            dropout: p.real(5),
            batch_size: p.int(6) as usize,
            epochs: p.int(7) as u32,
            early_patience: self.early_patience,
            seed: crate::seed_u64(seed),
        };
        let n = self.samples();
        let split = data::series_split(n, MAX_WINDOW + HORIZON, seed, Self::ID);
        let y = &self.series;
        // Scale from the training targets only.
        let change = |i: usize| y[Self::time(i) + HORIZON] - y[Self::time(i)];
        let scale = (split.train.iter().map(|&i| change(i).powi(2)).sum::<f64>()
            / split.train.len().max(1) as f64)
            .sqrt()
            .max(1e-6);
        let mut x = Vec::with_capacity(n * window);
        let mut target = Vec::with_capacity(n);
        for i in 0..n {
            let t = Self::time(i);
            for k in (0..window).rev() {
                x.push(((y[t - k] - y[t - k - 1]) / scale) as f32);
            }
            target.push((change(i) / scale) as f32);
        }
        let data =
            net::Data { task: Task::Regress, x: &x, inputs: window, targets: Targets::Values(&target) };
        let trained = net::train(data, &split.train, &split.val, &config, &budget)?;
        let mae = |idx: &[usize]| -> Result<f64, EvalError> {
            let pred = net::predict(&trained.model, &x, window, idx)?;
            Ok(idx.iter().zip(&pred).map(|(&i, p)| (f64::from(*p) * scale - change(i)).abs()).sum::<f64>()
                / idx.len().max(1) as f64)
        };
        let test = mae(&split.test)?;
        let naive = split.test.iter().map(|&i| change(i).abs()).sum::<f64>() / split.test.len().max(1) as f64;
        Ok(Measurement {
            performance: -test,
            metrics: BTreeMap::from([
                ("train_mae".into(), mae(&split.train)?),
                ("val_mae".into(), mae(&split.val)?),
                ("test_mae".into(), test),
                ("naive_mae".into(), naive),
                ("epochs".into(), f64::from(trained.epochs)),
            ]),
        })
    }
}
