//! `POST /inference` and `GET /inference/{task_id}`: inference from the current champion.
//!
//! - **Served** (a domain this node serves, [`InferenceApi::serves`]): the node runs the
//!   champion's verified model itself and answers `200` at once with the outputs, the optimae and
//!   artifact they came from, the quorum's measured quality of that artifact, and a receipt the
//!   node signs over the exact inputs and outputs. No API key: anyone may ask (the per-IP rate
//!   limit applies). Requests wait in the node's inference queue (the operator's, with the API
//!   key, first, then paid, then free) at most `expires_in_ms` (default 5 s) before they are
//!   answered `503 expired`; requests for one model that wait together run as one batch. With
//!   `"async": true` the answer is `202 {task_id}` at once and the result is read at
//!   `GET /inference/{task_id}` (default expiry 60 s, result kept 10 min).
//! - **Queued** (other domains, with the node's API key): the request becomes an `Inference`
//!   task in the pull queue carrying the champion's parameters and the request's inputs; a
//!   worker (the node's external evaluator, for example a GPU box running the domain's plugin)
//!   claims it after any verification work and completes it with a `result`, which the requester
//!   reads at `GET /inference/{task_id}`. That answer is the worker's word, not checked.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use doin_primitives::domain::ParamKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, ApiResult, ApiState, check_key, store, tasks};

/// Largest `inputs` accepted, bytes of JSON.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;
/// Input rows of numbers.
type Rows = Vec<Vec<f64>>;

/// Most rows one served request may carry.
pub const MAX_ROWS: usize = 1024;

/// Why a served answer failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeError {
    /// The champion has no model whose quality a quorum measured.
    NoModel(String),
    /// The model could not be fetched or run here now.
    Unavailable(String),
    /// The queue is full.
    Busy(String),
    /// The request waited past its expiry for the inference slot.
    Expired(String),
    /// The inputs do not fit the model.
    BadInput(String),
    /// The payment was missing or refused (`402`, or `400 bad_payment`).
    Payment(Box<PaymentRefused>),
}

/// Why a payment was refused, and how to pay instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRefused {
    /// `payment_required`, `bad_payment`, `wrong_channel`, `stale_payment` or `underpaid`.
    pub error: &'static str,
    /// Why.
    pub detail: String,
    /// The price per request, base units.
    pub price: u128,
    /// The serving node's address (the payee to open a channel to).
    pub payee: String,
    /// For an update of a channel paying this node: the best update held (nonce, total), so a
    /// payer that lost its record can go on from it.
    pub held: Option<(u64, u128)>,
}

impl ServeError {
    /// The HTTP status, the error's name and why.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ServeError::NoModel(d) => (StatusCode::CONFLICT, "no_model", d.clone()),
            ServeError::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", d.clone()),
            ServeError::Busy(d) => (StatusCode::SERVICE_UNAVAILABLE, "busy", d.clone()),
            ServeError::Expired(d) => (StatusCode::SERVICE_UNAVAILABLE, "expired", d.clone()),
            ServeError::BadInput(d) => (StatusCode::UNPROCESSABLE_ENTITY, "bad_inputs", d.clone()),
            ServeError::Payment(p) => {
                let PaymentRefused { error, detail, .. } = p.as_ref();
                let status = if *error == "bad_payment" {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::PAYMENT_REQUIRED
                };
                (status, error, detail.clone())
            }
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        let (status, error, detail) = e.parts();
        ApiError::new(status, error, detail)
    }
}

impl ServeError {
    /// The HTTP response: a payment error carries the price and the payee besides the error.
    fn into_response(self) -> Response {
        let extra = match &self {
            ServeError::Payment(p) => Some(json!({
                "price": p.price.to_string(),
                "payee": p.payee,
                "held": p.held.map(|(n, t)| json!({ "nonce": n, "paid_total": t.to_string() })),
            })),
            _ => None,
        };
        let e = ApiError::from(self);
        match extra {
            Some(extra) => {
                let mut body = json!({ "error": e.error, "detail": e.detail });
                body["price"] = extra["price"].clone();
                body["payee"] = extra["payee"].clone();
                if !extra["held"].is_null() {
                    body["held"] = extra["held"].clone();
                }
                (e.status, Json(body)).into_response()
            }
            None => e.into_response(),
        }
    }
}

