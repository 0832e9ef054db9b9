//! The default optimizer: chooses by what an evaluation costs and the dimension.
//!
//! It starts with random points (what both candidates would start with), batch after batch until
//! [`TIMED`] evaluations are told; the wall time from asking to telling each batch measures
//! what an evaluation costs. Expensive evaluations (at least [`EXPENSIVE`] on average, and at
//! least [`NOT_TRIVIAL`] in the median batch) in at most [`TPE_MAX_DIM`] dimensions get [`Tpe`],
//! which learns from every point and spends few evaluations; cheap or high-dimensional ones get
//! [`Shade`], whose proposals cost nothing and which scales with the dimension. Random points
//! of one model can train in milliseconds and others for seconds: one point decided badly (on
//! `co2_forecast` a one-worker run went to SHADE in about half the seeds). The timed points go
//! to the chosen optimizer (TPE keeps them all; SHADE takes the best as a migrant).
//!
//! A run that starts from prior trials (the warm start: at least [`PRIORS_TO_GUIDE`] injected
//! before its first point) first re-measures the [`REVISITED`] best priors — their figures
//! may come from another node's data, an older version of the domain or a similar domain, as
//! meta-learned initialization does (Feurer, Springenberg and Hutter, AAAI 2015, start
//! Bayesian optimization from the best configurations of the most similar datasets) — then
//! times TPE proposals taught the priors instead of random points: random points would spend
//! the first evaluations of a run that already knows where the good region is. If SHADE is
//! chosen, that TPE is dropped like the random points' model would be.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Evaluated, Optimizer, Shade, SnapshotError, Tpe};

/// Evaluations at least this long (wall time per evaluation of the first batch) are expensive:
/// training a model takes longer (the first batch's random points may train in a few tens of
/// milliseconds: `co2_forecast`'s took under 0.1 s, and SHADE then needed 115 evaluations where
/// TPE needs 44), while a TPE proposal costs about a millisecond and the benchmark functions
/// evaluate in microseconds.
pub const EXPENSIVE: Duration = Duration::from_millis(10);
/// A median batch below this per evaluation is a function, not a model (a stalled thread can
/// make one batch of microsecond evaluations look expensive on average).
pub const NOT_TRIVIAL: Duration = Duration::from_millis(1);
/// Evaluations timed before the choice.
pub const TIMED: usize = 5;
/// Prior trials (injected before the first point) from which the timed points are TPE
/// proposals rather than random ones: TPE's default γ takes the best tenth as the good
/// density, so ten trials make one good point to sample around.
pub const PRIORS_TO_GUIDE: usize = 10;
/// The best prior trials (distinct points) a warm-started run measures again first.
pub const REVISITED: usize = 3;
/// TPE's densities thin out beyond this many dimensions; SHADE searches those.
pub const TPE_MAX_DIM: usize = 32;

/// Which optimizer [`Auto`] chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Model-based (expensive evaluations, few dimensions).
    Tpe,
    /// Differential evolution (cheap evaluations or many dimensions).
    Shade,
}

impl Choice {
    /// The name in logs and `optimization_plugin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tpe => "tpe",
            Self::Shade => "shade",
        }
    }

    /// The choice for evaluations of `cost` in `dim` dimensions.
    pub fn for_cost(cost: Duration, dim: usize) -> Self {
        Self::for_costs(&[(cost, 1)], dim)
    }

    /// The choice for timed batches (per-evaluation cost, evaluations) in `dim` dimensions:
    /// the mean cost decides, unless the median batch is trivially cheap.
    pub fn for_costs(batches: &[(Duration, usize)], dim: usize) -> Self {
        let n: usize = batches.iter().map(|(_, k)| k).sum();
        if n == 0 || dim > TPE_MAX_DIM {
            return Self::Shade;
        }
        let total: Duration = batches.iter().map(|(c, k)| *c * *k as u32).sum();
        let mut per: Vec<Duration> = batches.iter().map(|(c, _)| *c).collect();
        per.sort();
        let median = per[per.len() / 2];
        if total / n as u32 >= EXPENSIVE && median >= NOT_TRIVIAL { Self::Tpe } else { Self::Shade }
    }
}

