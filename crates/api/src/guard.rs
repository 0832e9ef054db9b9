//! What every request passes through: per-client rate limits (token buckets keyed by IP, or by
//! user for a request carrying a configured user's `x-api-key`; answered 429 with
//! `Retry-After`), a query-size limit, a handler timeout, optional CORS and
//! the HTTP counters `/metrics` reports.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{ApiError, ApiState};

/// Longest accepted query string, bytes.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Time a handler may take (event streams answer at once and are not cut).
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(10);
/// Clients tracked at once; beyond it the longest-idle half is forgotten.
const MAX_CLIENTS: usize = 10_000;

/// Rate-limit and CORS settings.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Sustained requests per second per client IP.
    pub rate_per_s: f64,
    /// Burst a client may spend at once.
    pub burst: f64,
    /// Origins allowed by CORS; empty: no CORS headers at all.
    pub cors_origins: Vec<String>,
    /// Users with their own API key and limits (`api_users`).
    pub users: Vec<User>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { rate_per_s: 50.0, burst: 100.0, cors_origins: Vec::new(), users: Vec::new() }
    }
}

/// A user of the HTTP API (QuackMesh's per-user API keys): requests with its key count against
/// its own bucket, wherever they come from; `create_jobs` lets it `POST /api/job`.
#[derive(Clone, Debug, PartialEq)]
pub struct User {
    /// Name (shown as a job's owner).
    pub name: String,
    /// Its `x-api-key`.
    pub key: String,
    /// Sustained requests per second.
    pub rate_per_s: f64,
    /// Burst.
    pub burst: f64,
    /// May create federated jobs.
    pub create_jobs: bool,
}

/// Who a bucket belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// An address without a user key.
    Ip(IpAddr),
    /// A configured user (by name).
    User(String),
}

/// Token buckets per client and the HTTP counters.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    buckets: Mutex<HashMap<Client, (f64, Instant)>>,
    /// Requests answered, by status class (index 1 = 1xx … 5 = 5xx).
    pub responses: [AtomicU64; 6],
    /// Requests refused with 429.
    pub rate_limited: AtomicU64,
    /// Handlers cut by the timeout.
    pub timeouts: AtomicU64,
    /// Handler time, microseconds, summed.
    pub handler_us: AtomicU64,
    /// The server's connection counters.
    pub connections: crate::server::ConnStats,
}

