//! Optimization on hire (`docs/design.md` §22h): a domain configured `optimize_on_hire` is
//! searched by this node's optimizer only for the evaluations clients bought. A hire (`POST
//! /api/market/hire`, what `doin task submit --kind optimize` sends to the provider the market
//! matched) names the domain and a number of evaluations, pays `hire_price` × evaluations
//! through a payment channel update (the same book and log as paid inference), and queues that
//! many candidates for the optimizer loop, which waits when none are left. What the hired search
//! finds is claimed on chain like any other search: the bounty pays verified improvements to this
//! node, the hire pays for the work.
//!
//! Bounds: at most [`MAX_EVALUATIONS`] per hire, at most [`MAX_OUTSTANDING`] bought and not yet
//! evaluated per domain (`429 hire_queue_full`: free hires cannot queue unbounded work), the
//! last [`MAX_HIRES`] hires kept for status.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use doin_api::market::MarketError;
use doin_primitives::Amount;
use serde_json::{Value, json};

use crate::serving::Serving;

/// What the optimizer of a domain on hire says while nothing is bought.
pub const WAITING: &str = doin_api::WAITING_FOR_HIRE;
/// Evaluations one hire buys at most.
pub const MAX_EVALUATIONS: u64 = 1_000_000;
/// Evaluations bought and not yet evaluated, per domain, at most.
pub const MAX_OUTSTANDING: u64 = 4_000_000;
/// Hires kept for status (the oldest dropped).
pub const MAX_HIRES: usize = 1024;

/// The candidates a domain on hire may evaluate: bought, handed to evaluation, evaluated.
#[derive(Debug, Default)]
pub struct Allowance {
    bought: AtomicU64,
    asked: AtomicU64,
    evaluated: AtomicU64,
}

impl Allowance {
    /// Candidates bought and not yet handed to evaluation.
    pub fn remaining(&self) -> u64 {
        self.bought.load(Ordering::Relaxed).saturating_sub(self.asked.load(Ordering::Relaxed))
    }