/// Chooses TPE or SHADE after timing the first batch.
pub struct Auto {
    dim: usize,
    seed: u64,
    island: usize,
    rng: ChaCha8Rng,
    chosen: Option<(Choice, Box<dyn Optimizer>)>,
    /// The random batch out now and when it was asked.
    first: Vec<Vec<f64>>,
    asked_at: Option<Instant>,
    told: Vec<Evaluated>,
    /// Per timed batch: cost per evaluation, evaluations.
    timed: Vec<(Duration, usize)>,
    /// Points of the batch out now told so far.
    batch_told: usize,
    /// Injected before the choice.
    migrants: Vec<Evaluated>,
    /// A TPE taught the prior trials, proposing the timed points (a warm start).
    guide: Option<Tpe>,
    /// The best prior points not yet measured again (a warm start), best last.
    revisit: Vec<Vec<f64>>,
    /// Other nodes' trials, trust and points in flight that arrived before the choice, in
    /// order (TPE learns them when chosen; at most [`MAX_EARLY_SHARED`] trials).
    early: Vec<Shared>,
}

/// Shared trials kept before the choice at most.
pub const MAX_EARLY_SHARED: usize = 1_000;

/// What the node told about other nodes' trials before the choice.
enum Shared {
    Observe(u32, Vec<Evaluated>),
    Trust(u32, f64),
    Pending(u32, Vec<Vec<f64>>),
}

impl std::fmt::Debug for Auto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auto").field("dim", &self.dim).field("chosen", &self.choice()).finish_non_exhaustive()
    }
}

impl Auto {
    /// For `dim` dimensions; SHADE, if chosen, runs an island of `island`.
    pub fn new(dim: usize, island: usize, seed: u64) -> Self {
        Self {
            dim,
            seed,
            island,
            rng: ChaCha8Rng::seed_from_u64(seed),
            chosen: None,
            first: Vec::new(),
            asked_at: None,
            told: Vec::new(),
            timed: Vec::new(),
            batch_told: 0,
            migrants: Vec::new(),
            guide: None,
            revisit: Vec::new(),
            early: Vec::new(),
        }
    }

    /// What it chose (none before the first batch was told).
    pub fn choice(&self) -> Option<Choice> {
        self.chosen.as_ref().map(|(c, _)| *c)
    }

    /// Whether TPE proposals taught the prior trials are being timed (a warm start).
    pub fn guided(&self) -> bool {
        self.guide.is_some()
    }

    fn choose(&mut self, choice: Choice) {
        let guide = self.guide.take();
        let mut opt: Box<dyn Optimizer> = match (choice, guide) {
            // The guide already knows the priors and every timed point.
            (Choice::Tpe, Some(guide)) => {
                self.told.clear();
                self.migrants.clear();
                Box::new(guide)
            }
            (Choice::Tpe, None) => Box::new(Tpe::new(self.dim, Tpe::default_startup(self.dim), self.seed)),
            (Choice::Shade, _) => Box::new(Shade::new(self.dim, self.island, self.seed)),
        };
        let mut known: Vec<Evaluated> = std::mem::take(&mut self.told);
        known.append(&mut self.migrants);
        let early = std::mem::take(&mut self.early);
        match choice {
            Choice::Tpe => {
                known.into_iter().for_each(|e| opt.inject(e));
                for e in early {
                    match e {
                        Shared::Observe(source, trials) => opt.observe(source, &trials),
                        Shared::Trust(source, weight) => opt.trust(source, weight),
                        Shared::Pending(source, points) => opt.pending_elsewhere(source, &points),
                    }
                }
            }
            Choice::Shade => {
                if let Some(best) =
                    known.into_iter().filter(|e| e.loss.is_finite()).min_by(|a, b| a.loss.total_cmp(&b.loss))
                {
                    opt.inject(best);
                }
            }
        }
        self.first.clear();
        self.chosen = Some((choice, opt));
    }
}

