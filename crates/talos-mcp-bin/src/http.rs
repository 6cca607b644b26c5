//! MCP over streamable HTTP (`/mcp`, which streams over SSE), with bearer-token auth, Origin
//! validation, a body size limit and a per-caller rate limit; plus `/healthz`, `/readyz` and
//! `/metrics`; and the A2A 1.0 JSON-RPC endpoint (`/a2a`) with its agent card
//! (`/.well-known/agent-card.json`), behind the same guard.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use talos_mcp::TalosMcp;
use talos_mcp::audit::Caller;

use crate::cli::HttpOpts;

/// Named bearer tokens.
#[derive(Debug, Default, Clone)]
pub(crate) struct Tokens(Vec<(String, Vec<u8>)>);

impl Tokens {
    /// Parses `name:token` entries (blank lines and `#` comments ignored).
    pub(crate) fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self> {
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let Some((name, token)) = entry.split_once(':') else {
                bail!("token entries must be name:token");
            };
            // Trimmed before the length check: spaces are not part of the token.
            let (name, token) = (name.trim(), token.trim());
            if token.len() < 16 {
                bail!("the token of `{name}` is shorter than 16 characters");
            }
            out.push((name.to_owned(), token.as_bytes().to_vec()));
        }
        Ok(Self(out))
    }

    pub(crate) fn load(opts: &HttpOpts) -> Result<Self> {
        let mut entries: Vec<String> = opts.http_tokens.clone();
        if let Some(path) = &opts.http_tokens_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            entries.extend(text.lines().map(str::to_owned));
        }
        Self::parse(entries.iter().map(String::as_str))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of the token presented, compared in constant time.
    fn identify(&self, presented: &[u8]) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.0 {
            if constant_time_eq(token, presented) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The per-caller rate limit: token buckets kept in the shared state, so that replicas sharing
/// a store (`--state-url`) count together.
#[derive(Debug)]
struct RateLimiter {
    state: Arc<dyn talos_mcp::state::SharedState>,
    per_second: u32,
    burst: u32,
}

impl RateLimiter {
    /// Whether `who` may send one more request; `None` when the store did not answer (the
    /// request is refused: a limit that cannot be counted is not lifted).
    async fn allow(&self, who: &str) -> Option<bool> {
        match self.state.admit(who, self.per_second, self.burst).await {
            Ok(allowed) => Some(allowed),
            Err(e) => {
                tracing::warn!(error = %e, "the rate limit could not be counted");
                None
            }
        }
    }
}

/// The `Host` names `/mcp` and `/metrics` answer to (DNS-rebinding protection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AllowedHosts {
    Any,
    /// Host names (lower case, IPv6 without brackets), each with the port it must come with, if any.
    List(Vec<(String, Option<u16>)>),
}

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

impl AllowedHosts {
    /// The loopback names (a request naming loopback was aimed at it, not rebound to it), the
    /// listen address when it is a specific IP, and `--allowed-hosts` (`*` allows any host).
    /// A wildcard listen address adds nothing: the operator names the hosts clients use.
    pub(crate) fn new(configured: &[String], listen: SocketAddr) -> Result<Self> {
        let mut list: Vec<(String, Option<u16>)> = LOOPBACK_NAMES
            .iter()
            .map(|h| ((*h).to_owned(), None))
            .collect();
        if !listen.ip().is_loopback() && !listen.ip().is_unspecified() {
            list.push((listen.ip().to_string(), None));
        }
        for entry in configured {
            let entry = entry.trim();
            if entry == "*" {
                return Ok(Self::Any);
            }
            let parsed = authority(entry).with_context(|| {
                format!("--allowed-hosts: `{entry}` is not a host name or host:port")
            })?;
            list.push(parsed);
        }
        Ok(Self::List(list))
    }

    fn allows(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => list
                .iter()
                .any(|(h, p)| h == host && (p.is_none() || *p == port)),
        }
    }
}

