//! The QuackMesh-shaped federated job API (`../shared/seeds/quackmesh-readme.md`): a job is a
//! federated domain this node supervises.
//!
//! - `POST /api/job` — creates a job (the `federated_jobs[]` entry's fields as JSON) for a user
//!   whose `x-api-key` may (`api_users[].create_jobs`) or with the node's `api_key`: the node
//!   registers the federated domain with its escrow from its own balance, stakes itself as its
//!   supervisor and runs it (kept across restarts);
//! - `GET /api/jobs` — the jobs, their rounds and models;
//! - `GET /api/job/{id}/model` — the open round's global model (`weights`: hex of little-endian
//!   `f32`s; `model_hash` = BLAKE3 of those bytes) and the local training recipe;
//! - `POST /api/job/{id}/update` — `{"update": <signed UpdateBody>, "weights": hex}`; refused
//!   with `422 {error: "refused", detail: <reason>}` (signature, job, round, base model,
//!   weights hash, size, shape, non-finite weight, rows, duplicate, registration, quarantine),
//!   `413` when over the body limit;
//! - `POST /api/job/{id}/model` — `{"weights": hex}`: a recorded model this node lacks
//!   (`behind` in `/api/jobs`), offered by whoever holds it (a contributor that fetched it from
//!   the previous supervisor); installed only if it hashes to the model the chain recorded;
//! - `POST /api/job/{id}/heartbeat` — a registered contributor's signed heartbeat
//!   (`node:joined` when it comes online, `node:left` after three rounds' wait without one);
//! - `GET /api/cluster/{id}` — the round, its deadline, and every contributor's standing,
//!   reputation, quarantine and the payouts the chain made.
//!
//! Updates are signed by their contributor (no API key: the signature is the credential); the
//! per-IP rate limit of every endpoint applies.

use axum::{
    Json,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use doin_primitives::SignedUpdate;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, ApiResult, ApiState, MAX_BODY_BYTES};

/// Why a job request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobError {
    /// No such job on this node.
    NotFound(String),
    /// The update was refused; the reason.
    Refused(String),
    /// The request is not a valid job; the reason.
    Invalid(String),
}

/// What the node's supervisor offers the HTTP edge.
pub trait JobApi: Send + Sync + std::fmt::Debug {
    /// Every job.
    fn list(&self) -> Value;
    /// Whether this node supervises `job`.
    fn exists(&self, job: &str) -> bool;
    /// The open round's model of `job`.
    fn model(&self, job: &str) -> Result<Value, JobError>;
    /// Takes in an update of `job`.
    fn submit(&self, job: &str, update: SignedUpdate, weights: Vec<u8>) -> Result<Value, JobError>;
    /// The job's round and contributors.
    fn cluster(&self, job: &str) -> Result<Value, JobError>;
    /// Takes in the recorded model `job` lacks, if `weights` is it.
    fn offer_model(&self, job: &str, weights: Vec<u8>) -> Result<Value, JobError>;
    /// A contributor's heartbeat.
    fn heartbeat(&self, job: &str, beat: doin_primitives::SignedHeartbeat) -> Result<Value, JobError>;
    /// Creates a job from its configuration (JSON), owned by `owner`.
    fn create(&self, owner: &str, config: Value) -> Result<Value, JobError>;
}

/// The body of `POST /api/job/{id}/model`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelOffer {
    /// Hex of the model's little-endian `f32`s.
    pub weights: String,
}

/// The body of `POST /api/job/{id}/update`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// The contributor's signed statement.
    pub update: SignedUpdate,
    /// Hex of the weights' little-endian `f32`s.
    pub weights: String,
}

fn jobs(s: &ApiState) -> Result<&dyn JobApi, ApiError> {
    s.jobs.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_jobs",
            "this node supervises no federated job (`federated_jobs`)",
        )
    })
}

fn answer(r: Result<Value, JobError>) -> ApiResult {
    match r {
        Ok(v) => Ok(Json(v)),
        Err(JobError::NotFound(job)) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_job",
            format!("this node supervises no job {job:?}"),
        )),
        Err(JobError::Refused(why)) => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", why)),
        Err(JobError::Invalid(why)) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_job", why)),
    }
}

