//! `mlp_digits`: hyperparameter search for an MLP classifier on the UCI optical digits set.
//! Performance is the mean held-out accuracy over [`FOLDS`]-fold cross-validation (every row is
//! tested once, so the figure moves little with the seed and optimizers' claims stay close to
//! what evaluators measure); the naive baseline predicts each training fold's most frequent class.

use std::collections::BTreeMap;

use doin_optimize::{
    Dim, Space, Value,
    domain::{Budget, Domain, EvalError, Inference, Measurement},
};
use doin_primitives::Hash;

use crate::{
    data::{self, Tabular},
    model::{Model, argmax},
    net::{self, Targets, Task, TrainConfig},
    params::Params,
};

/// Cross-validation folds per evaluation.
pub const FOLDS: usize = 3;

/// The MLP classifier domain.
#[derive(Debug)]
pub struct MlpClassifier {
    data: Tabular,
    space: Space,
    early_patience: u32,
}

impl MlpClassifier {
    /// The domain id.
    pub const ID: &'static str = "mlp_digits";

    /// The domain on the shipped digits set with `early_patience` (epochs without validation
    /// improvement before a candidate's training stops).
    pub fn new(early_patience: u32) -> Result<Self, String> {
        Ok(Self { data: data::digits()?, space: Self::search_space(), early_patience: early_patience.max(1) })
    }

    /// Hidden layers, width, learning rate, weight decay, dropout, batch size, epochs.
    pub fn search_space() -> Space {
        Space {
            dims: vec![
                Dim::Integer { lo: 1, hi: 3 },
                Dim::Integer { lo: 8, hi: 256 },
                Dim::Log { lo: 1e-4, hi: 3e-2 },
                Dim::Log { lo: 1e-6, hi: 1e-1 },
                Dim::Continuous { lo: 0.0, hi: 0.5 },
                Dim::Integer { lo: 16, hi: 256 },
                Dim::Integer { lo: 2, hi: 60 },
            ],
        }
    }

    /// A good, quick configuration (two hidden layers of 64, learning rate 3e-3, weight decay
    /// 1e-6, no dropout, batches of 32, 20 epochs): a model like a devnet's champions, for
    /// benchmarks and tests.
    pub fn reference_params() -> Vec<Value> {
        vec![
            Value::Int(2),
            Value::Int(64),
            Value::Real(3e-3),
            Value::Real(1e-6),
            Value::Real(0.0),
            Value::Int(32),
            Value::Int(20),
        ]
    }

    /// The training configuration `params` describe.
    pub fn config(&self, params: &[Value], seed: u64) -> Result<TrainConfig, EvalError> {
        let p = Params::new(&self.space, params)?;
        Ok(TrainConfig {
            hidden: vec![p.int(1) as usize; p.int(0) as usize],
            learning_rate: p.real(2),
            weight_decay: p.real(3),
            dropout: p.real(4),
            batch_size: p.int(5) as usize,
            epochs: p.int(6) as u32,
            early_patience: self.early_patience,
            seed,
        })
    }

    /// Training samples per second of `config` on this data (for `doin bench optimize`).
    pub fn throughput(&self, config: &TrainConfig) -> Result<f64, EvalError> {
        let split = data::tabular_folds(self.data.rows(), FOLDS, None, Self::ID).swap_remove(0);
        let budget = Budget::new(std::time::Duration::from_secs(600), 0);
        let start = std::time::Instant::now();
        let t = net::train(
            self.training_data(),
            &split.train,
            &split.val,
            &TrainConfig { early_patience: u32::MAX, ..config.clone() },
            &budget,
        )?;
        Ok(t.samples as f64 / start.elapsed().as_secs_f64())
    }

    fn training_data(&self) -> net::Data<'_> {
        net::Data {
            task: Task::Classify(self.data.classes),
            x: &self.data.x,
            inputs: self.data.features,
            targets: Targets::Classes(&self.data.y),
        }
    }

    /// The held-out rows a published model is measured on ([`data::model_split`]): features and
    /// labels (what a client checks served answers against).
    pub fn held_out(&self) -> (Vec<Vec<f64>>, Vec<i64>) {
        let split = data::model_split(self.data.rows(), Self::ID);
        let f = self.data.features;
        let rows = split
            .test
            .iter()
            .map(|&i| self.data.x[i * f..(i + 1) * f].iter().map(|v| f64::from(*v)).collect());
        (rows.collect(), split.test.iter().map(|&i| self.data.y[i]).collect())
    }

    /// A model artifact of this domain's shape.
    fn model(&self, artifact: &[u8]) -> Result<Model, EvalError> {
        let m = Model::from_bytes(artifact).map_err(EvalError::BadParams)?;
        if m.inputs() != self.data.features || m.outputs() != self.data.classes {
            return Err(EvalError::BadParams(format!(
                "the model maps {} inputs to {} outputs; {} takes {} features to {} classes",
                m.inputs(),
                m.outputs(),
                Self::ID,
                self.data.features,
                self.data.classes
            )));
        }
        Ok(m)
    }

    fn accuracy(&self, logits: &[f32], idx: &[usize]) -> f64 {
        let n = self.data.classes;
        let correct = idx
            .iter()
            .enumerate()
            .filter(|(r, i)| {
                let row = &logits[r * n..(r + 1) * n];
                let arg = (0..n).max_by(|a, b| row[*a].total_cmp(&row[*b])).unwrap_or(0);
                arg as i64 == self.data.y[**i]
            })
            .count();
        correct as f64 / idx.len().max(1) as f64
    }
}

