//! `POST /inference` and `GET /inference/{task_id}`: inference from the current champion. A
//! request (with the node's API key) becomes an `Inference` task in the pull queue carrying the
//! champion's parameters and the request's inputs; a worker (the node's external evaluator, for
//! example a GPU box running the domain's plugin) claims it after any verification work,
//! computes the answer with the champion's model and completes it with a `result`, which the
//! requester then reads. Nothing of it goes on chain.

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

/// `POST /inference` → `202 {task_id, status, champion}`.
pub(crate) async fn submit(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Result<Json<Request>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let result = (|| -> Result<Value, ApiError> {
        check_key(&s, &headers)?;
        let Json(req) =
            body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
        if serde_json::to_vec(&req.inputs).map(|b| b.len()).unwrap_or(usize::MAX) > MAX_INPUT_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "inputs_too_large",
                format!("inputs over {MAX_INPUT_BYTES} bytes"),
            ));
        }
        let st = store(&s);
        let state = st.tip();
        let id = doin_primitives::DomainId::new(req.domain_id.as_str())
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad_domain", "not a domain id"))?;
        let domain = state.domain(&id).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_domain",
                format!("no domain {} on chain", req.domain_id),
            )
        })?;
        let champion = domain.champion.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "no_champion",
                format!("domain {} has no champion yet", req.domain_id),
            )
        })?;
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
