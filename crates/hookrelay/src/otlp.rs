//! Optional export of spans to an OpenTelemetry collector over OTLP/HTTP (protobuf), behind
//! the `otlp_endpoint` setting: off unless it is set.
//!
//! The spans are `tracing`'s, bridged by tracing-opentelemetry, so they pass the same
//! `RUST_LOG` filter as the log lines (the statement logs that carry secrets stay off). The
//! one span made for export is a delivery attempt's (`webhook.attempt`, at info): it is a
//! child of the event's `traceparent`, and it is the parent the receiver is told about.

use bytes::Bytes;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

/// OTLP's requests go through the service's runtime and the reqwest it already has, rather
/// than a second HTTP stack. The exporter calls from a thread of its own: the request is
/// spawned on the runtime, whose join handle any thread can wait on.
#[derive(Debug)]
struct RuntimeClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for RuntimeClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let sent = self.runtime.spawn(async move {
            let response = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = response.status();
            // The exporter reads Retry-After from them when the collector pushes back.
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = sent.await??;
        let mut answer = http::Response::builder().status(status).body(body)?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// The tracer provider exporting to `endpoint`'s `/v1/traces`; shut it down before exit so
/// the last spans go out.
pub fn provider(
    endpoint: &url::Url,
    runtime: tokio::runtime::Handle,
) -> anyhow::Result<SdkTracerProvider> {
    // The OTLP/HTTP convention: the signal's path under the collector's base address.
    let traces = format!("{}/v1/traces", endpoint.as_str().trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(RuntimeClient { client, runtime })
        .with_endpoint(traces)
        .build()?;
    // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by the builder; `hookrelay`
    // only where they name no service, so deployments can be told apart.
    let mut resource = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("hookrelay");
    }
    let resource = resource.build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that turns spans into OpenTelemetry spans of `provider`.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("hookrelay"))
}
