//! A recording HTTP receiver on port 0, whose answers a test scripts: a status, a delay, a
//! hang. Every request is kept with its headers, body and arrival time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// How the receiver answers one request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    Status(u16),
    /// Answer with this status and body.
    Body(u16, String),
    /// Answer with this status and these headers.
    Headers(u16, Vec<(&'static str, String)>),
    /// Wait, then answer with the status.
    Delay(Duration, u16),
    /// Wait until [`Receiver::release`], then answer with the status.
    Held(u16),
    /// Never answer.
    Hang,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Requests under way at this one's arrival, itself included.
    pub in_flight: usize,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    in_flight: usize,
    /// When each answer was sent, in order.
    answered: Vec<Instant>,
    script: VecDeque<Behaviour>,
    default: Option<Behaviour>,
}

#[derive(Clone)]
pub struct Receiver {
    /// The base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    stop: CancellationToken,
    released: CancellationToken,
}

impl Receiver {
    /// Starts a receiver that answers 200 until told otherwise.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for the receiver");
        let url = format!("http://{}", listener.local_addr().expect("an address"));
        let inner = Arc::new(Mutex::new(Inner::default()));
        let stop = CancellationToken::new();
        let released = CancellationToken::new();
        let app = axum::Router::new()
            .fallback(record)
            .with_state((inner.clone(), released.clone()));
        let until = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await;
        });
        Self {
            url,
            inner,
            stop,
            released,
        }
    }

    /// Lets every request [`Behaviour::Held`] answer, now and from now on.
    pub fn release(&self) {
        self.released.cancel();
    }

    /// The answer to every request not scripted.
    pub fn answer(&self, behaviour: Behaviour) {
        self.inner.lock().expect("receiver state").default = Some(behaviour);
    }

    /// Answers for the next requests, in order; then the default again.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        self.inner
            .lock()
            .expect("receiver state")
            .script
            .extend(behaviours);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("receiver state").received.clone()
    }

    /// When each answer was sent, in order (a request whose client gave up counts too).
    pub fn answered(&self) -> Vec<Instant> {
        self.inner.lock().expect("receiver state").answered.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().expect("receiver state").received.len()
    }

    /// The distinct event ids received (the `id` of each JSON body).
    pub fn event_ids(&self) -> std::collections::HashSet<String> {
        self.received()
            .iter()
            .filter_map(|r| r.json()["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until every one of `ids` has arrived at least once.
    pub async fn wait_for_events<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a String>,
        deadline: Duration,
    ) {
        let expected: std::collections::HashSet<String> = ids.into_iter().cloned().collect();
        crate::wait_for(
            &format!("{} events at {}", expected.len(), self.url),
            deadline,
            || async { self.event_ids().is_superset(&expected).then_some(()) },
        )
        .await;
    }

    /// Waits until at least `n` requests arrived, then returns them all.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        crate::wait_for(
            &format!("{n} requests at {}", self.url),
            deadline,
            || async {
                let all = self.received();
                (all.len() >= n).then_some(all)
            },
        )
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // Only the last handle stops the server.
        if Arc::strong_count(&self.inner) <= 2 {
            self.stop.cancel();
        }
    }
}

async fn record(
    State((inner, released)): State<(Arc<Mutex<Inner>>, CancellationToken)>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let behaviour = {
        let mut state = inner.lock().expect("receiver state");
        state.in_flight += 1;
        let in_flight = state.in_flight;
        state.received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
            in_flight,
        });
        state
            .script
            .pop_front()
            .or_else(|| state.default.clone())
            .unwrap_or(Behaviour::Status(200))
    };
    // Counts the request as answered however it ends, the client hanging up included.
    struct Answering(Arc<Mutex<Inner>>);
    impl Drop for Answering {
        fn drop(&mut self) {
            if let Ok(mut state) = self.0.lock() {
                state.in_flight -= 1;
                state.answered.push(Instant::now());
            }
        }
    }
    let _answering = Answering(inner.clone());
    let status =
        |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match behaviour {
        Behaviour::Status(code) => status(code).into_response(),
        Behaviour::Body(code, body) => (status(code), body).into_response(),
        Behaviour::Headers(code, headers) => {
            let mut response = status(code).into_response();
            for (name, value) in headers {
                if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        Behaviour::Delay(wait, code) => {
            tokio::time::sleep(wait).await;
            status(code).into_response()
        }
        Behaviour::Held(code) => {
            released.cancelled().await;
            status(code).into_response()
        }
        Behaviour::Hang => std::future::pending().await,
    }
}

/// A server that accepts connections and closes them at once, without answering.
pub async fn hang_up_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });
    url
}

/// An address where nothing listens: connections are refused.
pub async fn refusing_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let url = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    url
}
