use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{Receiver as StdReceiver, SyncSender, sync_channel},
    },
    time::Duration,
};

use doin_optimize::{
    Dim, Hook, SnapshotError, Space, Value,
    domain::{Budget, EvalError},
    driver::RunConfig,
};
use doin_primitives::Hash;

use super::*;

/// Performance is the single parameter itself (in [0, 1]), plus `luck` on the optimizer's
/// own data; each evaluation takes `.2` (a domain worth sharing trials of, when not zero).
struct Identity(Space, f64, Duration);
impl Domain for Identity {
    fn id(&self) -> &str {
        "identity"
    }
    fn space(&self) -> &Space {
        &self.0
    }
    fn higher_is_better(&self) -> bool {
        true
    }
    fn evaluate(&self, params: &[Value], seed: Option<&Hash>, _: Budget) -> Result<Measurement, EvalError> {
        std::thread::sleep(self.2);
        let luck = if seed.is_none() { self.1 } else { 0.0 };
        Ok(Measurement { performance: params[0].as_f64() + luck, metrics: Default::default() })
    }
}

/// Asks exactly the points the test feeds, one per batch; records the hooks it gets.
struct Scripted(StdReceiver<f64>, Arc<Mutex<Vec<Hook>>>);
impl Optimizer for Scripted {
    fn ask(&mut self, _: usize) -> Vec<Vec<f64>> {
        self.0.recv().map(|x| vec![vec![x]]).unwrap_or_default()
    }
    fn hook(&mut self, event: &Hook) {
        self.1.lock().unwrap().push(event.clone());
    }
    fn tell(&mut self, _: &[Evaluated]) {}
    fn inject(&mut self, _: Evaluated) {}
    fn best(&self) -> Option<&Evaluated> {
        None
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }
}

struct Harness {
    feed: SyncSender<f64>,
    ctl: SyncSender<Control>,
    paused: Arc<AtomicBool>,
    found: tokio::sync::mpsc::Receiver<Found>,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<()>,
    hooks: Arc<Mutex<Vec<Hook>>>,
}

impl Harness {
    fn start(luck: f64) -> Self {
        Self::on_hire(luck, None)
    }

    fn on_hire(luck: f64, hired: Option<Arc<crate::market::hire::Allowance>>) -> Self {
        let (feed, asked) = sync_channel(0);
        let (ctl, control) = sync_channel(16);
        let (found_tx, found) = tokio::sync::mpsc::channel(16);
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let io = test_io(None, control, paused.clone(), found_tx, stop.clone(), Default::default(), hired);
        let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }] };
        let domain: Arc<dyn Domain> = Arc::new(Identity(space, luck, Duration::ZERO));
        let run = RunConfig { batch: 1, ..RunConfig::default() };
        let hooks = Arc::new(Mutex::new(Vec::new()));
        let log = hooks.clone();
        let handle = std::thread::spawn(move || run_loop(domain, Box::new(Scripted(asked, log)), run, io));
        Self { feed, ctl, paused, found, stop, handle, hooks }
    }

    /// Hands `x` over when the loop asks (so the round before it is done).
    fn round(&mut self, x: f64) {
        self.feed.send(x).expect("the loop asks");
    }

    /// Evaluates `x` and returns the performance claimed for it, if it was reported.
    fn try_point(&mut self, x: f64) -> Option<f64> {
        self.round(x);
        self.round(0.0);
        self.found.try_recv().ok().map(|f| f.measurement.performance)
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.feed);
        self.handle.join().expect("the loop stops");
    }
}

/// The loop's I/O in a test: untracked rounds of one candidate, health and status ignored.
fn test_io(
    sharing: Option<crate::trials::share::Sharing>,
    control: StdReceiver<Control>,
    paused: Arc<AtomicBool>,
    found: tokio::sync::mpsc::Sender<Found>,
    stop: Arc<AtomicBool>,
    spent: Arc<super::Spent>,
    hired: Option<Arc<crate::market::hire::Allowance>>,
) -> LoopIo {
    LoopIo {
        sharing,
        control,
        paused,
        found,
        rounds: None,
        round_size: 1,
        stop,
        spent,
        health: Default::default(),
        running: Default::default(),
        hired,
    }
}

