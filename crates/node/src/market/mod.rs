//! The resource marketplace (`docs/design.md` §22e): capabilities measured by challenges, not
//! declared; jobs matched by a documented score ([`score`]).
//!
//! - As a **provider**, the node answers a capability challenge ([`doin_primitives::market`])
//!   on `market_threads` threads, one challenge at a time (a second waits at most
//!   [`SOLVE_WAIT`], then `429 busy`; at most [`CHALLENGES_PER_MIN`] a minute): the node's scheduler for market work, apart
//!   from the evaluation slots and the inference slot, so it never starves verification.
//! - As a **market**, it admits a staked provider's signed offer (at most [`MAX_OFFERS`]; a
//!   stale or unsigned one is refused), then challenges the provider's API with fresh randomness
//!   of its own: `UNITS` hash chains, timed from its side (cores = the provider's hashes a
//!   second over this node's own single-core rate) and checked by sampling `SAMPLES` of them;
//!   then a memory pass of `market_check_mem_mb` it recomputes in full. A wrong unit or memory
//!   result fails the provider (never matched until a later check passes). Checks repeat every
//!   [`RECHECK`]; a measurement older than [`FRESH`] does not count.
//! - A **task** (`POST /api/market/task`, PoUW's `submit_task(task, fee)`) is matched to the
//!   eligible provider with the highest score; the answer names it, its API, the score's terms
//!   and why each other provider was not chosen. The client then runs the job there (`doin task
//!   submit` sends the inference request and checks its receipt, or hires the provider's search).
//! - A domain configured `optimize_on_hire` is searched only for the evaluations clients buy
//!   ([`hire`]); the market reads those prices at its checks and matches `optimize` tasks by them.
//!
//! Files: this one holds the book and the provider's challenge answer; `checks` the market's
//! measurements, `matching` tasks by score, [`hire`] optimization on hire, [`score`] the score.

mod checks;
pub mod hire;
pub(crate) mod http;
mod matching;
pub mod score;

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use doin_api::market::{MarketApi, MarketError};
use doin_primitives::{
    Address, Amount, BoundedVec, DomainId, Hash, Keypair, Signed,
    market::{CapabilityAnswer, CapabilityAnswerBody, Challenge, MarketOffer, check_answer, memory, unit},
};
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::store::SharedStore;

/// Offers a market keeps at most.
pub const MAX_OFFERS: usize = 1024;
/// Tasks a market remembers (oldest dropped).
pub const MAX_TASKS: usize = 4096;
/// How old an offer's signature may be.
pub const OFFER_AGE: Duration = Duration::from_secs(600);
/// How often a provider is challenged again.
pub const RECHECK: Duration = Duration::from_secs(600);
/// How long a measurement counts.
pub const FRESH: Duration = Duration::from_secs(1800);
/// Work units per challenge.
pub const UNITS: u32 = 16;
/// Units recomputed to check an answer.
pub const SAMPLES: usize = 4;
/// How long a challenge waits for the solving slot.
pub const SOLVE_WAIT: Duration = Duration::from_secs(2);
/// Challenges a node answers a minute at most (from anyone): a stranger cannot keep its market
/// threads busy.
pub const CHALLENGES_PER_MIN: usize = 6;
/// Seconds of one core's work a challenge asks for.
const CHALLENGE_CORE_S: f64 = 1.0;
/// Failed checks in a row after which an offer is dropped (a provider that keeps failing, or
/// points at nothing, stops costing the market a check every [`RECHECK`]).
pub const MAX_FAILURES: u32 = 3;
/// How long a provider may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The window `recent_jobs` counts matches in.
const LOAD_WINDOW_MS: u64 = 600_000;

/// A provider's state at this market.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    /// Not challenged yet (or its offer changed).
    Unchecked,
    /// Its latest challenge passed.
    Passed,
    /// Its latest challenge failed: why.
    Failed(String),
}

/// What a check measured.
#[derive(Debug, Clone, PartialEq)]
struct Measured {
    cores: f64,
    mem_mb: u32,
    hashes_per_s: f64,
    wall_ms: u64,
}

