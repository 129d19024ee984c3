//! The HTTP listener, built to outlast hostile clients.
//!
//! `axum::serve` accepts every connection and keeps it as long as the client likes: twenty
//! thousand idle half-sent requests exhausted the process's file descriptors, starving the
//! delivery side of sockets. Here:
//!
//! - at most `max_connections` are open at once. When a new one arrives at the cap, the one
//!   idle the longest (no request under way: half-sent headers, or a keep-alive connection
//!   between requests) is closed to make room; only when every connection is serving a
//!   request is the new one turned away. So a storm of idle sockets cannot lock out a health
//!   probe or an admin, and never holds more descriptors than the cap;
//! - a request's headers must arrive within `header_read_timeout`, counted from the
//!   connection or from the previous answer (hyper's timer), so a kept-alive connection left
//!   idle is closed after it too;
//! - request heads are held to [`MAX_HEAD_BYTES`] by hyper; the router answers oversized URLs
//!   and headers below that in the contract's error shape (see `lib.rs`);
//! - one client has at most `max_requests_per_client` requests under way at once: one
//!   address until the request has authenticated, then one credential (see [`Admission`]).
//!   Past it, a request is answered 429 at once and its connection closed, its body unread: a
//!   client trickling bodies holds that many connections (each for the body deadline at
//!   most), never the listener; made-up tokens do not each bring an allowance of their own;
//! - the operators' paths (`/healthz`, `/readyz`, `/metrics`) are never counted against a
//!   client, and [`OPS_RESERVE`] connections beyond `max_connections` are kept for them: when
//!   every connection is serving a request, a probe is still answered.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hookrelay_metrics::{Metrics, ShedReason};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// The largest request head (request line and headers) hyper reads; beyond it, it answers
/// 431 on its own. The router's own, smaller limits answer in the error shape first.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a connection is turned away at the cap, or a request other than a probe on a reserve
/// connection.
const AT_CAPACITY_MESSAGE: &str = "every connection is serving a request; try again shortly";

/// The whole answer to a connection turned away at the cap.
static AT_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = serde_json::json!({
        "error": {"code": "unavailable", "message": AT_CAPACITY_MESSAGE, "field": null}
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Connections beyond `max_connections` kept for the operators' paths, which they alone may
/// use: probes and scrapes answered when every other connection is busy.
pub const OPS_RESERVE: usize = 32;

/// The operators' paths: never counted against a client, and served on the reserve.
const OPS_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// How the listener treats its clients.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// Requests of one client under way at once.
    pub max_requests_per_client: usize,
}

/// An answer given without routing the request, its body unread: the connection closes.
fn refusal(status: hyper::StatusCode, code: &str, message: &str) -> hyper::Response<GuardedBody> {
    use axum::response::IntoResponse as _;
    let mut response = crate::ApiError::new(status, code, message)
        .into_response()
        .map(|inner| GuardedBody {
            inner,
            _busy: None,
            _client: None,
        });
    let headers = response.headers_mut();
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    response
}

/// Who a request is from, for the per-client cap: its address until it authenticates, then
/// its credential (part of the token's digest).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Client {
    Credential([u8; 16]),
    Address(IpAddr),
}

/// A request's place in the per-client cap, shared by the request (an extension the
/// authentication reads) and its answer (which holds it until its body is written).
///
/// A request is counted against its address until its token is found valid, then against
/// that credential instead. Counting by the token as sent would let a client make up a token
/// per request and take every connection, each waiting on a key lookup; counting by address
/// only would let one credential crowd out the others behind the same proxy. Before
/// authentication a request holds its address's place only as long as the lookup takes.
#[derive(Clone)]
pub(crate) struct Admission(Arc<AdmissionState>);

struct AdmissionState {
    table: Arc<Table>,
    max: usize,
    slot: Mutex<Option<ClientSlot>>,
    /// Refused at authentication: the answer closes the connection, its body unread.
    refused: std::sync::atomic::AtomicBool,
}

