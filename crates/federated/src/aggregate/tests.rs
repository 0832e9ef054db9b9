use super::*;

fn c(delta: &[f32], weight: f64) -> Contribution<'_> {
    Contribution { delta, weight }
}

fn no_loss(_: &[f32]) -> f64 {
    0.0
}

/// FedAvg weighs by weight; median and trimmed mean ignore one wild update; Krum picks from
/// the cluster; MultiKrum averages the cluster only.
#[test]
fn each_rule_combines_as_its_definition_says() {
    let (a, b) = ([1.0f32, 0.0], [3.0f32, 4.0]);
    let r = aggregate(Rule::FedAvg, &[c(&a, 1.0), c(&b, 3.0)], 2, &mut no_loss);
    assert_eq!(r.delta, vec![2.5, 3.0]);
    let honest: Vec<[f32; 2]> = vec![[1.0, 1.0], [1.1, 0.9], [0.9, 1.1], [1.0, 1.05], [0.95, 1.0]];
    let wild = [-50.0f32, 80.0];
    let mut all: Vec<Contribution<'_>> = honest.iter().map(|h| c(h, 1.0)).collect();
    all.push(c(&wild, 1.0));
    let med = aggregate(Rule::Median, &all, 2, &mut no_loss);
    assert!(med.delta.iter().all(|v| (v - 1.0).abs() < 0.1), "{med:?}");
    let trimmed = aggregate(Rule::TrimmedMean { beta: 0.2 }, &all, 2, &mut no_loss);
    assert!(trimmed.delta.iter().all(|v| (v - 1.0).abs() < 0.1), "{trimmed:?}");
    let krum = aggregate(Rule::Krum { f: 1 }, &all, 2, &mut no_loss);
    assert!(!krum.kept[5] && krum.kept.iter().filter(|k| **k).count() == 1, "{krum:?}");
    let multi = aggregate(Rule::MultiKrum { f: 1, m: 0 }, &all, 2, &mut no_loss);
    assert_eq!(multi.kept, vec![true, true, true, true, true, false]);
    assert!(multi.delta.iter().all(|v| (v - 1.0).abs() < 0.1), "{multi:?}");
    let fedavg = aggregate(Rule::FedAvg, &all, 2, &mut no_loss);
    assert!(fedavg.delta[0] < -5.0, "FedAvg follows the wild update: {fedavg:?}");
    assert!(aggregate(Rule::FedAvg, &[], 2, &mut no_loss).delta == vec![0.0, 0.0]);
}

/// The loss-scored rule on a quadratic loss around a target: sign-flipped, scaled updates are
/// dropped with strongly negative scores and the aggregate moves toward the target; honest
/// updates score near zero and are kept; with no attacker nothing is dropped.
#[test]
fn the_loss_scored_rule_drops_harmful_updates_and_keeps_honest_ones() {
    let target = [1.0f32, -2.0, 0.5];
    let mut loss = |d: &[f32]| -> f64 { d.iter().zip(&target).map(|(x, t)| f64::from(x - t).powi(2)).sum() };
    // Honest: part of the way to the target, each with its own skew.
    let honest: Vec<Vec<f32>> = (0..8)
        .map(|i| {
            target.iter().enumerate().map(|(j, t)| t * 0.5 + 0.05 * (((i + j) % 3) as f32 - 1.0)).collect()
        })
        .collect();
    let flipped: Vec<Vec<f32>> =
        honest.iter().take(2).map(|h| h.iter().map(|v| -5.0 * v).collect()).collect();
    let mut all: Vec<Contribution<'_>> = honest.iter().map(|h| c(h, 1.0)).collect();
    all.extend(flipped.iter().map(|h| c(h, 1.0)));
    let r = aggregate(Rule::DEFAULT, &all, 3, &mut loss);
    assert_eq!(r.kept, [vec![true; 8], vec![false; 2]].concat(), "{r:?}");
    assert!(r.scores[8].unwrap() < 0.0 && r.scores[9].unwrap() < 0.0, "{r:?}");
    // Honest ones matter little each (some slightly negative: their skew pulls the mean off
    // the target), two orders of magnitude less than an attacker.
    assert!(r.scores[..8].iter().all(|s| s.unwrap().abs() < 0.05), "{r:?}");
    assert!(loss(&r.delta) < loss(&[0.0; 3]) / 2.0, "the aggregate improves: {r:?}");
    let fedavg = aggregate(Rule::FedAvg, &all, 3, &mut loss);
    assert!(loss(&fedavg.delta) > loss(&[0.0; 3]), "FedAvg makes it worse: {fedavg:?}");
    let clean: Vec<Contribution<'_>> = honest.iter().map(|h| c(h, 1.0)).collect();
    let r = aggregate(Rule::DEFAULT, &clean, 3, &mut loss);
    assert!(r.kept.iter().all(|k| *k), "{r:?}");
    // Attackers in the majority: never more than half dropped.
    let mut many: Vec<Contribution<'_>> = honest.iter().take(2).map(|h| c(h, 1.0)).collect();
    many.extend(flipped.iter().map(|h| c(h, 1.0)));
    many.extend(flipped.iter().map(|h| c(h, 1.0)));
    let r = aggregate(Rule::DEFAULT, &many, 3, &mut loss);
    assert!(r.kept.iter().filter(|k| **k).count() >= 3, "{r:?}");
}

/// Dropped twice, a contributor is quarantined for the configured rounds, comes back on
/// probation at a small say and earns it back; a second quarantine lasts twice as long.
#[test]
fn repeat_offenders_are_quarantined_and_earn_their_way_back() {
    let mut rep = Reputation::new(3);
    let who = Address([7; 32]);
    assert_eq!(rep.of(&who), 1.0);
    rep.record(who, 1, false, Some(-1.0));
    assert_eq!(rep.of(&who), 0.5);
    assert!(!rep.quarantined(&who, 2));
    rep.record(who, 2, false, Some(-1.0));
    assert!(rep.quarantined(&who, 3) && rep.quarantined(&who, 5));
    assert!(!rep.quarantined(&who, 6));
    assert!((rep.of(&who) - 0.1).abs() < 1e-9);
    rep.record(who, 6, true, Some(0.2));
    assert!((rep.of(&who) - 0.2).abs() < 1e-9);
    rep.record(who, 7, true, Some(-0.01));
    assert!((rep.of(&who) - 0.2).abs() < 1e-9, "a harmful score earns nothing");
    rep.record(who, 8, false, Some(-1.0));
    assert_eq!(rep.quarantines(&who), 2);
    assert!(rep.quarantined(&who, 14) && !rep.quarantined(&who, 15), "twice as long");
}

/// Every rule a domain can name on chain maps to a rule here, with the name it reports.
#[test]
fn every_on_chain_aggregation_names_a_rule() {
    use doin_primitives::domain::Aggregation as A;
    let names: Vec<&str> =
        [A::FedAvg, A::TrimmedMean, A::CoordinateMedian, A::Krum, A::MultiKrum, A::LossScored]
            .into_iter()
            .map(|a| Rule::from(a).name())
            .collect();
    assert_eq!(names, ["fedavg", "trimmed_mean", "coordinate_median", "krum", "multikrum", "loss_scored"]);
    assert_eq!(Rule::from(A::LossScored), Rule::DEFAULT);
}
