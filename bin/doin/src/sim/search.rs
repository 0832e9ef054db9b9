//! The search half of `doin sim`: optimizing nodes run the node's own optimizer
//! (`doin_node::optimizer::build_optimizer`, island populations by `population_of`) on a real
//! built-in domain (`doin_node::domains::build`), each evaluation costing `--eval-ms` of
//! simulated time, and share their trials through the node's own trial book. What they find
//! is claimed and verified on the simulated chain by the node's own cores ([`chain`]): own
//! claims, block production, the verification pipeline, the consensus rules. Lying optimizers
//! (`--liars`) claim figures they did not measure; an accepted one is a safety violation.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use clap::Args;
use doin_node::{
    config::{DomainConfig, NodeConfig},
    trials::{Agreement, Incoming, TrialBook, share},
};
use doin_optimize::{
    Evaluated, Optimizer,
    domain::{Budget, Domain},
};
use doin_primitives::{Address, DomainSpec, Hash, Metric};

use super::Rng;

pub(crate) mod chain;

#[derive(Debug, Args, Clone)]
pub(crate) struct SearchArgs {
    /// Optimizing nodes (0: no search). They are the nodes after the producers; the producers
    /// are the staked evaluators that verify their claims.
    #[arg(long, default_value_t = 0)]
    pub(crate) optimizers: usize,
    /// The built-in domain they optimize (a benchmark function: `rastrigin`, `ackley`,
    /// `rosenbrock`, `sphere`, or `quadratic`).
    #[arg(long, default_value = "rastrigin")]
    pub(crate) domain: String,
    /// Its dimension (`n_params`).
    #[arg(long, default_value_t = 10)]
    pub(crate) dims: usize,
    /// The target: optimizers stop once a verified champion's loss is at or below it.
    #[arg(long, default_value_t = 5.0)]
    pub(crate) target_loss: f64,
    /// Simulated milliseconds one evaluation takes (optimizer or evaluator).
    #[arg(long, default_value_t = 1000)]
    pub(crate) eval_ms: u64,
    /// Evaluators that re-measure each claim.
    #[arg(long, default_value_t = 3)]
    pub(crate) quorum: usize,
    /// Optimizing nodes that lie: they claim a loss they did not measure (a tenth of the
    /// champion's) for a random point, as often as the one-claim-in-flight rule lets them. A
    /// lie accepted although the point's noise-free figure does not bear it out is a safety
    /// violation.
    #[arg(long, default_value_t = 0)]
    pub(crate) liars: usize,
    /// Optimizers do not share their trials (the node's `share_trials: false`: SHADE runs
    /// islands of its own); by default TPE and SHADE publish them at the node's rate and learn
    /// each other's through the node's own trial book (quarantine, spot checks, bans). Liars
    /// publish inflated ones.
    #[arg(long)]
    pub(crate) no_share_trials: bool,
    /// End the simulation when the target is reached (what `devnet --until-target` does).
    #[arg(long)]
    pub(crate) until_target: bool,
    /// The optimizers' `optimization_plugin`: `shade`, `tpe`, `auto` (the node's default:
    /// choosing by the simulated `--eval-ms` and `--dims` as the node does by the measured
    /// cost, so TPE at the default 1 000 ms), `cma-es` or `ga`. SHADE islands by default here:
    /// the benchmark functions the simulator searches are cheap where they really run.
    #[arg(long, default_value = "shade", value_parser = ["auto", "tpe", "shade", "cma-es", "ga"])]
    pub(crate) optimizer: String,
    /// Seconds after a claim's first vote before its missing votes count as missing (the
    /// node's `quorum_timeout`; the devnet's 8 s).
    #[arg(long, default_value_t = 8.0)]
    pub(crate) quorum_timeout_s: f64,
}

