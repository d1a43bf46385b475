//! Logs and traces: `tracing` lines (human or JSON, on stderr) and OpenTelemetry spans.
//!
//! Spans always get trace ids (so `traceparent` flows through actor messages and error bodies
//! carry a trace id); they are exported over OTLP/HTTP only when `SERV_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::LogFormat;

/// Keeps the tracer provider alive; flushes pending spans when dropped.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

/// Installs the global subscriber. Must run inside the tokio runtime (the OTLP exporter uses it).
pub fn init(format: LogFormat, level: &str) -> Result<Telemetry, String> {
    // The storage engine narrates every recovery step at info, and the Raft engine every vote,
    // election and snapshot of every partition (over a thousand lines at each start) and, at
    // warn and error, every failed heartbeat of every partition while a peer is down (about 200
    // lines a second on each survivor of a 3-node cluster); keep that out unless asked for by
    // name. What matters reaches our own logs: members going down (membership), leadership
    // moving (partitions), writes that fail (their callers).
    let mut directives = level.to_string();
    if !level.contains("fjall") && !level.contains("lsm_tree") {
        directives.push_str(",fjall=warn,lsm_tree=warn");
    }
    if !level.contains("openraft") {
        directives.push_str(",openraft=off");
    }
    // The actor sessions between nodes narrate every connection at info and every session a
    // restarted or departed peer ends at warn; membership says what matters (a member down).
    if !level.contains("ractor") {
        directives.push_str(",ractor_cluster=error,ractor=warn");
    }
    // The S3 library logs every refused request (a 404, a 403) at error, body and all; the S3
    // edge logs each answer itself, a refusal at debug and a failure (5xx) at info.
    if !level.contains("s3s") {
        directives.push_str(",s3s=off");
    }
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&directives))
        .map_err(|e| format!("invalid log filter {level:?}: {e}"))?;
    let mut builder = SdkTracerProvider::builder();
    let endpoint = std::env::var("SERV_OTLP_ENDPOINT").ok().filter(|e| !e.is_empty());
    if let Some(endpoint) = &endpoint {
        builder = builder.with_span_processor(otlp_processor(endpoint)?);
    }
    let provider = builder.build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("servd"));
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match format {
        LogFormat::Human => registry.with(fmt::layer().with_writer(std::io::stderr)).try_init(),
        LogFormat::Json => registry.with(fmt::layer().json().with_writer(std::io::stderr)).try_init(),
    };
    installed.map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

fn otlp_processor(
    endpoint: &str,
) -> Result<
    opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor<
        opentelemetry_sdk::runtime::Tokio,
    >,
    String,
> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let client = opentelemetry_http::hyper::HyperClient::with_default_connector(
        std::time::Duration::from_secs(10),
        None,
    );
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_endpoint(url)
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter for {endpoint}: {e}"))?;
    Ok(opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
        exporter,
        opentelemetry_sdk::runtime::Tokio,
    )
    .build())
}