/// The header a paid request carries its channel update in (hex of the signed update's
/// canonical encoding).
pub const PAYMENT_HEADER: &str = "x-doin-payment";

/// How long a request waits for the inference slot unless it says (`expires_in_ms`).
pub const SYNC_EXPIRY: Duration = Duration::from_secs(5);
/// The same for an asynchronous job.
pub const ASYNC_EXPIRY: Duration = Duration::from_secs(60);
/// The longest expiry a request may ask for.
pub const MAX_EXPIRY: Duration = Duration::from_secs(600);

/// One request for a served domain.
#[derive(Debug, Clone)]
pub struct Ask {
    /// The domain.
    pub domain: String,
    /// The input rows.
    pub rows: Vec<Vec<f64>>,
    /// The bytes of a signed channel update, when the domain charges.
    pub payment: Option<Vec<u8>>,
    /// The request carried the node's API key: its operator's requests go first.
    pub operator: bool,
    /// How long it may wait for the inference slot before it is answered `expired`.
    pub expires_in: Duration,
}

/// A boxed future of the inference server.
pub type Pending<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// What the node's inference server offers the HTTP edge.
pub trait InferenceApi: Send + Sync + std::fmt::Debug {
    /// Whether this node answers `domain` itself.
    fn serves(&self, domain: &str) -> bool;
    /// Answers the request with the domain's champion model, paid by its payment when the
    /// domain charges: `{outputs, predictions?, optimae, artifact, model_quality, height,
    /// receipt}`.
    fn answer(&self, ask: Ask) -> Pending<Result<Value, ServeError>>;
    /// Queues the request as an asynchronous job (its payment checked now, taken when
    /// answered): `{task_id, status}`; the answer is read at [`InferenceApi::job`].
    fn submit(&self, ask: Ask) -> Pending<Result<Value, ServeError>>;
    /// An asynchronous job's `{task_id, status, result, error?, detail?}`.
    fn job(&self, task_id: &str) -> Option<Value>;
    /// The price per request of each domain served (base units, as strings).
    fn prices(&self) -> Value;
    /// The queue's counters: `waiting`, `batches`, `requests`, `expired`, `refused`, `jobs`,
    /// `jobs_pending`.
    fn queue(&self) -> Value;
    /// The channels this node is paid through and what they paid (`GET /api/channels`).
    fn channels(&self) -> Value;
    /// Closes `channel` as its payee with the best update held (`POST /api/channel/{id}/close`).
    fn close_channel(&self, channel: &str) -> Result<Value, String>;
    /// The model artifact `hash`, if this node holds it (`GET /api/model/{artifact}`).
    fn model(&self, hash: &doin_primitives::Hash) -> Option<std::sync::Arc<Vec<u8>>>;
}

/// `GET /api/model/{artifact}`: the bytes of a model this node holds (the champions it serves,
/// the models its quorum seats measured), for a client to run or check answers itself.
pub(crate) async fn model(State(s): State<ApiState>, Path(artifact): Path<String>) -> Response {
    let hash = match crate::views::parse_hash(&artifact, "artifact") {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match s.inference.as_ref().and_then(|i| i.model(&hash)) {
        Some(bytes) => {
            ([(axum::http::header::CONTENT_TYPE, "application/octet-stream")], bytes.as_ref().clone())
                .into_response()
        }
        None => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_model", format!("this node holds no model {hash}"))
                .into_response()
        }
    }
}

