//! `doin bench fl`: the federated benchmark of issue 21 in one process (`doin_federated::
//! experiment`): every aggregation rule on the Flower digits setup, clean, with two
//! sign-flipping attackers (×5) and with two ALIE attackers (z = 1), medians over seeds; the
//! default rule's coordination overhead per round; the time to aggregate 100 updates of 10 MB.

use doin_federated::{
    Rule,
    experiment::{self, Attack, Setup},
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark over seeds `1..=seeds`, `rounds` rounds each, times the aggregation of
/// 100 updates of `update_mb` MB, and prints one JSON line.
pub(crate) fn run(seeds: u64, rounds: u64, update_mb: usize) -> anyhow::Result<()> {
    anyhow::ensure!(rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!((1..=100).contains(&update_mb), "--update-mb must be in 1..=100");
    let data = doin_ml::data::digits().map_err(anyhow::Error::msg)?;
    let rules = [
        Rule::FedAvg,
        Rule::Median,
        Rule::TrimmedMean { beta: 0.2 },
        Rule::Krum { f: 2 },
        Rule::MultiKrum { f: 2, m: 0 },
        Rule::DEFAULT,
    ];
    let attacks = [
        ("clean", 0, Attack::None),
        ("sign_flip", 2, Attack::SignFlip { scale: 5.0 }),
        ("alie", 2, Attack::Alie { z: 1.0 }),
    ];
    let mut table = serde_json::Map::new();
    let mut default = serde_json::Map::new();
    for rule in rules {
        let mut row = serde_json::Map::new();
        for (name, attackers, attack) in attacks {
            let outcomes = (1..=seeds.max(1))
                .map(|seed| {
                    experiment::run(&Setup { rounds, ..Setup::flower(rule, attackers, attack, seed) }, &data)
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(anyhow::Error::msg)?;
            let accuracy = median(outcomes.iter().map(|o| o.accuracy).collect());
            row.insert(name.into(), serde_json::json!(accuracy));
            if rule == Rule::DEFAULT {
                default.insert(format!("{name}_accuracy"), serde_json::json!(accuracy));
                default.insert(
                    format!("{name}_overhead_ms"),
                    serde_json::json!(median(outcomes.iter().map(|o| o.overhead_ms).collect())),
                );
                if attackers > 0 {
                    let sum = |f: &dyn Fn(&experiment::Outcome) -> u64| outcomes.iter().map(f).sum::<u64>();
                    default.insert(
                        format!("{name}_attackers"),
                        serde_json::json!({
                            "kept": sum(&|o| o.attackers_kept),
                            "quarantined": sum(&|o| o.attackers_quarantined as u64),
                            "mean_score": median(outcomes.iter().filter_map(|o| o.attacker_score).collect()),
                            "payout_share": median(outcomes.iter().map(|o| o.attacker_payout_share).collect()),
                        }),
                    );
                    default.insert(
                        format!("{name}_honest_quarantined"),
                        serde_json::json!(sum(&|o| o.honest_quarantined as u64)),
                    );
                }
                default.insert(
                    format!("{name}_honest_dropped"),
                    serde_json::json!(outcomes.iter().map(|o| o.honest_dropped).sum::<u64>()),
                );
            }
        }
        table.insert(rule.name().into(), serde_json::Value::Object(row));
    }
    // 100 updates of `update_mb` MB (250 000 weights a MB) each, on one core.
    let aggregate = experiment::aggregation_seconds(Rule::DEFAULT, 100, update_mb * 250_000);
    let fedavg = experiment::aggregation_seconds(Rule::FedAvg, 100, update_mb * 250_000);
    let get = |k: &str| default.get(k).cloned().unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "bench": "fl",
            "setup": "digits 1437/360, 10 contributors, Dirichlet(0.5), MLP 64-64-10, 1 local epoch of SGD (lr 0.2, batch 16), 20 rounds; attackers: 2 (sign flip x5, or ALIE z=1)",
            "seeds": seeds,
            "rule": Rule::DEFAULT.name(),
            "clean_accuracy": get("clean_accuracy"),
            "attacked_accuracy": get("sign_flip_accuracy"),
            "alie_accuracy": get("alie_accuracy"),
            "round_overhead_ms": get("sign_flip_overhead_ms"),
            "aggregate_100x10mb_s": (update_mb == 10).then_some(aggregate),
            "fedavg_100x10mb_s": (update_mb == 10).then_some(fedavg),
            "aggregate_100_updates": { "update_mb": update_mb, "loss_scored_s": aggregate, "fedavg_s": fedavg },
            "rounds": rounds,
            "default_rule": default,
            "rules": table,
        })
    );
    Ok(())
}
