//! A multi-layer perceptron trained with burn on the flex (CPU) backend: AdamW with decoupled
//! weight decay, dropout, mini-batches, early stopping on a validation set (`early_patience`),
//! and the evaluation budget (deadline, epochs, memory estimate) checked as it trains.
//!
//! Training is deterministic for a given seed even when several candidates train on parallel
//! threads: burn's flex backend keeps one process-wide RNG, so initialization happens under a
//! lock right after seeding it (and parameters, which burn initializes lazily, are touched there
//! too), and dropout masks come from the candidate's own RNG.

use std::sync::Mutex;

use burn::{
    module::Module,
    nn::{
        Linear, LinearConfig, Relu,
        loss::{CrossEntropyLossConfig, MseLoss, Reduction},
    },
    optim::{AdamWConfig, GradientsParams},
    tensor::{Device, Int, Tensor, TensorData, activation::log_softmax},
};
use doin_optimize::domain::{Budget, EvalError};
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// The network.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    out: Linear,
    relu: Relu,
}

impl Mlp {
    fn new(inputs: usize, hidden: &[usize], outputs: usize, device: &Device) -> Self {
        let mut layers = Vec::with_capacity(hidden.len());
        let mut prev = inputs;
        for &h in hidden {
            layers.push(LinearConfig::new(prev, h).init(device));
            prev = h;
        }
        Self { hidden: layers, out: LinearConfig::new(prev, outputs).init(device), relu: Relu::new() }
    }

    /// Forward pass; `masks` are dropout masks per hidden layer (training only).
    fn forward(&self, x: Tensor<2>, masks: Option<&[Tensor<2>]>) -> Tensor<2> {
        let mut x = x;
        for (i, layer) in self.hidden.iter().enumerate() {
            x = self.relu.forward(layer.forward(x));
            if let Some(m) = masks.and_then(|m| m.get(i)) {
                x = x * m.clone();
            }
        }
        self.out.forward(x)
    }

    /// The network's weights as a [`Model`](crate::model::Model) artifact.
    pub fn export(&self) -> Result<crate::model::Model, EvalError> {
        let layer = |l: &Linear| -> Result<crate::model::Layer, EvalError> {
            let [inputs, outputs] = l.weight.val().dims();
            let weight = to_vec(l.weight.val())?;
            let bias = match &l.bias {
                Some(b) => b
                    .val()
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .map_err(|e| EvalError::Failed(format!("reading a bias: {e:?}")))?,
                None => vec![0.0; outputs],
            };
            Ok(crate::model::Layer { inputs, outputs, weight, bias })
        };
        let layers =
            self.hidden.iter().chain(std::iter::once(&self.out)).map(layer).collect::<Result<_, _>>()?;
        Ok(crate::model::Model { layers })
    }
}

/// What is learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Classes `0..n` with cross-entropy.
    Classify(usize),
    /// One real output with mean squared error.
    Regress,
}

/// Training hyperparameters.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// Hidden layer widths.
    pub hidden: Vec<usize>,
    /// Dropout probability after each hidden layer.
    pub dropout: f64,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Epochs at most.
    pub epochs: u32,
    /// Epochs without validation improvement before stopping (`early_patience`).
    pub early_patience: u32,
    /// Initialization, shuffling and dropout seed.
    pub seed: u64,
}

impl TrainConfig {
    /// Parameters of the network for `inputs → hidden → outputs`.
    pub fn parameters(&self, inputs: usize, outputs: usize) -> u64 {
        let mut prev = inputs as u64;
        let mut total = 0;
        for &h in &self.hidden {
            total += prev * h as u64 + h as u64;
            prev = h as u64;
        }
        total + prev * outputs as u64 + outputs as u64
    }

    /// Estimated peak memory of training: weights, gradients and two AdamW moments per
    /// parameter, a kept best copy, activations of a batch (forward and backward), and the data.
    pub fn memory_estimate(&self, inputs: usize, outputs: usize, rows: usize) -> u64 {
        let params = self.parameters(inputs, outputs);
        let width: u64 = self.hidden.iter().map(|h| *h as u64).sum::<u64>() + (inputs + outputs) as u64;
        let batch_rows = self.batch_size.max(rows.min(4096)) as u64;
        4 * (5 * params + 4 * batch_rows * width + rows as u64 * (inputs + outputs) as u64)
    }
}

/// A trained network and how training went.
#[derive(Debug)]
pub struct Trained {
    /// The network at its best validation epoch (inference mode).
    pub model: Mlp,
    /// Epochs run.
    pub epochs: u32,
    /// Best validation loss.
    pub val_loss: f64,
    /// Training samples processed.
    pub samples: u64,
}

static INIT: Mutex<()> = Mutex::new(());

fn tensor2(data: Vec<f32>, rows: usize, cols: usize, device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(data, [rows, cols]), device)
}

fn gather(x: &[f32], cols: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * cols);
    for &i in idx {
        out.extend_from_slice(&x[i * cols..(i + 1) * cols]);
    }
    out
}

/// Targets of a task: class labels or regression values.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a> {
    /// Class labels.
    Classes(&'a [i64]),
    /// Regression values.
    Values(&'a [f32]),
}

/// A data set to train on: row-major features and their targets.
#[derive(Clone, Copy, Debug)]
pub struct Data<'a> {
    /// What is learned.
    pub task: Task,
    /// Features, `rows × inputs`.
    pub x: &'a [f32],
    /// Features per row.
    pub inputs: usize,
    /// Targets per row.
    pub targets: Targets<'a>,
}

