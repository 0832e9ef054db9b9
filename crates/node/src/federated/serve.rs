//! A federated job's model as the inference server and dispute quorums run it
//! (`docs/design.md` §22g). The artifact is the job's flat `f32` weights — what the chain names
//! by hash (`FederatedState.verified`) and supervisors serve as checkpoints — run through the
//! same forward pass training and audits use ([`doin_federated::model::Mlp::predict`]), so
//! every node gets the same outputs from the same weights and row, and a wrong answer can be
//! shown by re-executing its row.

use doin_federated::{model::Mlp, supervisor::from_bytes};
use doin_optimize::{
    domain::{Budget, Domain, EvalError, Inference, Measurement},
    space::{Space, Value},
};
use doin_primitives::Hash;

/// The model of one job: its layer sizes (the job's spec), no parameters to search.
#[derive(Debug)]
pub struct JobModel {
    id: String,
    mlp: Mlp,
    space: Space,
}

impl JobModel {
    /// The model of job `id` with these layer sizes (inputs first).
    pub fn new(id: &str, sizes: &[usize]) -> Result<Self, String> {
        Ok(Self { id: id.to_owned(), mlp: Mlp::new(sizes)?, space: Space::default() })
    }
}

impl Domain for JobModel {
    fn id(&self) -> &str {
        &self.id
    }

    fn space(&self) -> &Space {
        &self.space
    }

    fn higher_is_better(&self) -> bool {
        true
    }

    fn evaluate(&self, _: &[Value], _: Option<&Hash>, _: Budget) -> Result<Measurement, EvalError> {
        Err(EvalError::Unsupported(format!(
            "federated job {}: its rounds are audited, not its parameters evaluated",
            self.id
        )))
    }

    fn has_model(&self) -> bool {
        true
    }

    /// Class probabilities per row; the label is the most probable class. Weights that are not
    /// whole finite `f32`s of the job's size are refused; a row of the wrong width is
    /// [`EvalError::BadParams`] (the server could not have answered it).
    fn infer(&self, artifact: &[u8], rows: &[Vec<f64>]) -> Result<Inference, EvalError> {
        let w = from_bytes(artifact)
            .filter(|w| w.len() == self.mlp.params() && w.iter().all(|v| v.is_finite()))
            .ok_or_else(|| {
                EvalError::Failed(format!(
                    "the artifact is not {} finite f32 weights of job {}",
                    self.mlp.params(),
                    self.id
                ))
            })?;
        let mut outputs = Vec::with_capacity(rows.len());
        let mut labels = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let x: Vec<f32> = row.iter().map(|v| *v as f32).collect();
            let p = self.mlp.predict(&w, &x).map_err(|e| EvalError::BadParams(format!("row {i}: {e}")))?;
            labels.push(doin_ml::model::argmax(&p) as u32);
            outputs.push(p.into_iter().map(f64::from).collect());
        }
        Ok(Inference { outputs, labels: Some(labels) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The served forward pass is training's: a trained job model labels held-out digits as
    /// its quality says; other weights or rows are refused by name.
    #[test]
    fn a_job_model_answers_with_the_training_forward_pass_and_refuses_what_does_not_fit() {
        let data = doin_ml::data::digits().unwrap();
        let sizes = [64, 16, 10];
        let mlp = Mlp::new(&sizes).unwrap();
        let mut w = mlp.init(3);
        let train: Vec<usize> = (0..data.rows()).filter(|i| i % 5 != 0).collect();
        let test: Vec<usize> = (0..data.rows()).filter(|i| i % 5 == 0).collect();
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        for _ in 0..5 {
            mlp.sgd_epoch(&mut w, &data, &train, 0.2, 16, &mut rng);
        }
        let quality = mlp.quality(&w, &data, &test);
        let bytes = doin_federated::supervisor::to_bytes(&w);
        let model = JobModel::new("fl", &sizes).unwrap();
        let rows: Vec<Vec<f64>> = test
            .iter()
            .map(|&r| data.x[r * 64..(r + 1) * 64].iter().map(|v| f64::from(*v)).collect())
            .collect();
        let answer = model.infer(&bytes, &rows).unwrap();
        let labels = answer.labels.unwrap();
        let right = test.iter().zip(&labels).filter(|(r, l)| data.y[**r] == i64::from(**l)).count();
        assert_eq!(right as f64 / test.len() as f64, quality.accuracy);
        assert!(quality.accuracy > 0.8, "{quality:?}");
        // Deterministic: the same bytes and rows give the same outputs, bit for bit.
        assert_eq!(model.infer(&bytes, &rows).unwrap().outputs, answer.outputs);
        let short = model.infer(&bytes[..bytes.len() - 4], &rows[..1]).unwrap_err();
        assert!(matches!(short, EvalError::Failed(ref m) if m.contains("finite f32 weights")), "{short}");
        let mut nan = w.clone();
        nan[0] = f32::NAN;
        assert!(model.infer(&doin_federated::supervisor::to_bytes(&nan), &rows[..1]).is_err());
        let wide = model.infer(&bytes, &[vec![0.0; 65]]).unwrap_err();
        assert!(matches!(wide, EvalError::BadParams(ref m) if m.contains("takes 64")), "{wide}");
    }
}
