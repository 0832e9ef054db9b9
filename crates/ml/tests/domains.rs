//! The built-in ML domains on their shipped data: a short search beats the naive baselines on
//! held-out data, evaluators' seeds select other data, training is deterministic across
//! threads, and resource limits are reported failures.

use std::time::{Duration, Instant};

use doin_ml::{Co2Forecaster, MlpClassifier};
use doin_optimize::{
    Optimizer, Shade, Value,
    domain::{Budget, Domain, EvalError, Measurement},
    driver::{Hooks, RunConfig, run},
};
use doin_primitives::Hash;

fn budget() -> Budget {
    Budget::new(Duration::from_secs(120), 0)
}

#[derive(Default)]
struct Best(Option<Measurement>);
impl Hooks for Best {
    fn champion_found(&mut self, _: &[f64], m: &Measurement) {
        self.0 = Some(m.clone());
    }
}

fn short_search(domain: &dyn Domain, evaluations: usize, max_epochs: u32) -> (Measurement, Vec<Value>) {
    let mut opt = Shade::new(domain.space().len(), 6, 2);
    let mut best = Best::default();
    let cfg = RunConfig {
        budget: evaluations,
        batch: 6,
        workers: 2,
        max_wall: Duration::from_secs(120),
        max_epochs,
        ..RunConfig::default()
    };
    let started = Instant::now();
    let r = run(domain, &mut opt, cfg, &mut best);
    eprintln!(
        "{}: {} evaluations in {:.1}s, {} failed",
        domain.id(),
        r.evaluations,
        started.elapsed().as_secs_f64(),
        r.failures
    );
    assert!(r.failures < r.evaluations / 2, "{r:?}");
    let values = domain.space().decode(&opt.best().unwrap().x);
    (best.0.unwrap(), values)
}

#[test]
fn classifier_search_beats_the_majority_class_on_held_out_data() {
    let domain = MlpClassifier::new(3).unwrap();
    let (m, values) = short_search(&domain, 12, 15);
    eprintln!("classifier best {m:?}");
    let naive = m.metrics["naive_accuracy"];
    assert!(naive < 0.15, "ten balanced classes: {naive}");
    assert!(m.performance > 0.85, "{m:?}");
    assert_eq!(m.performance, m.metrics["test_accuracy"]);
    // An evaluator re-trains on the fold its seed selects and measures on that fold's test
    // rows: a different number, as good as the optimizer's claim.
    let seed = Hash::of(b"evaluator");
    let e = domain.evaluate(&values, Some(&seed), budget()).unwrap();
    assert_ne!(e.performance, m.performance);
    assert!(e.performance > 0.8 && e.metrics["naive_accuracy"] < 0.15, "{e:?}");
}

#[test]
fn a_trained_artifact_answers_like_its_measurement_and_never_saw_its_held_out_rows() {
    let domain = MlpClassifier::new(3).unwrap();
    let params = MlpClassifier::reference_params();
    let bytes = domain.train(&params, None, budget()).unwrap();
    assert_eq!(bytes, domain.train(&params, None, budget()).unwrap(), "training is deterministic");
    let quality = domain.measure_artifact(&bytes).unwrap();
    assert!(quality > 0.9, "{quality}");
    // The answers to the held-out rows are as accurate as the measurement says, exactly.
    let (rows, labels) = domain.held_out();
    let answer = domain.infer(&bytes, &rows).unwrap();
    let predicted = answer.labels.unwrap();
    let correct = predicted.iter().zip(&labels).filter(|(p, y)| i64::from(**p) == **y).count();
    assert_eq!(correct as f64 / labels.len() as f64, quality);
    assert_eq!(answer.outputs.len(), rows.len());
    assert_eq!(answer.outputs[0].len(), 10);
    // A row's answer is the same bits alone, in the whole batch and in another batch (the node
    // batches concurrent requests; a dispute re-executes one row and compares bits).
    let bits = |o: &[f64]| o.iter().map(|x| (*x as f32).to_bits()).collect::<Vec<_>>();
    let reversed: Vec<Vec<f64>> = rows[..37].iter().rev().cloned().collect();
    let other = domain.infer(&bytes, &reversed).unwrap();
    for i in [0, 1, 17, 36] {
        let alone = domain.infer(&bytes, std::slice::from_ref(&rows[i])).unwrap();
        assert_eq!(bits(&alone.outputs[0]), bits(&answer.outputs[i]), "row {i} alone");
        assert_eq!(bits(&other.outputs[36 - i]), bits(&answer.outputs[i]), "row {i} in another batch");
    }
    // A model that would have trained on the held-out rows is not what `train` returns: the
    // held-out rows are a fixed fifth nobody's published model learns from.
    assert_eq!(rows.len(), domain.held_out().0.len());
    assert!((rows.len() as f64 / 1797.0 - 0.2).abs() < 0.01, "{}", rows.len());
    // Wrong shapes and foreign bytes are refused by name.
    assert!(
        matches!(domain.infer(&bytes, &[vec![0.0; 3]]), Err(EvalError::BadParams(e)) if e.contains("3 features"))
    );
    assert!(
        matches!(domain.measure_artifact(b"not a model"), Err(EvalError::BadParams(e)) if e.contains("magic"))
    );
}

