//! Building the server from the command line.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use talos_config::TalosConfig;
use talos_mcp::audit::AuditSink;
use talos_mcp::metrics::Metrics;
use talos_mcp::safety::{ConfirmMode, SafetySettings, TokenIssuer};
use talos_mcp::{Cidr, Clusters, ServerSettings, TalosMcp};
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::cli::{Global, LogFormat, ServerOpts};

/// Exports traces, when configured (see [`crate::telemetry`]).
#[cfg(feature = "otel")]
pub(crate) type Telemetry = crate::telemetry::Telemetry;
/// Built without trace export.
#[cfg(not(feature = "otel"))]
#[derive(Debug)]
pub(crate) struct Telemetry;

#[cfg(not(feature = "otel"))]
impl Telemetry {
    pub(crate) async fn shutdown(self) {}
}

/// Logs to stderr (stdout belongs to the stdio transport), and exports traces when an OTLP
/// endpoint is configured.
pub(crate) fn init_logging(global: &Global) -> Result<Option<Telemetry>> {
    #[cfg(feature = "otel")]
    let (otel, telemetry) = match crate::telemetry::layer(global.otlp_endpoint.as_deref(), |k| {
        std::env::var(k).ok()
    })? {
        Some((layer, telemetry)) => (Some(layer), Some(telemetry)),
        None => (None, None),
    };
    #[cfg(not(feature = "otel"))]
    let (otel, telemetry): (
        Option<tracing_subscriber::layer::Identity>,
        Option<Telemetry>,
    ) = {
        if global.otlp_endpoint.is_some() {
            bail!("--otlp-endpoint: this build has no trace export (the `otel` feature)");
        }
        (None, None)
    };
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| global.log_level.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(log_directives(&level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(talos_mcp::log_directives("info")));
    // The operator's filter governs stderr only; warnings and errors go to the MCP clients that
    // asked for them (logging/setLevel) whatever the stderr verbosity.
    let mcp_log =
        talos_mcp::mcp_log::McpLogLayer::new(talos_mcp::mcp_log::LogHub::global()).filtered();
    // Spans reach stderr only when the operator asks for debug detail: at the default level a
    // log line needs no span context, and enabling the spans there would build one per request
    // and per RPC (a measured fifth of a fan-out's CPU) for nothing. Trace export enables the
    // spans it exports on its own.
    let spans = stderr_wants_spans(&level);
    let filter = filter.and(tracing_subscriber::filter::filter_fn(move |meta| {
        spans || meta.is_event()
    }));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let registry = tracing_subscriber::registry().with(otel).with(mcp_log);
    let _ = match global.log_format {
        LogFormat::Text => registry
            .with(fmt.with_ansi(false).with_filter(filter))
            .try_init(),
        LogFormat::Json => registry.with(fmt.json().with_filter(filter)).try_init(),
    };
    // A panic's message can quote tool arguments: log where, never what.
    talos_mcp::quiet_panics();
    Ok(telemetry)
}

/// Whether the stderr log shows spans: when its directives ask for debug or trace anywhere.
fn stderr_wants_spans(directives: &str) -> bool {
    let d = directives.to_ascii_lowercase();
    d.contains("debug") || d.contains("trace")
}

/// rmcp's session manager logs each new HTTP session id at info; an id lets its holder act in
/// the session, so that target is kept at warn (or quieter, if asked).
const SESSION_LOG_TARGET: &str = "rmcp::transport::streamable_http_server::session::local";

/// The library's log directives, with [`SESSION_LOG_TARGET`] capped at warn.
fn log_directives(level: &str) -> String {
    let default = level
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('='))
        .unwrap_or("info")
        .to_ascii_lowercase();
    let cap = if default == "off" || default == "error" {
        default.as_str()
    } else {
        "warn"
    };
    format!(
        "{},{SESSION_LOG_TARGET}={cap}",
        talos_mcp::log_directives(level)
    )
}

/// Loads the talosconfig the way talosctl does.
pub(crate) fn load_config(global: &Global) -> Result<TalosConfig> {
    Ok(TalosConfig::load(global.talosconfig.as_deref())?)
}