/// The request's inputs as rows of numbers: an array of rows, or one row.
fn rows_of(inputs: &Value) -> Result<Vec<Vec<f64>>, ApiError> {
    let bad = |d: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_inputs", d);
    let row = |v: &Value, i: usize| -> Result<Vec<f64>, ApiError> {
        v.as_array()
            .ok_or_else(|| bad(format!("inputs[{i}] is not an array of numbers")))?
            .iter()
            .enumerate()
            .map(|(j, x)| x.as_f64().ok_or_else(|| bad(format!("inputs[{i}][{j}] is not a number"))))
            .collect()
    };
    let all = inputs.as_array().ok_or_else(|| bad("inputs must be an array (one row, or rows)".into()))?;
    if all.is_empty() {
        return Err(bad("inputs is empty".into()));
    }
    let rows = if all.iter().all(Value::is_number) {
        vec![row(inputs, 0)?]
    } else {
        all.iter().enumerate().map(|(i, r)| row(r, i)).collect::<Result<Vec<_>, _>>()?
    };
    if rows.len() > MAX_ROWS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "inputs_too_large",
            format!("{} rows, at most {MAX_ROWS}", rows.len()),
        ));
    }
    Ok(rows)
}

/// The request.
#[derive(Debug, Deserialize)]
pub(crate) struct Request {
    domain_id: String,
    #[serde(default)]
    inputs: Value,
    /// Served domains: answer `202 {task_id}` at once and keep the answer for
    /// `GET /inference/{task_id}`.
    #[serde(default, rename = "async")]
    run_async: bool,
    /// Served domains: how long the request may wait for the inference slot.
    #[serde(default)]
    expires_in_ms: Option<u64>,
}

/// On-chain integer parameters in the domain's units (nano-units for reals, indices for
/// categories).
fn in_units(kind: &ParamKind, v: i64) -> f64 {
    match kind {
        ParamKind::Continuous { .. } | ParamKind::LogContinuous { .. } => {
            v as f64 / doin_primitives::FIXED_ONE as f64
        }
        _ => v as f64,
    }
}

/// Refuses inputs over [`MAX_INPUT_BYTES`] of JSON.
fn check_size(inputs: &Value) -> Result<(), ApiError> {
    if serde_json::to_vec(inputs).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_INPUT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "inputs_too_large",
            format!("inputs over {MAX_INPUT_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// The domain on chain and its champion: `404 unknown_domain`, `409 no_champion`.
fn champion_of<'a>(
    domain: Option<&'a doin_consensus::state::DomainState>,
    name: &str,
) -> Result<(&'a doin_consensus::state::DomainState, &'a doin_consensus::state::Champion), ApiError> {
    let domain = domain.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown_domain", format!("no domain {name} on chain"))
    })?;
    let champion = domain.champion.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::CONFLICT, "no_champion", format!("domain {name} has no champion yet"))
    })?;
    Ok((domain, champion))
}

