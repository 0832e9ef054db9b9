//! The search half of `doin sim`: optimizing nodes run the node's own optimizer
//! (`doin_node::optimizer::build_optimizer`, island populations by `population_of`) on a real
//! built-in domain (`doin_node::domains::build`), each evaluation costing `--eval-ms` of
//! simulated time; an improvement is claimed (one claim in flight per node, as the node's
//! loop does), a quorum of staked evaluators re-measures it on their own seeded data, and the
//! consensus rules judge it (`certs::outcome`, `certs::improves` against the domain spec the
//! node derives); a verified champion reaches every optimizer through the gossip mesh and is
//! injected as a migrant. Lying optimizers (`--liars`) claim figures they did not measure; an
//! accepted one is a safety violation.
//!
//! A claim is verified as the node verifies it: its commit is sealed (two seal slots), a
//! first-round quorum and an escalation quorum are drawn (`quorum::draw`, sizes as the chain
//! draws them), each member measures on its seed group's data and its vote crosses the mesh,
//! and the node's own quorum tally (`doin_node::tally`) decides — certify, escalate on
//! disagreement or on a vote missing past `--quorum-timeout-s` (a member whose node is down
//! does not vote), or give up when an escalation cannot decide. Modelled, not run: the
//! commit/reveal messages and their blocks (the seal is a fixed two slots).

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use doin_consensus::{certs, quorum};
use doin_node::{
    config::{DomainConfig, NodeConfig},
    tally::{Decision, Round, Tally},
    trials::{Agreement, Incoming, TrialBook, share},
};
use doin_optimize::{
    Evaluated, Optimizer,
    domain::{Budget, Domain},
};
use doin_primitives::{Address, DomainSpec, Hash, Metric, Outcome};

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
    /// Model-based optimizers (TPE) do not share their trials (the node's `share_trials:
    /// false`); by default they publish them at the node's rate and learn each other's through
    /// the node's own trial book (quarantine, spot checks, bans). Liars publish inflated ones.
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
    /// How claims travel: `chain` — as the node sends them: the optimizer's own-claims core
    /// signs a commit, staked nodes pool it and their block producers include and seal it on
    /// the simulated chain, the reveal follows the seal, every evaluator node runs the node's
    /// verification pipeline (intake, quorum drawn from the sealing block's beacon, its seed
    /// group's data, signed votes), certificates ride blocks and champions are read from the
    /// chain; `modelled` — a two-slot seal delay and one tally per claim (faster).
    #[arg(long, default_value = "modelled", value_parser = ["chain", "modelled"])]
    pub(crate) claims: String,
}

/// One optimizing node.
struct Opt {
    node: usize,
    /// Its node's own claims (with `--claims chain`).
    own: doin_node::own_claims::OwnClaims,
    /// The chain champion it last took in (with `--claims chain`).
    chain_champion: Option<Hash>,
    optimizer: Box<dyn Optimizer>,
    batch: usize,
    asked: Vec<Vec<f64>>,
    told: Vec<Evaluated>,
    /// The best point this node measured that it has not claimed yet (loss, point, metric).
    unclaimed: Option<(f64, Vec<f64>, Metric)>,
    in_flight: bool,
    liar: bool,
    /// The champion metric this node knows (it only claims improvements on it).
    champion: Metric,
    /// Its shared-trial book (none: its optimizer learns nothing from other nodes' trials).
    book: Option<TrialBook>,
    /// Trials measured since it last published.
    outbox: Vec<Evaluated>,
    /// Its last batch's sequence number, and when it was published (sim ms).
    seq: u64,
    published_ms: Option<u64>,
}

struct Claim {
    opt: usize,
    x: Vec<f64>,
    claimed: Metric,
    fake: bool,
    /// The verified median, once accepted.
    median: Option<Metric>,
    /// First-round and escalation members (indices into the evaluators).
    first: Vec<usize>,
    escalation: Vec<usize>,
    /// When (sim ms) the reveal reached the members.
    revealed_ms: u64,
    tally: Tally<()>,
    /// Decided (certified or given up).
    settled: bool,
}