    /// `n` candidates handed to evaluation.
    pub fn asked(&self, n: u64) {
        self.asked.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` candidates evaluated.
    pub fn evaluated(&self, n: u64) {
        self.evaluated.fetch_add(n, Ordering::Relaxed);
    }

    /// Buys `n` more; returns how many were bought before (where this purchase starts).
    pub fn buy(&self, n: u64) -> u64 {
        self.bought.fetch_add(n, Ordering::Relaxed)
    }

    /// (bought, asked, evaluated).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.bought.load(Ordering::Relaxed),
            self.asked.load(Ordering::Relaxed),
            self.evaluated.load(Ordering::Relaxed),
        )
    }
}

/// One hire.
#[derive(Debug, Clone)]
struct Hire {
    id: u64,
    domain: String,
    evaluations: u64,
    /// Where it starts among the domain's bought candidates.
    start: u64,
    charged: Amount,
    payment: Option<Value>,
    task_id: Option<u64>,
    at_ms: u64,
}

/// A domain this node optimizes on hire.
#[derive(Debug)]
pub struct OnHire {
    /// Its optimizer loop's allowance.
    pub allowance: Arc<Allowance>,
    /// Per evaluation.
    pub price: Amount,
}

/// The request a client sends.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HireRequest {
    domain_id: String,
    evaluations: u64,
    /// The market's task this hire runs (reported back, not checked).
    #[serde(default)]
    task_id: Option<u64>,
}

/// This node's domains on hire and the hires taken.
#[derive(Debug)]
pub struct Hires {
    domains: BTreeMap<String, OnHire>,
    hires: Mutex<(VecDeque<Hire>, u64)>,
    serving: Serving,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Hires {
    /// Hires of `domains`, paid through `serving`'s channel book.
    pub fn new(domains: BTreeMap<String, OnHire>, serving: Serving) -> Self {
        Self { domains, hires: Mutex::new((VecDeque::new(), 1)), serving }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Hire>, u64)> {
        self.hires.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The price per evaluation of each domain on hire (base units): what a market probes.
    pub fn prices(&self) -> BTreeMap<String, u128> {
        self.domains.iter().map(|(d, h)| (d.clone(), h.price.0)).collect()
    }

    /// Takes a hire: checked, paid (`payment`: the channel update's bytes), queued.
    pub async fn hire(&self, body: Value, payment: Option<Vec<u8>>) -> Result<Value, MarketError> {
        let req: HireRequest =
            serde_json::from_value(body).map_err(|e| (400, "bad_hire", format!("not a hire: {e}")))?;
        let on = self.domains.get(&req.domain_id).ok_or_else(|| {
            (
                404,
                "not_on_hire",
                format!("this node does not optimize {:?} on hire (optimize_on_hire)", req.domain_id),
            )
        })?;
        if !(1..=MAX_EVALUATIONS).contains(&req.evaluations) {
            return Err((422, "bad_evaluations", format!("evaluations must be in 1..={MAX_EVALUATIONS}")));
        }
        let (bought, _, evaluated) = on.allowance.counts();
        if bought.saturating_sub(evaluated).saturating_add(req.evaluations) > MAX_OUTSTANDING {
            return Err((
                429,
                "hire_queue_full",
                format!(
                    "{} evaluations of {} are bought and not yet run (at most {MAX_OUTSTANDING})",
                    bought - evaluated,
                    req.domain_id
                ),
            ));
        }
        let price = on.price.0.checked_mul(u128::from(req.evaluations)).map(Amount).ok_or((
            422,
            "bad_evaluations",
            "the price overflows".to_string(),
        ))?;
        let paid = self.serving.charge(payment, price).await.map_err(|e| {
            (
                402,
                e.error,
                format!(
                    "{} (the hire costs {} base units: {} per evaluation; pay to {})",
                    e.detail, price.0, on.price.0, e.payee
                ),
            )
        })?;
        let start = on.allowance.buy(req.evaluations);
        let hire = Hire {
            id: 0,
            domain: req.domain_id,
            evaluations: req.evaluations,
            start,
            charged: price,
            payment: paid,
            task_id: req.task_id,
            at_ms: now_ms(),
        };
        let mut guard = self.lock();
        let (hires, next) = &mut *guard;
        let hire = Hire { id: *next, ..hire };
        *next += 1;
        tracing::info!(hire = hire.id, domain = %hire.domain, evaluations = hire.evaluations, charged = price.0, "hired");
        hires.push_back(hire.clone());
        while hires.len() > MAX_HIRES {
            hires.pop_front();
        }
        drop(guard);
        Ok(self.hire_json(&hire))
    }

    fn hire_json(&self, h: &Hire) -> Value {
        let (_, asked, evaluated) = self.domains.get(&h.domain).map_or((0, 0, 0), |d| d.allowance.counts());
        let done = evaluated.saturating_sub(h.start).min(h.evaluations);
        let state = if done == h.evaluations {
            "done"
        } else if asked > h.start {
            "running"
        } else {
            "queued"
        };
        json!({
            "hire_id": h.id,
            "domain_id": h.domain,
            "evaluations": h.evaluations,
            "evaluated": done,
            "state": state,
            "queued_before": h.start.saturating_sub(evaluated),
            "charged": h.charged.0.to_string(),
            "paid": h.payment,
            "task_id": h.task_id,
            "at_ms": h.at_ms,
        })
    }

    /// One hire.
    pub fn status(&self, id: u64) -> Option<Value> {
        let hire = self.lock().0.iter().find(|h| h.id == id).cloned()?;
        Some(self.hire_json(&hire))
    }

    /// The domains on hire with their counts, and the latest hires.
    pub fn view(&self) -> Value {
        let hires: Vec<Hire> = self.lock().0.iter().rev().take(32).cloned().collect();
        json!({
            "domains": self.domains.iter().map(|(d, h)| {
                let (bought, asked, evaluated) = h.allowance.counts();
                json!({
                    "domain_id": d,
                    "price_per_evaluation": h.price.0.to_string(),
                    "bought": bought,
                    "evaluated": evaluated,
                    "waiting": bought == asked,
                })
            }).collect::<Vec<_>>(),
            "hires": hires.iter().map(|h| self.hire_json(h)).collect::<Vec<_>>(),
        })
    }
}