/// Trains on rows `train` of `data`, early-stopping on rows `val`.
pub fn train(
    data: Data<'_>,
    train: &[usize],
    val: &[usize],
    config: &TrainConfig,
    budget: &Budget,
) -> Result<Trained, EvalError> {
    let Data { task, x, inputs, targets } = data;
    if train.is_empty() || val.is_empty() {
        return Err(EvalError::Failed("empty training or validation set".into()));
    }
    let outputs = match task {
        Task::Classify(n) => n,
        Task::Regress => 1,
    };
    budget.check_memory(config.memory_estimate(inputs, outputs, x.len() / inputs.max(1)))?;
    let epochs = if budget.max_epochs > 0 { config.epochs.min(budget.max_epochs) } else { config.epochs };
    let device = Device::flex().autodiff();
    let mut model = {
        let _guard = INIT.lock().map_err(|_| EvalError::Failed("initialization lock poisoned".into()))?;
        device.seed(config.seed);
        let model = Mlp::new(inputs, &config.hidden, outputs, &device);
        // burn initializes parameters lazily, on first use: use them all now, under the lock,
        // or another thread's draws interleave with this model's.
        let _ = model.forward(tensor2(vec![0.0; inputs], 1, inputs, &device), None);
        model
    };
    let mut optim = AdamWConfig::new().with_weight_decay(config.weight_decay as f32).init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0xd0_d0);
    let keep = 1.0 - config.dropout.clamp(0.0, 0.9);
    let inner = device.clone().inner();
    let val_x = tensor2(gather(x, inputs, val), val.len(), inputs, &inner);
    let mut order = train.to_vec();
    let (mut best, mut best_loss, mut stale, mut run, mut samples) = (None, f64::INFINITY, 0u32, 0u32, 0u64);
    for _ in 0..epochs {
        order.shuffle(&mut rng);
        for chunk in order.chunks(config.batch_size.max(1)) {
            let b = chunk.len();
            let xb = tensor2(gather(x, inputs, chunk), b, inputs, &device);
            let masks: Vec<Tensor<2>> = if keep < 1.0 {
                config
                    .hidden
                    .iter()
                    .map(|&h| {
                        let m: Vec<f32> = (0..b * h)
                            .map(|_| if rng.random::<f64>() < keep { (1.0 / keep) as f32 } else { 0.0 })
                            .collect();
                        tensor2(m, b, h, &device)
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let out = model.forward(xb, Some(&masks));
            let loss = match (task, targets) {
                (Task::Classify(_), Targets::Classes(y)) => {
                    let yb: Vec<i64> = chunk.iter().map(|&i| y[i]).collect();
                    let yb = Tensor::<1, Int>::from_data(TensorData::new(yb, [b]), &device);
                    CrossEntropyLossConfig::new().init(&device).forward(out, yb)
                }
                (Task::Regress, Targets::Values(y)) => {
                    let yb: Vec<f32> = chunk.iter().map(|&i| y[i]).collect();
                    MseLoss::new().forward(out, tensor2(yb, b, 1, &device), Reduction::Mean)
                }
                _ => return Err(EvalError::Failed("targets do not match the task".into())),
            };
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.learning_rate, model, grads);
            samples += b as u64;
        }
        run += 1;
        if budget.expired() {
            return Err(EvalError::Timeout);
        }
        let pred = model.valid().forward(val_x.clone(), None);
        let val_loss = loss_of(task, pred, targets, val)?;
        if !val_loss.is_finite() {
            return Err(EvalError::Failed(format!("training diverged at epoch {run}")));
        }
        if val_loss < best_loss {
            best_loss = val_loss;
            best = Some(model.clone());
            stale = 0;
        } else {
            stale += 1;
            if stale >= config.early_patience.max(1) {
                break;
            }
        }
    }
    let model = best.unwrap_or(model).valid();
    Ok(Trained { model, epochs: run, val_loss: best_loss, samples })
}

/// Mean loss of predictions on rows `idx`: cross-entropy or squared error.
fn loss_of(task: Task, pred: Tensor<2>, targets: Targets<'_>, idx: &[usize]) -> Result<f64, EvalError> {
    match (task, targets) {
        (Task::Classify(n), Targets::Classes(y)) => {
            let logp = to_vec(log_softmax(pred, 1))?;
            let total: f64 =
                idx.iter().enumerate().map(|(r, &i)| -f64::from(logp[r * n + y[i] as usize])).sum();
            Ok(total / idx.len() as f64)
        }
        (Task::Regress, Targets::Values(y)) => {
            let p = to_vec(pred)?;
            Ok(idx.iter().zip(&p).map(|(&i, p)| f64::from(p - y[i]).powi(2)).sum::<f64>() / idx.len() as f64)
        }
        _ => Err(EvalError::Failed("targets do not match the task".into())),
    }
}

fn to_vec(t: Tensor<2>) -> Result<Vec<f32>, EvalError> {
    t.into_data().try_into_vec_as::<f32>().map_err(|e| EvalError::Failed(format!("reading a tensor: {e:?}")))
}

/// Raw outputs of `model` for rows `idx` (logits or values), row-major.
pub fn predict(model: &Mlp, x: &[f32], inputs: usize, idx: &[usize]) -> Result<Vec<f32>, EvalError> {
    let device = Device::flex();
    let mut out = Vec::new();
    for chunk in idx.chunks(2048) {
        out.extend(to_vec(
            model.forward(tensor2(gather(x, inputs, chunk), chunk.len(), inputs, &device), None),
        )?);
    }
    Ok(out)
}
