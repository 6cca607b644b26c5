//! OpenTelemetry traces: the library's `tracing` spans exported over OTLP/gRPC (see
//! docs/observability.md). Off unless an endpoint is configured.

use anyhow::{Result, bail};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use talos_mcp::trace::{TraceHook, TraceParent};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::Registry;

/// The subscriber layer that hands spans to the exporter.
pub(crate) type ExportLayer = Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>;

/// The exporter, kept to flush it on shutdown.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter.
    pub(crate) async fn shutdown(self) {
        let provider = self.provider;
        // The batch processor blocks while it flushes: not on a runtime worker.
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flushing traces at shutdown failed");
        }
    }
}

/// The layer to add to the subscriber, when traces are to be exported: `--otlp-endpoint`
/// (or `OTEL_EXPORTER_OTLP_ENDPOINT`), or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, and neither
/// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
pub(crate) fn layer(
    endpoint: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(ExportLayer, Telemetry)>> {
    let traces_endpoint = env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").filter(|e| !e.is_empty());
    let endpoint = endpoint.filter(|e| !e.is_empty());
    if endpoint.is_none() && traces_endpoint.is_none() {
        return Ok(None);
    }
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim().eq_ignore_ascii_case("none"))
    {
        return Ok(None);
    }
    // The traces-specific variable wins over the general endpoint, as the specification says.
    let target = traces_endpoint.as_deref().or(endpoint).unwrap_or_default();
    if !target.starts_with("http://") {
        // Not echoed: an address can carry credentials.
        bail!(
            "--otlp-endpoint: the address must be http://host:port of an OTLP/gRPC collector \
             (TLS to the collector is not built in; run a collector next to the server)"
        );
    }
    let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic();
    if traces_endpoint.is_none() {
        exporter = exporter.with_endpoint(target);
    }
    let exporter = exporter.build()?;
    let mut resource = Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some_and(|n| !n.is_empty())
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.name="));
    if !named {
        resource = resource.with_service_name("talos-mcp");
    }
    let resource = resource
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("talos-mcp");
    // Spans of this project only (the exporter's own gRPC spans would feed back), and no log
    // events: an event's fields are for the operator's stderr, not for a trace backend.
    let filter = tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_span()
            && *meta.level() <= tracing::Level::INFO
            && meta.target().starts_with("talos_")
    });
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(filter);
    talos_mcp::trace::install_hook(Box::new(Hook));
    Ok(Some((Box::new(layer), Telemetry { provider })))
}

/// Links the library's spans to OpenTelemetry contexts.
#[derive(Debug)]
struct Hook;

impl TraceHook for Hook {
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent) {
        let value = parent.as_str();
        let (Ok(trace), Some(Ok(id)), Some(Ok(flags))) = (
            TraceId::from_hex(parent.trace_id()),
            value.get(36..52).map(SpanId::from_hex),
            value.get(53..55).map(|f| u8::from_str_radix(f, 16)),
        ) else {
            return;
        };
        let remote = SpanContext::new(
            trace,
            id,
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }

    fn traceparent(&self, span: &tracing::Span) -> Option<TraceParent> {
        let context = span.context();
        let own = context.span();
        let own = own.span_context();
        if !own.is_valid() {
            return None;
        }
        TraceParent::parse(&format!(
            "00-{}-{}-{:02x}",
            own.trace_id(),
            own.span_id(),
            own.trace_flags().to_u8()
        ))
    }
}
