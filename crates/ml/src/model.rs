//! A trained network as an artifact: its weights in a fixed byte layout (the content the chain
//! names by hash) and a forward pass in plain `f32` arithmetic with a fixed summation order, so
//! every node computes bit-identical outputs from the same artifact and input — what makes an
//! inference answer re-checkable by another node, and an evaluator's measurement of the artifact
//! identical to every other honest evaluator's.
//!
//! Layout (little-endian): `DOINMLP1`, the layer count (u32), then per layer its input and
//! output widths (u32 each), the weights (`inputs × outputs` f32, row-major by input) and the
//! biases (`outputs` f32). Every layer but the last is followed by a ReLU.

/// The artifact's first bytes.
pub const MAGIC: &[u8; 8] = b"DOINMLP1";
/// Layers at most.
pub const MAX_LAYERS: usize = 8;
/// Width of a layer at most.
pub const MAX_WIDTH: usize = 4096;

/// One dense layer.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Input width.
    pub inputs: usize,
    /// Output width.
    pub outputs: usize,
    /// `inputs × outputs`, row-major by input.
    pub weight: Vec<f32>,
    /// `outputs`.
    pub bias: Vec<f32>,
}

/// A dense ReLU network.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// Layers in order; the last one's outputs are the model's.
    pub layers: Vec<Layer>,
}

fn u32_at(bytes: &[u8], at: &mut usize) -> Result<usize, String> {
    let b = bytes.get(*at..*at + 4).ok_or("the artifact ends inside a header")?;
    *at += 4;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

fn f32s_at(bytes: &[u8], at: &mut usize, n: usize) -> Result<Vec<f32>, String> {
    let b = bytes.get(*at..*at + 4 * n).ok_or("the artifact ends inside a layer's weights")?;
    *at += 4 * n;
    let v: Vec<f32> = b.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err("the artifact holds a non-finite weight".into());
    }
    Ok(v)
}

impl Model {
    /// Input width.
    pub fn inputs(&self) -> usize {
        self.layers.first().map_or(0, |l| l.inputs)
    }

    /// Output width.
    pub fn outputs(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// The artifact's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.layers.len() as u32).to_le_bytes());
        for l in &self.layers {
            out.extend_from_slice(&(l.inputs as u32).to_le_bytes());
            out.extend_from_slice(&(l.outputs as u32).to_le_bytes());
            for w in l.weight.iter().chain(&l.bias) {
                out.extend_from_slice(&w.to_le_bytes());
            }
        }
        out
    }

    /// Reads an artifact, refusing anything that is not exactly a well-formed model.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.get(..8) != Some(MAGIC.as_slice()) {
            return Err("not a model artifact (bad magic)".into());
        }
        let mut at = 8;
        let count = u32_at(bytes, &mut at)?;
        if count == 0 || count > MAX_LAYERS {
            return Err(format!("{count} layers (1 to {MAX_LAYERS} allowed)"));
        }
        let mut layers: Vec<Layer> = Vec::with_capacity(count);
        for i in 0..count {
            let (inputs, outputs) = (u32_at(bytes, &mut at)?, u32_at(bytes, &mut at)?);
            if inputs == 0 || outputs == 0 || inputs > MAX_WIDTH || outputs > MAX_WIDTH {
                return Err(format!("layer {i} is {inputs} × {outputs} (1 to {MAX_WIDTH} each)"));
            }
            if let Some(prev) = layers.last()
                && prev.outputs != inputs
            {
                return Err(format!("layer {i} takes {inputs} inputs after {} outputs", prev.outputs));
            }
            let weight = f32s_at(bytes, &mut at, inputs * outputs)?;
            let bias = f32s_at(bytes, &mut at, outputs)?;
            layers.push(Layer { inputs, outputs, weight, bias });
        }
        if at != bytes.len() {
            return Err(format!("{} bytes after the last layer", bytes.len() - at));
        }
        Ok(Self { layers })
    }

    /// The outputs for one input row (its length must be [`Model::inputs`]).
    pub fn forward(&self, row: &[f32]) -> Vec<f32> {
        let mut x = row.to_vec();
        for (n, l) in self.layers.iter().enumerate() {
            let mut y = l.bias.clone();
            for (i, xi) in x.iter().enumerate().take(l.inputs) {
                let w = &l.weight[i * l.outputs..(i + 1) * l.outputs];
                for (yj, wj) in y.iter_mut().zip(w) {
                    *yj += xi * wj;
                }
            }
            if n + 1 < self.layers.len() {
                for v in &mut y {
                    *v = v.max(0.0);
                }
            }
            x = y;
        }
        x
    }
}

/// Index of the largest output (the first on ties).
pub fn argmax(outputs: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in outputs.iter().enumerate() {
        if *v > outputs[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Model {
        Model {
            layers: vec![
                Layer { inputs: 2, outputs: 2, weight: vec![1.0, -1.0, 0.5, 2.0], bias: vec![0.0, 0.1] },
                Layer { inputs: 2, outputs: 1, weight: vec![1.0, 1.0], bias: vec![-0.5] },
            ],
        }
    }

    #[test]
    fn an_artifact_round_trips_and_computes_the_network() {
        let m = tiny();
        let back = Model::from_bytes(&m.to_bytes()).unwrap();
        assert_eq!(back, m);
        // Hidden: [1·1 + 2·0.5, 1·(−1) + 2·2 + 0.1] = [2, 3.1]; out: 2 + 3.1 − 0.5.
        assert_eq!(back.forward(&[1.0, 2.0]), vec![4.6]);
        // ReLU clips the hidden layer: [−1 + 0, 1 + 0.1 − 0] → [0, 1.1]… computed exactly.
        assert_eq!(back.forward(&[-1.0, 0.0]), vec![(0.0f32 + 1.1) - 0.5]);
    }

    #[test]
    fn malformed_artifacts_are_refused_by_what_is_wrong() {
        let good = tiny().to_bytes();
        assert!(Model::from_bytes(b"DOINMLP2").unwrap_err().contains("magic"));
        assert!(Model::from_bytes(&good[..good.len() - 1]).unwrap_err().contains("ends inside"));
        let mut extra = good.clone();
        extra.push(0);
        assert!(Model::from_bytes(&extra).unwrap_err().contains("after the last layer"));
        let mut nan = good.clone();
        nan[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(Model::from_bytes(&nan).unwrap_err().contains("non-finite"));
        let mut wide = good.clone();
        wide[12..16].copy_from_slice(&(MAX_WIDTH as u32 + 1).to_le_bytes());
        assert!(Model::from_bytes(&wide).unwrap_err().contains("1 to 4096 each"));
        let mut mismatch = tiny();
        mismatch.layers[1] = Layer { inputs: 3, outputs: 1, weight: vec![1.0; 3], bias: vec![0.0] };
        assert!(Model::from_bytes(&mismatch.to_bytes()).unwrap_err().contains("takes 3 inputs"));
        let mut none = MAGIC.to_vec();
        none.extend_from_slice(&0u32.to_le_bytes());
        assert!(Model::from_bytes(&none).unwrap_err().contains("0 layers"));
    }
}