#[test]
fn a_trained_forecaster_answers_in_ppmv_like_its_measurement() {
    let domain = Co2Forecaster::new(3).unwrap();
    // A window of 52 weeks, one layer of 32, lr 3e-3, batch 64, 30 epochs.
    let params = [
        Value::Int(52),
        Value::Int(1),
        Value::Int(32),
        Value::Real(3e-3),
        Value::Real(1e-6),
        Value::Real(0.0),
        Value::Int(64),
        Value::Int(30),
    ];
    let bytes = domain.train(&params, None, budget()).unwrap();
    let quality = domain.measure_artifact(&bytes).unwrap();
    let (rows, targets) = domain.held_out(52);
    let naive = targets.iter().map(|t| t.abs()).sum::<f64>() / targets.len() as f64;
    assert!(-quality < naive, "the model ({}) beats no change ({naive})", -quality);
    // Its answers, in ppmv, are exactly as far off as the measurement says.
    let answer = domain.infer(&bytes, &rows).unwrap();
    assert!(answer.labels.is_none());
    let mae = answer.outputs.iter().zip(&targets).map(|(o, t)| (o[0] - t).abs()).sum::<f64>()
        / targets.len() as f64;
    assert!((mae + quality).abs() < 1e-9, "{mae} vs {quality}");
    assert!(
        matches!(domain.infer(&bytes, &[vec![0.0; 3]]), Err(EvalError::BadParams(e)) if e.contains("takes 52"))
    );
}

#[test]
fn forecaster_search_beats_the_naive_forecast_on_held_out_data() {
    let domain = Co2Forecaster::new(3).unwrap();
    let (m, values) = short_search(&domain, 12, 25);
    eprintln!("forecaster best {m:?}");
    for k in ["train_mae", "val_mae", "test_mae", "naive_mae"] {
        assert!(m.metrics[k].is_finite() && m.metrics[k] > 0.0, "{k}: {m:?}");
    }
    assert!(m.metrics["test_mae"] < 0.9 * m.metrics["naive_mae"], "{m:?}");
    assert_eq!(m.performance, -m.metrics["test_mae"]);
    // An evaluator's block bootstrap: other data, still better than naive.
    let e = domain.evaluate(&values, Some(&Hash::of(b"evaluator")), budget()).unwrap();
    assert_ne!(e.metrics["naive_mae"], m.metrics["naive_mae"], "other held-out weeks");
    assert!(e.metrics["test_mae"] < e.metrics["naive_mae"], "{e:?}");
}

#[test]
fn training_is_deterministic_across_threads_and_limits_are_failures() {
    let domain = MlpClassifier::new(3).unwrap();
    // 1 layer of 32, lr 3e-3, wd 1e-4, dropout 0.2, batch 64, 4 epochs.
    let values = [
        Value::Int(1),
        Value::Int(32),
        Value::Real(3e-3),
        Value::Real(1e-4),
        Value::Real(0.2),
        Value::Int(64),
        Value::Int(4),
    ];
    let seed = Hash::of(b"s");
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| domain.evaluate(&values, Some(&seed), budget()).unwrap());
        let b = s.spawn(|| domain.evaluate(&values, Some(&seed), budget()).unwrap());
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!(a, b, "same candidate, same seed, parallel threads: the same measurement");
    assert_eq!(a.metrics["epochs"], 4.0);

    // Epoch limit of the budget caps the candidate's epochs.
    let capped = domain.evaluate(&values, Some(&seed), Budget { max_epochs: 2, ..budget() }).unwrap();
    assert_eq!(capped.metrics["epochs"], 2.0);
    // Memory estimate over the limit: refused before training.
    let tiny = Budget { max_memory_bytes: 1 << 20, ..budget() };
    assert!(matches!(domain.evaluate(&values, None, tiny), Err(EvalError::ResourceLimit(_))));
    // Deadline: reported as a timeout.
    let mut long = values;
    long[6] = Value::Int(60);
    let short = Budget::new(Duration::from_millis(1), 0);
    assert_eq!(domain.evaluate(&long, None, short), Err(EvalError::Timeout));
    // Out-of-range and missing parameters are named.
    let mut bad = values;
    bad[1] = Value::Int(100_000);
    assert!(
        matches!(domain.evaluate(&bad, None, budget()), Err(EvalError::BadParams(m)) if m.contains("parameter 1"))
    );
    assert!(matches!(domain.evaluate(&values[..3], None, budget()), Err(EvalError::BadParams(_))));
}