/// Splits `host[:port]` into a normalised host name and port.
fn authority(text: &str) -> Option<(String, Option<u16>)> {
    let parsed: axum::http::uri::Authority = text.parse().ok()?;
    if parsed.as_str().contains('@') || parsed.host().is_empty() {
        return None;
    }
    let host = parsed
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    Some((host, parsed.port_u16()))
}

/// The host a request was sent to: its `Host` header, or the HTTP/2 `:authority`.
fn request_host(request: &Request) -> Option<(String, Option<u16>)> {
    match request.headers().get(header::HOST) {
        Some(value) => authority(value.to_str().ok()?),
        None => authority(request.uri().authority()?.as_str()),
    }
}

/// Which caller opened each HTTP session: a session answers only to its caller.
#[derive(Debug)]
struct SessionOwners {
    owners: Mutex<HashMap<String, String>>,
    /// Closed sessions are forgotten when the map grows past this size.
    prune_at: std::sync::atomic::AtomicUsize,
    manager: Arc<LocalSessionManager>,
}

impl SessionOwners {
    const MIN_PRUNE_AT: usize = 1024;

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `caller` may use session `id` (unknown sessions are rmcp's to refuse).
    fn permits(&self, id: &str, caller: &str) -> bool {
        self.owners().get(id).is_none_or(|owner| owner == caller)
    }

    async fn bind(&self, id: &str, caller: &str) {
        let len = {
            let mut owners = self.owners();
            owners.insert(id.to_owned(), caller.to_owned());
            owners.len()
        };
        let ordering = std::sync::atomic::Ordering::Relaxed;
        if len >= self.prune_at.load(ordering).max(Self::MIN_PRUNE_AT) {
            let live: std::collections::HashSet<String> = self
                .manager
                .sessions
                .read()
                .await
                .keys()
                .map(ToString::to_string)
                .collect();
            let mut owners = self.owners();
            owners.retain(|id, _| live.contains(id));
            self.prune_at.store(owners.len() * 2, ordering);
        }
    }

    fn forget(&self, id: &str) {
        self.owners().remove(id);
    }
}

#[derive(Clone)]
struct Guard {
    tokens: Arc<Tokens>,
    origins: Arc<Vec<String>>,
    hosts: Arc<AllowedHosts>,
    max_body: usize,
    body_timeout: Duration,
    limiter: Arc<RateLimiter>,
    sessions: Arc<SessionOwners>,
}

const SESSION_HEADER: &str = "mcp-session-id";

/// Where the A2A agent card is served.
const CARD_PATH: &str = "/.well-known/agent-card.json";

/// The A2A version header.
const A2A_VERSION_HEADER: &str = "a2a-version";

/// `POST /a2a`: one A2A JSON-RPC request (the body was read, bounded, by `guard`); a JSON
/// answer, or server-sent events for the streaming methods.
async fn a2a_endpoint(State(a2a): State<talos_mcp::a2a::A2a>, request: Request) -> Response {
    let caller = request.extensions().get::<Caller>().map(|c| c.0.clone());
    let a2a = a2a.traced(
        request
            .extensions()
            .get::<talos_mcp::trace::TraceParent>()
            .cloned(),
    );
    let version = request
        .headers()
        .get(A2A_VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let Ok(body) = axum::body::to_bytes(request.into_body(), usize::MAX).await else {
        return reject(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        );
    };
    match a2a.handle(caller, version.as_deref(), &body).await {
        talos_mcp::a2a::Answer::Json(value) => (
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        talos_mcp::a2a::Answer::Stream(events) => (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            axum::body::Body::from_stream(talos_mcp::a2a::sse(events)),
        )
            .into_response(),
    }
}

/// Whether `origin` (scheme://host[:port]) is allowed; an allowed entry without a port allows any port.
fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        origin == a
            || origin.strip_prefix(a.as_str()).is_some_and(|rest| {
                rest.starts_with(':') && rest[1..].chars().all(|c| c.is_ascii_digit())
            })
    })
}

