//! An evaluator's re-measurement of a recorded round from its artifacts (`docs/design.md`
//! §21c): the round's base model, the updates its receipts name and the model it recorded.
//!
//! - **The aggregate, bit for bit.** The rule's combination of the recorded updates with their
//!   recorded say and kept flags (the weighted mean of the kept ones for the loss-scored rule,
//!   FedAvg and MultiKrum; the rule itself for the coordinate-wise rules and Krum), added to the
//!   base, must hash to the recorded model. Same code, same order, same `f32` operations: an
//!   honest supervisor's model reproduces exactly, and any other model does not.
//! - **Each contribution's loss change** on scoring rows drawn from the audit seed (after the
//!   record was included, so nobody chose them): for a kept update, the loss of the kept mean
//!   without it minus the loss with it; for a dropped one, the loss of the kept mean minus the
//!   loss with it added. Positive helps.
//! - **The model's quality**: minus its loss on the same rows.

use doin_ml::data::Tabular;
use doin_primitives::FederatedRound;

use crate::{
    aggregate::{Contribution, Rule, aggregate, weighted_mean},
    model::Mlp,
    supervisor::{scoring_rows, weight_of, weights_hash},
};

/// An audit's findings, in the record's contribution order.
#[derive(Clone, Debug, PartialEq)]
pub struct Audit {
    /// Whether the recorded model is the rule's aggregate of the recorded updates.
    pub aggregate_ok: bool,
    /// Minus the model's loss on the audit rows, micro-nats.
    pub model_quality_micro: i64,
    /// Each contribution's loss change, micro-nats.
    pub qualities: Vec<i64>,
}

fn micro(v: f64) -> i64 {
    ((v * 1e6).round() as i64).clamp(-1_000_000_000_000, 1_000_000_000_000)
}

/// Audits `record` given its `base` model and its updates' deltas (`updates`, record order),
/// scoring on rows of `train` drawn by `seed`. `max_samples` caps declared rows as the job's
/// admission did.
#[allow(clippy::too_many_arguments)]
pub fn audit(
    rule: Rule,
    mlp: &Mlp,
    max_samples: u32,
    base: &[f32],
    record: &FederatedRound,
    updates: &[Vec<f32>],
    data: &Tabular,
    train: &[usize],
    seed: u64,
) -> Audit {
    let contributions: Vec<Contribution<'_>> = record
        .contributions
        .iter()
        .zip(updates)
        .map(|(c, d)| Contribution {
            delta: d,
            weight: weight_of(c.update.body.samples.min(max_samples), c.say_ppm),
        })
        .collect();
    let kept: Vec<bool> = record.contributions.iter().map(|c| c.kept).collect();
    let params = base.len();
    let delta = match rule {
        Rule::LossScored { .. } | Rule::FedAvg | Rule::MultiKrum { .. } => {
            weighted_mean(&contributions, &kept, params)
        }
        other => aggregate(other, &contributions, params, &mut |_| 0.0).delta,
    };
    let apply = |d: &[f32]| -> Vec<f32> { base.iter().zip(d).map(|(g, x)| g + x).collect() };
    let model = apply(&delta);
    let aggregate_ok = updates.len() == record.contributions.len()
        && updates.iter().all(|u| u.len() == params)
        && weights_hash(&model) == record.model;
    let rows = scoring_rows(train, seed);
    let loss = |d: &[f32]| mlp.quality(&apply(d), data, &rows).loss;
    let with_kept = loss(&delta);
    let qualities = (0..contributions.len())
        .map(|i| {
            let mut mask = kept.clone();
            mask[i] = !kept[i];
            let other = loss(&weighted_mean(&contributions, &mask, params));
            micro(if kept[i] { other - with_kept } else { with_kept - other })
        })
        .collect();
    Audit { aggregate_ok, model_quality_micro: micro(-with_kept), qualities }
}