/// Feeds a candidate if the loop asks within `wait`.
fn offer(h: &Harness, wait: Duration) -> bool {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until {
        if h.feed.try_send(0.5).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// A domain on hire is searched for the candidates bought, no more: nothing before a hire,
/// exactly the bought number after it, and it says it waits.
#[test]
fn a_loop_on_hire_evaluates_only_what_was_bought() {
    let allowance = Arc::new(crate::market::hire::Allowance::default());
    let h = Harness::on_hire(0.0, Some(allowance.clone()));
    assert!(!offer(&h, Duration::from_millis(400)), "a candidate asked before any hire");
    assert_eq!(allowance.buy(3), 0);
    for k in 0..3 {
        assert!(offer(&h, Duration::from_secs(5)), "bought candidate {k} not asked");
    }
    assert!(!offer(&h, Duration::from_millis(500)), "a fourth candidate asked; three were bought");
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while allowance.counts() != (3, 3, 3) && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(allowance.counts(), (3, 3, 3), "bought, asked, evaluated");
    h.stop();
}

/// A paused loop asks for no candidate, however many messages the node sent meanwhile
/// (the control channel full), and searches again once the flag clears.
#[test]
fn a_paused_loop_does_not_search_and_resumes_when_unpaused() {
    let h = Harness::start(0.0);
    assert!(offer(&h, Duration::from_secs(5)), "a running loop asks");
    h.paused.store(true, Ordering::Relaxed);
    // A round already asked for may still be answered; after it, no more asking.
    let _ = offer(&h, Duration::from_millis(300));
    while h.ctl.try_send(Control::Settled).is_ok() {}
    assert!(!offer(&h, Duration::from_millis(500)), "a paused loop asked for a candidate");
    h.paused.store(false, Ordering::Relaxed);
    assert!(offer(&h, Duration::from_secs(5)), "the loop searches again once unpaused");
    h.stop();
}

/// Every `optimization_plugin` name builds that optimizer; TPE proposes a few points at a
/// time, `auto` decides after timing its first batch (a cheap domain: SHADE).
#[test]
fn each_optimizer_name_builds_that_optimizer() {
    let domain = Identity(Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 3] }, 0.0, Duration::ZERO);
    let named = |name: Option<&str>| DomainConfig {
        optimization_plugin: name.map(str::to_owned),
        ..DomainConfig::default()
    };
    for (name, kind) in [
        (None, "auto"),
        (Some("shade"), "shade"),
        (Some("tpe"), "tpe"),
        (Some("cma-es"), "cma-es"),
        (Some("ga"), "ga"),
    ] {
        let opt = build_optimizer(&domain, &named(name), 1, Place::ALONE).unwrap();
        // `auto` names its state after the colon (timing, then its choice).
        assert_eq!(opt.kind().split(':').next(), Some(kind), "{name:?}");
    }
    assert_eq!(population_of(&domain, &named(Some("tpe")), 8, Place::ALONE), doin_optimize::tpe::MAX_BATCH);
    let mut auto = build_optimizer(&domain, &named(Some("auto")), 1, Place::ALONE).unwrap();
    // It times a few evaluations (two batches of 4 here) before it chooses.
    for _ in 0..2 {
        let xs = auto.ask(4);
        auto.tell(&xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect::<Vec<_>>());
    }
    assert_eq!(auto.kind(), "auto: shade", "microsecond evaluations: SHADE");
}