impl Guard {
    /// A guard with `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            buckets: Mutex::default(),
            responses: Default::default(),
            rate_limited: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            handler_us: AtomicU64::new(0),
            connections: crate::server::ConnStats::default(),
        }
    }

    /// The user whose key `key` is.
    pub fn user(&self, key: Option<&str>) -> Option<&User> {
        let key = key?;
        self.limits.users.iter().find(|u| u.key == key)
    }

    /// Takes a token for `ip`; `Err(seconds until one is available)` when the bucket is empty.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        self.take_for(Client::Ip(ip), now).map(|_| ())
    }

    /// Takes a token for `client` (a user: at its own rate); `Err(seconds until one is
    /// available)` when the bucket is empty, else the rate that applied.
    pub fn take_for(&self, client: Client, now: Instant) -> Result<f64, u64> {
        let (rate, burst) = match &client {
            Client::User(name) => self
                .limits
                .users
                .iter()
                .find(|u| &u.name == name)
                .map_or((self.limits.rate_per_s, self.limits.burst), |u| (u.rate_per_s, u.burst)),
            Client::Ip(_) => (self.limits.rate_per_s, self.limits.burst),
        };
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(rate) };
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(&client) {
            let mut ages: Vec<Instant> = buckets.values().map(|(_, t)| *t).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 2];
            buckets.retain(|_, (_, t)| *t > cutoff);
        }
        let (rate, burst) = (rate.max(0.001), burst.max(1.0));
        let (tokens, last) = buckets.entry(client).or_insert((burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(rate)
        } else {
            Err(((1.0 - *tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Requests answered so far.
    pub fn total(&self) -> u64 {
        self.responses.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

fn client_ip(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(a)| a.ip())
}

/// The middleware.
pub(crate) async fn guard(State(s): State<ApiState>, req: Request, next: Next) -> Response {
    let g = &s.guard;
    let origin = req.headers().get(header::ORIGIN).cloned();
    let started = Instant::now();
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    let (client, rate) = match g.user(key) {
        Some(u) => (Client::User(u.name.clone()), u.rate_per_s),
        None => (Client::Ip(client_ip(&req)), g.limits.rate_per_s),
    };
    let response = if let Err(wait) = g.take_for(client, started) {
        g.rate_limited.fetch_add(1, Ordering::Relaxed);
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {rate} requests per second from this client; retry in {wait} s"),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait));
        r
    } else if req.uri().query().is_some_and(|q| q.len() > MAX_QUERY_BYTES) {
        ApiError::new(
            StatusCode::URI_TOO_LONG,
            "query_too_long",
            format!("the query string is over {MAX_QUERY_BYTES} bytes"),
        )
        .into_response()
    } else if req.method() == Method::OPTIONS && !g.limits.cors_origins.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        match tokio::time::timeout(HANDLER_TIMEOUT, next.run(req)).await {
            Ok(r) => r,
            Err(_) => {
                g.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(timeout_s = HANDLER_TIMEOUT.as_secs(), "HTTP handler timed out");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "the request took too long")
                    .into_response()
            }
        }
    };
    let response = as_json_error(response).await;
    g.handler_us.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
    let class = (response.status().as_u16() / 100).min(5) as usize;
    g.responses[class].fetch_add(1, Ordering::Relaxed);
    with_cors(response, origin.as_ref(), &g.limits.cors_origins)
}

/// Every error answer is `{error, detail}` JSON: the framework's own (405 with an empty body,
/// plain-text extractor rejections, 413 from the body limit) are rewritten into it, `error`
/// named after the status and `detail` their text.
async fn as_json_error(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_owned());
    let reason = status.canonical_reason().unwrap_or("error");
    let detail = match text {
        Ok(t) if !t.is_empty() => t,
        _ if status == StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = parts.headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or("");
            format!("method not allowed here; allowed: {allowed}")
        }
        _ => reason.to_lowercase(),
    };
    let error = reason.to_lowercase().replace([' ', '-'], "_");
    let mut out =
        (status, axum::Json(serde_json::json!({ "error": error, "detail": detail }))).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

fn with_cors(mut r: Response, origin: Option<&HeaderValue>, allowed: &[String]) -> Response {
    let Some(origin) = origin else { return r };
    let ok = origin.to_str().is_ok_and(|o| allowed.iter().any(|a| a == "*" || a == o));
    if ok {
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type, x-api-key"));
        h.insert(header::VARY, HeaderValue::from_static("origin"));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_refill_at_the_rate_and_are_per_client() {
        let g = Guard::new(Limits { rate_per_s: 2.0, burst: 3.0, ..Limits::default() });
        let (a, b) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(g.take(a, t0).is_ok());
        }
        assert_eq!(g.take(a, t0), Err(1), "burst spent");
        assert!(g.take(b, t0).is_ok(), "another client is unaffected");
        assert!(g.take(a, t0 + Duration::from_millis(500)).is_ok(), "one token after 0.5 s at 2/s");
        assert!(g.take(a, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn a_users_key_has_its_own_bucket_and_rate_wherever_it_comes_from() {
        let alice = User {
            name: "alice".into(),
            key: "k".repeat(20),
            rate_per_s: 1.0,
            burst: 2.0,
            create_jobs: false,
        };
        let g = Guard::new(Limits {
            rate_per_s: 100.0,
            burst: 100.0,
            users: vec![alice.clone()],
            ..Limits::default()
        });
        assert_eq!(g.user(Some(&alice.key)), Some(&alice));
        assert_eq!(g.user(Some("not-a-key")), None, "an unknown key is just a client by address");
        let t0 = Instant::now();
        let user = || Client::User("alice".into());
        assert_eq!(g.take_for(user(), t0), Ok(1.0));
        assert_eq!(g.take_for(user(), t0), Ok(1.0));
        assert_eq!(g.take_for(user(), t0), Err(1), "alice's burst of 2 is spent");
        assert!(g.take(IpAddr::from([127, 0, 0, 1]), t0).is_ok(), "addresses keep their own buckets");
        assert_eq!(g.take_for(user(), t0 + Duration::from_secs(1)), Ok(1.0), "one token a second");
    }
}
