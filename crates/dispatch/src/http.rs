//! Sending one attempt: the shared HTTP client, the Standard Webhooks headers, and the guard
//! that keeps deliveries off non-public addresses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hookrelay_core::{
    net, response_excerpt, signing, DeliveryV1, Outcome, MAX_RESPONSE_BODY, TRACEPARENT_HEADER,
};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tracing::Instrument as _;

use crate::attempt_span;
use crate::subscriptions::WebhookConfig;

const USER_AGENT: &str = concat!("hookrelay/", env!("CARGO_PKG_VERSION"));

/// What one attempt gave.
#[derive(Debug)]
pub struct AttemptResult {
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub body: Option<String>,
    pub error: Option<String>,
    /// What the answer's `Retry-After` asks for, when it has a readable one.
    pub retry_after: Option<Duration>,
}

/// Why a delivery was not even sent.
#[derive(Debug, thiserror::Error)]
#[error("blocked: {0} resolves only to non-public addresses (allow_private_networks is off)")]
struct Blocked(String);

/// Resolves names like the system does, then drops every non-public address unless private
/// networks are allowed. Checked at connection time, so a name that later re-resolves into
/// the private network (DNS rebinding) is caught too.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if !allow_private && net::is_local_name(&host) {
                return Err(Box::new(Blocked(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| allow_private || net::is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Blocked(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// One client for every delivery: connections are pooled per host.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
}

impl Sender {
    /// `max_idle_per_host` should match the attempts that may run at once: several webhooks
    /// often share a host, and a smaller idle pool would close and reopen connections to it
    /// all the time (and run a busy host out of ports).
    pub fn new(allow_private: bool, max_idle_per_host: usize) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would resolve the target itself, past the address guard below.
            .no_proxy()
            .user_agent(USER_AGENT)
            .dns_resolver(Arc::new(GuardedResolver { allow_private }))
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(max_idle_per_host)
            .build()?;
        Ok(Self {
            client,
            allow_private,
        })
    }

    /// POSTs `task`'s payload to the webhook, signed, within `timeout` for the whole exchange
    /// (connect, send, answer, body). Never fails: every way it can go wrong is an outcome.
    pub async fn send(
        &self,
        webhook: &WebhookConfig,
        task: &DeliveryV1,
        timeout: Duration,
    ) -> AttemptResult {
        let attempt = attempt_span::start(task);
        let result = self
            .send_traced(webhook, task, timeout, attempt.traceparent)
            .instrument(attempt.span.clone())
            .await;
        attempt_span::finish(&attempt.span, result.outcome, result.status);
        result
    }

    async fn send_traced(
        &self,
        webhook: &WebhookConfig,
        task: &DeliveryV1,
        timeout: Duration,
        traceparent: Option<String>,
    ) -> AttemptResult {
        if let Some(why) = &webhook.unsealable {
            return failure(Outcome::Blocked, format!("not sent unsigned: {why}"));
        }
        let url = match reqwest::Url::parse(&webhook.url) {
            Ok(url) => url,
            Err(e) => return failure(Outcome::NetworkError, format!("invalid URL: {e}")),
        };
        // IP literals never reach the resolver, so they are checked here.
        if !self.allow_private {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| !net::is_public(*ip)) {
                return failure(
                    Outcome::Blocked,
                    format!(
                        "blocked: {ip} is not a public address (allow_private_networks is off)"
                    ),
                );
            }
        }
        let now = chrono::Utc::now();
        let timestamp = now.timestamp();
        let mut request = self.client.post(url).timeout(timeout);
        for (name, value) in &webhook.headers {
            // Two traceparent headers make both invalid (W3C): the event's trace wins over
            // a fixed one set on the webhook, and that one's tracestate goes with it.
            if traceparent.is_some()
                && (name.as_str() == TRACEPARENT_HEADER || name.as_str() == "tracestate")
            {
                continue;
            }
            request = request.header(name, value);
        }
        request = request
            .header("content-type", "application/json")
            .header("webhook-id", &task.event_id)
            .header("webhook-timestamp", timestamp.to_string());
        if let Some(traceparent) = traceparent {
            request = request.header(TRACEPARENT_HEADER, traceparent);
        }
        if let Some(signature) = signing::signature_header(
            &webhook.signing_secrets(now),
            &task.event_id,
            timestamp,
            task.payload.as_bytes(),
        ) {
            request = request.header("webhook-signature", signature);
        }
        let response = match request.body(task.payload.clone()).send().await {
            Ok(r) => r,
            Err(e) => return from_error(e),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| hookrelay_core::parse_retry_after(v, chrono::Utc::now()));
        let body = match read_excerpt(response).await {
            Ok(body) => body,
            Err(e) => {
                let mut result = from_error(e);
                result.status = Some(status);
                return result;
            }
        };
        let outcome = Outcome::from_status(status);
        AttemptResult {
            outcome,
            status: Some(status),
            body: Some(body),
            error: (outcome != Outcome::Success).then(|| format!("HTTP {status}")),
            retry_after,
        }
    }
}

/// Reads at most 4 KiB of the answer and drops the rest, so a huge body costs nothing.
async fn read_excerpt(mut response: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut kept = Vec::new();
    while kept.len() < MAX_RESPONSE_BODY {
        match response.chunk().await? {
            Some(chunk) => {
                kept.extend_from_slice(&chunk[..chunk.len().min(MAX_RESPONSE_BODY - kept.len())])
            }
            None => break,
        }
    }
    Ok(response_excerpt(&kept))
}

fn failure(outcome: Outcome, error: String) -> AttemptResult {
    AttemptResult {
        outcome,
        status: None,
        body: None,
        error: Some(error),
        retry_after: None,
    }
}

fn from_error(err: reqwest::Error) -> AttemptResult {
    let err = err.without_url();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(blocked) = e.downcast_ref::<Blocked>() {
            return failure(Outcome::Blocked, blocked.to_string());
        }
        source = e.source();
    }
    let outcome = if err.is_timeout() {
        Outcome::Timeout
    } else {
        Outcome::NetworkError
    };
    failure(outcome, crate::error_chain(&err))
}