fn reject(status: StatusCode, message: &str) -> Response {
    let mut r = (status, format!("{message}\n")).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

async fn guard(State(g): State<Guard>, request: Request, next: Next) -> Response {
    // An Origin that is not text is refused, not treated as absent.
    if let Some(origin) = request.headers().get(header::ORIGIN)
        && !origin.to_str().is_ok_and(|o| origin_allowed(o, &g.origins))
    {
        return reject(StatusCode::FORBIDDEN, "origin not allowed");
    }
    match request_host(&request) {
        Some((host, port)) if g.hosts.allows(&host, port) => {}
        Some(_) => {
            return reject(
                StatusCode::FORBIDDEN,
                "host not allowed; the server's --allowed-hosts must list the name clients use",
            );
        }
        None => return reject(StatusCode::BAD_REQUEST, "missing or malformed Host header"),
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length.is_some_and(|l| l > g.max_body) {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    // The agent card tells clients how to authenticate, so it is served without a token (still
    // behind the Host and Origin checks and the rate limit).
    let public_card =
        request.uri().path() == CARD_PATH && request.method() == axum::http::Method::GET;
    let caller = if g.tokens.is_empty() || public_card {
        "anonymous".to_owned()
    } else {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::as_bytes);
        match presented.and_then(|p| g.tokens.identify(p)) {
            Some(name) => name.to_owned(),
            None => return reject(StatusCode::UNAUTHORIZED, "missing or invalid bearer token"),
        }
    };
    match g.limiter.allow(&caller).await {
        Some(true) => {}
        Some(false) => {
            return reject(
                StatusCode::TOO_MANY_REQUESTS,
                "rate limit exceeded; slow down",
            );
        }
        None => {
            return reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "the shared state store is unavailable; retry shortly",
            );
        }
    }
    // A session answers only to the caller that opened it; to anyone else it does not exist.
    let session = match request
        .headers()
        .get(SESSION_HEADER)
        .map(HeaderValue::to_str)
    {
        None => None,
        Some(Ok(id)) if g.sessions.permits(id, &caller) => Some(id.to_owned()),
        Some(_) => return reject(StatusCode::NOT_FOUND, "session not found"),
    };
    // The body is read here, whatever its framing (a chunked body has no Content-Length), up to
    // --max-body and within --body-timeout.
    let (mut parts, body) = request.into_parts();
    let body = http_body_util::Limited::new(body, g.max_body);
    let body = match tokio::time::timeout(g.body_timeout, body.collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return reject(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
        }
        Ok(Err(_)) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
        Err(_) => {
            return reject(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    parts.extensions.insert(Caller(caller.clone()));
    let delete = parts.method == axum::http::Method::DELETE;
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(body)))
        .await;
    match session {
        Some(id) if delete && response.status().is_success() => g.sessions.forget(&id),
        Some(_) => {}
        None => {
            if let Some(id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                g.sessions.bind(id, &caller).await;
            }
        }
    }
    response
}

/// rmcp answers a session's DELETE with 202 Accepted. The session is gone by then, and clients
/// expect 200 or 204 (the Python SDK logs a failed termination otherwise): answer 204.
async fn session_deleted(request: Request, next: Next) -> Response {
    let delete = request.method() == axum::http::Method::DELETE;
    let mut response = next.run(request).await;
    if delete && response.status() == StatusCode::ACCEPTED {
        *response.status_mut() = StatusCode::NO_CONTENT;
    }
    response
}

/// Readiness: the talosconfig loaded and an endpoint answered recently (checked in the background).
#[derive(Debug, Default)]
pub(crate) struct Readiness {
    ready: std::sync::atomic::AtomicBool,
}

impl Readiness {
    pub(crate) fn set(&self, ready: bool) {
        self.ready
            .store(ready, std::sync::atomic::Ordering::Relaxed);
    }
    fn get(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How long `/readyz` waits for the shared state store.
const STATE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `/readyz`: a Talos endpoint answered recently, and the shared state store answers now.
async fn ready(
    readiness: Arc<Readiness>,
    state: Arc<dyn talos_mcp::state::SharedState>,
) -> (StatusCode, &'static str) {
    if !readiness.get() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "no Talos endpoint reachable yet\n",
        );
    }
    match tokio::time::timeout(STATE_PING_TIMEOUT, state.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the shared state store does not answer\n",
        ),
    }
}

/// Checks the default context's endpoints every 30 s.
pub(crate) fn spawn_readiness_probe(server: TalosMcp, readiness: Arc<Readiness>) {
    tokio::spawn(async move {
        loop {
            readiness.set(server.probe_endpoint().await);
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
}

/// The routes a request span names; any other path is `other` (a client-set path never
/// reaches a span).
const TRACED_ROUTES: [&str; 6] = [
    "/mcp",
    "/a2a",
    "/metrics",
    "/healthz",
    "/readyz",
    "/.well-known/agent-card.json",
];

/// A span per HTTP request (MCP, A2A and the rest), a child of the client's `traceparent`
/// header when it sends a valid one. Handlers that run elsewhere (rmcp serves a session in a
/// task of its own) find the span's trace context in the request's extensions.
async fn request_span(mut request: Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let method = match request.method().as_str() {
        m @ ("GET" | "POST" | "DELETE" | "PUT" | "PATCH" | "HEAD" | "OPTIONS") => m,
        _ => "_OTHER",
    };
    let route = TRACED_ROUTES
        .iter()
        .find(|r| request.uri().path() == **r)
        .copied()
        .unwrap_or("other");
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(talos_mcp::trace::TraceParent::parse);
    if let Some(context) = talos_mcp::trace::adopt(&span, incoming.as_ref()) {
        request.extensions_mut().insert(context);
    }
    let response = next.run(request).instrument(span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// Builds the HTTP application.
pub(crate) fn app(
    server: TalosMcp,
    opts: &HttpOpts,
    tokens: Tokens,
    hosts: AllowedHosts,
    readiness: Arc<Readiness>,
    base_url: String,
) -> Router {
    let metrics = server.metrics();
    let card = talos_mcp::a2a::agent_card(
        &server,
        &talos_mcp::a2a::CardSettings {
            base_url,
            bearer: !tokens.is_empty(),
        },
    );
    let card: Arc<str> = serde_json::to_string(&card).unwrap_or_default().into();
    let a2a = talos_mcp::a2a::A2a::new(server.clone());
    let state = server.shared_state();
    let stateless = server.stateless();
    let manager = Arc::new(LocalSessionManager::default());
    // Host and Origin are checked by `guard`, for /metrics too: rmcp's own checks stay off so
    // that one rule applies.
    let mcp = StreamableHttpService::new(
        move || Ok(server.for_session()),
        manager.clone(),
        StreamableHttpServerConfig::default()
            .disable_allowed_origins()
            .disable_allowed_hosts()
            .with_max_request_body_bytes(opts.max_body)
            .with_legacy_session_mode(!stateless),
    );
    let guard_state = Guard {
        tokens: Arc::new(tokens),
        origins: Arc::new(opts.allowed_origins.clone()),
        hosts: Arc::new(hosts),
        max_body: opts.max_body,
        body_timeout: Duration::from_secs(opts.body_timeout),
        sessions: Arc::new(SessionOwners {
            owners: Mutex::new(HashMap::new()),
            prune_at: std::sync::atomic::AtomicUsize::new(SessionOwners::MIN_PRUNE_AT),
            manager,
        }),
        limiter: Arc::new(RateLimiter {
            state: state.clone(),
            per_second: opts.rate_limit.max(1),
            burst: opts.rate_limit.max(1).saturating_mul(5),
        }),
    };
    let protected = Router::new()
        .nest_service("/mcp", mcp)
        .route("/a2a", axum::routing::post(a2a_endpoint).with_state(a2a))
        .route(
            CARD_PATH,
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    card.to_string(),
                )
            }),
        )
        .route(
            "/metrics",
            get(move || async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }),
        )
        .layer(middleware::from_fn(session_deleted))
        .layer(middleware::from_fn_with_state(guard_state, guard));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || ready(readiness.clone(), state.clone())),
        )
        .merge(protected)
        .layer(middleware::from_fn(request_span))
}

