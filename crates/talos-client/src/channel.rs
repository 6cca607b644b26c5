//! Channels to apid endpoints and the call pipeline every RPC goes through.
//!
//! One lazily connected, shared tonic channel per endpoint (cloned per call; tonic reconnects it
//! after failures). Calls try the last endpoint that worked first and fail over to the others in
//! order when an endpoint cannot be reached. Idempotent reads are retried with exponential backoff
//! and jitter on transient failures; writes never are.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use talos_config::{Context, Endpoint, ProxyUrl};
use tokio::net::TcpStream;
use tonic::transport::Channel;

use crate::error::{Result, TalosError, Target};
use crate::options::CallOptions;

/// Receives the outcome of every RPC attempt (for metrics).
pub trait RpcObserver: Send + Sync + std::fmt::Debug {
    /// One RPC (or stream opening) finished after `took`, failing with `error` if set.
    fn observe(&self, took: Duration, error: Option<crate::ErrorKind>);
}

/// Tunables of a client; `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Deadline of a unary call (default 30 s).
    pub timeout: Duration,
    /// Longest wait for the next message of a stream (default 30 s).
    pub stream_idle_timeout: Duration,
    /// Longest wait for TCP connect plus TLS handshake (default 10 s).
    pub connect_timeout: Duration,
    /// Extra attempts for idempotent reads after a transient failure (default 2).
    pub read_retries: u32,
    /// First backoff delay (default 100 ms); doubles per attempt, with jitter.
    pub backoff_base: Duration,
    /// Largest backoff delay (default 2 s).
    pub backoff_max: Duration,
    /// Largest message accepted (default 64 MiB; at least 32 MiB is needed for big answers).
    pub max_decoding_message_size: usize,
    /// Nodes called at once by fan-out helpers (default 16).
    pub fan_out_limit: usize,
    /// Told about every RPC attempt (default: none).
    pub observer: Option<Arc<dyn RpcObserver>>,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            stream_idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            read_retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
            max_decoding_message_size: 64 * 1024 * 1024,
            fan_out_limit: crate::fanout::DEFAULT_FAN_OUT_LIMIT,
            observer: None,
        }
    }
}

/// Which RPC a pipeline call makes: its gRPC service and the client method (span attributes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rpc {
    service: &'static str,
    method: &'static str,
}

impl Rpc {
    pub(crate) const fn new(service: &'static str, method: &'static str) -> Self {
        Self { service, method }
    }

    /// The `talos.rpc` span of one call (retries and failovers included). It names the method,
    /// the node and the endpoint; never a request or response field.
    fn span(self, opts: &CallOptions) -> tracing::Span {
        // A node name passed the caller's allowlist; it is bounded all the same.
        let node = opts.node.as_deref().map(|n| {
            let mut end = n.len().min(MAX_NODE_CHARS);
            while !n.is_char_boundary(end) {
                end -= 1;
            }
            &n[..end]
        });
        tracing::info_span!(
            "talos.rpc",
            otel.name = %format_args!("{}/{}", self.service, self.method),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = self.service,
            rpc.method = self.method,
            talos.node = node,
            server.address = tracing::field::Empty,
            rpc.grpc.status_code = tracing::field::Empty,
            talos.retries = 0u32,
            error.kind = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }
}

/// The most characters of a node name a span keeps (a DNS name has at most 253).
const MAX_NODE_CHARS: usize = 253;

/// Marks a failed call's span with the error kind (a failover that then worked is no error).
fn record_outcome<T>(span: &tracing::Span, result: &Result<T>) {
    if let Err(err) = result {
        span.record("error.kind", err.kind().as_str());
        span.record("otel.status_code", "ERROR");
    }
}

/// Whether a call may be repeated safely.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallKind {
    /// Reads: retried on transient failures.
    Read,
    /// Anything that changes state: attempted once (per endpoint that could not be reached at all).
    Write,
}

/// Counters of what the pipeline did, for tests, metrics and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// RPC attempts sent (including retries and failovers).
    pub attempts: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Moves to another endpoint after one could not be reached.
    pub failovers: u64,
}

#[derive(Debug, Default)]
struct Counters {
    attempts: AtomicU64,
    retries: AtomicU64,
    failovers: AtomicU64,
}

/// An endpoint could not be connected to (TCP or TLS); the request was never sent.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {endpoint}: {source}")]
struct ConnectError {
    endpoint: String,
    #[source]
    source: io::Error,
}

#[derive(Debug)]
struct EndpointChannel {
    label: String,
    channel: Channel,
}

/// The channels of one context and the pipeline that uses them.
#[derive(Debug)]
pub(crate) struct Pipeline {
    endpoints: Vec<EndpointChannel>,
    preferred: AtomicUsize,
    pub(crate) settings: ClientSettings,
    counters: Counters,
}