/// `POST /inference` → `200 {outputs, …, receipt}` (served) or `202 {task_id, status, champion}`
/// (queued).
pub(crate) async fn submit(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Request>, axum::extract::rejection::JsonRejection>,
) -> Response {
    // A domain this node serves is answered here, with no API key.
    if let Ok(Json(req)) = &body
        && let Some(server) = s.inference.clone().filter(|i| i.serves(&req.domain_id))
    {
        let checked = (|| -> Result<(Rows, Option<Vec<u8>>), ApiError> {
            check_size(&req.inputs)?;
            if let Some(ms) = req.expires_in_ms
                && !(1..=MAX_EXPIRY.as_millis() as u64).contains(&ms)
            {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("expires_in_ms {ms} is not between 1 and {}", MAX_EXPIRY.as_millis()),
                ));
            }
            let rows = rows_of(&req.inputs)?;
            let payment = match headers.get(PAYMENT_HEADER) {
                None => None,
                Some(h) => {
                    Some(h.to_str().ok().and_then(|t| hex::decode(t.trim()).ok()).ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_payment",
                            format!("{PAYMENT_HEADER} is not hex"),
                        )
                    })?)
                }
            };
            let st = store(&s);
            let state = st.tip();
            let id = doin_primitives::DomainId::new(req.domain_id.as_str())
                .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_domain", "not a domain id"))?;
            // The server finds the model itself (a champion's, or a federated job's verified
            // model): `409 no_model` when there is none.
            if state.domain(&id).is_none() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "unknown_domain",
                    format!("no domain {} on chain", req.domain_id),
                ));
            }
            Ok((rows, payment))
        })();
        let (rows, payment) = match checked {
            Ok(x) => x,
            Err(e) => return e.into_response(),
        };
        let default = if req.run_async { ASYNC_EXPIRY } else { SYNC_EXPIRY };
        let ask = Ask {
            domain: req.domain_id.clone(),
            rows,
            payment,
            operator: headers.contains_key("x-api-key") && check_key(&s, &headers).is_ok(),
            expires_in: req.expires_in_ms.map_or(default, Duration::from_millis),
        };
        return match req.run_async {
            false => match server.answer(ask).await {
                Ok(v) => (StatusCode::OK, Json(v)).into_response(),
                Err(e) => e.into_response(),
            },
            true => match server.submit(ask).await {
                Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
                Err(e) => e.into_response(),
            },
        };
    }
    let result = (|| -> Result<Value, ApiError> {
        check_key(&s, &headers)?;
        let Json(req) =
            body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        check_size(&req.inputs)?;
        let st = store(&s);
        let state = st.tip();
        let id = doin_primitives::DomainId::new(req.domain_id.as_str())
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_domain", "not a domain id"))?;
        let (domain, champion) = champion_of(state.domain(&id), &req.domain_id)?;
        let (block, index) = st
            .certificate_location(&champion.commit)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal("the champion's certificate is not indexed"))?;
        let block = st
            .block(&block)
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::internal("block missing"))?;
        let cert = block
            .body
            .certificates
            .get(index as usize)
            .ok_or_else(|| ApiError::internal("certificate missing"))?;
        let params: Vec<f64> = cert
            .reveal
            .body
            .params
            .iter()
            .zip(domain.spec.params.iter())
            .map(|(v, p)| in_units(&p.kind, *v))
            .collect();
        let task_id = format!("inference-{}-{}", champion.commit, crate::now_ms());
        let task = tasks::Task {
            task_id: task_id.clone(),
            kind: tasks::TaskKind::Inference,
            domain: req.domain_id.clone(),
            commit: champion.commit.to_string(),
            round: 0,
            params,
            seed: String::new(),
            limits: serde_json::to_value(domain.spec.limits).unwrap_or(Value::Null),
            lease_s: None,
            inputs: Some(req.inputs),
        };
        s.tasks
            .lock()
            .map_err(|_| ApiError::internal("task queue lock poisoned"))?
            .push(task)
            .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "the task queue is full"))?;
        Ok(json!({
            "task_id": task_id,
            "status": "pending",
            "champion": { "commit": champion.commit.to_string(), "performance": champion.performance.to_f64(), "height": champion.height },
        }))
    })();
    match result {
        Ok(v) => (StatusCode::ACCEPTED, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /inference/{task_id}` → `{task_id, status, result}`.
pub(crate) async fn status(State(s): State<ApiState>, Path(task_id): Path<String>) -> ApiResult {
    // An asynchronous job of a served domain.
    if let Some(v) = s.inference.as_ref().and_then(|i| i.job(&task_id)) {
        return Ok(Json(v));
    }
    let state =
        s.tasks.lock().map_err(|_| ApiError::internal("task queue lock poisoned"))?.inference(&task_id);
    let (status, result) = match state {
        Some(tasks::InferenceState::Pending) => ("pending", Value::Null),
        Some(tasks::InferenceState::Claimed) => ("claimed", Value::Null),
        Some(tasks::InferenceState::Done(v)) => ("done", v),
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no inference request {task_id}"),
            ));
        }
    };
    Ok(Json(json!({ "task_id": task_id, "status": status, "result": result })))
}