/// Serves until `shutdown` resolves.
pub(crate) async fn serve(
    addr: SocketAddr,
    server: TalosMcp,
    opts: &HttpOpts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tokens = Tokens::load(opts)?;
    if tokens.is_empty() && !addr.ip().is_loopback() && !opts.insecure_no_auth {
        bail!(
            "refusing to serve on {addr} without authentication: give --http-tokens-file (or TALOS_MCP_HTTP_TOKENS), \
             bind to 127.0.0.1, or pass --insecure-no-auth if something in front authenticates"
        );
    }
    if tokens.is_empty() {
        tracing::warn!(%addr, "HTTP transport without bearer-token authentication");
    }
    let hosts = AllowedHosts::new(&opts.allowed_hosts, addr)?;
    if addr.ip().is_unspecified() && opts.allowed_hosts.is_empty() {
        tracing::warn!(
            %addr,
            "/mcp and /metrics answer only to loopback Host names; list the names clients use with --allowed-hosts"
        );
    }
    raise_open_file_limit();
    let readiness = Arc::new(Readiness::default());
    spawn_readiness_probe(server.clone(), readiness.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let scheme = if opts.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let base_url = match &opts.public_url {
        Some(url) => public_url(url)?,
        None => format!("{scheme}://{local}"),
    };
    let app = app(server, opts, tokens, hosts, readiness, base_url);
    let limits = Limits {
        header_timeout: Duration::from_secs(opts.header_timeout),
        max_connections: opts.max_connections as usize,
    };
    let acceptor = match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            tracing::info!(address = %local, "serving MCP over streamable HTTPS on /mcp");
            // The first line on stderr names the address (tests and scripts read it).
            eprintln!("listening on https://{local}/mcp");
            Some(tls_acceptor(cert, key)?)
        }
        _ => {
            tracing::info!(address = %local, "serving MCP over streamable HTTP on /mcp");
            eprintln!("listening on http://{local}/mcp");
            None
        }
    };
    serve_connections(listener, acceptor, app, limits, shutdown).await;
    Ok(())
}