impl Pipeline {
    pub(crate) fn new(context: &Context, settings: ClientSettings) -> Result<Self> {
        let tls = crate::tls::client_config(context.name(), context.credentials())?;
        let endpoints = context
            .endpoints()
            .iter()
            .map(|ep| {
                Ok(EndpointChannel {
                    label: ep.to_string(),
                    channel: lazy_channel(ep, context.proxy(), tls.clone(), &settings).map_err(
                        |message| TalosError::Connection {
                            target: Target {
                                endpoint: Some(ep.to_string()),
                                node: None,
                            },
                            message,
                        },
                    )?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            settings,
            counters: Counters::default(),
        })
    }

    pub(crate) fn stats(&self) -> ClientStats {
        ClientStats {
            attempts: self.counters.attempts.load(Ordering::Relaxed),
            retries: self.counters.retries.load(Ordering::Relaxed),
            failovers: self.counters.failovers.load(Ordering::Relaxed),
        }
    }

    /// The channel of the preferred endpoint (for the `proto` escape hatch).
    pub(crate) fn preferred_channel(&self) -> Channel {
        let idx = self.preferred.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        self.endpoints[idx].channel.clone()
    }

    /// Endpoint indexes in the order to try: the last one that worked, then the rest in order.
    fn order(&self) -> Vec<usize> {
        let first = self.preferred.load(Ordering::Relaxed) % self.endpoints.len().max(1);
        std::iter::once(first)
            .chain((0..self.endpoints.len()).filter(|i| *i != first))
            .collect()
    }

    /// Runs a unary call: timeout, failover, retries for reads.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        opts: &CallOptions,
        kind: CallKind,
        req: Req,
        call: F,
    ) -> Result<(Resp, Target)>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        use tracing::Instrument as _;
        let timeout = opts.timeout.unwrap_or(self.settings.timeout);
        let span = rpc.span(opts);
        let result = self
            .with_retries(kind, || {
                self.attempt(opts, kind, &req, Some(timeout), timeout, &call)
            })
            .instrument(span.clone())
            .await;
        record_outcome(&span, &result);
        result
    }

    /// Opens a server stream (with the same failover and retries as unary calls); messages are
    /// then read with [`Pipeline::next`]. Streams carry no gRPC deadline: an idle timeout applies.
    pub(crate) async fn open_stream<Req, Resp, F, Fut>(
        &self,
        rpc: Rpc,
        opts: &CallOptions,
        kind: CallKind,
        req: Req,
        call: F,
    ) -> Result<(tonic::Streaming<Resp>, Target)>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<tonic::Streaming<Resp>>, tonic::Status>>,
    {
        use tracing::Instrument as _;
        let idle = self.idle_timeout(opts);
        let span = rpc.span(opts);
        let result = self
            .with_retries(kind, || self.attempt(opts, kind, &req, None, idle, &call))
            .instrument(span.clone())
            .await;
        record_outcome(&span, &result);
        result
    }

    pub(crate) fn idle_timeout(&self, opts: &CallOptions) -> Duration {
        opts.timeout.unwrap_or(self.settings.stream_idle_timeout)
    }