impl Admission {
    /// The request authenticated with the token of SHA-256 `digest`: from now on it counts
    /// against that credential, and its address's place is given back. `false` when the
    /// credential has `max_requests_per_client` under way already.
    pub(crate) fn authenticated(&self, digest: &[u8; 32]) -> bool {
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        let client = Client::Credential(key);
        let mut slot = self.0.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|held| held.client == client) {
            return true;
        }
        match self.0.table.client_slot(client, self.0.max) {
            Some(credential) => {
                *slot = Some(credential);
                true
            }
            None => {
                self.0.refused.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    /// The answer to a request over `max_requests_per_client`.
    pub(crate) fn refusal_message(&self) -> String {
        format!(
            "this client has {} requests under way, the most max_requests_per_client allows; \
             wait for one to end",
            self.0.max
        )
    }

    fn refused(&self) -> bool {
        self.0.refused.load(Ordering::SeqCst)
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets requests under way
/// finish for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    metrics: Metrics,
    shutdown: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let table = Arc::new(Table::default());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Finished connections are reaped as they end, not at the next accept: a task's
            // memory stays allocated until it is joined.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok((stream, peer)) => (stream, peer.ip()),
            Err(e) => {
                // Out of descriptors, most likely (EMFILE, ENFILE): the connections already
                // open will free some. Never spin, never stop listening.
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let full = table.open() >= limits.max_connections && !table.evict_oldest_idle();
        if full && table.reserve_open() >= OPS_RESERVE {
            // Every connection is serving a request, the reserve too: this one is told so,
            // in the error shape, without reading its request (a fresh socket's send buffer
            // takes these bytes at once, so the write never waits), and closed.
            metrics.http_connection_shed(ShedReason::Refused);
            let _ = stream.try_write(&AT_CAPACITY);
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let conn = table.register(full);
        metrics.http_connection_opened();
        let service = hyper::service::service_fn({
            let (router, conn, table) = (router.clone(), conn.clone(), table.clone());
            let per_client = limits.max_requests_per_client;
            move |request: hyper::Request<Incoming>| {
                let ops = OPS_PATHS.contains(&request.uri().path());
                let admitted = match (ops, conn.reserve) {
                    (true, _) => Ok(None),
                    (false, true) => Err(refusal(
                        hyper::StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        AT_CAPACITY_MESSAGE,
                    )),
                    (false, false) => table
                        .client_slot(Client::Address(peer), per_client)
                        .map(|slot| {
                            Some(Admission(Arc::new(AdmissionState {
                                table: table.clone(),
                                max: per_client,
                                slot: Mutex::new(Some(slot)),
                                refused: false.into(),
                            })))
                        })
                        .ok_or_else(|| {
                            refusal(
                                hyper::StatusCode::TOO_MANY_REQUESTS,
                                "quota_exceeded",
                                &format!(
                                    "this address has {per_client} requests under way before \
                                     authenticating, the most max_requests_per_client allows; \
                                     wait for one to end"
                                ),
                            )
                        }),
                };
                let busy = conn.busy();
                let reserve = conn.reserve;
                let router = router.clone();
                async move {
                    let admission = match admitted {
                        Ok(admission) => admission,
                        Err(refused) => return Ok(refused),
                    };
                    let mut request = request;
                    if let Some(admission) = &admission {
                        request.extensions_mut().insert(admission.clone());
                    }
                    let mut response = router.oneshot(request).await?;
                    // A reserve connection serves one probe and closes: probes kept alive
                    // would hold the reserve for good.
                    if reserve || admission.as_ref().is_some_and(Admission::refused) {
                        response.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    // Busy until the body is written (or dropped): a slow reader of a long
                    // answer is not idle, and must not be evicted mid-answer.
                    Ok::<_, std::convert::Infallible>(response.map(|inner| GuardedBody {
                        inner,
                        _busy: Some(busy),
                        _client: admission,
                    }))
                }
            }
        });
        let serving = http.serve_connection(TokioIo::new(stream), service);
        let (shutdown, metrics) = (shutdown.clone(), metrics.clone());
        connections.spawn(async move {
            // Closed however the task ends, a panicking handler included: the slot and the
            // gauge must come back.
            let _open = Open {
                conn: conn.clone(),
                metrics: metrics.clone(),
            };
            if let Some(reason) = drive(serving, &conn, &shutdown).await {
                metrics.http_connection_shed(reason);
            }
        });
    }
    // No new connections while the others drain: they would only wait in the backlog.
    drop(listener);
    // Graceful shutdown: every connection finishes its request under way and closes; those
    // still open at the deadline are dropped with the set.
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Runs one connection until the client or the server ends it. Answers why the server cut it
/// short, for the metric, or `None` when it ended normally.
async fn drive<S>(
    serving: hyper::server::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, S>,
    conn: &Conn,
    shutdown: &CancellationToken,
) -> Option<ShedReason>
where
    S: hyper::service::HttpService<Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut serving = std::pin::pin!(serving);
    let mut closing = false;
    loop {
        tokio::select! {
            _ = serving.as_mut() => return None,
            _ = conn.evict.cancelled(), if !closing => {
                // Idle: no request under way, so dropping the connection loses nothing.
                if conn.is_idle() {
                    return Some(ShedReason::Evicted);
                }
                // A request arrived since it was picked: let it finish, then close.
                serving.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = shutdown.cancelled(), if !closing => {
                serving.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// The open connections, and those of them idle, oldest idle first.
#[derive(Default)]
struct Table {
    open: AtomicUsize,
    /// Connections open beyond the cap, for the operators' paths.
    reserve_open: AtomicUsize,
    next: AtomicU64,
    idle: Mutex<BTreeMap<u64, Arc<Conn>>>,
    /// Requests under way per client; a client with none has no entry.
    by_client: Mutex<HashMap<Client, usize>>,
}

impl Table {
    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn reserve_open(&self) -> usize {
        self.reserve_open.load(Ordering::SeqCst)
    }

    /// A connection of the pool, or (`reserve`) one beyond the cap for the operators' paths,
    /// which is never idle for eviction: the header timeout closes it when unused.
    fn register(self: &Arc<Self>, reserve: bool) -> Arc<Conn> {
        match reserve {
            true => self.reserve_open.fetch_add(1, Ordering::SeqCst),
            false => self.open.fetch_add(1, Ordering::SeqCst),
        };
        let conn = Arc::new(Conn {
            table: self.clone(),
            reserve,
            state: Mutex::new(ConnState {
                busy: 0,
                idle_key: None,
            }),
            evict: CancellationToken::new(),
        });
        // Idle from the start: a client that connects and sends nothing is the first to go.
        if !reserve {
            conn.set_idle();
        }
        conn
    }

    /// One more request of `client` under way, unless it has `max` already.
    fn client_slot(self: &Arc<Self>, client: Client, max: usize) -> Option<ClientSlot> {
        let mut by_client = self
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let under_way = by_client.entry(client.clone()).or_insert(0);
        if *under_way >= max {
            return None;
        }
        *under_way += 1;
        Some(ClientSlot {
            table: self.clone(),
            client,
        })
    }

    /// Closes the connection idle the longest; `false` when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        // A poisoned lock only means a panic elsewhere while it was held; the map itself is
        // always consistent (each operation is one insert or remove).
        let oldest = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_first();
        match oldest {
            Some((_, conn)) => {
                conn.evict.cancel();
                true
            }
            None => false,
        }
    }

    fn idle_map(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Conn {
    table: Arc<Table>,
    /// Beyond the cap: for the operators' paths only.
    reserve: bool,
    state: Mutex<ConnState>,
    /// Cancelled when a new connection needs this one's place.
    evict: CancellationToken,
}

struct ConnState {
    /// Requests under way (one at a time on HTTP/1.1, but counted to be safe).
    busy: usize,
    /// Its key in the table's idle map while idle: keys grow, so the smallest is the
    /// connection idle the longest.
    idle_key: Option<u64>,
}

impl Conn {
    fn lock(&self) -> std::sync::MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no request is under way.
    fn is_idle(&self) -> bool {
        self.lock().busy == 0
    }

    fn set_idle(self: &Arc<Self>) {
        let mut state = self.lock();
        self.enter_idle(&mut state);
    }

    /// Under the state's lock, so that a request starting at the same moment cannot leave a
    /// busy connection in the idle map.
    fn enter_idle(self: &Arc<Self>, state: &mut ConnState) {
        // Picked for eviction while busy: it closes after this answer, and must not be
        // picked again in place of another connection. A reserve connection is not the
        // pool's to evict.
        if self.evict.is_cancelled() || self.reserve {
            return;
        }
        let key = self.table.next.fetch_add(1, Ordering::SeqCst);
        state.idle_key = Some(key);
        self.table.idle_map().insert(key, self.clone());
    }

    /// Marks a request under way until the guard is dropped.
    fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.lock();
        state.busy += 1;
        if let Some(key) = state.idle_key.take() {
            self.table.idle_map().remove(&key);
        }
        drop(state);
        Busy(self.clone())
    }

    /// The connection has ended: out of the table.
    fn close(&self) {
        let mut state = self.lock();
        if let Some(key) = state.idle_key.take() {
            self.table.idle_map().remove(&key);
        }
        match self.reserve {
            true => self.table.reserve_open.fetch_sub(1, Ordering::SeqCst),
            false => self.table.open.fetch_sub(1, Ordering::SeqCst),
        };
    }
}

/// Counts a connection as open until dropped.
struct Open {
    conn: Arc<Conn>,
    metrics: Metrics,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.conn.close();
        self.metrics.http_connection_closed();
    }
}

/// A response body that keeps its connection busy, and its client's request counted, until
/// it is written or dropped.
struct GuardedBody {
    inner: axum::body::Body,
    _busy: Option<Busy>,
    _client: Option<Admission>,
}

/// One request of a client under way, until dropped.
struct ClientSlot {
    table: Arc<Table>,
    client: Client,
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut by_client = self
            .table
            .by_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(under_way) = by_client.get_mut(&self.client) {
            *under_way = under_way.saturating_sub(1);
            if *under_way == 0 {
                by_client.remove(&self.client);
            }
        }
    }
}

impl hyper::body::Body for GuardedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.busy = state.busy.saturating_sub(1);
        if state.busy == 0 {
            self.0.enter_idle(&mut state);
        }
    }
}
