//! The resource marketplace's HTTP edge (`docs/design.md` §22e). Every node is both:
//!
//! - a **provider**: `POST /api/market/challenge` answers a capability challenge (a timed,
//!   sample-checkable benchmark) with its node key's signature, one at a time on the threads its
//!   operator gives the market (`market_threads`);
//! - a **market**: `POST /api/market/offer` takes a staked provider's signed offer and admits it
//!   only once a challenge it sent measured the provider's cores and memory; `POST
//!   /api/market/task` (PoUW's `submit_task(task, fee)`) matches a job to the admitted providers
//!   by the documented score and answers with the provider to run it on; `GET /api/market` shows
//!   every offer with what was measured; `GET /api/market/task/{id}` one match;
//! - and, for domains it optimizes on hire, a **hired optimizer**: `POST /api/market/hire` buys
//!   evaluations of its search (paid like inference, `x-doin-payment`), `GET /api/market/hire`
//!   lists the domains on hire with their prices (what a market probes) and the latest hires,
//!   `GET /api/market/hire/{id}` one hire's progress.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::Value;

use crate::{ApiError, ApiState};

/// A refused market request: status, error name, why.
pub type MarketError = (u16, &'static str, String);

/// A market's counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MarketCounts {
    /// Offers not checked yet.
    pub unchecked: u64,
    /// Offers whose provider passed its capability check.
    pub passed: u64,
    /// Offers whose provider failed it.
    pub failed: u64,
    /// Capability checks run.
    pub checks: u64,
    /// Checks a provider failed.
    pub failed_checks: u64,
    /// Evaluations of this node's search bought by hires (all domains on hire).
    pub hired_bought: u64,
    /// Of those, evaluated.
    pub hired_evaluated: u64,
}

/// What the node's marketplace offers the HTTP edge.
pub trait MarketApi: Send + Sync + std::fmt::Debug {
    /// Admits a signed offer (JSON of a `MarketOffer`).
    fn offer(&self, body: Value) -> Result<Value, MarketError>;
    /// Answers a challenge (JSON of a `Challenge`) with this node's signed answer.
    fn challenge(
        &self,
        body: Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, MarketError>> + Send>>;
    /// Every offer, what was measured, the tasks matched.
    fn view(&self) -> Value;
    /// What `/metrics` shows, without building the view: offers by check status (unchecked,
    /// passed, failed), checks run, checks failed.
    fn counts(&self) -> MarketCounts;
    /// Matches a task to a provider.
    fn submit(&self, body: Value) -> Result<Value, MarketError>;
    /// A matched task.
    fn task(&self, id: u64) -> Option<Value>;
    /// Takes a hire of this node's optimizer (JSON `{domain_id, evaluations, task_id?}`), paid by
    /// `payment` (a channel update's bytes) when the domain has a price.
    fn hire(
        &self,
        body: Value,
        payment: Option<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, MarketError>> + Send>>;
    /// The domains this node optimizes on hire, with prices and counts, and the latest hires.
    fn hires(&self) -> Value;
    /// One hire.
    fn hire_status(&self, id: u64) -> Option<Value>;
}

fn reply(r: Result<Value, MarketError>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err((status, error, detail)) => {
            ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), error, detail)
                .into_response()
        }
    }
}

fn market(s: &ApiState) -> Result<&std::sync::Arc<dyn MarketApi>, MarketError> {
    s.market.as_ref().ok_or((503, "no_market", "this node runs no marketplace".into()))
}

fn body(raw: Result<Json<Value>, axum::extract::rejection::JsonRejection>) -> Result<Value, MarketError> {
    raw.map(|Json(v)| v).map_err(|e| (400, "bad_json", e.body_text()))
}

/// `POST /api/market/offer`.
pub(crate) async fn offer(
    State(s): State<ApiState>,
    raw: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    reply(market(&s).and_then(|m| m.offer(body(raw)?)))
}

/// `POST /api/market/challenge`.
pub(crate) async fn challenge(
    State(s): State<ApiState>,
    raw: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let future = match market(&s).and_then(|m| Ok(m.challenge(body(raw)?))) {
        Ok(f) => f,
        Err(e) => return reply(Err(e)),
    };
    reply(future.await)
}

/// `GET /api/market`.
pub(crate) async fn view(State(s): State<ApiState>) -> Response {
    reply(market(&s).map(|m| m.view()))
}

/// `POST /api/market/task`.
pub(crate) async fn submit(
    State(s): State<ApiState>,
    raw: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    reply(market(&s).and_then(|m| m.submit(body(raw)?)))
}

/// `GET /api/market/task/{id}`.
pub(crate) async fn task(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let found = market(&s).and_then(|m| {
        let n: u64 = id.parse().map_err(|_| (400, "bad_id", format!("task id {id:?} is not a number")))?;
        m.task(n).ok_or((404, "not_found", format!("no task {n}")))
    });
    reply(found)
}

/// `POST /api/market/hire`.
pub(crate) async fn hire(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    raw: Result<Json<Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let payment = match headers.get(crate::inference::PAYMENT_HEADER) {
        None => None,
        Some(h) => match h.to_str().ok().and_then(|t| hex::decode(t.trim()).ok()) {
            Some(bytes) => Some(bytes),
            None => {
                return reply(Err((
                    400,
                    "bad_payment",
                    format!("{} is not hex", crate::inference::PAYMENT_HEADER),
                )));
            }
        },
    };
    let future = match market(&s).and_then(|m| Ok(m.hire(body(raw)?, payment))) {
        Ok(f) => f,
        Err(e) => return reply(Err(e)),
    };
    reply(future.await)
}

/// `GET /api/market/hire`.
pub(crate) async fn hires(State(s): State<ApiState>) -> Response {
    reply(market(&s).map(|m| m.hires()))
}

/// `GET /api/market/hire/{id}`.
pub(crate) async fn hire_status(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let found = market(&s).and_then(|m| {
        let n: u64 = id.parse().map_err(|_| (400, "bad_id", format!("hire id {id:?} is not a number")))?;
        m.hire_status(n).ok_or((404, "not_found", format!("no hire {n}")))
    });
    reply(found)
}
