//! `/stats*`: the experiment-tracking cube (SQLite) as JSON, and a consistent copy of it.
//!
//! The copy (`/stats/export`) is one snapshot file shared by every request for
//! [`EXPORT_MAX_AGE`]: made by one request at a time (`VACUUM INTO`, which writers do not
//! restart), interrupted when the client that waits for it goes away, and streamed from disk
//! in small chunks by at most [`EXPORT_STREAMS`] responses at once (the others wait their
//! turn), so the node's memory does not grow with the cube or with the number of clients.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use doin_tracking::olap::StatsReader;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, Semaphore};

use crate::{ApiError, ApiResult, ApiState};

/// How long one export snapshot serves every request.
pub const EXPORT_MAX_AGE: Duration = Duration::from_secs(10);
/// Export responses streaming at once.
pub const EXPORT_STREAMS: usize = 8;
/// Bytes read from the snapshot per body chunk.
const CHUNK: usize = 64 * 1024;

/// The tracking database `/stats*` read, and its export snapshot.
#[derive(Clone, Debug)]
pub struct Stats {
    reader: StatsReader,
    exports: Arc<Exports>,
}

#[derive(Debug)]
struct Exports {
    /// Where snapshots are written (removed with the last handle).
    dir: tempfile::TempDir,
    /// When the current snapshot was taken; held while one is made.
    taken: Mutex<Option<Instant>>,
    streams: Arc<Semaphore>,
}

impl Stats {
    /// Serves the database `reader` reads; snapshots go to a private temporary directory.
    pub fn new(reader: StatsReader) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new().prefix("doin-export-").tempdir()?;
        let exports =
            Exports { dir, taken: Mutex::new(None), streams: Arc::new(Semaphore::new(EXPORT_STREAMS)) };
        Ok(Self { reader, exports: Arc::new(exports) })
    }

    fn snapshot_path(&self) -> PathBuf {
        self.exports.dir.path().join("olap.db")
    }

    /// A snapshot no older than [`EXPORT_MAX_AGE`]: the current one, or a new one made now.
    async fn fresh_snapshot(&self) -> Result<PathBuf, String> {
        let mut taken = self.exports.taken.lock().await;
        let path = self.snapshot_path();
        if taken.is_some_and(|t| t.elapsed() < EXPORT_MAX_AGE) {
            return Ok(path);
        }
        let partial = self.exports.dir.path().join("olap.db.partial");
        let reader = self.reader.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = {
            let partial = partial.clone();
            tokio::task::spawn_blocking(move || reader.export_to(&partial, |h| drop(tx.send(h))))
        };
        // If this request is dropped (its client went away) while the copy runs, the copy is
        // interrupted; the next request starts a new one.
        let mut interrupt = OnDrop(Some(rx));
        let result = work.await.unwrap_or_else(|e| Err(e.to_string()));
        interrupt.0 = None;
        result?;
        std::fs::rename(&partial, &path).map_err(|e| e.to_string())?;
        *taken = Some(Instant::now());
        Ok(path)
    }
}

/// Interrupts the copy whose handle it still holds when dropped.
struct OnDrop(Option<std::sync::mpsc::Receiver<doin_tracking::olap::ExportInterrupt>>);

impl Drop for OnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take().and_then(|rx| rx.recv_timeout(Duration::from_secs(1)).ok()) {
            h.interrupt();
        }
    }
}

fn no_olap() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_olap",
        "this node has no olap_db_path configured (config key olap_db_path or --olap-db)",
    )
}

fn reader(s: &ApiState) -> Result<&StatsReader, ApiError> {
    s.stats.as_ref().map(|s| &s.reader).ok_or_else(no_olap)
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

/// `GET /stats/export`: the database file (`application/vnd.sqlite3`), from the shared
/// snapshot, streamed.
pub(crate) async fn export(State(s): State<ApiState>) -> Response {
    let Some(stats) = s.stats.clone() else { return no_olap().into_response() };
    // Wait for a streaming slot first: a client that leaves while waiting costs nothing.
    let Ok(permit) = stats.exports.streams.clone().acquire_owned().await else {
        return ApiError::internal("export slots closed").into_response();
    };
    let path = match stats.fresh_snapshot().await {
        Ok(p) => p,
        Err(e) => {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "olap_unavailable", e).into_response();
        }
    };
    // Opened now: a later snapshot replaces the name, not this file.
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => return ApiError::internal(e).into_response(),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = futures_util::stream::unfold((file, permit), |(mut file, permit)| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), (file, permit)))
            }
            Err(e) => Some((Err(e), (file, permit))),
        }
    });
    (
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_owned()),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"olap.db\"".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}