/// `POST /api/job`.
pub async fn create(
    State(s): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    let owner = match (s.guard.user(key), &s.api_key) {
        (Some(u), _) if u.create_jobs => u.name.clone(),
        (Some(u), _) => {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "not_allowed",
                format!("user {:?} may not create jobs (api_users[].create_jobs)", u.name),
            )
            .into_response();
        }
        (None, Some(node_key)) if key == Some(node_key.as_str()) => "operator".to_owned(),
        _ => {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "bad_api_key",
                "creating a job needs the x-api-key of a user with create_jobs (api_users) or the node's api_key",
            )
            .into_response();
        }
    };
    let config = match body {
        Ok(Json(v)) => v,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, "bad_job", e.body_text()).into_response(),
    };
    let Some(api) = s.jobs.as_deref() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_jobs",
            "this node runs no federated supervisor",
        )
        .into_response();
    };
    match answer(api.create(&owner, config)) {
        Ok(v) => (StatusCode::ACCEPTED, v).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The job API for a request about `job`: an unknown job is 404 whatever the body.
#[allow(clippy::result_large_err)]
fn known<'a>(s: &'a ApiState, job: &str) -> Result<&'a dyn JobApi, Response> {
    match jobs(s) {
        Ok(j) if j.exists(job) => Ok(j),
        Ok(_) => Err(answer(Err(JobError::NotFound(job.into()))).into_response()),
        Err(e) => Err(e.into_response()),
    }
}

/// A body over the limit.
fn too_large(what: &str) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the {what} is over {MAX_BODY_BYTES} bytes"),
    )
    .into_response()
}

/// `GET /api/jobs`.
pub async fn list(State(s): State<ApiState>) -> ApiResult {
    Ok(Json(jobs(&s).map_or_else(|_| json!({ "jobs": [] }), |j| j.list())))
}

/// `GET /api/job/{id}/model`.
pub async fn model(State(s): State<ApiState>, Path(job): Path<String>) -> ApiResult {
    answer(jobs(&s)?.model(&job))
}

/// `GET /api/cluster/{id}`.
pub async fn cluster(State(s): State<ApiState>, Path(job): Path<String>) -> ApiResult {
    answer(jobs(&s)?.cluster(&job))
}

/// `POST /api/job/{id}/model`.
pub async fn offer_model(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    body: Result<Json<ModelOffer>, JsonRejection>,
) -> Response {
    let api = match known(&s, &job) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let weights = match body.map(|Json(b)| hex::decode(&b.weights)) {
        Ok(Ok(w)) => w,
        Ok(Err(e)) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_model", format!("weights: not hex: {e}"))
                .into_response();
        }
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large("model"),
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, "bad_model", e.body_text()).into_response(),
    };
    answer(api.offer_model(&job, weights)).into_response()
}

/// `POST /api/job/{id}/heartbeat`.
pub async fn heartbeat(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    body: Result<Json<doin_primitives::SignedHeartbeat>, JsonRejection>,
) -> Response {
    let api = match known(&s, &job) {
        Ok(j) => j,
        Err(r) => return r,
    };
    match body {
        Ok(Json(beat)) => answer(api.heartbeat(&job, beat)).into_response(),
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, "bad_heartbeat", e.body_text()).into_response(),
    }
}

/// `POST /api/job/{id}/update`.
pub async fn update(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    body: Result<Json<UpdateRequest>, JsonRejection>,
) -> Response {
    let api = match known(&s, &job) {
        Ok(j) => j,
        Err(r) => return r,
    };
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => return too_large("update"),
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, "bad_update", e.body_text()).into_response(),
    };
    let weights = match hex::decode(&request.weights) {
        Ok(w) => w,
        Err(e) => {
            return ApiError::new(StatusCode::BAD_REQUEST, "bad_update", format!("weights: not hex: {e}"))
                .into_response();
        }
    };
    match answer(api.submit(&job, request.update, weights)) {
        Ok(v) => (StatusCode::ACCEPTED, v).into_response(),
        Err(e) => e.into_response(),
    }
}
