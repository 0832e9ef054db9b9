//! `/stats*`: the experiment-tracking cube (SQLite) as JSON, and a consistent copy of it.

use axum::{
    Json,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

use crate::{ApiError, ApiResult, ApiState};

fn reader(s: &ApiState) -> Result<&doin_tracking::olap::StatsReader, ApiError> {
    s.stats.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_olap",
            "this node has no olap_db_path configured (config key olap_db_path or --olap-db)",
        )
    })
}

/// Runs a query off the async workers and answers with its JSON.
async fn answer<F>(s: &ApiState, query: F) -> ApiResult
where
    F: FnOnce(doin_tracking::olap::StatsReader) -> Result<Value, String> + Send + 'static,
{
    let r = reader(s)?.clone();
    tokio::task::spawn_blocking(move || query(r))
        .await
        .unwrap_or_else(|e| Err(e.to_string()))
        .map(Json)
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "olap_unavailable",
                format!("the tracking database: {e}"),
            )
        })
}

/// `GET /stats`.
pub(crate) async fn summary(State(s): State<ApiState>) -> ApiResult {
    answer(&s, |r| r.summary()).await
}

/// `GET /stats/experiments`.
pub(crate) async fn experiments(State(s): State<ApiState>) -> ApiResult {
    answer(&s, |r| r.experiments()).await
}

/// `?experiment_id=&limit=`.
#[derive(Debug, Deserialize)]
pub(crate) struct RoundsQuery {
    experiment_id: Option<String>,
    limit: Option<u64>,
}

/// `GET /stats/rounds`.
pub(crate) async fn rounds(
    State(s): State<ApiState>,
    q: Result<Query<RoundsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let limit = q.limit.unwrap_or(100);
    answer(&s, move |r| r.rounds(q.experiment_id.as_deref(), limit)).await
}

/// `?domain_id=`.
#[derive(Debug, Deserialize)]
pub(crate) struct DomainQuery {
    domain_id: Option<String>,
}

/// `GET /stats/chain-metrics`.
pub(crate) async fn chain_metrics(
    State(s): State<ApiState>,
    q: Result<Query<DomainQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let Query(q) = q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    answer(&s, move |r| r.chain_metrics(q.domain_id.as_deref())).await
}

/// `GET /stats/export`: the database file (`application/vnd.sqlite3`).
pub(crate) async fn export(State(s): State<ApiState>) -> Response {
    let r = match reader(&s) {
        Ok(r) => r.clone(),
        Err(e) => return e.into_response(),
    };
    match tokio::task::spawn_blocking(move || r.export()).await.unwrap_or_else(|e| Err(e.to_string())) {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/vnd.sqlite3"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"olap.db\""),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "olap_unavailable", e).into_response(),
    }
}