#[derive(Debug)]
struct Entry {
    offer: MarketOffer,
    status: Status,
    measured: Option<Measured>,
    /// When its last check finished (ms), 0 never.
    checked_ms: u64,
    in_flight: bool,
    /// Failed checks in a row.
    failures: u32,
    /// Models it held at its last check.
    cached: BTreeSet<Hash>,
    /// The domains it optimizes on hire, with the price per evaluation (base units), as its
    /// `GET /api/market/hire` said at its last check.
    on_hire: BTreeMap<DomainId, u128>,
    /// When jobs were matched to it (the last [`LOAD_WINDOW_MS`]).
    matched_ms: VecDeque<u64>,
}

impl Entry {
    /// Jobs matched to it in the last [`LOAD_WINDOW_MS`].
    fn recent_jobs(&self, now: u64) -> usize {
        self.matched_ms.iter().filter(|t| now.saturating_sub(**t) < LOAD_WINDOW_MS).count()
    }
}

/// What a check found: the measurement, the models held, the domains on hire and their prices.
type Probe = (Measured, BTreeSet<Hash>, BTreeMap<DomainId, u128>);

#[derive(Debug, Default)]
struct Book {
    offers: BTreeMap<Address, Entry>,
    tasks: VecDeque<Value>,
    next_task: u64,
    checks: u64,
    failed_checks: u64,
}

impl Book {
    /// Records a check of `provider` that ended at `now`: measured, or failed (why); an offer
    /// that failed [`MAX_FAILURES`] checks in a row is dropped.
    fn record(&mut self, provider: &Address, result: Result<Probe, String>, now: u64) {
        self.checks += 1;
        let Some(e) = self.offers.get_mut(provider) else { return };
        e.in_flight = false;
        e.checked_ms = now;
        match result {
            Ok((m, cached, on_hire)) => {
                tracing::info!(%provider, cores = m.cores, mem_mb = m.mem_mb, "market: provider measured");
                e.failures = 0;
                e.status = Status::Passed;
                e.measured = Some(m);
                e.cached = cached;
                e.on_hire = on_hire;
            }
            Err(why) => {
                tracing::warn!(%provider, why, "market: provider failed its challenge");
                e.status = Status::Failed(why);
                e.measured = None;
                e.failures += 1;
                let drop = e.failures >= MAX_FAILURES;
                self.failed_checks += 1;
                if drop {
                    tracing::info!(%provider, "market: offer dropped after {MAX_FAILURES} failed checks");
                    self.offers.remove(provider);
                }
            }
        }
    }
}

/// The marketplace: this node's provider side and its market side.
#[derive(Debug, Clone)]
pub struct Market(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    key: Keypair,
    store: SharedStore,
    threads: usize,
    check_mem_mb: u32,
    solving: Semaphore,
    /// When the challenges of the last minute were answered.
    answered: Mutex<VecDeque<Instant>>,
    book: Mutex<Book>,
    /// This node's single-thread BLAKE3 steps a second (the unit cores are counted in): the
    /// best of its measurements (one before each check), so a busy moment does not inflate
    /// every provider's cores.
    reference_hps: Mutex<f64>,
    /// The domains this node optimizes on hire (set once the node's serving is up).
    hires: std::sync::OnceLock<Arc<hire::Hires>>,
    /// Test builds: answer challenges without doing the work.
    #[cfg(feature = "adversary")]
    fakes: bool,
}

fn now_ms() -> u64 {
    doin_api::now_ms()
}

fn bad(error: &'static str, detail: impl Into<String>) -> MarketError {
    (400, error, detail.into())
}

/// This machine's single-thread rate of challenge steps (hashes a second): the fastest of many
/// short bursts over ~50 ms, so a moment of contention does not lower it (a lowered reference
/// would inflate every provider's cores).
pub fn reference_rate() -> f64 {
    const BURST: u32 = 2048;
    let seed = Hash::of(b"doin/reference-rate");
    let (started, mut best) = (Instant::now(), 0.0f64);
    while started.elapsed() < Duration::from_millis(50) {
        let t = Instant::now();
        let _ = unit(&seed, 0, BURST);
        best = best.max(f64::from(BURST) / t.elapsed().as_secs_f64().max(1e-9));
    }
    best
}

/// Solves `c` on `threads` threads (units spread over them), then the memory pass.
fn solve(c: &Challenge, threads: usize, fake: bool) -> (Vec<Hash>, Hash) {
    let n = c.units as usize;
    let mut units = vec![Hash::ZERO; n];
    let per = n.div_ceil(threads.max(1)).max(1);
    std::thread::scope(|s| {
        for (t, chunk) in units.chunks_mut(per).enumerate() {
            s.spawn(move || {
                for (k, out) in chunk.iter_mut().enumerate() {
                    let i = (t * per + k) as u32;
                    *out = if fake && i > 0 {
                        Hash::of(&i.to_le_bytes())
                    } else {
                        unit(&c.seed, i, c.iterations)
                    };
                }
            });
        }
    });
    (units, memory(&c.seed, c.mem_mb))
}