impl Claim {
    /// The members (indices into the evaluators) of round `round` (0: first, else escalation).
    fn members(&self, round: u8) -> &[usize] {
        if round == 0 { &self.first } else { &self.escalation }
    }

    fn new(opt: usize, x: Vec<f64>, claimed: Metric, fake: bool) -> Self {
        Self {
            opt,
            x,
            claimed,
            fake,
            median: None,
            first: Vec::new(),
            escalation: Vec::new(),
            revealed_ms: 0,
            tally: Tally::default(),
            settled: false,
        }
    }
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
    claims: Vec<Claim>,
    /// The network's verified champion's metric.
    champion: Metric,
    evaluators: Vec<usize>,
    pub(crate) figures: Figures,
    pub(crate) done: bool,
    /// Every verdict and every champion, hashed (the search's part of the digest).
    pub(crate) digest: blake3::Hasher,
    /// The `rubber-stamp` fault: every claim is accepted unmeasured (a checker test).
    rubber_stamp: bool,
    /// Sim time 0 as an `Instant` (the tally measures time as the node does).
    t0: Instant,
    /// A made-up address per evaluator (the tally's keys).
    addresses: Vec<Address>,
    seed: u64,
    /// A link's median latency and the hops a message takes across the mesh.
    hop_median_ms: f64,
    hops: f64,
    /// Published trial batches on the wire: the batch, and how many recipients it has still
    /// to reach (dropped when none).
    batches: BTreeMap<u32, (Incoming, usize)>,
    next_batch: u32,
    /// Claims on the simulated chain (`--claims chain`).
    pub(crate) chain: Option<chain::Chain>,
    /// Optimizers with something to claim (`--claims chain`: the simulator's claim path).
    wanted: Vec<usize>,
}

/// Optimizer `i`'s signing address (the trial books' sender key).
fn opt_address(i: usize) -> Address {
    Address(Hash::of_parts(&[b"doin/sim/optimizer", &(i as u64).to_le_bytes()]).0)
}

/// An event the search asks the simulator to schedule: (delay ms, kind, a, b).
pub(crate) type Schedule = Vec<(u64, u8, u32, u32)>;

/// Event kinds of the search (the chain's are 0–4).
pub(crate) const EVALUATED: u8 = 5;
/// A vote reaches the claim's optimizer: `a` the claim, `b` = round << 16 | member position.
pub(crate) const VOTE: u8 = 6;
pub(crate) const CHAMPION: u8 = 7;
/// A claim's quorum timer: `a` the claim.
pub(crate) const QUORUM_TIMER: u8 = 8;
/// A shared-trial batch reaches an optimizer: `a` the batch, `b` the optimizer.
pub(crate) const TRIALS: u8 = 9;
/// Two seal slots: the commit included, then sealed (the quorum's beacon).
const SEAL_MS: u64 = 2_000;