/// Checks `--public-url`: an absolute http(s) URL without query or fragment; returned without
/// a trailing slash.
fn public_url(url: &str) -> Result<String> {
    let parsed: axum::http::Uri = url
        .parse()
        .with_context(|| format!("--public-url `{url}` is not a URL"))?;
    let scheme_ok = matches!(parsed.scheme_str(), Some("http" | "https"));
    if !scheme_ok || parsed.authority().is_none() || parsed.query().is_some() || url.contains('#') {
        bail!(
            "--public-url `{url}` must be an absolute http:// or https:// URL without query or fragment"
        );
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Raises the soft limit on open files to the hard limit, so that the connection cap, not the
/// file limit, is what refuses clients.
fn raise_open_file_limit() {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if let Some(hard) = limit.maximum
            && limit.current.is_some_and(|soft| soft < hard)
        {
            let raised = Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!(limit = hard, "raised the open-file limit"),
                Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
            }
        }
    }
}

/// Connection limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// How long a client may take over a request's headers, and a new connection (TLS
    /// handshake included) over its first request.
    header_timeout: Duration,
    /// Connections served at once. At the cap, a new connection takes the place of the oldest
    /// one that has not sent a request yet, or is closed at once if there is none.
    max_connections: usize,
}

/// Accepts connections (over TLS when given an acceptor) and serves `app` on each until
/// `shutdown` resolves; then lets open requests finish for up to [`crate::GRACE`].
async fn serve_connections(
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Connections that have not sent a request yet, oldest first: at the cap, the oldest of them
    // is closed to make room, so that clients which stall cannot keep others (probes) out.
    let mut unstarted: std::collections::VecDeque<Unstarted> = std::collections::VecDeque::new();
    let mut saturated = false;
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors, typically: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) if evict_oldest(&mut unstarted) => {
                tokio::time::timeout(Duration::from_secs(1), permits.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(permit) = permit else {
            if !saturated {
                tracing::warn!(
                    limit = limits.max_connections,
                    "connection limit reached; closing new connections (see --max-connections)"
                );
                saturated = true;
            }
            drop(tcp);
            continue;
        };
        saturated = false;
        accepted(&tcp);
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (evict, mut evicted) = tokio::sync::oneshot::channel();
        unstarted.push_back(Unstarted {
            started: started.clone(),
            evict,
        });
        if unstarted.len() > 2 * limits.max_connections {
            unstarted.retain(|c| !c.started.load(Ordering::Relaxed) && !c.evict.is_closed());
        }
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let first = FirstRequest {
                deadline: tokio::time::Instant::now() + limits.header_timeout,
                started,
            };
            match acceptor {
                Some(acceptor) => {
                    let tls = tokio::select! {
                        tls = tokio::time::timeout_at(first.deadline, acceptor.accept(tcp)) => tls,
                        Ok(()) = &mut evicted => return,
                    };
                    let Ok(Ok(tls)) = tls else { return };
                    serve_connection(tls, app, limits, first, evicted, watcher).await;
                }
                None => serve_connection(tcp, app, limits, first, evicted, watcher).await,
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(crate::GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections were still open after the grace period");
    }
}

/// Socket options of an accepted connection. TCP_NODELAY: a response leaves in several small
/// writes (headers, SSE event, end of the chunked body); with Nagle's algorithm the later ones
/// wait for the client's ACK of the first, which a kept-alive client delays by ~40 ms — every
/// call on a reused connection then takes 40-odd ms (docs/benchmarks.md).
fn accepted(tcp: &tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "could not set TCP_NODELAY");
    }
}

