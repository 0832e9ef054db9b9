//! `co2_forecast`: hyperparameter search for an MLP forecaster on the weekly Mauna Loa CO₂
//! series. From the last `window` weekly changes it predicts the change over the next
//! [`HORIZON`] weeks. Reported like the Python predictor: train / validation / test MAE (ppmv)
//! next to the naive forecast's (no change) test MAE; performance is −test MAE.
//!
//! A published model ([`Domain::train`]) trains on the chronological split's first 70 % and
//! early-stops on the next 15 %; the last 15 % is its held-out data. Its scaling is folded into
//! the weights, so it maps the last `window` weekly changes (ppmv, oldest first) to the change
//! over the next [`HORIZON`] weeks (ppmv).

use std::collections::BTreeMap;

use doin_optimize::{
    Dim, Space, Value,
    domain::{Budget, Domain, EvalError, Inference, Measurement},
};
use doin_primitives::Hash;

use crate::{
    data,
    model::Model,
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

    /// The change over [`HORIZON`] weeks after sample `i` (ppmv).
    fn change(&self, i: usize) -> f64 {
        self.series[Self::time(i) + HORIZON] - self.series[Self::time(i)]
    }

    /// The last `window` weekly changes before sample `i` (ppmv, oldest first).
    fn inputs(&self, i: usize, window: usize) -> impl Iterator<Item = f64> + '_ {
        let (y, t) = (&self.series, Self::time(i));
        (0..window).rev().map(move |k| y[t - k] - y[t - k - 1])
    }

    /// Every sample's inputs divided by `scale` (row-major) and its target likewise.
    fn scaled(&self, window: usize, scale: f64) -> (Vec<f32>, Vec<f32>) {
        let n = self.samples();
        let mut x = Vec::with_capacity(n * window);
        let mut target = Vec::with_capacity(n);
        for i in 0..n {
            x.extend(self.inputs(i, window).map(|v| (v / scale) as f32));
            target.push((self.change(i) / scale) as f32);
        }
        (x, target)
    }

    /// The training configuration and window `params` describe.
    fn config(&self, params: &[Value], seed: Option<&Hash>) -> Result<(TrainConfig, usize), EvalError> {
        let p = Params::new(&self.space, params)?;
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
        Ok((config, p.int(0) as usize))
    }

    /// The root mean square of the training rows' targets (the scale inputs and targets are
    /// divided by).
    fn scale(&self, train: &[usize]) -> f64 {
        (train.iter().map(|&i| self.change(i).powi(2)).sum::<f64>() / train.len().max(1) as f64)
            .sqrt()
            .max(1e-6)
    }

    /// The held-out samples a published model with `window` inputs is measured on: each one's
    /// last `window` weekly changes and the change that followed (ppmv).
    pub fn held_out(&self, window: usize) -> (Vec<Vec<f64>>, Vec<f64>) {
        let split = data::series_split(self.samples(), MAX_WINDOW + HORIZON, None, Self::ID);
        let window = window.min(MAX_WINDOW);
        (
            split.test.iter().map(|&i| self.inputs(i, window).collect()).collect(),
            split.test.iter().map(|&i| self.change(i)).collect(),
        )
    }

    /// A model artifact of this domain's shape.
    fn model(&self, artifact: &[u8]) -> Result<Model, EvalError> {
        let m = Model::from_bytes(artifact).map_err(EvalError::BadParams)?;
        if m.outputs() != 1 || m.inputs() > MAX_WINDOW {
            return Err(EvalError::BadParams(format!(
                "the model maps {} inputs to {} outputs; {} takes at most {MAX_WINDOW} weekly changes to one",
                m.inputs(),
                m.outputs(),
                Self::ID
            )));
        }
        Ok(m)
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

    fn has_model(&self) -> bool {
        true
    }

    /// Trains on the chronological split's first 70 %, early-stopping on the next 15 %; the
    /// scaling is folded into the first and last layers.
    fn train(&self, params: &[Value], seed: Option<&Hash>, budget: Budget) -> Result<Vec<u8>, EvalError> {
        let (config, window) = self.config(params, seed)?;
        let split = data::series_split(self.samples(), MAX_WINDOW + HORIZON, None, Self::ID);
        let scale = self.scale(&split.train);
        let (x, target) = self.scaled(window, scale);
        let data =
            net::Data { task: Task::Regress, x: &x, inputs: window, targets: Targets::Values(&target) };
        let mut model = net::train(data, &split.train, &split.val, &config, &budget)?.model.export()?;
        if let Some(first) = model.layers.first_mut() {
            first.weight.iter_mut().for_each(|w| *w = (f64::from(*w) / scale) as f32);
        }
        if let Some(last) = model.layers.last_mut() {
            last.weight
                .iter_mut()
                .chain(last.bias.iter_mut())
                .for_each(|w| *w = (f64::from(*w) * scale) as f32);
        }
        Ok(model.to_bytes())
    }

    /// −MAE (ppmv) on the chronological split's last 15 %, by the artifact's own forward pass.
    fn measure_artifact(&self, artifact: &[u8]) -> Result<f64, EvalError> {
        let m = self.model(artifact)?;
        let split = data::series_split(self.samples(), MAX_WINDOW + HORIZON, None, Self::ID);
        let total: f64 = split
            .test
            .iter()
            .map(|&i| {
                let row: Vec<f32> = self.inputs(i, m.inputs()).map(|v| v as f32).collect();
                (f64::from(m.forward(&row)[0]) - self.change(i)).abs()
            })
            .sum();
        Ok(-total / split.test.len().max(1) as f64)
    }

    fn infer(&self, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        let m = self.model(artifact)?;
        let outputs = rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                if row.len() != m.inputs() {
                    return Err(EvalError::BadParams(format!(
                        "row {i} has {} weekly changes; this model takes {}",
                        row.len(),
                        m.inputs()
                    )));
                }
                let x: Vec<f32> = row.iter().map(|v| *v as f32).collect();
                Ok(m.forward(&x).into_iter().map(f64::from).collect())
            })
            .collect::<Result<Vec<Vec<f64>>, _>>()?;
        Ok(Inference { outputs, labels: None })
    }

    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError> {
        let (config, window) = self.config(params, seed)?;
        let n = self.samples();
        let split = data::series_split(n, MAX_WINDOW + HORIZON, seed, Self::ID);
        // Scale from the training targets only.
        let scale = self.scale(&split.train);
        let change = |i: usize| self.change(i);
        let (x, target) = self.scaled(window, scale);
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