/// A warm start teaches the optimizer the recorded rounds that fit the domain (others
/// skipped); TPE then proposes near the best of them.
#[test]
fn a_warm_start_teaches_the_rounds_that_fit() {
    let domain = Identity(Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 2] }, 0.0, Duration::ZERO);
    use doin_tracking::{PriorSource, PriorTrial, WarmSeed};
    let row = |p: &str, performance: f64, source: PriorSource, id: &str| PriorTrial {
        parameters: p.into(),
        performance,
        source,
        source_id: id.into(),
    };
    let rows = vec![
        row("[0.9, 0.9]", 1.8, PriorSource::Round, "e1"),
        row("[0.1, 0.2]", 0.3, PriorSource::Round, "e1"),
        row("[0.5]", 0.5, PriorSource::Round, "e1"), // another space
        row("[2.0, 0.5]", 2.5, PriorSource::Chain, "a1"), // out of bounds
        row("not json", 1.0, PriorSource::Chain, "a1"),
        row("[0.4, 0.4]", f64::NAN, PriorSource::Chain, "a1"),
        row("[0.3, 0.3]", 0.6, PriorSource::Chain, "a2"),
    ];
    let mut tpe = doin_optimize::Tpe::new(2, 2, 1);
    assert_eq!(
        warm_start(&mut tpe, &domain, &rows),
        vec![
            WarmSeed { source: PriorSource::Round, source_id: "e1".into(), trials: 2 },
            WarmSeed { source: PriorSource::Chain, source_id: "a2".into(), trials: 1 },
        ],
        "what was taught, by source"
    );
    assert_eq!(tpe.history_len(), 3);
    // The best prior is the round recorded at 1.8 (Identity maximizes: loss −1.8).
    assert_eq!(tpe.best().map(|b| b.loss), Some(-1.8));
}

/// The domain's population is split among its optimizers, down to a smallest island;
/// CMA-ES keeps its λ and a plugin its batch.
#[test]
fn the_population_is_split_among_the_domains_optimizers() {
    let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 7] };
    let domain = Identity(space, 0.0, Duration::ZERO);
    let first = |k: usize| Place::new(k, 0);
    let islands = DomainConfig {
        optimization_plugin: Some("shade".into()),
        share_trials: false,
        ..DomainConfig::default()
    };
    let sizes: Vec<usize> =
        [1, 2, 4, 100].iter().map(|k| population_of(&domain, &islands, 4, first(*k))).collect();
    // 4 optimizers: 18 of 70 would be below the floor; 100: the floor.
    assert_eq!(sizes, [70, 35, MIN_ISLAND, MIN_ISLAND]);
    let mut small = islands.clone();
    small.optimization_config.insert("population_size".into(), serde_json::json!(6));
    assert_eq!(population_of(&domain, &small, 4, first(4)), 6, "an island is never below a small population");
    let mut ga = DomainConfig { optimization_plugin: Some("ga".into()), ..DomainConfig::default() };
    ga.optimization_config.insert("population_size".into(), serde_json::json!(40));
    assert_eq!(population_of(&domain, &ga, 4, first(2)), 20);
    let cma = DomainConfig { optimization_plugin: Some("cma-es".into()), ..DomainConfig::default() };
    assert_eq!(population_of(&domain, &cma, 4, first(1)), population_of(&domain, &cma, 4, first(4)));
    let mut opt = build_optimizer(&domain, &ga, 1, first(2)).expect("GA builds");
    assert_eq!(opt.ask(100).len(), 20, "the GA's first generation is the island");
}

/// With shared trials SHADE's 70 members split into 3 islands (70 / 20) of 24; an island's
/// optimizers measure their share of its generation and learn each other's trials, the other
/// islands' they do not read.
#[test]
fn shared_trials_split_shade_into_islands_run_together() {
    let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 7] };
    let domain = Identity(space, 0.0, Duration::ZERO);
    let shade = DomainConfig { optimization_plugin: Some("shade".into()), ..DomainConfig::default() };
    assert!(shade.share_trials, "sharing is the default");
    assert_eq!(network_population(&domain, &shade), Some(70));
    let generation = |k: usize, r: usize| population_of(&domain, &shade, 4, Place::new(k, r));
    assert_eq!(generation(1, 0), 70, "alone: the whole population");
    assert_eq!((generation(2, 0), generation(2, 1)), (35, 35), "two islands of 35, one optimizer each");
    assert_eq!(Place::new(10, 4).islands(70), (3, 1));
    // 10 optimizers on 3 islands of 24: ranks 0, 3, 6, 9 share island 0; 1, 4, 7 island 1.
    assert_eq!((generation(10, 0), generation(10, 1)), (6, 8));
    assert!(Place::new(10, 4).same_island(70, 7) && !Place::new(10, 4).same_island(70, 6));
    let mut opt = build_optimizer(&domain, &shade, 1, Place::new(10, 1)).expect("SHADE builds");
    assert!(opt.learns_shared(), "an island run together learns its optimizers' trials");
    assert_eq!(opt.ask(100).len(), 8, "its first generation is its share of the island");
    let alone = build_optimizer(&domain, &shade, 1, Place::ALONE).expect("SHADE builds");
    assert!(!alone.learns_shared(), "alone, nothing to learn");
    let islands = DomainConfig { share_trials: false, ..shade };
    assert!(!build_optimizer(&domain, &islands, 1, Place::new(10, 1)).expect("builds").learns_shared());
}