impl Optimizer for Auto {
    fn ask(&mut self, n: usize) -> Vec<Vec<f64>> {
        if let Some((_, opt)) = &mut self.chosen {
            return opt.ask(n);
        }
        if self.asked_at.is_some() {
            // The first batch is still out: nothing more until it is told.
            return Vec::new();
        }
        if self.guide.is_none() && self.told.is_empty() && self.migrants.len() >= PRIORS_TO_GUIDE {
            let mut guide = Tpe::new(self.dim, Tpe::default_startup(self.dim), self.seed);
            self.migrants.iter().for_each(|m| guide.inject(m.clone()));
            self.guide = Some(guide);
            let mut best: Vec<&Evaluated> = self.migrants.iter().filter(|m| m.loss.is_finite()).collect();
            best.sort_by(|a, b| a.loss.total_cmp(&b.loss));
            for m in best {
                if self.revisit.len() < REVISITED && !self.revisit.contains(&m.x) {
                    self.revisit.push(m.x.clone());
                }
            }
            self.revisit.reverse();
        }
        // No more timed points than the choice needs (the rest of TPE's random start, if TPE is
        // chosen, counts other nodes' trusted trials; these points do not).
        let n = n.clamp(1, TIMED.saturating_sub(self.told.len()).max(1));
        let xs: Vec<Vec<f64>> = match &mut self.guide {
            Some(guide) => {
                let again = self.revisit.len().min(n);
                let mut xs: Vec<Vec<f64>> = (0..again).filter_map(|_| self.revisit.pop()).collect();
                if xs.len() < n {
                    xs.extend(guide.ask(n - xs.len()));
                }
                xs
            }
            None => (0..n).map(|_| (0..self.dim).map(|_| self.rng.random::<f64>()).collect()).collect(),
        };
        self.first.clone_from(&xs);
        self.asked_at = Some(Instant::now());
        xs
    }

    fn tell(&mut self, results: &[Evaluated]) {
        if let Some((_, opt)) = &mut self.chosen {
            opt.tell(results);
            return;
        }
        let before = self.told.len();
        self.told.extend(results.iter().filter(|r| self.first.contains(&r.x)).cloned());
        if let Some(guide) = &mut self.guide {
            guide.tell(&self.told[before..]);
        }
        self.batch_told += self.told.len() - before;
        if self.batch_told >= self.first.len() && self.asked_at.is_some() {
            let spent = self.asked_at.take().map_or(Duration::ZERO, |t| t.elapsed());
            let k = self.batch_told.max(1);
            self.timed.push((spent / k as u32, k));
            self.batch_told = 0;
            if self.told.len() >= TIMED {
                self.choose(Choice::for_costs(&self.timed, self.dim));
            }
        }
    }

    fn inject(&mut self, migrant: Evaluated) {
        match &mut self.chosen {
            Some((_, opt)) => opt.inject(migrant),
            None => {
                if let Some(guide) = &mut self.guide {
                    guide.inject(migrant.clone());
                }
                self.migrants.push(migrant);
            }
        }
    }

    fn best(&self) -> Option<&Evaluated> {
        match &self.chosen {
            Some((_, opt)) => opt.best(),
            None => self.told.iter().filter(|e| e.loss.is_finite()).min_by(|a, b| a.loss.total_cmp(&b.loss)),
        }
    }

    fn hook(&mut self, event: &crate::Hook) {
        if let Some((_, opt)) = &mut self.chosen {
            opt.hook(event);
        }
    }

    fn stage(&self) -> u32 {
        self.chosen.as_ref().map_or(0, |(_, o)| o.stage())
    }

    // Other nodes' trials reach the chosen optimizer; before the choice they are kept, in
    // order, for TPE (the nodes of an expensive domain share from their first points on), and
    // dropped if SHADE is chosen.
    fn observe(&mut self, source: u32, trials: &[Evaluated]) {
        match &mut self.chosen {
            Some((_, opt)) => opt.observe(source, trials),
            None => {
                let kept: usize =
                    self.early.iter().map(|e| if let Shared::Observe(_, t) = e { t.len() } else { 0 }).sum();
                let room = MAX_EARLY_SHARED.saturating_sub(kept);
                if room > 0 {
                    self.early.push(Shared::Observe(source, trials.iter().take(room).cloned().collect()));
                }
            }
        }
    }

