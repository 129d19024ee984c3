//! The span of one delivery attempt, and the `traceparent` the receiver is sent.
//!
//! With an OpenTelemetry layer installed (`otlp_endpoint` set), the attempt is a real span:
//! a child of the event's `traceparent`, exported, and the receiver is told its id as
//! parent, so the receiver's spans hang under hookrelay's in the same trace. Without one,
//! the event's trace still crosses the hop: the receiver gets the same trace id and flags
//! with a span id made up for the attempt.

use hookrelay_core::{DeliveryV1, Outcome, Traceparent};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub(crate) struct AttemptSpan {
    pub span: tracing::Span,
    /// What goes out as the request's `traceparent`, if anything.
    pub traceparent: Option<String>,
}

pub(crate) fn start(task: &DeliveryV1) -> AttemptSpan {
    let span = tracing::info_span!(
        "webhook.attempt",
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        webhook_id = %task.webhook_id,
        event_type = %task.event_type,
        // Signed: tracing hands unsigned numbers to OpenTelemetry as text.
        attempt = i64::from(task.attempt),
        http.response.status_code = tracing::field::Empty,
    );
    let upstream = task
        .traceparent
        .as_deref()
        .and_then(|t| Traceparent::parse(t).ok());
    if let Some(remote) = upstream.as_ref().and_then(remote_parent) {
        // It fails without an OpenTelemetry layer, where no span is exported anyway: the
        // receiver is told of the event's trace all the same, below.
        if let Err(e) = span.set_parent(remote) {
            tracing::trace!(error = %e, "the attempt's span has no OpenTelemetry parent");
        }
    }
    // Only an event that came with a trace sends one on: an event without stays without
    // (its exported span is a root of its own), so a fixed traceparent the webhook sets still
    // goes out, as with export off.
    let traceparent = upstream.map(|up| {
        let own = span.context().span().span_context().clone();
        if own.is_valid() {
            format!(
                "00-{}-{}-{:02x}",
                own.trace_id(),
                own.span_id(),
                own.trace_flags().to_u8()
            )
        } else {
            up.child(rand::random())
        }
    });
    AttemptSpan { span, traceparent }
}

/// Notes how the attempt ended on its span.
pub(crate) fn finish(span: &tracing::Span, outcome: Outcome, status: Option<u16>) {
    if let Some(status) = status {
        span.record("http.response.status_code", i64::from(status));
    }
    if outcome != Outcome::Success {
        span.record("otel.status_code", "ERROR");
    }
}

fn remote_parent(up: &Traceparent) -> Option<opentelemetry::Context> {
    let context = SpanContext::new(
        TraceId::from_hex(up.trace_id()).ok()?,
        SpanId::from_hex(up.parent_id()).ok()?,
        TraceFlags::new(up.flags()),
        true,
        TraceState::default(),
    );
    Some(opentelemetry::Context::new().with_remote_span_context(context))
}