impl Market {
    /// A marketplace signing with `key`, reading the chain from `store`; `threads` answer
    /// challenges (0: none), `check_mem_mb` is proved of providers.
    pub fn new(key: Keypair, store: SharedStore, threads: usize, check_mem_mb: u32) -> Self {
        Self(Arc::new(Inner {
            key,
            store,
            threads,
            check_mem_mb,
            solving: Semaphore::new(1),
            answered: Mutex::new(VecDeque::new()),
            book: Mutex::new(Book::default()),
            // Measured before the first check (not at start-up).
            reference_hps: Mutex::new(0.0),
            hires: std::sync::OnceLock::new(),
            #[cfg(feature = "adversary")]
            fakes: false,
        }))
    }

    /// The domains this node optimizes on hire (once; a second call is ignored).
    pub fn set_hires(&self, hires: Arc<hire::Hires>) {
        let _ = self.0.hires.set(hires);
    }

    /// Test builds: this provider answers challenges without doing the work.
    #[cfg(feature = "adversary")]
    pub fn faking(self) -> Self {
        match Arc::try_unwrap(self.0) {
            Ok(inner) => Self(Arc::new(Inner { fakes: true, ..inner })),
            Err(shared) => Self(shared),
        }
    }

    /// The single-thread rate, measured once more (the best so far is kept).
    fn reference(&self, measure: bool) -> f64 {
        let fresh = if measure { reference_rate() } else { 0.0 };
        let mut r = self.0.reference_hps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *r = r.max(fresh);
        *r
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.0.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn entry_json(a: &Address, e: &Entry, now: u64) -> Value {
        json!({
            "provider": a.to_string(),
            "api": e.offer.body.api.as_str(),
            "price": e.offer.body.price.0.to_string(),
            "domains": e.offer.body.domains.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "status": match &e.status { Status::Unchecked => "unchecked", Status::Passed => "passed", Status::Failed(_) => "failed" },
            "failure": match &e.status { Status::Failed(why) => Some(why.clone()), _ => None },
            "measured": e.measured.as_ref().map(|m| json!({
                "cores": m.cores, "mem_mb": m.mem_mb, "hashes_per_s": m.hashes_per_s, "wall_ms": m.wall_ms,
            })),
            "checked_s_ago": (e.checked_ms > 0).then(|| now.saturating_sub(e.checked_ms) / 1000),
            "cached_models": e.cached.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "on_hire": e.on_hire.iter().map(|(d, p)| (d.to_string(), Value::from(p.to_string()))).collect::<serde_json::Map<_, _>>(),
            "recent_jobs": e.recent_jobs(now),
        })
    }
}

impl MarketApi for Market {
    fn offer(&self, body: Value) -> Result<Value, MarketError> {
        let offer: MarketOffer =
            serde_json::from_value(body).map_err(|e| bad("bad_offer", format!("not a signed offer: {e}")))?;
        if !offer.verify() {
            return Err((403, "bad_signature", "the offer is not signed by its provider".into()));
        }
        let b = &offer.body;
        let now = now_ms();
        if now.abs_diff(b.issued_ms) > OFFER_AGE.as_millis() as u64 {
            return Err(bad(
                "stale_offer",
                format!("issued {} s from now; at most 600", now.abs_diff(b.issued_ms) / 1000),
            ));
        }
        let api = b.api.as_str();
        let port_ok =
            api.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !port_ok {
            return Err(bad("bad_offer", format!("api {api:?} is not host:port")));
        }
        if self.0.store.lock().tip().stake(&b.provider).is_none_or(|s| s.amount == Amount::ZERO) {
            return Err((403, "not_staked", format!("provider {} has no stake on chain", b.provider)));
        }
        let mut book = self.book();
        let provider = b.provider;
        match book.offers.get_mut(&provider) {
            Some(e) => {
                if b.issued_ms <= e.offer.body.issued_ms {
                    return Err((409, "stale_offer", "an offer at least as new is held".into()));
                }
                if e.offer.body.api != b.api {
                    e.status = Status::Unchecked;
                    e.measured = None;
                }
                e.offer = offer;
            }
            None => {
                if book.offers.len() >= MAX_OFFERS {
                    return Err((503, "market_full", format!("{MAX_OFFERS} offers held")));
                }
                book.offers.insert(
                    provider,
                    Entry {
                        offer,
                        status: Status::Unchecked,
                        measured: None,
                        checked_ms: 0,
                        in_flight: false,
                        failures: 0,
                        cached: BTreeSet::new(),
                        on_hire: BTreeMap::new(),
                        matched_ms: VecDeque::new(),
                    },
                );
            }
        }
        let e = &book.offers[&provider];
        Ok(
            json!({ "provider": provider.to_string(), "status": if e.status == Status::Passed { "passed" } else { "checking" } }),
        )
    }