impl Search {
    /// Optimizers on nodes `first..first + optimizers`, verified by the `evaluators`.
    pub(crate) fn new(
        args: SearchArgs,
        first: usize,
        evaluators: Vec<usize>,
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
        let domain = doin_node::domains::build(&config).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            doin_node::domains::tolerance_profile(&args.domain, 0.0).is_some()
                && !matches!(args.domain.as_str(), "mlp_digits" | "co2_forecast"),
            "--domain {}: the simulation runs the cheap built-in functions (rastrigin, ackley, rosenbrock, sphere, quadratic)",
            args.domain
        );
        anyhow::ensure!(
            args.quorum >= 1 && args.quorum <= evaluators.len(),
            "--quorum must be 1..=producers"
        );
        anyhow::ensure!(args.liars <= args.optimizers, "--liars must be at most --optimizers");
        let spec = doin_node::domains::spec_of(domain.as_ref(), &config, &NodeConfig::default())
            .map_err(anyhow::Error::msg)?;
        let tolerance =
            doin_node::domains::tolerance_of(&config, &NodeConfig::default()).map_err(anyhow::Error::msg)?;
        let agreement = Agreement { absolute: tolerance.absolute, relative: tolerance.relative };
        let mut opts = Vec::with_capacity(args.optimizers);
        for i in 0..args.optimizers {
            let optimizer = doin_node::optimizer::build_optimizer(
                domain.as_ref(),
                &config,
                seed ^ (i as u64 + 1),
                args.optimizers,
            )
            .map_err(anyhow::Error::msg)?;
            let batch = doin_node::optimizer::population_of(domain.as_ref(), &config, 1, args.optimizers);
            opts.push(Opt {
                node: first + i,
                own: doin_node::own_claims::OwnClaims::new(16),
                chain_champion: None,
                batch,
                asked: Vec::new(),
                told: Vec::new(),
                unclaimed: None,
                in_flight: false,
                liar: i < args.liars,
                champion: spec.baseline,
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
        Ok(Self {
            champion: spec.baseline,
            args,
            domain,
            spec,
            opts,
            claims: Vec::new(),
            figures: Figures::default(),
            done: false,
            digest: blake3::Hasher::new(),
            rubber_stamp,
            t0: Instant::now(),
            addresses: (0..evaluators.len() as u64).map(|i| Address(Hash::of(&i.to_le_bytes()).0)).collect(),
            evaluators,
            seed,
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
        let values = self.domain.space().decode(x);
        let m =
            self.domain.evaluate(&values, seed, Budget::new(std::time::Duration::from_secs(60), 100)).ok()?;
        Some((self.domain.loss(&m), Metric::from_f64(m.performance)?))
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
        if self.chain.is_some() {
            self.wanted.push(i);
        } else {
            out.extend(self.maybe_claim(i, now, rng));
        }
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
        self.batches.insert(id, (batch, self.opts.len() - 1));
        self.figures.trial_batches += 1;
        (0..self.opts.len()).filter(|j| *j != i).map(|j| (self.hop(rng), TRIALS, id, j as u32)).collect()
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

    /// A claim at `now`, if node `i` has no claim in flight and something to claim.
    fn maybe_claim(&mut self, i: usize, now: u64, rng: &mut Rng) -> Schedule {
        let o = &mut self.opts[i];
        if o.in_flight {
            return Vec::new();
        }
        let claim = if o.liar {
            // A made-up figure far better than the champion, for a random point.
            let d = self.domain.space().len();
            let x: Vec<f64> = (0..d).map(|_| rng.unit()).collect();
            let champion = o.champion;
            let fake = self.performance_of(self.loss_of(champion) / 10.0);
            Metric::from_f64(fake).map(|m| Claim::new(i, x, m, true))
        } else {
            match &o.unclaimed {
                Some((_, x, metric)) if certs::improves(&self.spec, o.champion, *metric, 0) == Some(true) => {
                    let c = Claim::new(i, x.clone(), *metric, false);
                    o.unclaimed = None;
                    Some(c)
                }
                _ => None,
            }
        };
        let Some(claim) = claim else { return Vec::new() };
        self.opts[i].in_flight = true;
        self.figures.claims += 1;
        self.figures.fake_claims += u64::from(claim.fake);
        let c = self.claims.len();
        // The quorums, drawn as the chain draws them (equal stakes; the seed stands for the
        // beacon nobody knew when the commit was included).
        let candidates: Vec<quorum::Candidate> =
            self.addresses.iter().map(|a| quorum::Candidate { address: *a, weight: 1 }).collect();
        let beacon =
            Hash::of_parts(&[b"doin/sim/beacon", &self.seed.to_le_bytes(), &(c as u64).to_le_bytes()]);
        let id = Hash::of(&(c as u64).to_le_bytes());
        let k = self.args.quorum;
        let index = |drawn: Vec<Address>| -> Vec<usize> {
            drawn.iter().filter_map(|a| self.addresses.iter().position(|x| x == a)).collect()
        };
        let first = index(quorum::draw(&candidates, k, &quorum::seed(&beacon, &id)));
        let escalation = index(quorum::draw(
            &candidates,
            quorum::escalation_size(k, candidates.len()),
            &quorum::escalation_seed(&beacon, &id),
        ));
        let revealed_ms = now + SEAL_MS + self.hop(rng);
        let mut out: Schedule = (0..first.len())
            .map(|pos| (revealed_ms - now + self.args.eval_ms + self.hop(rng), VOTE, c as u32, pos as u32))
            .collect();
        // With no vote at all, the first round times out after its window.
        let window = doin_node::tally::window(self.quorum_timeout(), &self.spec).as_millis() as u64;
        out.push((revealed_ms - now + window, QUORUM_TIMER, c as u32, 0));
        self.claims.push(Claim {
            first,
            escalation,
            revealed_ms,
            tally: Tally::default(),
            settled: false,
            ..claim
        });
        out
    }

    fn quorum_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.args.quorum_timeout_s.max(0.001))
    }

    /// One message's way across the mesh: a link latency times about log_D(N) hops.
    fn hop(&self, rng: &mut Rng) -> u64 {
        (rng.lognormal(self.hop_median_ms, 0.5).max(1.0) * self.hops) as u64
    }

    /// The evaluator node of vote `b` on claim `c` (its `up` decides whether it votes).
    pub(crate) fn voter_node(&self, c: usize, b: usize) -> usize {
        self.evaluators[self.claims[c].members((b >> 16) as u8)[b & 0xffff]]
    }

    /// Vote `b` (round << 16 | position) on claim `c` reaches its optimizer at `now`: the member
    /// measured on its seed group's data, unless its node was down.
    pub(crate) fn vote(&mut self, c: usize, b: usize, now: u64, up: bool, rng: &mut Rng) -> Schedule {
        if self.done || self.claims[c].settled || !up {
            return Vec::new();
        }
        let (round, pos) = ((b >> 16) as u8, b & 0xffff);
        let members = self.claims[c].members(round);
        let group = quorum::group_of(pos, members.len());
        let address = self.addresses[members[pos]];
        let seed = Hash::of_parts(&[
            b"doin/sim/evaluator",
            &self.seed.to_le_bytes(),
            &(c as u64).to_le_bytes(),
            &[round],
            &(group as u64).to_le_bytes(),
        ]);
        self.figures.verify_evaluations += 1;
        let at = self.t0 + Duration::from_millis(now);
        if let Some((_, m)) = self.metric_of(&self.claims[c].x, Some(&seed)) {
            self.claims[c].tally.add(round, address, m, (), at);
        }
        let mut out = Vec::new();
        if round == 0 {
            // The missing votes count as missing `quorum_timeout` after the first one.
            out.push((self.quorum_timeout().as_millis() as u64, QUORUM_TIMER, c as u32, 0));
        }
        out.extend(self.decide(c, now, rng));
        out
    }

    /// Claim `c`'s quorum timer (`b` 1: the claim's deadline) at `now`.
    pub(crate) fn timer(&mut self, c: usize, b: usize, now: u64, rng: &mut Rng) -> Schedule {
        if self.done || self.claims[c].settled {
            return Vec::new();
        }
        if b == 1 {
            // The node's claim deadline: an escalation that never decided stops barring.
            self.give_up(c);
            return Vec::new();
        }
        self.decide(c, now, rng)
    }

    fn give_up(&mut self, c: usize) {
        self.claims[c].settled = true;
        self.opts[self.claims[c].opt].in_flight = false;
        self.figures.undecided += 1;
        self.digest.update(b"undecided");
    }

    /// What the node's tally makes of claim `c` at `now`.
    fn decide(&mut self, c: usize, now: u64, rng: &mut Rng) -> Schedule {
        let first: Vec<Address> = self.claims[c].first.iter().map(|i| self.addresses[*i]).collect();
        let escalation: Vec<Address> = self.claims[c].escalation.iter().map(|i| self.addresses[*i]).collect();
        let round = Round {
            first: &first,
            escalation: &escalation,
            spec: &self.spec,
            revealed_at: self.t0 + Duration::from_millis(self.claims[c].revealed_ms),
            quorum_timeout: self.quorum_timeout(),
        };
        // Every evaluator stays staked (a node that is down keeps its stake).
        match self.claims[c].tally.decide(&round, self.t0 + Duration::from_millis(now), |_| true) {
            Decision::Wait => Vec::new(),
            Decision::Escalate(_) => {
                self.figures.escalations += 1;
                self.digest.update(b"escalate");
                let mut out: Schedule = (0..escalation.len())
                    .map(|pos| {
                        (
                            self.hop(rng) + self.args.eval_ms + self.hop(rng),
                            VOTE,
                            c as u32,
                            (1 << 16 | pos) as u32,
                        )
                    })
                    .collect();
                let deadline =
                    2 * doin_node::tally::window(self.quorum_timeout(), &self.spec).as_millis() as u64;
                out.push((deadline, QUORUM_TIMER, c as u32, 1));
                out
            }
            Decision::Undecidable => {
                self.give_up(c);
                Vec::new()
            }
            Decision::Certify { median, .. } => {
                self.claims[c].settled = true;
                self.verdict(c, median, now, rng)
            }
        }
    }

    /// The consensus rules' verdict on claim `c`, certified at `median` at `now`.
    fn verdict(&mut self, c: usize, median: Metric, now: u64, rng: &mut Rng) -> Schedule {
        let mut out = Vec::new();
        let (opt, fake) = (self.claims[c].opt, self.claims[c].fake);
        self.opts[opt].in_flight = false;
        let median = if self.rubber_stamp { self.claims[c].claimed } else { median };
        let accepted = certs::outcome(&self.spec, self.claims[c].claimed, median) == Some(Outcome::Accept)
            && certs::improves(&self.spec, self.champion, median, 0) == Some(true);
        self.digest.update(&[u8::from(accepted)]);
        self.digest.update(&median.0.to_le_bytes());
        if !accepted {
            self.figures.rejected += 1;
            return out;
        }
        self.figures.accepted += 1;
        // A lie is a claim its point does not live up to (on the noise-free figure); a made-up
        // number that happens to be true within the tolerance is no fake.
        let truth = self.metric_of(&self.claims[c].x, None).map(|(_, m)| m);
        if fake
            && truth.is_none_or(|t| {
                certs::outcome(&self.spec, self.claims[c].claimed, t) != Some(Outcome::Accept)
            })
        {
            self.figures.accepted_fakes += 1;
        }
        self.champion = median;
        self.claims[c].median = Some(median);
        let loss = self.loss_of(median);
        self.figures.champion_loss = Some(loss);
        if loss <= self.args.target_loss {
            self.done = true;
            self.figures.time_to_target_ms = Some(now);
            self.figures.evaluations_to_target = Some(self.figures.evaluations);
            return out;
        }
        for j in 0..self.opts.len() {
            out.push((self.hop(rng), CHAMPION, j as u32, c as u32));
        }
        out
    }

    fn loss_of(&self, m: Metric) -> f64 {
        if self.domain.higher_is_better() { -m.to_f64() } else { m.to_f64() }
    }

    fn performance_of(&self, loss: f64) -> f64 {
        if self.domain.higher_is_better() { -loss } else { loss }
    }

    /// Champion `c` reaches optimizer `j`: a migrant, and the bar its claims must clear.
    pub(crate) fn champion_reaches(&mut self, j: usize, c: usize) {
        let Some((x, Some(metric), claimer)) = self.claims.get(c).map(|cl| (cl.x.clone(), cl.median, cl.opt))
        else {
            return;
        };
        let loss = self.loss_of(metric);
        let o = &mut self.opts[j];
        // An older champion arriving after a newer one changes nothing.
        if self.spec.direction.gain(metric, o.champion).unwrap_or(0) <= 0 {
            return;
        }
        o.champion = metric;
        o.optimizer.inject(Evaluated { x, loss });
        // The chain vouches for the claimer's trials, and the certified figure is a bar.
        if claimer != j
            && let Some(book) = o.book.as_mut()
        {
            let effects = book.certified(opt_address(claimer), loss);
            share::apply(o.optimizer.as_mut(), effects);
        }
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
            "sim_s": sim_ms as f64 / 1000.0,
        })
    }
}
