//! Logging, and traces for observability backends over OTLP/HTTP.
//!
//! The agent loop describes every turn with `tracing` spans after the OpenTelemetry GenAI
//! conventions (`invoke_agent` ⊃ `chat` ⊃ `execute_tool`, see `voxloop_core::agent`). [`init`]
//! installs the process's subscriber with two layers, each under its own filter:
//!
//! - the console log on stderr, filtered by `[log] filter` (`VOXLOOP_LOG`);
//! - when `[telemetry] otlp_endpoint` is set, a `tracing-opentelemetry` layer that turns the
//!   spans of voxloop's own crates (targets starting with `voxloop`) at `info` and above into
//!   OpenTelemetry spans, whatever the console filter says: `VOXLOOP_LOG=warn` quiets the
//!   console and still exports every turn.
//!
//! A finished span only joins a bounded in-memory queue; the SDK's batch processor, on a thread
//! of its own, posts the queue as protobuf to `<endpoint>/v1/traces` with reqwest's blocking
//! client. A turn therefore never waits on the receiver: when it is down or slow the export
//! fails on that thread (after a few retries within `timeout_seconds`), one warning is logged
//! until an export succeeds again, and the spans of the failed batches are dropped.
//!
//! The [`TelemetryGuard`] returned by [`init`] flushes the queue when dropped: `voxloop serve`
//! holds it until the server has stopped gracefully (SIGTERM or Ctrl-C), so the spans of the
//! last turn are sent before the process exits.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::config::{OtlpProtocol, TelemetryConfig};

/// Exported spans are those whose target starts with this (every voxloop crate), at `info`
/// and above.
const EXPORTED_TARGETS: &str = "voxloop";

/// Where an OTLP/HTTP receiver takes traces, under its base URL.
const TRACES_PATH: &str = "/v1/traces";

/// The most of a receiver's answer that is read (a collector answers with a few bytes).
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// How much longer than one export the flush at exit may wait.
const SHUTDOWN_MARGIN: Duration = Duration::from_secs(1);

/// Keeps the exporter alive; dropping it sends the spans still queued (bounded by
/// `timeout_seconds`) and stops the export thread.
#[must_use = "dropping the guard stops the export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    timeout: Duration,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(err) = provider.shutdown_with_timeout(self.timeout + SHUTDOWN_MARGIN) {
                tracing::warn!(error = %err, "traces still queued at exit were not all sent");
            }
        }
    }
}

/// Installs the global `tracing` subscriber: the console log under `log_filter` and, when
/// `config.otlp_endpoint` is set, the OTLP export of voxloop's spans (see the module docs).
/// `config` must have passed `Config::validate_telemetry`.
///
/// Call it once, before an async runtime starts on this thread (reqwest's blocking client
/// cannot be built inside one), and keep the guard until the end of the program.
pub fn init(log_filter: &str, config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    let filter = EnvFilter::try_new(log_filter)
        .map_err(|e| anyhow::anyhow!("invalid log filter {log_filter:?}: {e}"))?;
    let console = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let timeout = Duration::try_from_secs_f64(config.timeout_seconds)
        .context("[telemetry] timeout_seconds is not a duration")?;
    let export = match config.otlp_endpoint.as_deref() {
        Some(endpoint) => Some(tracer_provider(config, &traces_url(endpoint), timeout)?),
        None => None,
    };
    let guard = TelemetryGuard { provider: export.clone(), timeout };
    tracing_subscriber::registry()
        .with(console)
        .with(export.as_ref().map(otel_layer))
        .try_init()
        .context("cannot install the log subscriber")?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(
            url = %traces_url(endpoint),
            service_name = %config.service_name,
            sampling_ratio = config.sampling_ratio,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(guard)
}

/// The URL spans are posted to: `endpoint` + `/v1/traces`, unless it already ends so.
fn traces_url(endpoint: &str) -> String {
    let base = endpoint.trim().trim_end_matches('/');
    if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    }
}

/// The tracer provider: the OTLP/HTTP exporter behind a batch processor, the sampler and the
/// resource (`service.name`, `service.version`).
fn tracer_provider(
    config: &TelemetryConfig,
    url: &str,
    timeout: Duration,
) -> anyhow::Result<SdkTracerProvider> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .context("cannot build the HTTP client for the OTLP export")?;
    let headers: HashMap<String, String> =
        config.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let protocol = match config.protocol {
        OtlpProtocol::HttpProtobuf => Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_protocol(protocol)
        .with_endpoint(url)
        .with_timeout(timeout)
        .with_headers(headers)
        .build()
        .with_context(|| format!("cannot set up the OTLP export to {url}"))?;
    let exporter =
        ReportingExporter { inner: exporter, url: url.to_owned(), failing: AtomicBool::new(false) };
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling_ratio)));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// The layer that hands voxloop's spans to `provider`'s tracer.
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    let scope =
        InstrumentationScope::builder("voxloop").with_version(env!("CARGO_PKG_VERSION")).build();
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer_with_scope(scope))
        .with_filter(Targets::new().with_target(EXPORTED_TARGETS, LevelFilter::INFO))
}

/// The exporter's HTTP client: reqwest's blocking client, run on the batch processor's own
/// thread (which drives the exporter's futures by blocking on them).
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let response = self.0.execute(reqwest::blocking::Request::try_from(request)?)?;
        let status = response.status();
        let headers = response.headers().clone();
        let mut body = Vec::new();
        response.take(MAX_RESPONSE_BYTES).read_to_end(&mut body)?;
        let mut reply = Response::builder().status(status).body(Bytes::from(body))?;
        *reply.headers_mut() = headers;
        Ok(reply)
    }
}

/// Logs a failing export once (until one succeeds again) instead of staying silent.
#[derive(Debug)]
struct ReportingExporter<E> {
    inner: E,
    url: String,
    /// Whether the last export failed.
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for ReportingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                url = %self.url,
                spans,
                error = %err,
                "cannot export traces; spans are dropped until the receiver answers (logged once)"
            ),
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(url = %self.url, "traces are exported again")
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_go_under_the_base_url() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://h:4318/"), "http://h:4318/v1/traces");
        assert_eq!(
            traces_url("https://cloud.langfuse.com/api/public/otel"),
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
        assert_eq!(traces_url("http://h:4318/v1/traces"), "http://h:4318/v1/traces");
    }
}
