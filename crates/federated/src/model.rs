//! The built-in federated model: a fully connected network with ReLU hidden layers and a
//! softmax output, whose parameters are one flat `f32` vector (what contributors send and
//! supervisors aggregate), trained by mini-batch SGD on CPU. Layer `l` holds its weights
//! `inputs × outputs` (input-major) and then its biases.

use doin_ml::data::Tabular;
use rand::{Rng, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;

/// The network's layer sizes, inputs first (`[64, 64, 10]`: the Flower digits setup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mlp {
    sizes: Vec<usize>,
}

/// Loss and accuracy of a model on some rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Share of rows classified right.
    pub accuracy: f64,
}

impl Mlp {
    /// A network with these layer sizes (at least an input and an output layer).
    pub fn new(sizes: &[usize]) -> Result<Self, String> {
        if sizes.len() < 2 || sizes.contains(&0) {
            return Err(format!("layer sizes {sizes:?}: need at least two, none zero"));
        }
        Ok(Self { sizes: sizes.to_vec() })
    }

    /// Parameters in the flat vector.
    pub fn params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1] + w[1]).sum()
    }

    /// Glorot-uniform weights and zero biases, from `seed`.
    pub fn init(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut w = Vec::with_capacity(self.params());
        for s in self.sizes.windows(2) {
            let limit = (6.0 / (s[0] + s[1]) as f32).sqrt();
            w.extend((0..s[0] * s[1]).map(|_| rng.random_range(-limit..limit)));
            w.extend(std::iter::repeat_n(0.0, s[1]));
        }
        w
    }

    /// Inputs a row has.
    pub fn inputs(&self) -> usize {
        self.sizes[0]
    }

    /// The class probabilities of `w` for one row `x` — the forward pass training and audits
    /// use, so any node gets the same `f32`s from the same weights and row.
    pub fn predict(&self, w: &[f32], x: &[f32]) -> Result<Vec<f32>, String> {
        if w.len() != self.params() {
            return Err(format!("{} weights; the model has {}", w.len(), self.params()));
        }
        if x.len() != self.inputs() {
            return Err(format!("a row of {} values; the model takes {}", x.len(), self.inputs()));
        }
        let mut acts = Vec::with_capacity(self.sizes.len());
        self.forward(w, x, &mut acts);
        Ok(acts.pop().unwrap_or_default())
    }

    /// Activations of every layer for one row (the last: softmax probabilities).
    fn forward(&self, w: &[f32], x: &[f32], acts: &mut Vec<Vec<f32>>) {
        acts.clear();
        acts.push(x.to_vec());
        let mut at = 0;
        let last = self.sizes.len() - 2;
        for (l, s) in self.sizes.windows(2).enumerate() {
            let (n_in, n_out) = (s[0], s[1]);
            let (weights, bias) =
                (&w[at..at + n_in * n_out], &w[at + n_in * n_out..at + n_in * n_out + n_out]);
            at += n_in * n_out + n_out;
            let input = &acts[l];
            let mut out = bias.to_vec();
            for (i, xi) in input.iter().enumerate() {
                if *xi == 0.0 {
                    continue;
                }
                let row = &weights[i * n_out..(i + 1) * n_out];
                for (o, wv) in out.iter_mut().zip(row) {
                    *o += xi * wv;
                }
            }
            if l < last {
                out.iter_mut().for_each(|v| *v = v.max(0.0));
            } else {
                let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                out.iter_mut().for_each(|v| {
                    *v = (*v - max).exp();
                    sum += *v;
                });
                out.iter_mut().for_each(|v| *v /= sum.max(f32::MIN_POSITIVE));
            }
            acts.push(out);
        }
    }

    /// One epoch of mini-batch SGD over `rows` of `data` (shuffled by `rng`), learning rate
    /// `lr`, batches of `batch`.
    pub fn sgd_epoch(
        &self,
        w: &mut [f32],
        data: &Tabular,
        rows: &[usize],
        lr: f32,
        batch: usize,
        rng: &mut ChaCha8Rng,
    ) {
        let mut order = rows.to_vec();
        order.shuffle(rng);
        let mut grad = vec![0.0f32; self.params()];
        let mut acts = Vec::new();
        let mut deltas: Vec<Vec<f32>> = Vec::new();
        for chunk in order.chunks(batch.max(1)) {
            grad.iter_mut().for_each(|g| *g = 0.0);
            for &r in chunk {
                let x = &data.x[r * data.features..(r + 1) * data.features];
                self.forward(w, x, &mut acts);
                self.backward(w, &acts, data.y[r] as usize, &mut grad, &mut deltas);
            }
            let step = lr / chunk.len() as f32;
            w.iter_mut().zip(&grad).for_each(|(wv, g)| *wv -= step * g);
        }
    }

    /// Adds one row's cross-entropy gradient to `grad`.
    fn backward(
        &self,
        w: &[f32],
        acts: &[Vec<f32>],
        label: usize,
        grad: &mut [f32],
        deltas: &mut Vec<Vec<f32>>,
    ) {
        let layers = self.sizes.len() - 1;
        // Offsets of each layer's block in the flat vector.
        let mut offsets = Vec::with_capacity(layers);
        let mut at = 0;
        for s in self.sizes.windows(2) {
            offsets.push(at);
            at += s[0] * s[1] + s[1];
        }
        deltas.clear();
        let mut delta = acts[layers].clone();
        if let Some(d) = delta.get_mut(label) {
            *d -= 1.0;
        }
        for l in (0..layers).rev() {
            let (n_in, n_out) = (self.sizes[l], self.sizes[l + 1]);
            let base = offsets[l];
            let input = &acts[l];
            for (i, xi) in input.iter().enumerate() {
                if *xi == 0.0 {
                    continue;
                }
                let g = &mut grad[base + i * n_out..base + (i + 1) * n_out];
                g.iter_mut().zip(&delta).for_each(|(gv, d)| *gv += xi * d);
            }
            let gb = &mut grad[base + n_in * n_out..base + n_in * n_out + n_out];
            gb.iter_mut().zip(&delta).for_each(|(gv, d)| *gv += d);
            if l > 0 {
                let weights = &w[base..base + n_in * n_out];
                let mut prev = vec![0.0f32; n_in];
                for (i, p) in prev.iter_mut().enumerate() {
                    if input[i] > 0.0 {
                        let row = &weights[i * n_out..(i + 1) * n_out];
                        *p = row.iter().zip(&delta).map(|(wv, d)| wv * d).sum();
                    }
                }
                delta = prev;
            }
        }
    }

    /// Mean cross-entropy and accuracy of `w` on `rows` of `data`.
    pub fn quality(&self, w: &[f32], data: &Tabular, rows: &[usize]) -> Quality {
        let mut acts = Vec::new();
        let (mut loss, mut right) = (0.0f64, 0usize);
        for &r in rows {
            self.forward(w, &data.x[r * data.features..(r + 1) * data.features], &mut acts);
            let p = &acts[acts.len() - 1];
            let label = data.y[r] as usize;
            loss -= f64::from(p.get(label).copied().unwrap_or(0.0).max(1e-7)).ln();
            let best = p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
            right += usize::from(best == label);
        }
        let n = rows.len().max(1) as f64;
        Quality { loss: loss / n, accuracy: right as f64 / n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Centralized training on digits reaches the accuracy the Flower setup's centralized run
    /// has (0.97) within a few points, and the gradient agrees with finite differences.
    #[test]
    fn sgd_learns_digits_and_the_gradient_is_right() {
        let data = doin_ml::data::digits().unwrap();
        let mlp = Mlp::new(&[64, 64, 10]).unwrap();
        let mut w = mlp.init(1);
        assert_eq!(w.len(), 64 * 64 + 64 + 64 * 10 + 10);
        // Finite differences on a few parameters of one row.
        let rows = [3usize];
        let mut grad = vec![0.0; w.len()];
        let (mut acts, mut deltas) = (Vec::new(), Vec::new());
        mlp.forward(&w, &data.x[3 * 64..4 * 64], &mut acts);
        mlp.backward(&w, &acts, data.y[3] as usize, &mut grad, &mut deltas);
        for p in [5usize, 64 * 64 + 3, 64 * 64 + 64 + 17, w.len() - 2] {
            let eps = 1e-3;
            let mut a = w.clone();
            a[p] += eps;
            let mut b = w.clone();
            b[p] -= eps;
            let numeric = (mlp.quality(&a, &data, &rows).loss - mlp.quality(&b, &data, &rows).loss)
                / (2.0 * f64::from(eps));
            assert!((numeric - f64::from(grad[p])).abs() < 1e-2, "parameter {p}: {numeric} vs {}", grad[p]);
        }
        let (train, test): (Vec<usize>, Vec<usize>) = (0..data.rows()).partition(|i| i % 5 != 0);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..20 {
            mlp.sgd_epoch(&mut w, &data, &train, 0.1, 32, &mut rng);
        }
        let q = mlp.quality(&w, &data, &test);
        assert!(q.accuracy > 0.95, "{q:?}");
    }
}
