//! MCP over streamable HTTP (`/mcp`, which streams over SSE), with bearer-token auth, Origin
//! validation, a body size limit and a per-caller rate limit; plus `/healthz`, `/readyz` and
//! `/metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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

/// Token buckets per caller.
#[derive(Debug)]
struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    fn allow(&self, who: &str) -> bool {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let (tokens, last) = buckets.entry(who.to_owned()).or_insert((self.burst, now));
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Clone)]
struct Guard {
    tokens: Arc<Tokens>,
    origins: Arc<Vec<String>>,
    max_body: usize,
    limiter: Arc<RateLimiter>,
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

async fn guard(State(g): State<Guard>, mut request: Request, next: Next) -> Response {
    if let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        && !origin_allowed(origin, &g.origins)
    {
        return reject(StatusCode::FORBIDDEN, "origin not allowed");
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if length.is_some_and(|l| l > g.max_body) {
        return reject(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    }
    let caller = if g.tokens.is_empty() {
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
    if !g.limiter.allow(&caller) {
        return reject(
            StatusCode::TOO_MANY_REQUESTS,
            "rate limit exceeded; slow down",
        );
    }
    request.extensions_mut().insert(Caller(caller));
    next.run(request).await
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

/// Checks the default context's endpoints every 30 s.
pub(crate) fn spawn_readiness_probe(server: TalosMcp, readiness: Arc<Readiness>) {
    tokio::spawn(async move {
        loop {
            readiness.set(server.probe_endpoint().await);
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    });
}

/// Builds the HTTP application.
pub(crate) fn app(
    server: TalosMcp,
    opts: &HttpOpts,
    tokens: Tokens,
    readiness: Arc<Readiness>,
) -> Router {
    let metrics = server.metrics();
    let mcp = StreamableHttpService::new(
        move || Ok(server.for_session()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default().disable_allowed_origins(),
    );
    let guard_state = Guard {
        tokens: Arc::new(tokens),
        origins: Arc::new(opts.allowed_origins.clone()),
        max_body: opts.max_body,
        limiter: Arc::new(RateLimiter {
            per_second: f64::from(opts.rate_limit.max(1)),
            burst: f64::from(opts.rate_limit.max(1)) * 5.0,
            buckets: Mutex::new(HashMap::new()),
        }),
    };
    let protected = Router::new()
        .nest_service("/mcp", mcp)
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
            get(move || async move {
                if readiness.get() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "no Talos endpoint reachable yet\n",
                    )
                }
            }),
        )
        .merge(protected)
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
    let readiness = Arc::new(Readiness::default());
    spawn_readiness_probe(server.clone(), readiness.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let app = app(server, opts, tokens, readiness);
    match (&opts.tls_cert, &opts.tls_key) {
        (Some(cert), Some(key)) => {
            let acceptor = tls_acceptor(cert, key)?;
            tracing::info!(address = %local, "serving MCP over streamable HTTPS on /mcp");
            // The first line on stderr names the address (tests and scripts read it).
            eprintln!("listening on https://{local}/mcp");
            serve_tls(listener, acceptor, app, shutdown).await
        }
        _ => {
            tracing::info!(address = %local, "serving MCP over streamable HTTP on /mcp");
            eprintln!("listening on http://{local}/mcp");
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await?;
            Ok(())
        }
    }
}

/// A TLS acceptor for the listener (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
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
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS connections and serves `app` on each until `shutdown` resolves.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
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
    fn rate_limiter_refills() {
        let l = RateLimiter {
            per_second: 1000.0,
            burst: 2.0,
            buckets: Mutex::new(HashMap::new()),
        };
        assert!(l.allow("a") && l.allow("a"));
        assert!(!l.allow("a"), "burst used up");
        assert!(l.allow("b"), "buckets are per caller");
        std::thread::sleep(Duration::from_millis(5));
        assert!(l.allow("a"), "refilled");
    }
}
