//! `doin sim`: deterministic (one seed, one digest), safe under thousands of perturbations, and
//! the gossip figures the issue asks of 1 000 nodes.

use std::process::Command;

fn sim(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_doin")).arg("sim").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Every seed twice: the same digest of every block and every node's tip; no safety violation
/// (an honest block refused or applying to another root, coins not conserved, two finalized
/// blocks at one height, nodes on different tips after the calm), over at least 10 000 crashes, restarts, partitions, heals, slowed links and clock
/// skews in all; the chain finalizes throughout.
#[test]
fn every_seed_repeats_bit_for_bit_and_stays_safe_under_perturbation() {
    let mut perturbations = 0;
    for seed in 1..=4 {
        let seed = seed.to_string();
        let args = ["--nodes", "300", "--sim-seconds", "1800", "--perturb-every-s", "0.3", "--seed", &seed];
        let (a, b) = (sim(&args), sim(&args));
        assert_eq!(a["digest"], b["digest"], "seed {seed} ran differently twice");
        assert_eq!(a["safety_violations"], 0, "seed {seed}: {a}");
        assert!(a["blocks"].as_u64().unwrap() > 200, "seed {seed}: the chain grew: {a}");
        assert!(a["finalized_height"].as_u64().unwrap() > 100, "seed {seed}: it finalized: {a}");
        perturbations += a["perturbations"].as_u64().unwrap();
    }
    assert!(perturbations >= 10_000, "{perturbations} perturbations");
}

/// Gossip at 1 000 nodes (mesh degree 6, log-normal links of median 50 ms, 1 % loss): every
/// block reaches every node, at most 7 transmissions per delivery, the 99th percentile of
/// propagation within 6 link-latency medians.
#[test]
fn gossip_reaches_every_node_cheaply_and_quickly_at_a_thousand_nodes() {
    let s = sim(&["--nodes", "1000", "--sim-seconds", "600", "--perturb-every-s", "0", "--seed", "5"]);
    assert_eq!(s["delivery_ratio"], 1.0, "{s}");
    assert!(s["transmissions_per_delivery"].as_f64().unwrap() <= 7.0, "{s}");
    let (p99, median) =
        (s["p99_propagation_ms"].as_u64().unwrap(), s["link_latency_median_ms"].as_u64().unwrap());
    assert!(p99 <= 6 * median, "p99 {p99} ms vs link median {median} ms: {s}");
    assert_eq!(s["safety_violations"], 0, "{s}");
    // Finality keeps up: every staker votes each checkpoint, the votes ride the blocks.
    let (blocks, finalized) = (s["blocks"].as_u64().unwrap(), s["finalized_height"].as_u64().unwrap());
    assert!(finalized + 30 >= blocks, "finalized {finalized} of {blocks} blocks: {s}");
}

fn search(optimizers: usize, liars: usize, seed: u64) -> serde_json::Value {
    search_on(
        optimizers,
        liars,
        seed,
        &["--sim-seconds", "100000", "--domain", "rastrigin", "--target-loss", "5"],
    )
}

/// A search until the target by `optimizers` (of them `liars`) beside 8 producers, no
/// perturbation, on the domain and settings `task` names.
fn search_on(optimizers: usize, liars: usize, seed: u64, task: &[&str]) -> serde_json::Value {
    let (nodes, k, l, s) =
        ((8 + optimizers).to_string(), optimizers.to_string(), liars.to_string(), seed.to_string());
    let mut args = vec![
        "--nodes",
        &nodes,
        "--producers",
        "8",
        "--perturb-every-s",
        "0",
        "--optimizers",
        &k,
        "--liars",
        &l,
        "--until-target",
        "--seed",
        &s,
    ];
    args.extend_from_slice(task);
    sim(&args)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Useful work: four and thirty-two optimizers (the node's own SHADE, its population split into
/// islands that their optimizers run together through shared trials, docs/design.md §12d) need
/// at most a quarter and a thirty-second of the evaluations each that one needs to bring
/// 10-dimensional Rastrigin (about 10^10 local minima: luck does not find the target) to a loss
/// of 5; a run repeats bit for bit; nothing is violated. (Islands of their own, as before
/// §12d, needed 870 evaluations each at 32 on these seeds: this fails with them.)
#[test]
fn optimizers_need_evaluations_in_proportion_each() {
    let per = |k: usize| -> f64 {
        median(
            (1..=3)
                .map(|seed| {
                    let s = search(k, 0, seed);
                    assert_eq!(s["safety_violations"], 0, "{s}");
                    s["search"]["evaluations_to_target_per_optimizer"].as_f64().unwrap_or(f64::INFINITY)
                })
                .collect(),
        )
    };
    let (one, four, many) = (per(1), per(4), per(32));
    assert!(one.is_finite(), "one optimizer reaches the target");
    assert!(four <= one / 4.0, "evaluations per optimizer: {one} alone, {four} each of four");
    assert!(many <= one / 32.0, "evaluations per optimizer: {one} alone, {many} each of 32");
    assert_eq!(search(4, 0, 2)["digest"], search(4, 0, 2)["digest"], "a search run repeats bit for bit");
}

/// A SHADE optimizer publishing inflated trials is banned by the optimizers of its island (12
/// optimizers on 10-d Rastrigin: 5 islands, the liar's shared with 2 others) and read by no
/// other: the other islands drop its batches unread. None of its lies is accepted.
#[test]
fn a_lying_shade_optimizer_is_banned_by_its_island_only() {
    let lied = search(12, 1, 1);
    let r = &lied["search"];
    assert_eq!(r["shared_trials"]["senders_banned"], 2, "its two island mates ban it: {lied}");
    assert!(lied["search"]["time_to_target_s"].is_f64(), "the honest optimizers reached the target: {lied}");
    assert_eq!(
        (r["accepted_fakes"].as_u64(), lied["safety_violations"].as_u64()),
        (Some(0), Some(0)),
        "{lied}"
    );
}

/// Shared trials: four TPE optimizers that publish their trials and learn each other's through
/// the node's trial book (quarantine, spot checks) need fewer evaluations each than four that
/// share only the verified champions (4-dimensional Ackley to a loss of 5, seeds 1–15, medians:
/// single runs range 40 – 130 evaluations, and three seeds' medians were once within the fifth
/// by chance after an unrelated encoding change moved every run's randomness);
/// an optimizer publishing inflated trials (a tenth of the loss it measured) is caught by every
/// honest node's check, and none of its lies is accepted; a run repeats bit for bit.
#[test]
fn shared_trials_speed_the_model_based_search_and_a_liar_is_caught() {
    let run = |optimizers: usize, liars: usize, share: bool, seed: u64| {
        let mut task = vec![
            "--sim-seconds",
            "20000",
            "--domain",
            "ackley",
            "--dims",
            "4",
            "--target-loss",
            "5",
            "--optimizer",
            "tpe",
        ];
        if !share {
            task.push("--no-share-trials");
        }
        search_on(optimizers, liars, seed, &task)
    };
    let per = |share: bool| {
        let v: Vec<f64> = (1..=15)
            .map(|seed| {
                let s = run(4, 0, share, seed);
                s["search"]["evaluations_to_target_per_optimizer"].as_f64().unwrap_or(f64::INFINITY)
            })
            .collect();
        median(v)
    };
    let (shared, alone) = (per(true), per(false));
    assert!(shared * 5.0 < alone * 4.0, "sharing saves a fifth: {shared} vs {alone} evaluations each");
    // Many senders: checks stay within their budget (two, then one per four own evaluations,
    // per node) and the chain vouches for certified claimers, so 32 optimizers still need fewer
    // evaluations each than 8 (without the budget, 32 needed more: checks were ~90 % of the work).
    let at = |optimizers: usize| {
        let runs: Vec<serde_json::Value> = (1..=3).map(|seed| run(optimizers, 0, true, seed)).collect();
        for r in &runs {
            let s = &r["search"];
            let (checks, evaluations) =
                (s["shared_trials"]["checks"].as_u64().unwrap(), s["evaluations"].as_u64().unwrap());
            assert!(
                checks <= 2 * optimizers as u64 + evaluations / 5 + 1,
                "{checks} checks of {evaluations}: {r}"
            );
        }
        median(
            runs.iter()
                .map(|r| r["search"]["evaluations_to_target_per_optimizer"].as_f64().unwrap())
                .collect(),
        )
    };
    let (eight, many) = (at(8), at(32));
    assert!(many < eight, "evaluations per optimizer: {eight} each of 8, {many} each of 32");
    let lied = run(5, 1, true, 1);
    let r = &lied["search"];
    assert_eq!(r["shared_trials"]["senders_banned"], 4, "each honest node bans the liar: {lied}");
    assert_eq!(
        (r["accepted_fakes"].as_u64(), lied["safety_violations"].as_u64()),
        (Some(0), Some(0)),
        "{lied}"
    );
    assert_eq!(lied["digest"], run(5, 1, true, 1)["digest"], "a run with shared trials repeats bit for bit");
}

/// Lying optimizers claim figures they never measured; the evaluators' re-measurements and the
/// consensus verdict refuse every one, and the honest optimizers still reach the target.
#[test]
fn no_fake_claim_is_accepted() {
    for seed in 1..=2 {
        let s = search(6, 3, seed);
        let r = &s["search"];
        assert!(r["fake_claims"].as_u64().unwrap() >= 10, "the liars claimed: {s}");
        assert_eq!(r["accepted_fakes"], 0, "{s}");
        assert_eq!(s["safety_violations"], 0, "{s}");
        assert!(r["time_to_target_s"].is_f64(), "the honest optimizers reached the target: {s}");
    }
}

/// Claims are judged by the node's own quorum tally: with every node up, every first round is
/// complete and agrees (no escalation); when quorum members crash, their votes go missing,
/// claims escalate past the timeout and the escalation quorum still decides — the search
/// reaches the target.
#[test]
fn crashed_quorum_members_escalate_claims_and_the_escalations_decide() {
    let run = |perturb: &str, seed: &str| {
        sim(&[
            "--nodes",
            "24",
            "--producers",
            "8",
            "--optimizers",
            "8",
            "--perturb-every-s",
            perturb,
            "--sim-seconds",
            "20000",
            "--until-target",
            "--seed",
            seed,
        ])
    };
    let calm = run("0", "1");
    assert_eq!(calm["search"]["escalations"], 0, "{calm}");
    // Claims ride the chain: every commit was included by a seal leader, its reveal followed
    // the seal, a quorum of 3 evaluator nodes measured and voted, and each settled claim's
    // certificate is in a block (accepted or not).
    let (r, chain) = (&calm["search"], &calm["search"]["on_chain"]);
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    let settled = n(&r["accepted"]) + n(&r["rejected"]);
    assert_eq!(n(&chain["certificates"]), settled, "{calm}");
    assert!(n(&chain["commits_included"]) >= settled && n(&chain["reveals"]) >= settled, "{calm}");
    assert!(n(&chain["votes"]) >= 3 * settled, "{calm}");
    assert_eq!(n(&chain["commits"]), n(&r["claims"]), "{calm}");
    // Calm, no claim is given up (an optimizer never commits parameters already revealed: they
    // would be a copy nobody evaluates).
    assert_eq!(n(&r["undecided"]), 0, "{calm}");
    let mut escalations = 0;
    for seed in ["1", "2", "3"] {
        let s = run("2", seed);
        let r = &s["search"];
        assert!(s["perturbations_by_kind"]["crash"].as_u64().unwrap() > 50, "{s}");
        assert!(r["time_to_target_s"].is_f64(), "seed {seed}: the target despite the crashes: {s}");
        assert_eq!(s["safety_violations"], 0, "{s}");
        escalations += r["escalations"].as_u64().unwrap();
        // Escalated claims were decided (certified or given up), none left hanging.
        assert!(
            r["accepted"].as_u64().unwrap()
                + r["rejected"].as_u64().unwrap()
                + r["undecided"].as_u64().unwrap()
                + 8
                >= r["claims"].as_u64().unwrap(),
            "{s}"
        );
    }
    assert!(escalations >= 5, "crashed members escalated claims: {escalations}");
}

/// The safety checks fire: with evaluators that accept claims unmeasured, the liars' claims
/// land and are counted as accepted fakes; a node deaf to others' blocks ends on its own tip; a
/// producer that produces out of its slot is named; equivocating finality voters finalize
/// conflicting blocks.
#[test]
fn the_safety_checks_catch_a_deliberate_defect() {
    let s = sim(&[
        "--nodes",
        "14",
        "--producers",
        "8",
        "--sim-seconds",
        "600",
        "--perturb-every-s",
        "0",
        "--optimizers",
        "6",
        "--liars",
        "3",
        "--fault",
        "rubber-stamp",
        "--seed",
        "1",
    ]);
    assert!(s["search"]["accepted_fakes"].as_u64().unwrap() > 0, "{s}");
    assert!(s["safety_violations"].as_u64().unwrap() > 0, "{s}");
    // 50 quiet nodes for 5 minutes with one defect.
    let faulty = |fault: &str| {
        sim(&[
            "--nodes",
            "50",
            "--sim-seconds",
            "300",
            "--perturb-every-s",
            "0",
            "--fault",
            fault,
            "--seed",
            "1",
        ])
    };
    let s = faulty("deaf-node");
    let violations = s["violations"].to_string();
    assert!(violations.contains("tips at the end"), "{s}");
    // A producer whose slot rule is broken (it produces in every slot, with a valid block the
    // consensus rules accept) is caught by the simulator's own check of the slot rule.
    let s = faulty("eager-producer");
    assert!(s["violations"].to_string().contains("out of its slot"), "{s}");
    // Finality: 40 % of the stake voting on both sides of partitions (no slashing protection)
    // gives each side two thirds: conflicting finalized blocks, caught; the same run with
    // honest voters finalizes as far and conflicts nowhere.
    let run = |fault: Option<&str>| {
        let mut args = vec![
            "--nodes",
            "60",
            "--producers",
            "10",
            "--sim-seconds",
            "1800",
            "--perturb-every-s",
            "2",
            "--block-interval-s",
            "1",
            "--seed",
            "1",
        ];
        args.extend(fault.map(|f| ["--fault", f]).into_iter().flatten());
        sim(&args)
    };
    let (bad, honest) = (run(Some("equivocate")), run(None));
    assert!(bad["violations"].to_string().contains("conflicting finalized blocks"), "{bad}");
    assert_eq!(honest["safety_violations"], 0, "{honest}");
    assert!(honest["finalized_height"].as_u64().unwrap() > 500, "{honest}");
}
