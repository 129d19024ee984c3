//! `otlp_endpoint` set: each delivery attempt is exported as a span over OTLP/HTTP, a child
//! of the event's `traceparent`, and it is the span the receiver is told is its parent.
//! The collector here is a plain HTTP endpoint that keeps what it is sent; the test decodes
//! it as OTLP's protobuf.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{create_webhook, spawn};
use hookrelay_broker::{NoRoutes, Outgoing, Publisher, Topology};
use hookrelay_tests::receiver::Receiver;
use hookrelay_tests::{amqp_url, traced_event, unique_namespace, wait_for, TestDb};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

const DEADLINE: Duration = Duration::from_secs(60);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PUBLISHER_SPAN: &str = "00f067aa0ba902b7";

fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[tokio::test]
async fn attempts_are_exported_as_spans_under_the_events_trace() {
    let collector = Receiver::start().await;
    let receiver = Receiver::start().await;
    let db = TestDb::new();
    let namespace = unique_namespace();
    let _cleanup =
        hookrelay_tests::NamespaceCleanup::new(&hookrelay_tests::amqp_url(), &namespace, &db);
    let service = spawn(
        &db,
        &namespace,
        &[
            ("HOOKRELAY_OTLP_ENDPOINT", collector.url.as_str()),
            // The batch goes out within 100 ms rather than the default 5 s.
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;
    create_webhook(service.port, &receiver.url, "Message.received").await;

    let connection = hookrelay_broker::connect(&amqp_url()).await.unwrap();
    let mut publisher = Publisher::open(&connection).await.unwrap();
    let message = Outgoing {
        exchange: Topology::new(&namespace).events_exchange(),
        routing_key: "Message.received".into(),
        body: br#"{"id":"traced","account_id":"acc","data":{}}"#.to_vec(),
        content_type: None,
        headers: traced_event(&format!("00-{TRACE_ID}-{PUBLISHER_SPAN}-01")),
        durability: hookrelay_broker::Durability::Persistent,
    };
    publisher.publish(&message, &mut NoRoutes).await.unwrap();
    publisher.close().await;

    let got = receiver.wait_for(1, DEADLINE).await;
    let sent = got[0]
        .header("traceparent")
        .expect("a traceparent")
        .to_owned();
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], TRACE_ID, "{sent}");
    let attempt_span = parts[2].to_owned();
    assert_ne!(attempt_span, PUBLISHER_SPAN);

    // The exported span is the one the receiver was told about, under the publisher's.
    let (export, resource, span) = wait_for("the attempt's span exported", DEADLINE, || async {
        collector.received().into_iter().find_map(|r| {
            let request = ExportTraceServiceRequest::decode(r.body.clone()).ok()?;
            request.resource_spans.into_iter().find_map(|rs| {
                let resource = rs.resource.clone()?;
                let span = rs
                    .scope_spans
                    .into_iter()
                    .flat_map(|ss| ss.spans)
                    .find(|s| s.span_id == bytes_of(&attempt_span))?;
                Some((r.clone(), resource, span))
            })
        })
    })
    .await;
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(
        export.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(
        attribute(&resource.attributes, "service.name"),
        Some(&Value::StringValue("hookrelay".into()))
    );
    assert_eq!(span.name, "webhook.attempt");
    assert_eq!(span.trace_id, bytes_of(TRACE_ID), "the publisher's trace");
    assert_eq!(
        span.parent_span_id,
        bytes_of(PUBLISHER_SPAN),
        "under the publisher's span"
    );
    assert_eq!(span.kind, SpanKind::Client as i32);
    assert_eq!(
        attribute(&span.attributes, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );
    assert_eq!(
        attribute(&span.attributes, "attempt"),
        Some(&Value::IntValue(1))
    );
    assert_eq!(
        attribute(&span.attributes, "event_type"),
        Some(&Value::StringValue("Message.received".into()))
    );
}