/// `optimization_patience` reaches the GA: after that many generations without improvement
/// it moves to its next, finer stage (the default waits 8).
#[test]
fn optimization_patience_sets_when_the_ga_moves_on() {
    let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }; 3] };
    let domain = Identity(space, 0.0, Duration::ZERO);
    let stage_after = |patience: Option<u32>, generations: usize| {
        let mut ga = DomainConfig { optimization_plugin: Some("ga".into()), ..DomainConfig::default() };
        ga.optimization_config.insert("population_size".into(), serde_json::json!(8));
        if let Some(p) = patience {
            ga.optimization_config.insert("optimization_patience".into(), serde_json::json!(p));
        }
        let mut opt = build_optimizer(&domain, &ga, 1, Place::ALONE).expect("GA builds");
        for _ in 0..generations {
            // A flat landscape: nothing ever improves.
            let told: Vec<Evaluated> = opt.ask(8).into_iter().map(|x| Evaluated { x, loss: 1.0 }).collect();
            opt.tell(&told);
        }
        opt.stage()
    };
    assert!(stage_after(Some(2), 5) >= 1, "patience 2: a new stage within 5 flat generations");
    assert_eq!(stage_after(None, 5), 0, "the default patience (8) is still waiting");
}

/// A candidate lucky on the optimizer's own data is claimed at the mean of its two
/// measurements, and only if that mean beats the champion's verified figure.
#[test]
fn claims_are_the_mean_of_own_data_and_a_second_draw() {
    let mut h = Harness::start(0.05);
    h.ctl
        .send(Control::Champion { values: vec![Value::Real(0.6)], verified: -0.6, by: None })
        .expect("loop listens");
    // The loop may already wait in `ask` for this round; it reads the control channel before
    // asking for the next one, so the second hand-over proves the champion was read (what the
    // first point made before that is dropped).
    h.round(0.0);
    h.round(0.0);
    while h.found.try_recv().is_ok() {}
    assert_eq!(h.try_point(0.54), None, "0.59 here does not beat 0.6");
    assert_eq!(h.try_point(0.56), None, "0.61 here, but 0.585 on both draws");
    let claimed = h.try_point(0.64).expect("0.64 beats the champion on both draws");
    assert!((claimed - 0.665).abs() < 1e-9, "claimed {claimed}");
    h.stop();
}

/// The loop reports each batch's start, its candidates and its end, and every verified
/// champion, to the optimizer's hooks, in that order.
#[test]
fn the_loop_calls_the_optimizer_hooks() {
    let mut h = Harness::start(0.0);
    h.round(0.3);
    h.round(0.4);
    h.ctl
        .send(Control::Champion { values: vec![Value::Real(0.5)], verified: -0.5, by: None })
        .expect("loop listens");
    // The loop may already wait in `ask` for this round; it reads the control channel
    // before asking for the next one, so the second hand-over proves the champion was read.
    h.round(0.45);
    h.round(0.46);
    let hooks = h.hooks.clone();
    h.stop();
    let log = hooks.lock().unwrap().clone();
    let batch = |g: u64| {
        vec![
            Hook::GenerationStart { generation: g },
            Hook::BetweenCandidates { done: 1, total: 1 },
            Hook::GenerationEnd { generation: g, best_loss: None },
        ]
    };
    assert_eq!(log[..6], [batch(1), batch(2)].concat(), "{log:?}");
    assert!(
        log.iter().any(|e| matches!(e, Hook::ChampionFound { x, loss } if x == &vec![0.5] && *loss == -0.5)),
        "the champion, measured here at 0.5: {log:?}"
    );
}

/// The bar is the champion's verified figure, not what it scores here: a champion that
/// scores 0.75 here but was verified at 0.6 does not bar a candidate worth 0.62.
#[test]
fn the_bar_is_the_verified_figure() {
    let mut h = Harness::start(0.05);
    h.ctl
        .send(Control::Champion { values: vec![Value::Real(0.7)], verified: -0.6, by: None })
        .expect("loop listens");
    let claimed = h.try_point(0.62).expect("0.645 on both draws beats the verified 0.6");
    assert!((claimed - 0.645).abs() < 1e-9, "claimed {claimed}");
    h.stop();
}