    fn challenge(&self, body: Value) -> Pin<Box<dyn Future<Output = Result<Value, MarketError>> + Send>> {
        let inner = self.0.clone();
        Box::pin(async move {
            let c: Challenge = serde_json::from_value(body)
                .map_err(|e| bad("bad_challenge", format!("not a challenge: {e}")))?;
            c.check().map_err(|e| bad("bad_challenge", e))?;
            if inner.threads == 0 {
                return Err((
                    503,
                    "no_market_threads",
                    "this node gives the market no threads (market_threads: 0)".into(),
                ));
            }
            {
                let mut answered = inner.answered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                while answered.front().is_some_and(|t| t.elapsed() >= Duration::from_secs(60)) {
                    answered.pop_front();
                }
                if answered.len() >= CHALLENGES_PER_MIN {
                    return Err((
                        429,
                        "challenge_rate",
                        format!("{CHALLENGES_PER_MIN} challenges answered in the last minute; try later"),
                    ));
                }
                answered.push_back(Instant::now());
            }
            let _slot = tokio::time::timeout(SOLVE_WAIT, inner.solving.acquire())
                .await
                .map_err(|_| (429, "busy", "another challenge is being solved".to_string()))?
                .map_err(|_| (503, "stopping", "the node is stopping".to_string()))?;
            #[cfg(feature = "adversary")]
            let fake = inner.fakes;
            #[cfg(not(feature = "adversary"))]
            let fake = false;
            let (threads, key) = (inner.threads, inner.key.clone());
            let answer = tokio::task::spawn_blocking(move || {
                let (units, memory) = solve(&c, threads, fake);
                Signed::sign(
                    CapabilityAnswerBody {
                        provider: key.address(),
                        challenge: c,
                        units: BoundedVec::try_from_vec(units).unwrap_or_default(),
                        memory,
                    },
                    &key,
                )
            })
            .await
            .map_err(|e| (500, "internal", e.to_string()))?;
            serde_json::to_value(answer).map_err(|e| (500, "internal", e.to_string()))
        })
    }

    fn view(&self) -> Value {
        let book = self.book();
        let now = now_ms();
        json!({
            "market": self.0.key.address().to_string(),
            "reference_hashes_per_s": self.reference(false),
            "market_threads": self.0.threads,
            "check_mem_mb": self.0.check_mem_mb,
            "checks": book.checks,
            "failed_checks": book.failed_checks,
            "offers": book.offers.iter().map(|(a, e)| Self::entry_json(a, e, now)).collect::<Vec<_>>(),
            "tasks": book.tasks.iter().rev().take(20).cloned().collect::<Vec<_>>(),
            "weights": {
                "fit": score::WEIGHTS.fit, "price": score::WEIGHTS.price, "reputation": score::WEIGHTS.reputation,
                "load": score::WEIGHTS.load, "cached": score::WEIGHTS.cached,
            },
        })
    }

    fn counts(&self) -> doin_api::market::MarketCounts {
        let book = self.book();
        let mut c = doin_api::market::MarketCounts {
            checks: book.checks,
            failed_checks: book.failed_checks,
            ..Default::default()
        };
        for e in book.offers.values() {
            match e.status {
                Status::Unchecked => c.unchecked += 1,
                Status::Passed => c.passed += 1,
                Status::Failed(_) => c.failed += 1,
            }
        }
        if let Some(h) = self.0.hires.get() {
            (c.hired_bought, c.hired_evaluated) = h.totals();
        }
        c
    }

    fn submit(&self, body: Value) -> Result<Value, MarketError> {
        self.match_task(body)
    }

