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
//!
//! What is owed survives a restart: `DATA_DIR/hires.json` (written durably at each hire and
//! every few seconds while evaluations run) holds each domain's bought and evaluated counts and
//! the hires; a restarted node runs what was bought and not evaluated (a batch in flight at the
//! stop is run again: the client gets at least what it paid for).

use std::{
    collections::{BTreeMap, VecDeque},
    path::{Path, PathBuf},
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

    /// Resumes from saved counts: `bought`, of which `evaluated` were run (none in flight).
    pub fn restore(&self, bought: u64, evaluated: u64) {
        let evaluated = evaluated.min(bought);
        self.bought.store(bought, Ordering::Relaxed);
        self.asked.store(evaluated, Ordering::Relaxed);
        self.evaluated.store(evaluated, Ordering::Relaxed);
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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Hire {
    id: u64,
    domain: String,
    evaluations: u64,
    /// Where it starts among the domain's bought candidates.
    start: u64,
    /// Base units.
    #[serde(with = "units")]
    charged: Amount,
    payment: Option<Value>,
    task_id: Option<u64>,
    at_ms: u64,
}

/// Base units as a decimal string (JSON numbers lose precision past 2^53).
mod units {
    use doin_primitives::Amount;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(a: &Amount, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&a.0.to_string())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        String::deserialize(d)?.parse().map(Amount).map_err(serde::de::Error::custom)
    }
}

/// `hires.json`: each domain's (bought, evaluated), the hires kept, the next id.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    domains: BTreeMap<String, (u64, u64)>,
    hires: VecDeque<Hire>,
    next: u64,
}

