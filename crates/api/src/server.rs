//! The HTTP server's connections: accepted below a cap that stays under the process's file
//! limit, each with a header-read timeout that also bounds how long a kept-alive connection may
//! sit idle, and — when the cap is reached — room made by closing the connection that has been
//! idle longest (a request in progress, or a response still streaming such as `/events`, keeps
//! its connection). So connections that never send a byte cannot lock clients out: a fresh
//! client is accepted, sends its request and is answered while they wait to be closed.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request};
use hyper_util::rt::{TokioIo, TokioTimer};
use tower::ServiceExt;

/// How long a client may take to send a request's headers, counted from the connection's
/// start or from the end of the previous response (the idle timeout of kept-alive
/// connections).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once at most (fewer when the file limit is low).
pub const MAX_CONNECTIONS: usize = 1024;
/// File descriptors kept free for everything else the node opens (store, peers, plugins).
const RESERVED_FDS: u64 = 256;

/// Connection counters `/metrics` reports.
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicUsize,
    /// Connections accepted since the start.
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// Connections refused because every slot was busy with a request.
    pub refused: AtomicU64,
    /// The cap in force.
    pub cap: AtomicUsize,
}

/// One open connection: requests in progress (with responses still streaming) and when it
/// last became idle.
struct Slot {
    busy: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
    abort: tokio::task::AbortHandle,
}

/// The open connections.
#[derive(Default)]
struct Slots {
    next: u64,
    open: HashMap<u64, Slot>,
}

impl Slots {
    /// Closes the connection idle longest; false when every connection is busy.
    fn evict_idle(&mut self) -> bool {
        let oldest = self
            .open
            .iter()
            .filter(|(_, s)| s.busy.load(Ordering::Acquire) == 0)
            .min_by_key(|(_, s)| *s.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
            .map(|(id, _)| *id);
        match oldest.and_then(|id| self.open.remove(&id)) {
            Some(slot) => {
                slot.abort.abort();
                true
            }
            None => false,
        }
    }
}

/// The connection cap for a process whose file limit is `fd_limit`.
pub fn connection_cap(fd_limit: u64) -> usize {
    (fd_limit.saturating_sub(RESERVED_FDS) as usize).clamp(16, MAX_CONNECTIONS)
}

/// The soft limit on open files, raised to the hard limit first where it is lower.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let l = getrlimit(Resource::Nofile);
    let (Some(current), max) = (l.current, l.maximum) else { return u64::MAX };
    if max.is_none_or(|m| m > current) {
        let raised = Rlimit { current: max.or(Some(1 << 20)), maximum: max };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
        }
    }
    current
}

/// How many connections, and how long a client may take to send its headers.
#[derive(Clone, Copy, Debug)]
pub struct ConnLimits {
    /// Connections open at once at most.
    pub max_connections: usize,
    /// Header-read (and keep-alive idle) timeout.
    pub header_read_timeout: Duration,
}

impl ConnLimits {
    /// The node's limits: the cap from the (raised) file limit, [`HEADER_READ_TIMEOUT`].
    pub fn for_this_process() -> Self {
        Self { max_connections: connection_cap(raise_fd_limit()), header_read_timeout: HEADER_READ_TIMEOUT }
    }
}

/// Serves `app` on `listener` until the task is dropped, within `limits`; `stats` counts.
pub async fn run(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnLimits,
    stats: Arc<crate::guard::Guard>,
) {
    let cap = limits.max_connections.max(1);
    stats.connections.cap.store(cap, Ordering::Relaxed);
    let slots = Arc::new(Mutex::new(Slots::default()));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors (or a connection reset before accept): back off a
                // little instead of spinning.
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let mut guard = slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.open.len() >= cap {
            if guard.evict_idle() {
                stats.connections.evicted.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.connections.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        stats.connections.accepted.fetch_add(1, Ordering::Relaxed);
        let id = guard.next;
        guard.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let idle_since = Arc::new(Mutex::new(Instant::now()));
        let task = tokio::spawn(serve_one(
            stream,
            peer,
            app.clone(),
            limits.header_read_timeout,
            busy.clone(),
            idle_since.clone(),
            Closed { id, slots: slots.clone(), stats: stats.clone() },
        ));
        guard.open.insert(id, Slot { busy, idle_since, abort: task.abort_handle() });
        stats.connections.open.store(guard.open.len(), Ordering::Relaxed);
    }
}

/// Removes a connection's slot when its task ends (or is aborted).
struct Closed {
    id: u64,
    slots: Arc<Mutex<Slots>>,
    stats: Arc<crate::guard::Guard>,
}

impl Drop for Closed {
    fn drop(&mut self) {
        let mut s = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.open.remove(&self.id);
        self.stats.connections.open.store(s.open.len(), Ordering::Relaxed);
    }
}

async fn serve_one(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    header_read_timeout: Duration,
    busy: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
    _closed: Closed,
) {
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        let request = Busy::enter(&busy, &idle_since);
        let app = app.clone();
        async move {
            let response = app.oneshot(req.map(Body::new)).await?;
            // The connection stays busy until the response body is sent (or dropped).
            Ok::<_, std::convert::Infallible>(
                response.map(|b| Body::new(Tracked { inner: b, _busy: request })),
            )
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::trace!(error = %e, %peer, "HTTP connection ended");
    }
}

/// A request in progress on a connection; when the last one ends the connection is idle.
struct Busy {
    busy: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

impl Busy {
    fn enter(busy: &Arc<AtomicUsize>, idle_since: &Arc<Mutex<Instant>>) -> Self {
        busy.fetch_add(1, Ordering::AcqRel);
        Self { busy: busy.clone(), idle_since: idle_since.clone() }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.idle_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection busy while it streams.
struct Tracked {
    inner: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_file_descriptors_for_the_node() {
        assert_eq!(connection_cap(1024), 768);
        assert_eq!(connection_cap(100), 16, "a floor even under a tiny limit");
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
    }
}