    /// Reads the next stream message within the idle timeout.
    pub(crate) async fn next<Resp>(
        &self,
        stream: &mut tonic::Streaming<Resp>,
        target: &Target,
        idle: Duration,
    ) -> Result<Option<Resp>> {
        match tokio::time::timeout(idle, stream.message()).await {
            Err(_) => Err(TalosError::Timeout {
                target: target.clone(),
                after: idle,
            }),
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(status)) => Err(TalosError::from_status(&status, target.clone(), idle)),
        }
    }

    async fn with_retries<T, Fut>(&self, kind: CallKind, attempt: impl Fn() -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let max_retries = match kind {
            CallKind::Read => self.settings.read_retries,
            CallKind::Write => 0,
        };
        let mut retries = 0;
        loop {
            match attempt().await {
                Err(err) if err.is_transient() && retries < max_retries => {
                    retries += 1;
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::Span::current().record("talos.retries", retries);
                    let delay = backoff(
                        self.settings.backoff_base,
                        self.settings.backoff_max,
                        retries,
                    );
                    tracing::debug!(error = %err, retry = retries, ?delay, "transient failure; retrying read");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt: every endpoint in order until one is reachable.
    async fn attempt<Req, Resp, F, Fut>(
        &self,
        opts: &CallOptions,
        kind: CallKind,
        req: &Req,
        deadline: Option<Duration>,
        timeout: Duration,
        call: &F,
    ) -> Result<(Resp, Target)>
    where
        Req: Clone,
        F: Fn(Channel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let order = self.order();
        let mut last_err = None;
        for (n, idx) in order.iter().copied().enumerate() {
            let endpoint = &self.endpoints[idx];
            let target = Target {
                endpoint: Some(endpoint.label.clone()),
                node: opts.node.clone(),
            };
            let mut request = tonic::Request::new(req.clone());
            opts.apply(&mut request, deadline)
                .map_err(|message| TalosError::Local { message })?;
            if n > 0 {
                self.counters.failovers.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let span = tracing::Span::current();
            span.record("server.address", endpoint.label.as_str());
            let started = std::time::Instant::now();
            let outcome =
                tokio::time::timeout(timeout, call(endpoint.channel.clone(), request)).await;
            if let Some(observer) = &self.settings.observer {
                let error = match &outcome {
                    Err(_) => Some(crate::ErrorKind::Timeout),
                    Ok(Ok(_)) => None,
                    Ok(Err(status)) => {
                        Some(TalosError::from_status(status, Target::default(), timeout).kind())
                    }
                };
                observer.observe(started.elapsed(), error);
            }
            // The last attempt's code stays on the span.
            match &outcome {
                Ok(Ok(_)) => span.record("rpc.grpc.status_code", 0i32),
                Ok(Err(status)) => span.record("rpc.grpc.status_code", i32::from(status.code())),
                Err(_) => &span,
            };
            match outcome {
                Err(_) => {
                    return Err(TalosError::Timeout {
                        target,
                        after: timeout,
                    });
                }
                Ok(Ok(response)) => {
                    self.preferred.store(idx, Ordering::Relaxed);
                    return Ok((response.into_inner(), target));
                }
                Ok(Err(status)) => {
                    let never_sent = is_connect_failure(&status);
                    let err = TalosError::from_status(&status, target, timeout);
                    // Another endpoint may work when this one could not be reached at all; a read
                    // may also move on after a broken connection.
                    let endpoint_down = never_sent
                        || (kind == CallKind::Read
                            && err.is_transient()
                            && std::error::Error::source(&status).is_some());
                    if endpoint_down
                        && n + 1 < order.len()
                        && err.kind() != crate::ErrorKind::Authentication
                    {
                        tracing::debug!(error = %err, "endpoint unreachable; trying the next one");
                        last_err = Some(err);
                        continue;
                    }
                    return Err(err);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| TalosError::Local {
            message: "the context has no endpoints".into(),
        }))
    }
}

/// Whether the status says the connection was never established (so the request was not sent).
fn is_connect_failure(status: &tonic::Status) -> bool {
    crate::error::error_chain(status).any(|err| err.is::<ConnectError>())
}

/// Exponential backoff with full jitter: a random delay in [base·2^(n-1) / 2, base·2^(n-1)], capped.
fn backoff(base: Duration, max: Duration, retry: u32) -> Duration {
    let exp = base
        .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
        .min(max);
    let half = exp / 2;
    half + Duration::from_nanos(fastrand::u64(
        0..=u64::try_from(half.as_nanos()).unwrap_or(u64::MAX),
    ))
}

/// A channel that connects on first use with our own TLS (so the protocol version is pinned),
/// through the context's HTTP proxy when it has one (a CONNECT tunnel; TLS runs inside it).
fn lazy_channel(
    endpoint: &Endpoint,
    proxy: Option<&ProxyUrl>,
    tls: Arc<rustls::ClientConfig>,
    settings: &ClientSettings,
) -> Result<Channel, String> {
    let server_name = endpoint
        .server_name()
        .map_err(|e| format!("`{}` cannot be a TLS server name: {e}", endpoint.host()))?;
    let host = endpoint.host().to_owned();
    let port = endpoint.port();
    let label = endpoint.to_string();
    let connect_timeout = settings.connect_timeout;
    let connector = tokio_rustls::TlsConnector::from(tls);
    let proxy = proxy.cloned().map(Arc::new);
    let target = Arc::new(endpoint.clone());
    let service = tower::service_fn(move |_uri: http::Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let host = host.clone();
        let label = label.clone();
        let proxy = proxy.clone();
        let target = target.clone();
        async move {
            let connect = async {
                let tcp = match proxy.as_deref() {
                    Some(proxy) => crate::proxy::tunnel(proxy, &target).await?,
                    None => {
                        let tcp = TcpStream::connect((host.as_str(), port)).await?;
                        tcp.set_nodelay(true)?;
                        tcp
                    }
                };
                connector.connect(server_name, tcp).await
            };
            match tokio::time::timeout(connect_timeout, connect).await {
                Ok(Ok(stream)) => Ok(TokioIo::new(stream)),
                Ok(Err(source)) => Err(ConnectError {
                    endpoint: label,
                    source,
                }),
                Err(_) => Err(ConnectError {
                    endpoint: label,
                    source: io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no TLS connection within {connect_timeout:?}"),
                    ),
                }),
            }
        }
    });
    let uri = endpoint.uri();
    let channel = tonic::transport::Endpoint::from_shared(uri.clone())
        .map_err(|e| format!("`{uri}` is not a valid URI: {e}"))?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector_lazy(service);
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for retry in 1..10 {
            let full = base.saturating_mul(1 << (retry - 1)).min(max);
            for _ in 0..20 {
                let d = backoff(base, max, retry);
                assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
            }
        }
    }
}