/// A domain this node optimizes on hire.
#[derive(Debug)]
pub struct OnHire {
    /// Its optimizer loop's allowance.
    pub allowance: Arc<Allowance>,
    /// Per evaluation.
    pub price: Amount,
    /// Its optimizer loop's pause flag: set while the node waits for peers on the domain's
    /// topic or has left its quorums (unable to evaluate it), when a hire would not run.
    pub paused: Arc<std::sync::atomic::AtomicBool>,
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

/// This node's domains on hire and the hires taken: what is bought, run and owed, kept in
/// `hires.json`.
#[derive(Debug)]
struct Ledger {
    domains: BTreeMap<String, OnHire>,
    hires: Mutex<(VecDeque<Hire>, u64)>,
    path: PathBuf,
    /// Held while saving: one writer of the file (and its temporary) at a time, each writing
    /// the state as it is when it starts.
    saving: Mutex<()>,
}

/// Hires taken over HTTP: checked, paid through the node's channel book, recorded.
#[derive(Debug)]
pub struct Hires {
    ledger: Arc<Ledger>,
    serving: Serving,
}

/// How often the counts are saved while they change.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Ledger {
    /// The ledger of `domains`, resumed from `data_dir`'s `hires.json` (an unreadable one is
    /// kept aside as `hires.json.unreadable` and reported).
    fn open(domains: BTreeMap<String, OnHire>, data_dir: &Path) -> Self {
        let path = data_dir.join("hires.json");
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Saved>(&bytes).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "hires.json does not parse; kept aside, hires start empty");
                let _ = std::fs::rename(&path, path.with_extension("json.unreadable"));
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        for (d, on) in &domains {
            if let Some((bought, evaluated)) = saved.domains.get(d) {
                on.allowance.restore(*bought, *evaluated);
                if bought > evaluated {
                    tracing::info!(domain = %d, owed = bought - evaluated, "resuming hired evaluations");
                }
            }
        }
        Self { domains, hires: Mutex::new((saved.hires, saved.next.max(1))), path, saving: Mutex::new(()) }
    }

    /// Saves the counts and hires now.
    fn save(&self) {
        let _one = self.saving.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let saved = {
            let guard = self.lock();
            Saved {
                domains: self
                    .domains
                    .iter()
                    .map(|(d, h)| {
                        let (bought, _, evaluated) = h.allowance.counts();
                        (d.clone(), (bought, evaluated))
                    })
                    .collect(),
                hires: guard.0.clone(),
                next: guard.1,
            }
        };
        let bytes = serde_json::to_vec(&saved).unwrap_or_default();
        if let Err(e) = crate::files::write_durably(&self.path, &bytes) {
            tracing::error!(path = %self.path.display(), error = %e, "cannot save hires.json");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Hire>, u64)> {
        self.hires.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks a hire before anything is charged: the domain on hire here, the evaluations in
    /// range, its loop searching, room in its queue; returns the domain and the hire's price.
    fn admit(&self, req: &HireRequest) -> Result<(&OnHire, Amount), MarketError> {
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
        if on.paused.load(Ordering::Relaxed) {
            return Err((
                503,
                "not_searching",
                format!(
                    "the optimizer of {} is paused (waiting for peers on its topic, or this node left its quorums): nothing is charged; try later",
                    req.domain_id
                ),
            ));
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
        Ok((on, price))
    }

    /// Records `hire` under the next id (the oldest beyond [`MAX_HIRES`] dropped) and saves.
    fn record(&self, hire: Hire) -> Hire {
        let mut guard = self.lock();
        let (hires, next) = &mut *guard;
        let hire = Hire { id: *next, ..hire };
        *next += 1;
        hires.push_back(hire.clone());
        while hires.len() > MAX_HIRES {
            hires.pop_front();
        }
        drop(guard);
        self.save();
        hire
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
    fn status(&self, id: u64) -> Option<Value> {
        let hire = self.lock().0.iter().find(|h| h.id == id).cloned()?;
        Some(self.hire_json(&hire))
    }

    /// The domains on hire with their counts, and the latest hires.
    fn view(&self) -> Value {
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

impl Hires {
    /// Hires of `domains`, paid through `serving`'s channel book, resumed from `data_dir`'s
    /// `hires.json`.
    pub fn new(domains: BTreeMap<String, OnHire>, serving: Serving, data_dir: &Path) -> Self {
        Self { ledger: Arc::new(Ledger::open(domains, data_dir)), serving }
    }

    /// Saves the counts every [`SAVE_EVERY`] while they change, until the node stops.
    pub fn keep_saved(&self) {
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                tokio::time::sleep(SAVE_EVERY).await;
                let now: Vec<(u64, u64, u64)> =
                    ledger.domains.values().map(|h| h.allowance.counts()).collect();
                if last.as_ref() != Some(&now) {
                    ledger.save();
                    last = Some(now);
                }
            }
        });
    }

    /// Takes a hire: checked, paid (`payment`: the channel update's bytes), queued.
    pub async fn hire(&self, body: Value, payment: Option<Vec<u8>>) -> Result<Value, MarketError> {
        let req: HireRequest =
            serde_json::from_value(body).map_err(|e| (400, "bad_hire", format!("not a hire: {e}")))?;
        let (on, price) = self.ledger.admit(&req)?;
        let paid = self.serving.charge(payment, price).await.map_err(|e| {
            let cost = format!(
                "the hire costs {} base units ({} per evaluation): send a channel update paying {} in {}",
                price.0,
                on.price.0,
                e.payee,
                doin_api::inference::PAYMENT_HEADER
            );
            let status = if e.error == "bad_payment" { 400 } else { 402 };
            match e.error {
                "payment_required" => (status, e.error, cost),
                _ => (status, e.error, format!("{}; {cost}", e.detail)),
            }
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
        let hire = self.ledger.record(hire);
        tracing::info!(hire = hire.id, domain = %hire.domain, evaluations = hire.evaluations, charged = price.0, "hired");
        Ok(self.ledger.hire_json(&hire))
    }

    /// One hire.
    pub fn status(&self, id: u64) -> Option<Value> {
        self.ledger.status(id)
    }

    /// Evaluations bought and evaluated, all domains on hire together.
    pub fn totals(&self) -> (u64, u64) {
        self.ledger.domains.values().fold((0, 0), |(b, e), h| {
            let (bought, _, evaluated) = h.allowance.counts();
            (b + bought, e + evaluated)
        })
    }

    /// The domains on hire with their counts, and the latest hires.
    pub fn view(&self) -> Value {
        self.ledger.view()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(dir: &Path, allowance: &Arc<Allowance>) -> Ledger {
        let on = OnHire { allowance: allowance.clone(), price: Amount(1_000), paused: Arc::default() };
        Ledger::open(BTreeMap::from([("quadratic".to_owned(), on)]), dir)
    }

    fn hire(evaluations: u64, start: u64) -> Hire {
        Hire {
            id: 0,
            domain: "quadratic".into(),
            evaluations,
            start,
            charged: Amount(u128::from(evaluations) * 1_000),
            payment: None,
            task_id: Some(7),
            at_ms: 1,
        }
    }

    /// Hires refused before anything is charged, each by name.
    #[test]
    fn a_hire_is_admitted_only_for_a_searching_domain_on_hire_with_room() {
        let dir = tempfile::tempdir().unwrap();
        let allowance = Arc::new(Allowance::default());
        let l = ledger(dir.path(), &allowance);
        let req = |domain: &str, evaluations: u64| HireRequest {
            domain_id: domain.into(),
            evaluations,
            task_id: None,
        };
        let refused = |r: Result<(&OnHire, Amount), MarketError>| r.map(|_| ()).unwrap_err();
        assert_eq!(l.admit(&req("quadratic", 10)).unwrap().1, Amount(10_000));
        assert_eq!(refused(l.admit(&req("other", 10))).1, "not_on_hire");
        assert_eq!(refused(l.admit(&req("quadratic", 0))).1, "bad_evaluations");
        assert_eq!(refused(l.admit(&req("quadratic", MAX_EVALUATIONS + 1))).1, "bad_evaluations");
        l.domains["quadratic"].paused.store(true, Ordering::Relaxed);
        let (status, error, _) = refused(l.admit(&req("quadratic", 10)));
        assert_eq!((status, error), (503, "not_searching"));
        l.domains["quadratic"].paused.store(false, Ordering::Relaxed);
        // Four million bought and not run: no room for one more.
        allowance.buy(MAX_OUTSTANDING);
        assert_eq!(refused(l.admit(&req("quadratic", 1))).0, 429);
        allowance.asked(10);
        allowance.evaluated(10);
        assert!(l.admit(&req("quadratic", 10)).is_ok(), "room again once ten ran");
        assert_eq!(refused(l.admit(&req("quadratic", 11))).1, "hire_queue_full");
    }

    /// What was bought and not run survives a restart: a node restarted on its data directory
    /// runs the evaluations it was paid for, under the same hire ids; an unreadable file is kept
    /// aside, not overwritten.
    #[test]
    fn hires_owed_survive_a_restart_and_an_unreadable_ledger_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let allowance = Arc::new(Allowance::default());
        let before = ledger(dir.path(), &allowance);
        let first = before.record(hire(100, allowance.buy(100)));
        let second = before.record(hire(50, allowance.buy(50)));
        assert_eq!((first.id, second.id), (1, 2));
        allowance.asked(80);
        allowance.evaluated(70);
        before.save();
        assert_eq!(before.status(2).unwrap()["state"], "queued");
        drop(before);

        let after_allowance = Arc::new(Allowance::default());
        let after = ledger(dir.path(), &after_allowance);
        // The 10 in flight at the stop are run again: 80 owed, none asked yet.
        assert_eq!(after_allowance.counts(), (150, 70, 70));
        assert_eq!(after_allowance.remaining(), 80);
        let h = after.status(1).unwrap();
        assert_eq!(
            (&h["evaluated"], &h["state"], &h["charged"], &h["task_id"]),
            (&70.into(), &"running".into(), &"100000".into(), &7.into())
        );
        assert_eq!(after.record(hire(1, after_allowance.buy(1))).id, 3, "ids go on");

        std::fs::write(dir.path().join("hires.json"), b"{ not json").unwrap();
        let fresh = Arc::new(Allowance::default());
        let reset = ledger(dir.path(), &fresh);
        assert_eq!(fresh.counts(), (0, 0, 0));
        assert!(reset.status(1).is_none());
        assert_eq!(std::fs::read(dir.path().join("hires.json.unreadable")).unwrap(), b"{ not json");
    }
}