/// One optimizing node.
struct Opt {
    node: usize,
    /// Its node's own claims (one in flight, as the node's loop waits for each to settle).
    own: doin_node::own_claims::OwnClaims,
    /// The chain champion it took in last.
    chain_champion: Option<Hash>,
    optimizer: Box<dyn Optimizer>,
    batch: usize,
    asked: Vec<Vec<f64>>,
    told: Vec<Evaluated>,
    /// The best point this node measured that it has not claimed yet (loss, point, metric).
    unclaimed: Option<(f64, Vec<f64>, Metric)>,
    liar: bool,
    /// Its shared-trial book (none: its optimizer learns nothing from other nodes' trials).
    book: Option<TrialBook>,
    /// Trials measured since it last published.
    outbox: Vec<Evaluated>,
    /// Its last batch's sequence number, and when it was published (sim ms).
    seq: u64,
    published_ms: Option<u64>,
}

/// What a search run measured.
#[derive(Default)]
pub(crate) struct Figures {
    pub(crate) evaluations: u64,
    pub(crate) verify_evaluations: u64,
    pub(crate) claims: u64,
    pub(crate) accepted: u64,
    pub(crate) rejected: u64,
    pub(crate) fake_claims: u64,
    pub(crate) accepted_fakes: u64,
    pub(crate) escalations: u64,
    pub(crate) undecided: u64,
    pub(crate) champion_loss: Option<f64>,
    pub(crate) time_to_target_ms: Option<u64>,
    pub(crate) evaluations_to_target: Option<u64>,
    /// Shared-trial batches published, and spot checks of other nodes' trials measured.
    pub(crate) trial_batches: u64,
    pub(crate) trial_checks: u64,
}

pub(crate) struct Search {
    args: SearchArgs,
    domain: Arc<dyn Domain>,
    pub(crate) spec: DomainSpec,
    opts: Vec<Opt>,
    /// The network's population when shared trials split it into islands (`Place::islands`).
    population: Option<usize>,
    pub(crate) figures: Figures,
    pub(crate) done: bool,
    /// Every certificate's commit and outcome, hashed (the search's part of the digest).
    pub(crate) digest: blake3::Hasher,
    /// The `rubber-stamp` fault: every claim is accepted unmeasured (a checker test).
    rubber_stamp: bool,
    /// A link's median latency and the hops a message takes across the mesh.
    hop_median_ms: f64,
    hops: f64,
    /// Published trial batches on the wire: the batch, and how many recipients it has still
    /// to reach (dropped when none).
    batches: BTreeMap<u32, (Incoming, usize)>,
    next_batch: u32,
    /// Claims on the simulated chain (set once the genesis is built).
    pub(crate) chain: Option<chain::Chain>,
    /// Optimizers with something to claim after their last evaluation.
    wanted: Vec<usize>,
}

/// `domain`'s loss and metric at `values`, on the data of `seed` (`None`: noise-free).
fn measure(
    domain: &dyn Domain,
    values: &[doin_optimize::Value],
    seed: Option<&Hash>,
) -> Option<(f64, Metric)> {
    let m = domain.evaluate(values, seed, Budget::new(Duration::from_secs(60), 100)).ok()?;
    Some((domain.loss(&m), Metric::from_f64(m.performance)?))
}

/// The loss of a verified figure on `domain` (lower is better).
fn loss_of(domain: &dyn Domain, m: Metric) -> f64 {
    if domain.higher_is_better() { -m.to_f64() } else { m.to_f64() }
}

/// Optimizer `i`'s signing address (the trial books' sender key).
fn opt_address(i: usize) -> Address {
    Address(Hash::of_parts(&[b"doin/sim/optimizer", &(i as u64).to_le_bytes()]).0)
}

/// An event the search asks the simulator to schedule: (delay ms, kind, a, b).
pub(crate) type Schedule = Vec<(u64, u8, u32, u32)>;

/// Event kinds of the search (the chain's are 0–4; claims' 10–14, [`chain`]).
pub(crate) const EVALUATED: u8 = 5;
/// A shared-trial batch reaches an optimizer: `a` the batch, `b` the optimizer.
pub(crate) const TRIALS: u8 = 9;