    fn task(&self, id: u64) -> Option<Value> {
        self.book().tasks.iter().find(|t| t["task_id"] == id).cloned()
    }

    fn hire(
        &self,
        body: Value,
        payment: Option<Vec<u8>>,
    ) -> Pin<Box<dyn Future<Output = Result<Value, MarketError>> + Send>> {
        let hires = self.0.hires.get().cloned();
        Box::pin(async move {
            match hires {
                Some(h) => h.hire(body, payment).await,
                None => Err((
                    404,
                    "not_on_hire",
                    "this node optimizes no domain on hire (optimize_on_hire)".into(),
                )),
            }
        })
    }

    fn hires(&self) -> Value {
        self.0.hires.get().map_or_else(|| json!({ "domains": [], "hires": [] }), |h| h.view())
    }

    fn hire_status(&self, id: u64) -> Option<Value> {
        self.0.hires.get()?.status(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_solved_challenge_checks_and_a_faked_one_fails_its_samples() {
        let key = Keypair::from_seed([9; 32]);
        let c = Challenge { seed: Hash::of(b"s"), units: 16, iterations: 200, mem_mb: 1 };
        let answer = |threads: usize, fake: bool| {
            let (units, memory) = solve(&c, threads, fake);
            let units = BoundedVec::try_from_vec(units).unwrap();
            Signed::sign(
                CapabilityAnswerBody { provider: key.address(), challenge: c.clone(), units, memory },
                &key,
            )
        };
        for threads in [1, 3, 16, 40] {
            check_answer(&answer(threads, false), &key.address(), &c, &(0..16).collect::<Vec<_>>()).unwrap();
        }
        let fake = answer(2, true);
        assert!(check_answer(&fake, &key.address(), &c, &[0]).is_ok(), "the one honest unit");
        assert!(check_answer(&fake, &key.address(), &c, &[0, 5]).is_err());
        assert!(reference_rate() > 1e4);
        assert_eq!(matching::fee_units(&json!(0.5)).unwrap(), 500_000_000);
        assert_eq!(matching::fee_units(&json!(2)).unwrap(), 2_000_000_000);
        assert!(matching::fee_units(&json!(-1)).is_err() && matching::fee_units(&json!("1")).is_err());
    }

    /// A provider that keeps failing is dropped after three failed checks in a row; a pass in
    /// between starts the count again.
    #[test]
    fn an_offer_is_dropped_after_three_failed_checks_in_a_row() {
        let key = Keypair::from_seed([3; 32]);
        let body = doin_primitives::market::MarketOfferBody {
            provider: key.address(),
            api: doin_primitives::BoundedString::new("127.0.0.1:9").unwrap(),
            price: Amount(1),
            domains: BoundedVec::default(),
            issued_ms: 1,
        };
        let entry = Entry {
            offer: Signed::sign(body, &key),
            status: Status::Unchecked,
            measured: None,
            checked_ms: 0,
            in_flight: true,
            failures: 0,
            cached: BTreeSet::new(),
            on_hire: BTreeMap::new(),
            matched_ms: VecDeque::new(),
        };
        let mut book = Book::default();
        book.offers.insert(key.address(), entry);
        let a = key.address();
        let passed = || {
            Ok((
                Measured { cores: 1.0, mem_mb: 64, hashes_per_s: 1e6, wall_ms: 100 },
                BTreeSet::new(),
                BTreeMap::new(),
            ))
        };
        book.record(&a, Err("the work was not done".into()), 10);
        book.record(&a, Err("timeout".into()), 20);
        assert_eq!(book.offers[&a].failures, 2);
        assert!(matches!(book.offers[&a].status, Status::Failed(ref why) if why == "timeout"));
        book.record(&a, passed(), 30);
        let e = &book.offers[&a];
        assert_eq!((e.failures, &e.status, e.checked_ms, e.in_flight), (0, &Status::Passed, 30, false));
        for t in 0..2 {
            book.record(&a, Err("unreachable".into()), 40 + t);
        }
        assert!(book.offers.contains_key(&a), "two in a row: kept");
        book.record(&a, Err("unreachable".into()), 50);
        assert!(!book.offers.contains_key(&a), "three in a row: dropped");
        assert_eq!((book.checks, book.failed_checks), (6, 5));
        // A check of an offer no longer held is counted and changes nothing.
        book.record(&a, passed(), 60);
        assert_eq!(book.checks, 7);
        assert!(book.offers.is_empty());
    }
}
