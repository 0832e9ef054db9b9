//! The node's live events: what the event loop does (blocks, commits, reveals, votes,
//! certificates, champion changes, peers joining and leaving, escalations), fanned out to
//! Server-Sent-Events subscribers and kept in a bounded ring for `/api/events`.

use std::{
    collections::VecDeque,
    convert::Infallible,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::{Query, State},
    response::sse::{Event as SseEvent, KeepAlive, Sse},
};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use crate::ApiState;

/// Events kept for `/api/events` and for subscribers that reconnect.
pub const RECENT: usize = 512;
/// Events a slow SSE subscriber may lag behind before it skips ahead.
pub const CHANNEL: usize = 1024;

/// One event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Sequence number, from 1, per node run.
    pub seq: u64,
    /// Wall-clock time, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// `block`, `commit`, `held`, `reveal`, `vote`, `certificate`, `champion`, `escalation`, `target`,
    /// `peer_joined`, `peer_left`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The domain, for optimization events.
    pub domain_id: Option<String>,
    /// The event's fields.
    pub data: Value,
}

/// Fan-out of events with a bounded history.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    seq: AtomicU64,
    counts: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            seq: AtomicU64::new(0),
            counts: Mutex::default(),
        }
    }

    /// Publishes an event of `kind`.
    pub fn emit(&self, kind: &str, domain: Option<&str>, data: Value) {
        let event = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            timestamp_ms: crate::now_ms(),
            kind: kind.to_owned(),
            domain_id: domain.map(str::to_owned),
            data,
        };
        if let Ok(mut c) = self.counts.lock() {
            *c.entry(event.kind.clone()).or_default() += 1;
        }
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == RECENT {
                r.pop_front();
            }
            r.push_back(event.clone());
        }
        // No subscribers is fine.
        let _ = self.tx.send(event);
    }

    /// The newest `limit` events, newest first, optionally of one kind.
    pub fn recent(&self, limit: usize, kind: Option<&str>) -> Vec<Event> {
        self.recent
            .lock()
            .map(|r| {
                r.iter().rev().filter(|e| kind.is_none_or(|k| e.kind == k)).take(limit).cloned().collect()
            })
            .unwrap_or_default()
    }

    /// Events emitted so far, by kind.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Live subscribers.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}

/// `/events` and `/api/events` query.
#[derive(Debug, Deserialize)]
pub(crate) struct EventQuery {
    /// Only this kind.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// At most this many (for `/api/events`; default 100, at most [`RECENT`]).
    limit: Option<usize>,
}

/// `GET /events`: Server-Sent Events, one `event: <type>` with the JSON [`Event`] as data per
/// event; a keep-alive comment every 15 s; a subscriber that falls more than [`CHANNEL`]
/// events behind gets a `lagged` event and continues with the newest.
pub(crate) async fn stream(
    State(s): State<ApiState>,
    Query(q): Query<EventQuery>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let rx = s.events.subscribe();
    let kind = q.kind;
    let stream = futures_util::stream::unfold((rx, kind), |(mut rx, kind)| async move {
        loop {
            match rx.recv().await {
                Ok(e) if kind.as_deref().is_none_or(|k| k == e.kind) => {
                    let sse = SseEvent::default()
                        .event(e.kind.clone())
                        .id(e.seq.to_string())
                        .json_data(&e)
                        .unwrap_or_else(|_| SseEvent::default().comment("unencodable event"));
                    return Some((Ok(sse), (rx, kind)));
                }
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let sse = SseEvent::default().event("lagged").data(n.to_string());
                    return Some((Ok(sse), (rx, kind)));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// `GET /api/events`: the newest events, newest first (the dashboard's initial fill).
pub(crate) async fn recent(State(s): State<ApiState>, Query(q): Query<EventQuery>) -> axum::Json<Value> {
    let limit = q.limit.unwrap_or(100).min(RECENT);
    let events = s.events.recent(limit, q.kind.as_deref());
    axum::Json(serde_json::json!({ "events": events, "counts": s.events.counts() }))
}