impl Search {
    /// Optimizers on nodes `first..first + optimizers`, verified by `evaluators` staked nodes.
    pub(crate) fn new(
        args: SearchArgs,
        first: usize,
        evaluators: usize,
        seed: u64,
        rubber_stamp: bool,
        (hop_median_ms, hops): (f64, f64),
    ) -> anyhow::Result<Self> {
        // `auto` decides by wall time in the node; here by the simulated cost, deterministically.
        let optimizer = match args.optimizer.as_str() {
            "auto" => doin_optimize::auto::Choice::for_cost(Duration::from_millis(args.eval_ms), args.dims)
                .as_str()
                .to_owned(),
            other => other.to_owned(),
        };
        let mut config = DomainConfig {
            domain_id: args.domain.clone(),
            optimization_plugin: Some(optimizer),
            ..DomainConfig::default()
        };
        config.optimization_config.insert("n_params".into(), serde_json::json!(args.dims));
        config.share_trials = !args.no_share_trials;
        let domain = doin_node::domains::build(&config).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            doin_node::domains::tolerance_profile(&args.domain, 0.0).is_some()
                && !matches!(args.domain.as_str(), "mlp_digits" | "co2_forecast"),
            "--domain {}: the simulation runs the cheap built-in functions (rastrigin, ackley, rosenbrock, sphere, quadratic)",
            args.domain
        );
        anyhow::ensure!(args.quorum >= 1 && args.quorum <= evaluators, "--quorum must be 1..=producers");
        anyhow::ensure!(args.liars <= args.optimizers, "--liars must be at most --optimizers");
        let mut spec = doin_node::domains::spec_of(domain.as_ref(), &config, &NodeConfig::default())
            .map_err(anyhow::Error::msg)?;
        // Every first-round quorum has `--quorum` members.
        let k = u16::try_from(args.quorum).unwrap_or(u16::MAX);
        (spec.quorum.min, spec.quorum.max) = (k, k);
        let tolerance =
            doin_node::domains::tolerance_of(&config, &NodeConfig::default()).map_err(anyhow::Error::msg)?;
        let agreement = Agreement { absolute: tolerance.absolute, relative: tolerance.relative };
        let mut opts = Vec::with_capacity(args.optimizers);
        for i in 0..args.optimizers {
            // Optimizer `i` is ranked `i` (the node ranks by address; the order is all that counts).
            let place = doin_node::optimizer::Place::new(args.optimizers, i);
            let optimizer =
                doin_node::optimizer::build_optimizer(domain.as_ref(), &config, seed ^ (i as u64 + 1), place)
                    .map_err(anyhow::Error::msg)?;
            let batch = doin_node::optimizer::population_of(domain.as_ref(), &config, 1, place);
            opts.push(Opt {
                node: first + i,
                own: doin_node::own_claims::OwnClaims::new(16),
                chain_champion: None,
                batch,
                asked: Vec::new(),
                told: Vec::new(),
                unclaimed: None,
                liar: i < args.liars,
                // The node's book, with its own secret check schedule.
                book: (!args.no_share_trials && optimizer.learns_shared()).then(|| {
                    TrialBook::new(agreement, seed.rotate_left(17) ^ ((i as u64 + 1) * 0x9e37_79b9))
                }),
                optimizer,
                outbox: Vec::new(),
                seq: 0,
                published_ms: None,
            });
        }
        let population = config
            .share_trials
            .then(|| doin_node::optimizer::network_population(domain.as_ref(), &config))
            .flatten();
        Ok(Self {
            args,
            domain,
            spec,
            population,
            opts,
            figures: Figures::default(),
            done: false,
            digest: blake3::Hasher::new(),
            rubber_stamp,
            hop_median_ms,
            hops,
            batches: BTreeMap::new(),
            next_batch: 0,
            chain: None,
            wanted: Vec::new(),
        })
    }

    /// The first evaluation of every optimizer.
    pub(crate) fn start(&self, rng: &mut Rng) -> Schedule {
        (0..self.opts.len())
            .map(|i| (rng.below(self.args.eval_ms as usize) as u64, EVALUATED, i as u32, 0))
            .collect()
    }

    pub(crate) fn node_of(&self, opt: usize) -> usize {
        self.opts[opt].node
    }

    fn metric_of(&self, x: &[f64], seed: Option<&Hash>) -> Option<(f64, Metric)> {
        measure(self.domain.as_ref(), &self.domain.space().decode(x), seed)
    }

    /// Optimizer `i` finishes one evaluation (or waits, when its node is down).
    pub(crate) fn evaluated(&mut self, i: usize, now: u64, up: bool, rng: &mut Rng) -> Schedule {
        if self.done {
            return Vec::new();
        }
        let mut out = vec![(self.args.eval_ms, EVALUATED, i as u32, 0)];
        if !up {
            return out;
        }
        let o = &mut self.opts[i];
        if o.asked.is_empty() {
            if !o.told.is_empty() {
                let told = std::mem::take(&mut o.told);
                o.optimizer.tell(&told);
                if o.book.is_some() {
                    o.outbox.extend(told);
                    let over = o.outbox.len().saturating_sub(share::FLUSH_TRIALS * 4);
                    o.outbox.drain(..over);
                }
            }
            o.asked = o.optimizer.ask(o.batch.max(1));
            o.asked.reverse();
        }
        out.extend(self.publish(i, now, rng));
        // Another node's trial the book wants measured rides as this evaluation (the node
        // measures it beside its batch: one more evaluation either way).
        if let Some(check) = self.opts[i].book.as_mut().and_then(TrialBook::next_check) {
            self.figures.evaluations += 1;
            self.figures.trial_checks += 1;
            let loss = self.metric_of(&check.x, None).map(|(l, _)| l);
            let o = &mut self.opts[i];
            if let Some(book) = o.book.as_mut() {
                let effects = book.on_checked(&check, loss.filter(|l| l.is_finite()));
                share::apply(o.optimizer.as_mut(), effects);
            }
            return out;
        }
        let Some(x) = self.opts[i].asked.pop() else { return out };
        self.figures.evaluations += 1;
        if let Some((loss, metric)) = self.metric_of(&x, None) {
            let o = &mut self.opts[i];
            if let Some(book) = o.book.as_mut() {
                book.measured(loss);
            }
            o.told.push(Evaluated { x: x.clone(), loss });
            if o.unclaimed.as_ref().is_none_or(|(l, _, _)| loss < *l) {
                o.unclaimed = Some((loss, x, metric));
            }
        }
        // Its node judges the report (`chain::chain_claims`).
        self.wanted.push(i);
        out
    }

    /// Optimizer `i` publishes its trials (and its points in flight) to every other optimizer,
    /// at the node's pace: once [`share::FLUSH_TRIALS`] wait or [`share::FLUSH_EVERY`] passed,
    /// never twice within 1.1 s. A liar publishes its points with a tenth of their loss.
    fn publish(&mut self, i: usize, now: u64, rng: &mut Rng) -> Schedule {
        let optimizers = self.opts.len();
        let o = &mut self.opts[i];
        let since = o.published_ms.map_or(u64::MAX, |t| now - t);
        let every = share::FLUSH_EVERY.as_millis() as u64;
        let due = o.outbox.len() >= share::FLUSH_TRIALS || (!o.outbox.is_empty() && since >= every);
        if o.book.is_none() || !due || since < 1_100 || optimizers < 2 {
            return Vec::new();
        }
        let take = o.outbox.len().min(doin_primitives::trials::MAX_BATCH_TRIALS);
        let mut trials: Vec<Evaluated> = o.outbox.drain(..take).collect();
        if o.liar {
            trials.iter_mut().for_each(|t| t.loss = if t.loss > 0.0 { t.loss / 10.0 } else { t.loss * 10.0 });
        }
        o.seq += 1;
        o.published_ms = Some(now);
        let batch = Incoming {
            sender: opt_address(i),
            standing: 1.0,
            seq: o.seq,
            trials,
            pending: o
                .optimizer
                .in_flight()
                .into_iter()
                .take(doin_primitives::trials::MAX_BATCH_PENDING)
                .collect(),
        };
        let id = self.next_batch;
        self.next_batch = self.next_batch.wrapping_add(1);
        self.figures.trial_batches += 1;
        // The node gossips to all; a split population's optimizers read their island's only.
        let readers: Vec<usize> = (0..optimizers).filter(|j| *j != i && self.reads(*j, i)).collect();
        self.batches.insert(id, (batch, readers.len()));
        readers.into_iter().map(|j| (self.hop(rng), TRIALS, id, j as u32)).collect()
    }

    /// Whether optimizer `j` takes optimizer `i`'s trials (`Sharing::only_from` in the node).
    fn reads(&self, j: usize, i: usize) -> bool {
        match self.population {
            Some(p) => doin_node::optimizer::Place::new(self.opts.len(), j).same_island(p, i),
            None => true,
        }
    }

    /// Batch `b` reaches optimizer `j` (lost when its node is down).
    pub(crate) fn trials_reach(&mut self, b: u32, j: usize, up: bool) {
        let Some((batch, left)) = self.batches.get_mut(&b) else { return };
        *left -= 1;
        let batch = if *left == 0 { self.batches.remove(&b).map(|(b, _)| b) } else { Some(batch.clone()) };
        let (Some(batch), true) = (batch, up) else { return };
        let o = &mut self.opts[j];
        if let Some(book) = o.book.as_mut() {
            let effects = book.on_batch(batch);
            share::apply(o.optimizer.as_mut(), effects);
        }
    }

    fn quorum_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.args.quorum_timeout_s.max(0.001))
    }

    /// One message's way across the mesh: a link latency times about log_D(N) hops.
    pub(crate) fn hop(&self, rng: &mut Rng) -> u64 {
        (rng.lognormal(self.hop_median_ms, 0.5).max(1.0) * self.hops) as u64
    }

    fn loss_of(&self, m: Metric) -> f64 {
        loss_of(self.domain.as_ref(), m)
    }

    fn performance_of(&self, loss: f64) -> f64 {
        if self.domain.higher_is_better() { -loss } else { loss }
    }

    /// The figures as JSON.
    pub(crate) fn json(&self, sim_ms: u64) -> serde_json::Value {
        let f = &self.figures;
        let optimizers = self.opts.len().max(1) as u64;
        serde_json::json!({
            "domain": self.args.domain,
            "dims": self.args.dims,
            "optimizers": self.opts.len(),
            "optimizer": self.opts.first().map(|o| o.optimizer.kind()),
            "liars": self.args.liars,
            "eval_ms": self.args.eval_ms,
            "target_loss": self.args.target_loss,
            "evaluations": f.evaluations,
            "evaluations_per_optimizer": f.evaluations / optimizers,
            "claims": f.claims,
            "accepted": f.accepted,
            "rejected": f.rejected,
            "fake_claims": f.fake_claims,
            "accepted_fakes": f.accepted_fakes,
            "escalations": f.escalations,
            "undecided": f.undecided,
            "champion_loss": f.champion_loss,
            "time_to_target_s": f.time_to_target_ms.map(|t| t as f64 / 1000.0),
            "evaluations_to_target_per_optimizer": f.evaluations_to_target.map(|e| e as f64 / optimizers as f64),
            "verification_share_of_cpu": f.verify_evaluations as f64 / (f.evaluations + f.verify_evaluations).max(1) as f64,
            "shared_trials": {
                "batches": f.trial_batches,
                "checks": f.trial_checks,
                "used": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().used)).sum::<u64>(),
                "senders_banned": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().senders_banned)).sum::<u64>(),
                "checks_quarantine": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().checks_quarantine)).sum::<u64>(),
                "checks_surprise": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().checks_surprise)).sum::<u64>(),
                "checks_random": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().checks_random)).sum::<u64>(),
                "vouched": self.opts.iter().filter_map(|o| Some(o.book.as_ref()?.stats().vouched)).sum::<u64>(),
            },
            "on_chain": self.chain.as_ref().map(chain::Chain::json),
            "sim_s": sim_ms as f64 / 1000.0,
        })
    }
}
