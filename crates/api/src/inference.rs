//! `POST /inference` and `GET /inference/{task_id}`: inference from the current champion.
//!
//! - **Served** (a domain this node serves, [`InferenceApi::serves`]): the node runs the
//!   champion's verified model itself and answers `200` at once with the outputs, the optimae and
//!   artifact they came from, the quorum's measured quality of that artifact, and a receipt the
//!   node signs over the exact inputs and outputs. No API key: anyone may ask (the per-IP rate
//!   limit applies).
//! - **Queued** (other domains, with the node's API key): the request becomes an `Inference`
//!   task in the pull queue carrying the champion's parameters and the request's inputs; a
//!   worker (the node's external evaluator, for example a GPU box running the domain's plugin)
//!   claims it after any verification work and completes it with a `result`, which the requester
//!   reads at `GET /inference/{task_id}`. That answer is the worker's word, not checked.

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
    /// Every inference slot stayed busy past the wait.
    Busy(String),
    /// The inputs do not fit the model.
    BadInput(String),
    /// The payment was missing or refused (`402`, or `400 bad_payment`): its name, why, the
    /// domain's price (base units) and the payee to open a channel to.
    Payment {
        /// `payment_required`, `bad_payment`, `wrong_channel`, `stale_payment` or `underpaid`.
        error: &'static str,
        /// Why.
        detail: String,
        /// The price per request, base units.
        price: u128,
        /// The serving node's address.
        payee: String,
        /// For an update of a channel paying this node: the best update held (nonce, total),
        /// so a payer that lost its record can go on from it.
        held: Option<(u64, u128)>,
    },
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> Self {
        match e {
            ServeError::NoModel(d) => ApiError::new(StatusCode::CONFLICT, "no_model", d),
            ServeError::Unavailable(d) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "model_unavailable", d)
            }
            ServeError::Busy(d) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", d),
            ServeError::BadInput(d) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_inputs", d),
            ServeError::Payment { error, detail, .. } => {
                let status = if error == "bad_payment" {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::PAYMENT_REQUIRED
                };
                ApiError::new(status, error, detail)
            }
        }
    }
}

impl ServeError {
    /// The HTTP response: a payment error carries the price and the payee besides the error.
    fn into_response(self) -> Response {
        let extra = match &self {
            ServeError::Payment { price, payee, held, .. } => Some(json!({
                "price": price.to_string(),
                "payee": payee,
                "held": held.map(|(n, p)| json!({ "nonce": n, "paid_total": p.to_string() })),
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

/// What the node's inference server offers the HTTP edge.
pub trait InferenceApi: Send + Sync + std::fmt::Debug {
    /// Whether this node answers `domain` itself.
    fn serves(&self, domain: &str) -> bool;
    /// Answers `rows` with `domain`'s champion model, paid by `payment` (the bytes of a signed
    /// channel update) when the domain charges: `{outputs, predictions?, optimae, artifact,
    /// model_quality, height, receipt}`.
    fn answer(
        &self,
        domain: String,
        rows: Vec<Vec<f64>>,
        payment: Option<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, ServeError>> + Send>>;
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
            champion_of(state.domain(&id), &req.domain_id)?;
            Ok((rows, payment))
        })();
        let (rows, payment) = match checked {
            Ok(x) => x,
            Err(e) => return e.into_response(),
        };
        return match server.answer(req.domain_id.clone(), rows, payment).await {
            Ok(v) => (StatusCode::OK, Json(v)).into_response(),
            Err(e) => e.into_response(),
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