/// A connection that has not sent a request yet, as the accept loop sees it.
#[derive(Debug)]
struct Unstarted {
    started: Arc<std::sync::atomic::AtomicBool>,
    evict: tokio::sync::oneshot::Sender<()>,
}

/// Tells the oldest connection that has not sent a request to close; false if there is none.
fn evict_oldest(unstarted: &mut std::collections::VecDeque<Unstarted>) -> bool {
    while let Some(c) = unstarted.pop_front() {
        if !c.started.load(Ordering::Relaxed) && c.evict.send(()).is_ok() {
            return true;
        }
    }
    false
}

/// When a connection's first request must have arrived, and whether it has.
#[derive(Debug)]
struct FirstRequest {
    deadline: tokio::time::Instant,
    started: Arc<std::sync::atomic::AtomicBool>,
}

/// Serves HTTP/1.1 or HTTP/2 on one connection. The connection is closed if its first request
/// has not arrived by the deadline, or before that if the accept loop needs its place; after
/// that, hyper's header timeout bounds each request head.
async fn serve_connection<I>(
    io: I,
    app: Router,
    limits: Limits,
    first: FirstRequest,
    mut evicted: tokio::sync::oneshot::Receiver<()>,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;
    let flag = first.started.clone();
    let service = app.map_request(move |request: Request<hyper::body::Incoming>| {
        flag.store(true, Ordering::Relaxed);
        request
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::pin!(connection);
    tokio::select! {
        _ = &mut connection => return,
        () = tokio::time::sleep_until(first.deadline) => {}
        Ok(()) = &mut evicted => {}
    }
    if !first.started.load(Ordering::Relaxed) {
        tracing::debug!("closing a connection that sent no request in time");
        return;
    }
    let _ = connection.await;
}

/// A TLS acceptor for the listener: TLS 1.3 only (every current MCP client's TLS stack speaks
/// it), ALPN h2 and http/1.1.
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_identify() {
        let t = Tokens::parse([
            "# comment",
            "",
            "alice:0123456789abcdef0123",
            "bob : fedcba9876543210fedc",
        ])
        .unwrap();
        assert_eq!(t.identify(b"0123456789abcdef0123"), Some("alice"));
        assert_eq!(t.identify(b"fedcba9876543210fedc"), Some("bob"));
        assert_eq!(t.identify(b"0123456789abcdef0124"), None);
        assert_eq!(t.identify(b"short"), None);
        assert!(Tokens::parse(["noseparator"]).is_err());
        assert!(Tokens::parse(["x:short"]).is_err());
        // Spaces around a short token do not count towards its length.
        assert!(Tokens::parse(["x:               y"]).is_err());
        assert!(Tokens::parse(["x:y               "]).is_err());
    }

    #[test]
    fn origins() {
        let allowed = vec![
            "http://localhost".to_owned(),
            "https://app.example.com:443".to_owned(),
        ];
        assert!(origin_allowed("http://localhost", &allowed));
        assert!(origin_allowed("http://localhost:6274", &allowed));
        assert!(origin_allowed("https://app.example.com:443", &allowed));
        assert!(!origin_allowed("http://localhost.evil.com", &allowed));
        assert!(!origin_allowed("http://evil.com", &allowed));
        assert!(!origin_allowed("https://app.example.com:8443", &allowed));
    }

    #[test]
    fn allowed_hosts_follow_the_listen_address_and_the_flag() {
        let listen = |a: &str| a.parse::<SocketAddr>().unwrap();
        let loopback = AllowedHosts::new(&[], listen("127.0.0.1:8080")).unwrap();
        assert!(loopback.allows("localhost", Some(8080)));
        assert!(loopback.allows("::1", None));
        assert!(!loopback.allows("talos-mcp.ns.svc", Some(8080)));
        let specific = AllowedHosts::new(&[], listen("10.1.2.3:8080")).unwrap();
        assert!(specific.allows("10.1.2.3", Some(8080)));
        assert!(!specific.allows("10.1.2.4", Some(8080)));
        let wildcard = AllowedHosts::new(&[], listen("0.0.0.0:8080")).unwrap();
        assert!(!wildcard.allows("0.0.0.0", Some(8080)));
        assert!(!wildcard.allows("talos-mcp", None));
        let named = AllowedHosts::new(
            &["Talos-MCP.ns.svc:8080".to_owned(), "[fd00::1]".to_owned()],
            listen("[::]:8080"),
        )
        .unwrap();
        assert!(named.allows("talos-mcp.ns.svc", Some(8080)));
        assert!(!named.allows("talos-mcp.ns.svc", Some(9090)));
        assert!(!named.allows("talos-mcp.ns.svc", None));
        assert!(named.allows("fd00::1", Some(1)));
        assert!(named.allows("localhost", Some(8080)));
        let any = AllowedHosts::new(&["*".to_owned()], listen("0.0.0.0:1")).unwrap();
        assert!(any.allows("anything", None));
        assert!(AllowedHosts::new(&["a b".to_owned()], listen("0.0.0.0:1")).is_err());
        assert!(AllowedHosts::new(&["user@host".to_owned()], listen("0.0.0.0:1")).is_err());
        assert_eq!(authority("[::1]:80"), Some(("::1".to_owned(), Some(80))));
        assert_eq!(
            authority("Host.Example"),
            Some(("host.example".to_owned(), None))
        );
    }

    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap());
        let (_client, accepted_now) = tokio::join!(client, listener.accept());
        let (tcp, _) = accepted_now.unwrap();
        assert!(!tcp.nodelay().unwrap(), "the default has Nagle on");
        accepted(&tcp);
        assert!(tcp.nodelay().unwrap());
    }

    #[tokio::test]
    async fn rate_limiter_refills() {
        let l = RateLimiter {
            state: Arc::new(talos_mcp::state::MemoryState::default()),
            per_second: 1000,
            burst: 2,
        };
        assert_eq!(l.allow("a").await, Some(true));
        assert_eq!(l.allow("a").await, Some(true));
        assert_eq!(l.allow("a").await, Some(false), "burst used up");
        assert_eq!(l.allow("b").await, Some(true), "buckets are per caller");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(l.allow("a").await, Some(true), "refilled");
    }
}