impl Domain for MlpClassifier {
    fn id(&self) -> &str {
        Self::ID
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn param_names(&self) -> Vec<String> {
        ["hidden_layers", "hidden_units", "learning_rate", "l2_reg", "dropout", "batch_size", "epochs"]
            .map(str::to_owned)
            .to_vec()
    }

    fn higher_is_better(&self) -> bool {
        true
    }

    fn has_model(&self) -> bool {
        true
    }

    /// Trains on the fixed model split's training rows (never its held-out rows).
    fn train(&self, params: &[Value], seed: Option<&Hash>, budget: Budget) -> Result<Vec<u8>, EvalError> {
        let split = data::model_split(self.data.rows(), Self::ID);
        let config = self.config(params, crate::seed_u64(seed))?;
        let trained = net::train(self.training_data(), &split.train, &split.val, &config, &budget)?;
        Ok(trained.model.export()?.to_bytes())
    }

    /// Accuracy on the model split's held-out rows, by the artifact's own forward pass.
    fn measure_artifact(&self, artifact: &[u8]) -> Result<f64, EvalError> {
        let m = self.model(artifact)?;
        let split = data::model_split(self.data.rows(), Self::ID);
        let f = self.data.features;
        let correct = split
            .test
            .iter()
            .filter(|&&i| argmax(&m.forward(&self.data.x[i * f..(i + 1) * f])) as i64 == self.data.y[i])
            .count();
        Ok(correct as f64 / split.test.len().max(1) as f64)
    }

    fn infer(&self, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        let m = self.model(artifact)?;
        let mut outputs = Vec::with_capacity(rows.len());
        let mut labels = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            if row.len() != self.data.features {
                return Err(EvalError::BadParams(format!(
                    "row {i} has {} features; {} takes {}",
                    row.len(),
                    Self::ID,
                    self.data.features
                )));
            }
            let x: Vec<f32> = row.iter().map(|v| *v as f32).collect();
            let out = m.forward(&x);
            labels.push(argmax(&out) as u32);
            outputs.push(out.into_iter().map(f64::from).collect());
        }
        Ok(Inference { outputs, labels: Some(labels) })
    }

    fn evaluate(
        &self,
        params: &[Value],
        seed: Option<&Hash>,
        budget: Budget,
    ) -> Result<Measurement, EvalError> {
        let folds = data::tabular_folds(self.data.rows(), FOLDS, seed, Self::ID);
        let f = self.data.features;
        let mut sum = BTreeMap::<&str, f64>::new();
        for (i, split) in folds.iter().enumerate() {
            let config = self.config(params, crate::seed_u64(seed).wrapping_add(i as u64))?;
            let trained = net::train(self.training_data(), &split.train, &split.val, &config, &budget)?;
            let acc = |idx: &[usize]| -> Result<f64, EvalError> {
                Ok(self.accuracy(&net::predict(&trained.model, &self.data.x, f, idx)?, idx))
            };
            let (test, val, train) = (acc(&split.test)?, acc(&split.val)?, acc(&split.train)?);
            let majority = (0..self.data.classes as i64)
                .max_by_key(|c| split.train.iter().filter(|i| self.data.y[**i] == *c).count())
                .unwrap_or(0);
            let naive = split.test.iter().filter(|i| self.data.y[**i] == majority).count() as f64
                / split.test.len().max(1) as f64;
            for (k, v) in [
                ("train_accuracy", train),
                ("val_accuracy", val),
                ("test_accuracy", test),
                ("naive_accuracy", naive),
                ("val_loss", trained.val_loss),
                ("epochs", f64::from(trained.epochs)),
            ] {
                *sum.entry(k).or_default() += v / folds.len() as f64;
            }
        }
        let test = sum.get("test_accuracy").copied().unwrap_or_default();
        Ok(Measurement {
            performance: test,
            metrics: sum.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
        })
    }
}