/// A claim that settled without becoming champion stops barring candidates between the
/// champion and that claim; before it settles, only better ones are reported.
#[test]
fn a_settled_claim_lowers_the_bar_back_to_the_champion() {
    let mut h = Harness::start(0.0);
    h.ctl
        .send(Control::Champion { values: vec![Value::Real(0.6)], verified: -0.6, by: None })
        .expect("loop listens");
    assert_eq!(h.try_point(0.9), Some(0.9));
    assert_eq!(h.try_point(0.7), None, "0.7 does not beat the pending claim 0.9");
    h.ctl.send(Control::Settled).expect("loop listens");
    h.round(0.0);
    assert_eq!(h.try_point(0.8), Some(0.8), "0.8 beats the champion once 0.9 settled");
    h.ctl.send(Control::Settled).expect("loop listens");
    h.round(0.0);
    assert_eq!(h.try_point(0.6 + 1e-12), None, "a gain below the chain's resolution is not reported");
    assert_eq!(h.try_point(0.6 + 1e-6), Some(0.6 + 1e-6));
    h.stop();
}

/// A TPE loop sharing trials, its outgoing batches and what it spent, stopped after `run_for`
/// (a verified champion by another node sent once it started).
fn sharing_loop(
    run_for: Duration,
    champion: Option<Control>,
) -> (Vec<crate::trials::share::Outgoing>, Arc<super::Spent>) {
    let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }] };
    let (_trials_in, incoming) = sync_channel(4);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel(64);
    let book = crate::trials::TrialBook::new(crate::trials::Agreement { absolute: 0.01, relative: 0.0 }, 7);
    let sharing = crate::trials::share::Sharing::new(
        book,
        incoming,
        out_tx,
        "slow".into(),
        space.clone(),
        Default::default(),
    );
    let (ctl, control) = sync_channel(4);
    let (found_tx, _found) = tokio::sync::mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let spent: Arc<super::Spent> = Default::default();
    let io = test_io(Some(sharing), control, Default::default(), found_tx, stop.clone(), spent.clone(), None);
    let domain: Arc<dyn Domain> = Arc::new(Identity(space, 0.0, Duration::from_millis(100)));
    let run = RunConfig { batch: 2, workers: 1, ..RunConfig::default() };
    let handle =
        std::thread::spawn(move || run_loop(domain, Box::new(doin_optimize::Tpe::new(1, 2, 3)), run, io));
    if let Some(c) = champion {
        ctl.send(c).expect("the loop listens");
    }
    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("the loop stops");
    let mut out = Vec::new();
    while let Ok(o) = out_rx.try_recv() {
        out.push(o);
    }
    (out, spent)
}

/// The points a node publishes as in flight are the batch it is measuring then (published
/// after the batch is asked, not after it is told, when nothing is in flight): other nodes
/// steer their next proposals away from them, and they come back as trials in a later batch.
#[test]
fn the_points_published_in_flight_are_the_batch_being_measured() {
    let (out, spent) = sharing_loop(Duration::from_millis(4_600), None);
    assert!(out.len() >= 2, "batches published at most every 2 s: {out:?}");
    let with_pending: Vec<_> = out.iter().filter(|o| !o.pending.is_empty()).collect();
    assert_eq!(with_pending.len(), out.len(), "every batch names the points in flight: {out:?}");
    let trials_after =
        |i: usize| out[i + 1..].iter().flat_map(|o| &o.trials).map(|t| t.0.clone()).collect::<Vec<_>>();
    for (i, o) in out.iter().enumerate().take(out.len() - 1) {
        for p in &o.pending {
            assert!(trials_after(i).contains(p), "in flight {p:?} was measured and published later: {out:?}");
        }
    }
    assert!(spent.candidates.load(Ordering::Relaxed) >= 20, "{spent:?}");
}