/// Builds the MCP server for a loaded talosconfig.
pub(crate) fn build_server(
    global: &Global,
    opts: &ServerOpts,
    config: TalosConfig,
    transport: &str,
) -> Result<TalosMcp> {
    let cidrs = opts
        .allow_node_cidr
        .iter()
        .map(|c| c.parse::<Cidr>().map_err(anyhow::Error::msg))
        .collect::<Result<Vec<_>>>()
        .context("--allow-node-cidr")?;
    let metrics = Arc::new(Metrics::default());
    let clusters = served(
        global,
        Clusters::from_talosconfig(
            config,
            global.context.clone(),
            talos_mcp::grpc_factory(client_settings(&metrics)),
        ),
    )?
    .with_allowed_cidrs(cidrs);
    build_from_clusters(opts, clusters, transport, metrics)
}

/// Applies `--contexts`; `--context` must be one of them.
fn served(global: &Global, clusters: Clusters) -> Result<Clusters> {
    if let Some(default) = &global.context
        && !global.contexts.is_empty()
        && !global.contexts.contains(default)
    {
        bail!(
            "--context {default} is not one of --contexts ({})",
            global.contexts.join(", ")
        );
    }
    clusters
        .with_served_contexts(&global.contexts)
        .map_err(anyhow::Error::msg)
        .context("--contexts")
}

/// Talos client settings that report every RPC to `metrics`.
pub(crate) fn client_settings(metrics: &Arc<Metrics>) -> talos_client::ClientSettings {
    talos_client::ClientSettings {
        observer: Some(metrics.clone()),
        ..talos_client::ClientSettings::default()
    }
}

/// Builds the MCP server for given clusters; `metrics` should also observe their clients.
pub(crate) fn build_from_clusters(
    opts: &ServerOpts,
    clusters: Clusters,
    transport: &str,
    metrics: Arc<Metrics>,
) -> Result<TalosMcp> {
    let confirm: ConfirmMode = opts
        .confirm
        .parse()
        .map_err(anyhow::Error::msg)
        .context("--confirm")?;
    if confirm == ConfirmMode::None && (opts.allow_write || opts.allow_destructive) {
        tracing::warn!(
            "CONFIRMATION IS DISABLED (--confirm=none): write/destructive calls run without any human approval; use only for automation"
        );
    }
    let tokens = match &opts.confirm_secret_file {
        Some(path) => {
            let secret =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if secret.len() < 32 {
                bail!("{} must hold at least 32 bytes of secret", path.display());
            }
            TokenIssuer::new(&secret, Duration::from_secs(300))
        }
        None => TokenIssuer::random(Duration::from_secs(300)),
    };
    let audit = match opts.audit_log.as_deref() {
        Some("-") => AuditSink::Stderr,
        Some("off") => {
            tracing::warn!("the audit log is disabled (--audit-log off)");
            AuditSink::Off
        }
        Some(path) => AuditSink::file(std::path::Path::new(path))
            .with_context(|| format!("opening audit log {path}"))?,
        None => {
            let path = talos_mcp::state_dir().join("audit.log");
            AuditSink::file(&path)
                .with_context(|| format!("opening audit log {}", path.display()))?
        }
    };
    let shared = shared_state(opts)?;
    let settings = ServerSettings {
        output_cap: opts.output_cap,
        file_allowlist: opts.file_allowlist.clone(),
        config_allowlist: opts.config_allowlist.clone(),
        artifact_dir: opts
            .artifact_dir
            .clone()
            .unwrap_or_else(talos_mcp::state_dir),
        snapshot_retention: opts.snapshot_retention,
        toolsets: opts.toolsets.clone(),
        tools: opts.tools.clone(),
        fan_out_limit: opts.fan_out,
        safety: Arc::new(SafetySettings {
            allow_write: opts.allow_write,
            allow_destructive: opts.allow_destructive,
            confirm,
            confirm_writes: opts.confirm_writes,
            tokens,
        }),
        audit: Arc::new(audit),
        transport: transport.to_owned(),
        metrics,
        operations: talos_mcp::operations::OperationSettings {
            ttl: Duration::from_secs(opts.operation_ttl),
            cap: opts.max_operations,
            poll_interval: Duration::from_millis(opts.task_poll_interval_ms),
        },
        state: shared.state,
        operation_store: shared.operations,
        replica: shared.replica,
        change_lock_wait: Duration::from_secs(opts.state.change_lock_wait),
        lock_lease: Duration::from_secs(opts.state.lease),
        stateless: opts.state.stateless,
        ..ServerSettings::default()
    };
    TalosMcp::new(clusters.with_max_nodes(opts.max_nodes), settings).map_err(anyhow::Error::msg)
}