    fn trust(&mut self, source: u32, weight: f64) {
        match &mut self.chosen {
            Some((_, opt)) => opt.trust(source, weight),
            // Only the latest weight of a source matters.
            None => {
                self.early.retain(|e| !matches!(e, Shared::Trust(s, _) if *s == source));
                self.early.push(Shared::Trust(source, weight));
            }
        }
    }

    fn pending_elsewhere(&mut self, source: u32, points: &[Vec<f64>]) {
        match &mut self.chosen {
            Some((_, opt)) => opt.pending_elsewhere(source, points),
            None => {
                self.early.retain(|e| !matches!(e, Shared::Pending(s, _) if *s == source));
                self.early.push(Shared::Pending(source, points.to_vec()));
            }
        }
    }

    /// While timing: yes (its random points are worth sharing, and what others share waits for
    /// TPE); then as the chosen optimizer.
    fn learns_shared(&self) -> bool {
        self.chosen.as_ref().is_none_or(|(_, o)| o.learns_shared())
    }

    fn in_flight(&self) -> Vec<Vec<f64>> {
        match &self.chosen {
            Some((_, opt)) => opt.in_flight(),
            // The timed batch while it is out (once told, nothing is in flight).
            None if self.asked_at.is_some() => self.first.clone(),
            None => Vec::new(),
        }
    }

    /// While timing: yes (the points are random, but TPE is the likely choice on a domain
    /// worth batching carefully, and the timing needs no batch); then as the chosen optimizer.
    fn sequential(&self) -> bool {
        self.chosen.as_ref().is_none_or(|(_, o)| o.sequential())
    }

    fn snapshot(&self) -> Vec<u8> {
        match &self.chosen {
            // A tag for the choice, then the chosen optimizer's snapshot.
            Some((c, opt)) => {
                let mut out = vec![if *c == Choice::Tpe { 1 } else { 2 }];
                out.extend(opt.snapshot());
                out
            }
            None => vec![0],
        }
    }

    fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        let (tag, rest) = bytes.split_first().ok_or_else(|| SnapshotError("an empty snapshot".into()))?;
        let choice = match tag {
            0 => return Ok(()),
            1 => Choice::Tpe,
            2 => Choice::Shade,
            t => return Err(SnapshotError(format!("unknown optimizer tag {t}"))),
        };
        self.choose(choice);
        match &mut self.chosen {
            Some((_, opt)) => opt.restore(rest),
            None => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        match self.choice() {
            Some(Choice::Tpe) => "auto: tpe",
            Some(Choice::Shade) => "auto: shade",
            None if self.guide.is_some() => "auto: timing TPE proposals taught the prior trials",
            None => "auto: timing the first batch",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random batches of 2, each evaluation taking `each`, until it chooses.
    fn run(auto: &mut Auto, each: Duration) {
        for _ in 0..TIMED {
            let xs = auto.ask(2);
            assert!(auto.ask(2).is_empty(), "nothing more while a timed batch is out");
            std::thread::sleep(each * xs.len() as u32);
            let r: Vec<Evaluated> = xs.into_iter().map(|x| Evaluated { loss: x[0], x }).collect();
            auto.tell(&r);
            if auto.choice().is_some() {
                return;
            }
        }
        panic!("no choice after {TIMED} batches");
    }

    /// One point per batch, as a one-worker run asks: a model whose random points mostly train
    /// in a millisecond and sometimes for a second is expensive; a function with one stalled
    /// batch is not.
    #[test]
    fn several_points_are_timed_before_the_choice() {
        let ms = Duration::from_millis;
        assert_eq!(
            Choice::for_costs(&[(ms(2), 1), (ms(1), 1), (ms(300), 1), (ms(3), 1), (ms(2), 1)], 7),
            Choice::Tpe
        );
        let micro = Duration::from_micros(5);
        assert_eq!(
            Choice::for_costs(&[(micro, 1), (ms(80), 1), (micro, 1), (micro, 1), (micro, 1)], 7),
            Choice::Shade
        );
        assert_eq!(Choice::for_costs(&[], 7), Choice::Shade);
        let mut a = Auto::new(3, 20, 4);
        for i in 0..TIMED {
            assert_eq!(a.choice(), None, "still timing after {i} points");
            let x = a.ask(1);
            assert_eq!(x.len(), 1);
            a.tell(&[Evaluated { loss: 1.0, x: x[0].clone() }]);
        }
        assert!(a.choice().is_some());
        assert_eq!(a.ask(1).len(), 1, "the chosen optimizer asks now");
    }

    /// The random start timed before the choice is [`TIMED`] points whatever the batch: a
    /// bigger batch would add random points on every node (TPE's own random start counts
    /// other nodes' trusted trials; these do not). It asks one point per worker while timing.
    #[test]
    fn no_more_points_are_timed_than_the_choice_needs() {
        let mut a = Auto::new(3, 20, 1);
        assert!(a.sequential(), "asked per worker while timing");
        let mut sizes = Vec::new();
        while a.choice().is_none() {
            let xs = a.ask(4);
            assert_eq!(a.in_flight(), xs, "the timed batch is in flight while it is out");
            sizes.push(xs.len());
            a.tell(&xs.into_iter().map(|x| Evaluated { loss: 1.0, x }).collect::<Vec<_>>());
            assert!(a.in_flight().is_empty(), "told: nothing in flight");
        }
        assert_eq!(sizes, [4, 1]);
    }

    #[test]
    fn expensive_evaluations_in_few_dimensions_get_tpe_and_cheap_ones_shade() {
        let mut slow = Auto::new(4, 20, 1);
        run(&mut slow, EXPENSIVE + Duration::from_millis(20));
        assert_eq!(slow.choice(), Some(Choice::Tpe));
        assert!(slow.best().is_some(), "the first batch was kept");
        let mut fast = Auto::new(4, 20, 1);
        run(&mut fast, Duration::ZERO);
        assert_eq!(fast.choice(), Some(Choice::Shade));
        assert_eq!(
            Choice::for_cost(Duration::from_secs(5), TPE_MAX_DIM + 1),
            Choice::Shade,
            "too many dimensions"
        );
    }

    /// Trials other nodes shared while it was timing teach the TPE it chooses: its proposals
    /// gather where the shared trials were good (without them they spread over the cube).
    #[test]
    fn trials_shared_while_timing_reach_the_chosen_tpe() {
        let near = |a: &mut Auto| -> f64 {
            let xs: Vec<Vec<f64>> = (0..20)
                .flat_map(|_| {
                    let x = a.ask(1);
                    a.tell(&x.iter().map(|x| Evaluated { x: x.clone(), loss: 5.0 }).collect::<Vec<_>>());
                    x
                })
                .collect();
            xs.iter().map(|x| ((x[0] - 0.9).powi(2) + (x[1] - 0.9).powi(2)).sqrt()).sum::<f64>()
                / xs.len() as f64
        };
        let shared: Vec<Evaluated> = (0..40)
            .map(|i| {
                let x = vec![(i * 7 % 40) as f64 / 40.0, (i * 13 % 40) as f64 / 40.0];
                let loss = (x[0] - 0.9).powi(2) + (x[1] - 0.9).powi(2);
                Evaluated { x, loss }
            })
            .collect();
        let mut taught = Auto::new(2, 20, 3);
        assert!(taught.learns_shared(), "while timing it takes what others share");
        taught.trust(1, 1.0);
        taught.observe(1, &shared);
        run(&mut taught, EXPENSIVE + Duration::from_millis(5));
        assert_eq!(taught.choice(), Some(Choice::Tpe));
        let mut alone = Auto::new(2, 20, 3);
        run(&mut alone, EXPENSIVE + Duration::from_millis(5));
        let (with, without) = (near(&mut taught), near(&mut alone));
        assert!(with < without * 0.7, "mean distance to the shared optimum: {with} taught, {without} alone");
        // What waits for the choice is bounded.
        let mut flood = Auto::new(2, 20, 3);
        for source in 0..40 {
            flood.observe(source, &shared);
        }
        let kept: usize =
            flood.early.iter().map(|e| if let Shared::Observe(_, t) = e { t.len() } else { 0 }).sum();
        assert_eq!(kept, MAX_EARLY_SHARED);
        let mut fast = Auto::new(2, 20, 3);
        fast.observe(1, &shared);
        run(&mut fast, Duration::ZERO);
        assert!(!fast.learns_shared(), "SHADE learns other nodes' results from champions only");
    }

    /// A warm start: with prior trials injected before the first point, the timed points are
    /// the best priors again, then TPE proposals taught them (near the priors' optimum), and
    /// the chosen TPE keeps both;
    /// fewer priors than [`PRIORS_TO_GUIDE`] leave the timed points random.
    #[test]
    fn prior_trials_guide_the_timed_points() {
        let loss = |x: &[f64]| (x[0] - 0.8).powi(2) + (x[1] - 0.2).powi(2);
        let priors: Vec<Evaluated> = (0..60)
            .map(|i| {
                let x = vec![(i * 7 % 60) as f64 / 60.0, (i * 17 % 60) as f64 / 60.0];
                Evaluated { loss: loss(&x), x }
            })
            .collect();
        let timed = |a: &mut Auto| -> f64 {
            let mut sum = 0.0;
            for _ in 0..TIMED {
                let xs = a.ask(1);
                std::thread::sleep(EXPENSIVE + Duration::from_millis(5));
                sum += loss(&xs[0]);
                a.tell(&[Evaluated { loss: loss(&xs[0]), x: xs[0].clone() }]);
            }
            sum / TIMED as f64
        };
        let (mut guided, mut random) = (0.0, 0.0);
        for seed in 0..4 {
            let mut warm = Auto::new(2, 20, seed);
            priors.iter().for_each(|p| warm.inject(p.clone()));
            assert!(warm.kind().contains("timing the first batch"), "nothing asked yet");
            guided += timed(&mut warm);
            assert_eq!(warm.choice(), Some(Choice::Tpe));
            assert!(
                warm.best().is_some_and(|b| b.loss <= priors.iter().map(|p| p.loss).fold(f64::MAX, f64::min))
            );
            let mut cold = Auto::new(2, 20, seed);
            priors.iter().take(PRIORS_TO_GUIDE - 1).for_each(|p| cold.inject(p.clone()));
            random += timed(&mut cold);
            assert!(!cold.guided());
        }
        assert!(guided < random * 0.5, "mean loss of the timed points: {guided} guided, {random} random");
        // The best priors are measured again first, best first, then TPE proposes.
        let mut warm = Auto::new(2, 20, 1);
        priors.iter().for_each(|p| warm.inject(p.clone()));
        let mut ranked = priors.clone();
        ranked.sort_by(|a, b| a.loss.total_cmp(&b.loss));
        let first = warm.ask(2);
        assert_eq!(first, vec![ranked[0].x.clone(), ranked[1].x.clone()]);
        warm.tell(&first.iter().map(|x| Evaluated { loss: loss(x), x: x.clone() }).collect::<Vec<_>>());
        let next = warm.ask(2);
        assert_eq!(next[0], ranked[2].x, "the third best, then a proposal");
        assert!(
            !ranked.iter().take(PRIORS_TO_GUIDE).any(|p| p.x == next[1]),
            "{:?} was not a prior",
            next[1]
        );
        assert!(warm.guided());
        assert_eq!(warm.kind(), "auto: timing TPE proposals taught the prior trials");
    }

    #[test]
    fn the_choice_survives_a_snapshot() {
        let mut a = Auto::new(3, 20, 2);
        run(&mut a, EXPENSIVE + Duration::from_millis(20));
        let mut b = Auto::new(3, 20, 9);
        b.restore(&a.snapshot()).unwrap();
        assert_eq!(b.choice(), Some(Choice::Tpe));
        assert_eq!(b.best(), a.best());
        assert!(Auto::new(3, 20, 9).restore(&[7]).is_err());
    }
}