/// A loop whose optimizer learns other nodes' trials takes a verified champion at its verified
/// figure without measuring it again (an evaluation per champion on every node); one of its
/// own measures it (`the_loop_calls_the_optimizer_hooks`: "measured here at 0.5").
#[test]
fn a_shared_trial_optimizer_learns_a_champion_without_measuring_it() {
    let by = doin_primitives::Address([9; 32]);
    let champion = Control::Champion { values: vec![Value::Real(0.9)], verified: -0.9, by: Some(by) };
    let (_, spent) = sharing_loop(Duration::from_millis(600), Some(champion));
    assert_eq!(spent.champions.load(Ordering::Relaxed), 0, "{spent:?}");
    assert!(spent.candidates.load(Ordering::Relaxed) > 0, "the loop searched: {spent:?}");
}

/// Random points of one dimension, each ask's size recorded.
struct Sized(bool, Arc<Mutex<Vec<usize>>>, u64);
impl Optimizer for Sized {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        self.1.lock().unwrap().push(n);
        self.2 += 1;
        (0..n).map(|i| vec![((self.2 * 7 + i as u64) % 100) as f64 / 100.0]).collect()
    }
    fn tell(&mut self, _: &[Evaluated]) {}
    fn inject(&mut self, _: Evaluated) {}
    fn best(&self) -> Option<&Evaluated> {
        None
    }
    fn snapshot(&self) -> Vec<u8> {
        Vec::new()
    }
    fn restore(&mut self, _: &[u8]) -> Result<(), SnapshotError> {
        Ok(())
    }
    fn sequential(&self) -> bool {
        self.0
    }
}

/// A model-based optimizer is asked one point per worker (each result teaches its next
/// proposal, and a batch bigger than the workers buys no speed); a population-based one is
/// asked the whole batch.
#[test]
fn a_sequential_optimizer_is_asked_one_point_per_worker() {
    for (sequential, expected) in [(true, 2), (false, 8)] {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let (_ctl, control) = sync_channel(1);
        let (found_tx, _found) = tokio::sync::mpsc::channel(1_000);
        let stop = Arc::new(AtomicBool::new(false));
        let io = test_io(None, control, Default::default(), found_tx, stop.clone(), Default::default(), None);
        let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }] };
        let domain: Arc<dyn Domain> = Arc::new(Identity(space, 0.0, Duration::from_millis(5)));
        let run = RunConfig { batch: 8, workers: 2, ..RunConfig::default() };
        let opt = Box::new(Sized(sequential, asked.clone(), 0));
        let handle = std::thread::spawn(move || run_loop(domain, opt, run, io));
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::Relaxed);
        handle.join().expect("the loop stops");
        let asked = asked.lock().unwrap().clone();
        assert!(
            !asked.is_empty() && asked.iter().all(|n| *n == expected),
            "sequential {sequential}: {asked:?}"
        );
    }
}

/// This node's own certified claim is not measured again (the loop measured it when it found
/// it); it is taught at its verified figure and the hook hears of it.
#[test]
fn an_own_champion_is_not_measured_again() {
    // A TPE without sharing (which would measure another node's champion here), searching
    // for 200 ms before its own champion arrives.
    let spent: Arc<super::Spent> = Default::default();
    let (ctl, control) = sync_channel(4);
    let (found_tx, _found) = tokio::sync::mpsc::channel(64);
    let stop = Arc::new(AtomicBool::new(false));
    let io = test_io(None, control, Default::default(), found_tx, stop.clone(), spent.clone(), None);
    let space = Space { dims: vec![Dim::Continuous { lo: 0.0, hi: 1.0 }] };
    let domain: Arc<dyn Domain> = Arc::new(Identity(space, 0.0, Duration::from_millis(20)));
    let run = RunConfig { batch: 1, workers: 1, ..RunConfig::default() };
    let handle =
        std::thread::spawn(move || run_loop(domain, Box::new(doin_optimize::Tpe::new(1, 2, 3)), run, io));
    std::thread::sleep(Duration::from_millis(200));
    ctl.send(Control::Champion { values: vec![Value::Real(0.9)], verified: -0.9, by: None })
        .expect("listens");
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    handle.join().expect("the loop stops");
    assert_eq!(spent.champions.load(Ordering::Relaxed), 0, "{spent:?}");
    assert!(spent.candidates.load(Ordering::Relaxed) > 0, "{spent:?}");
}