/// Fails unless the shared state store answers (a wrong URL or password fails at start).
pub(crate) async fn check_shared_state(server: &TalosMcp) -> Result<()> {
    let state = server.shared_state();
    match tokio::time::timeout(Duration::from_secs(10), state.ping()).await {
        Ok(Ok(())) => {
            tracing::info!(store = state.kind(), "shared state store answers");
            Ok(())
        }
        Ok(Err(e)) => Err(anyhow::Error::msg(e.to_string())),
        Err(_) => bail!("the shared state store did not answer within 10 s"),
    }
}

/// What the replicas share, as `--state-url` says.
struct Shared {
    state: Arc<dyn talos_mcp::state::SharedState>,
    operations: Option<Arc<dyn talos_mcp::operations::OperationStore>>,
    replica: String,
}

/// The shared state: this process's memory, or Redis at `--state-url` (connected on first use;
/// `serve` checks it answers before it listens). Replicas sharing a store must share the
/// confirmation secret too: a per-process random one is refused.
fn shared_state(opts: &ServerOpts) -> Result<Shared> {
    let state_opts = &opts.state;
    let replica = match &state_opts.replica {
        Some(r) if !r.trim().is_empty() && r.len() <= 253 => r.trim().to_owned(),
        Some(_) => bail!("--replica must be 1 to 253 characters"),
        None => talos_mcp::default_replica(),
    };
    let Some(url) = &state_opts.state_url else {
        return Ok(Shared {
            state: Arc::new(talos_mcp::state::MemoryState::default()),
            operations: None,
            replica,
        });
    };
    if opts.confirm_secret_file.is_none() {
        bail!(
            "--state-url needs --confirm-secret-file (TALOS_MCP_CONFIRM_SECRET_FILE): replicas must share the secret that signs confirmations, or a token issued by one is refused by the others; mount the same Kubernetes Secret in every replica"
        );
    }
    let password = match (&state_opts.state_password_file, &state_opts.state_password) {
        (Some(path), _) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
        ),
        (None, Some(p)) => Some(p.0.clone()),
        (None, None) => None,
    };
    let ca = match &state_opts.state_ca_file {
        Some(path) => {
            Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let store = crate::redis_state::RedisState::open(&url.0, password.as_deref(), ca)?;
    let operations = crate::redis_state::RedisOperations::new(
        store.clone(),
        &replica,
        Duration::from_secs(opts.operation_ttl),
        opts.max_operations,
        Duration::from_secs(state_opts.lease),
    );
    Ok(Shared {
        state: Arc::new(store),
        operations: Some(Arc::new(operations)),
        replica,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_shows_spans_only_when_asked_for_detail() {
        assert!(!stderr_wants_spans("info"));
        assert!(!stderr_wants_spans("warn,talos_mcp=info"));
        assert!(stderr_wants_spans("debug"));
        assert!(stderr_wants_spans("info,talos_client=TRACE"));
    }

    #[test]
    fn session_ids_stay_out_of_info_logs() {
        let d = super::log_directives("trace");
        assert!(
            d.ends_with(&format!(",{}=warn", super::SESSION_LOG_TARGET)),
            "{d}"
        );
        let d = super::log_directives("error");
        assert!(
            d.ends_with(&format!(",{}=error", super::SESSION_LOG_TARGET)),
            "{d}"
        );
    }
}
