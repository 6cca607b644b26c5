//! The MCP server: settings, toolsets, the shared per-node machinery, and the rmcp handler.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, Implementation, InitializeResult, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, prompt_handler, tool_handler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, TalosApi, TalosError, fan_out};

use crate::audit::{AuditRecord, AuditSink};
use crate::clusters::{Clusters, Targets};
use crate::error::ToolError;
use crate::output::{self, ErrorInfo, Keep, NodeOutcome, PerNode};
use crate::safety::{SafetySettings, Tier};

/// Toolsets and the tools in each, in listing order.
pub const TOOLSETS: &[(&str, &str)] = &[
    (
        "info",
        "Node facts: versions, CPU, memory, processes, disks, mounts, network, time.",
    ),
    (
        "workloads",
        "Containers, container stats, Talos services and images.",
    ),
    (
        "logs",
        "Service and container logs, kernel messages, machine events.",
    ),
    ("etcd", "etcd membership and health."),
    (
        "cluster",
        "Cluster health check, COSI resources, node files.",
    ),
    (
        "kubernetes",
        "Kubernetes access: the admin kubeconfig (written to a private file).",
    ),
    (
        "lifecycle",
        "Machine configuration and node lifecycle: apply config, reboot, shutdown, reset.",
    ),
];

/// Operator settings of the MCP server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest structured output of one tool call, in bytes of JSON (default 64 KiB).
    pub output_cap: usize,
    /// Path prefixes `talos_list_files`/`talos_read_file` may touch.
    pub file_allowlist: Vec<String>,
    /// Where secret-bearing artifacts (kubeconfigs) are written, 0600.
    pub artifact_dir: PathBuf,
    /// Enabled toolsets (`None`: all).
    pub toolsets: Option<Vec<String>>,
    /// Enabled tools, after toolsets (`None`: all of the enabled toolsets).
    pub tools: Option<Vec<String>>,
    /// Nodes called at once.
    pub fan_out_limit: usize,
    /// Tiers and confirmation.
    pub safety: Arc<SafetySettings>,
    /// Where audit lines go.
    pub audit: Arc<AuditSink>,
    /// Call counters and durations (served on /metrics by the binary).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Transport name recorded in audit lines (`stdio`, `http`, `in-process`).
    pub transport: String,
    /// Longest `wait` a reboot may follow a node (default 10 min).
    pub max_wait: std::time::Duration,
    /// Path prefixes `talos_apply_config` may read `config_file` from (default: none).
    pub config_allowlist: Vec<String>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            output_cap: 64 * 1024,
            file_allowlist: vec!["/proc".into(), "/sys".into(), "/var/log".into()],
            artifact_dir: state_dir(),
            toolsets: None,
            tools: None,
            fan_out_limit: talos_client::DEFAULT_FAN_OUT_LIMIT,
            safety: Arc::new(SafetySettings::default()),
            audit: Arc::new(AuditSink::Off),
            metrics: Arc::default(),
            transport: "in-process".into(),
            max_wait: std::time::Duration::from_secs(600),
            config_allowlist: Vec::new(),
        }
    }
}

/// The server's state directory (default artifact and audit location): `$XDG_STATE_HOME/talos-mcp`,
/// else `~/.local/state/talos-mcp`, else a temp directory.
pub fn state_dir() -> PathBuf {
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("talos-mcp")
}

/// Which cluster and nodes a call targets. Every tool accepts these.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
pub struct TargetArgs {
    /// talosconfig context to use (default: the current context). Several clusters can be served
    /// at once; name one per call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Nodes to query (addresses or hostnames; default: the context's nodes). Nodes outside the
    /// context are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// The Talos MCP server.
#[derive(Clone)]
pub struct TalosMcp {
    pub(crate) clusters: Arc<Clusters>,
    pub(crate) settings: Arc<ServerSettings>,
    pub(crate) tool_router: ToolRouter<Self>,
    pub(crate) prompt_router: PromptRouter<Self>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Change locks per context and configurations staged per node (shared by every session).
    pub(crate) changes: Arc<crate::tools::actions::Changes>,
    /// Held by the server instance of one transport session (see [`TalosMcp::for_session`]).
    session: Option<Arc<crate::metrics::SessionGuard>>,
}

impl std::fmt::Debug for TalosMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TalosMcp")
            .field("clusters", &self.clusters)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl TalosMcp {
    /// Every toolset's routers by tier, with their schemas in the portable dialect.
    fn routers() -> Vec<(&'static str, Tier, ToolRouter<Self>)> {
        let mut routers = Self::derived_routers();
        for (_, _, router) in &mut routers {
            for route in router.map.values_mut() {
                crate::schema::make_portable(&mut route.attr);
            }
        }
        routers
    }

    /// Every toolset's routers by tier, as the tool macros derive them.
    fn derived_routers() -> Vec<(&'static str, Tier, ToolRouter<Self>)> {
        vec![
            ("info", Tier::Read, Self::info_router()),
            ("workloads", Tier::Read, Self::workloads_router()),
            ("workloads", Tier::Write, Self::workloads_write_router()),
            ("logs", Tier::Read, Self::logs_router()),
            ("etcd", Tier::Read, Self::etcd_router()),
            ("etcd", Tier::Write, Self::etcd_write_router()),
            ("etcd", Tier::Destructive, Self::etcd_destructive_router()),
            ("cluster", Tier::Read, Self::cluster_router()),
            ("kubernetes", Tier::Read, Self::kubernetes_router()),
            ("lifecycle", Tier::Write, Self::lifecycle_write_router()),
            (
                "lifecycle",
                Tier::Destructive,
                Self::lifecycle_destructive_router(),
            ),
        ]
    }

    /// Builds the server; fails on unknown toolset or tool names. Tools of disabled tiers are
    /// not listed.
    pub fn new(clusters: Clusters, settings: ServerSettings) -> Result<Self, String> {
        if let Some(wanted) = &settings.toolsets {
            for name in wanted {
                if !TOOLSETS.iter().any(|(t, _)| t == name) {
                    return Err(format!(
                        "unknown toolset `{name}`; available: {}",
                        TOOLSETS
                            .iter()
                            .map(|(t, _)| *t)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
        let mut router = ToolRouter::new();
        for (name, tier, part) in Self::routers() {
            if settings
                .toolsets
                .as_ref()
                .is_none_or(|w| w.iter().any(|t| t == name))
                && settings.safety.enabled(tier)
            {
                router.merge(part);
            }
        }
        if let Some(tools) = &settings.tools {
            let available: Vec<String> = router
                .list_all()
                .into_iter()
                .map(|t| t.name.to_string())
                .collect();
            for t in tools {
                if !available.contains(t) {
                    return Err(format!(
                        "unknown or disabled tool `{t}`; enabled tools: {}",
                        available.join(", ")
                    ));
                }
            }
            for name in available.iter().filter(|n| !tools.contains(n)) {
                router.remove_route(name);
            }
        }
        Ok(Self {
            clusters: Arc::new(clusters),
            settings: Arc::new(settings),
            tool_router: router,
            prompt_router: Self::prompt_router(),
            in_flight: Arc::default(),
            changes: Arc::default(),
            session: None,
        })
    }

    /// A copy of the server for one transport session: the session counts as open in the
    /// metrics until the transport drops this copy (and its clones).
    pub fn for_session(&self) -> Self {
        let mut s = self.clone();
        s.session = Some(Arc::new(self.settings.metrics.open_session()));
        s
    }

    /// Tool calls running now (across every session served by clones of this server).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until no tool call is running, or `grace` has passed; returns whether calls remain.
    pub async fn drain(&self, grace: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        self.in_flight() > 0
    }

    /// The server's metrics (for a /metrics endpoint).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.settings.metrics.clone()
    }

    /// Whether the default context's endpoint answers (for readiness probes).
    pub async fn probe_endpoint(&self) -> bool {
        match self.clusters.entry(None) {
            Ok(entry) => entry
                .api
                .version(&CallOptions::endpoint().with_timeout(std::time::Duration::from_secs(5)))
                .await
                .is_ok(),
            Err(_) => false,
        }
    }

    /// Every enabled tool as listed to clients.
    pub fn tools(&self) -> Vec<rmcp::model::Tool> {
        self.tool_router.list_all()
    }

    /// Every tool the server knows, enabled or not, with its tier.
    pub fn all_tools() -> Vec<(rmcp::model::Tool, Tier)> {
        Self::routers()
            .into_iter()
            .flat_map(|(_, tier, r)| r.list_all().into_iter().map(move |t| (t, tier)))
            .collect()
    }

    /// The toolset a tool belongs to.
    pub fn toolset_of(tool: &str) -> Option<&'static str> {
        Self::derived_routers()
            .into_iter()
            .find(|(_, _, r)| r.has_route(tool))
            .map(|(n, _, _)| n)
    }

    /// The tier of a tool.
    pub fn tier_of(tool: &str) -> Option<Tier> {
        Self::derived_routers()
            .into_iter()
            .find(|(_, _, r)| r.has_route(tool))
            .map(|(_, t, _)| t)
    }

    /// Calls `call` on every target node concurrently and collects per-node outcomes.
    pub(crate) async fn per_node<R, F, Fut>(
        &self,
        target: &TargetArgs,
        call: F,
    ) -> Result<PerNode<R>, ToolError>
    where
        F: Fn(Arc<dyn TalosApi>, CallOptions) -> Fut,
        Fut: Future<Output = Result<R, TalosError>>,
    {
        self.per_node_shared(target, |api, opts, _| call(api, opts))
            .await
    }

    /// Like [`Self::per_node`], and `call` also gets each node's share of the output cap in
    /// bytes ([`output::node_share`]): tools that gather large per-node data (log lines) keep at
    /// most that much per node while reading, so a call holds about nodes × share, not
    /// nodes × everything read.
    pub(crate) async fn per_node_shared<R, F, Fut>(
        &self,
        target: &TargetArgs,
        call: F,
    ) -> Result<PerNode<R>, ToolError>
    where
        F: Fn(Arc<dyn TalosApi>, CallOptions, usize) -> Fut,
        Fut: Future<Output = Result<R, TalosError>>,
    {
        let targets = self
            .clusters
            .targets(target.context.as_deref(), target.nodes.as_deref())
            .await?;
        self.learn_hostnames(&targets).await;
        let api = targets.entry.api.clone();
        let share = output::node_share(self.settings.output_cap, targets.nodes.len());
        let results = fan_out(&targets.nodes, self.settings.fan_out_limit, |node| {
            call(api.clone(), CallOptions::node(node), share)
        })
        .await;
        let outcomes = results
            .into_iter()
            .map(|r| {
                let hostname = targets.entry.hostname(&r.node);
                match r.result {
                    Ok(value) => NodeOutcome {
                        node: r.node,
                        hostname,
                        ok: true,
                        result: Some(value),
                        error: None,
                    },
                    Err(e) => NodeOutcome {
                        node: r.node,
                        hostname,
                        ok: false,
                        result: None,
                        error: Some(ErrorInfo {
                            kind: e.kind().to_string(),
                            message: crate::error::clip(&e.to_string(), crate::error::MAX_MESSAGE),
                        }),
                    },
                }
            })
            .collect();
        Ok(PerNode::new(&targets.entry.name, outcomes))
    }

    /// Fetches hostnames of nodes not seen before, so results can name them.
    pub(crate) async fn learn_hostnames(&self, targets: &Targets) {
        let unknown: Vec<String> = targets
            .nodes
            .iter()
            .filter(|n| targets.entry.hostname(n).is_none())
            .cloned()
            .collect();
        if unknown.is_empty() {
            return;
        }
        let api = targets.entry.api.clone();
        let found = fan_out(&unknown, self.settings.fan_out_limit, |node| {
            let api = api.clone();
            async move { api.hostname(&CallOptions::node(node)).await }
        })
        .await;
        for r in found {
            if let Ok(h) = r.result {
                targets.entry.remember_hostname(&r.node, &h);
            }
        }
    }

    /// Renders a per-node result: a line per node in text, everything in structured content.
    pub(crate) fn respond<R: Serialize>(
        &self,
        tool: &str,
        result: Result<PerNode<R>, ToolError>,
        line: impl Fn(&R) -> String,
        keep: Keep,
        narrow_hint: &str,
    ) -> Result<CallToolResult, ErrorData> {
        let per_node = match result {
            Ok(p) => p,
            Err(e) => return Ok(output::failure(&e)),
        };
        let ok = per_node.nodes.iter().filter(|n| n.ok).count();
        let mut text = format!(
            "{tool}: {ok}/{} node(s) answered (context {})",
            per_node.nodes.len(),
            per_node.context
        );
        if !per_node.failed_nodes.is_empty() {
            text.push_str(&format!("; failed: {}", per_node.failed_nodes.join(", ")));
        }
        for n in &per_node.nodes {
            let who = match &n.hostname {
                Some(h) => format!("{} ({h})", n.node),
                None => n.node.clone(),
            };
            let body = match (&n.result, &n.error) {
                (Some(r), _) => line(r),
                (None, Some(e)) => format!("ERROR {}", e.message),
                (None, None) => String::new(),
            };
            text.push_str(&format!("\n- {who}: {body}"));
        }
        Ok(output::finish(
            &per_node,
            clip_text(text),
            self.settings.output_cap,
            keep,
            narrow_hint,
        ))
    }

    /// Renders a single (not per-node) result.
    pub(crate) fn respond_one<R: Serialize>(
        &self,
        result: Result<(R, String), ToolError>,
        keep: Keep,
        narrow_hint: &str,
    ) -> Result<CallToolResult, ErrorData> {
        match result {
            Ok((value, summary)) => Ok(output::finish(
                &value,
                clip_text(summary),
                self.settings.output_cap,
                keep,
                narrow_hint,
            )),
            Err(e) => Ok(output::failure(&e)),
        }
    }
}

impl TalosMcp {
    /// Runs a tool call with tier enforcement and audit lines around it.
    async fn audited_call(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let started = std::time::Instant::now();
        let tool = request.name.to_string();
        let tier = Self::tier_of(&tool);
        let args = request.arguments.as_ref();
        let caller = crate::audit::caller(&context.extensions);
        // Every model-set value in an audit line is bounded: a client cannot make one call write
        // megabytes (a huge tool name, context, or a list of 70,000 nodes).
        let audit_tool = crate::audit::bounded_str(&tool);
        let audit_context = args
            .and_then(|a| a.get("context"))
            .and_then(|c| c.as_str())
            .map(crate::audit::bounded_str);
        let audit_nodes = args
            .map(|a| {
                let mut nodes: Vec<String> = a
                    .get("nodes")
                    .and_then(|n| n.as_array())
                    .map(|n| {
                        n.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some(node) = a.get("node").and_then(|n| n.as_str()) {
                    nodes.push(node.to_owned());
                }
                crate::audit::bounded_list(nodes.into_iter())
            })
            .unwrap_or_default();
        let record = |phase,
                      confirmation: Option<String>,
                      result: Option<String>,
                      duration: Option<u128>| AuditRecord {
            timestamp: crate::audit::now(),
            phase,
            request_id: crate::audit::bounded_str(&context.id.to_string()),
            transport: &self.settings.transport,
            caller: caller.as_deref(),
            tool: &audit_tool,
            tier: tier.map_or("unknown", Tier::as_str),
            context: audit_context.clone(),
            nodes: audit_nodes.clone(),
            arguments: crate::audit::redact_arguments(args),
            confirmation,
            result,
            duration_ms: duration,
        };
        // A tool of a disabled tier is refused with the flag that enables it.
        if let Some(tier) = tier
            && !self.settings.safety.enabled(tier)
        {
            let err = ToolError::TierDisabled {
                tool: tool.clone(),
                tier,
            };
            self.settings
                .metrics
                .record_call(&tool, "refused", started.elapsed());
            if self
                .settings
                .audit
                .write(&record("finished", None, Some("refused".into()), Some(0)))
                .is_err()
            {
                self.settings.metrics.audit_failed();
            }
            return Ok(output::failure(&err).into());
        }
        // Writes fail closed: no audit line, no action.
        let mutating = matches!(tier, Some(Tier::Write | Tier::Destructive));
        if mutating
            && let Err(e) = self
                .settings
                .audit
                .write(&record("started", None, None, None))
        {
            tracing::error!(error = %e, tool = %tool, "audit log write failed; refusing the call");
            self.settings.metrics.audit_failed();
            self.settings
                .metrics
                .record_call(&tool, "audit_failed", started.elapsed());
            let err = ToolError::Local(format!(
                "the audit log cannot be written ({e}); write and destructive calls are refused until it works"
            ));
            return Ok(output::failure(&err).into());
        }
        let tcc = rmcp::handler::server::tool::ToolCallContext::new(
            self,
            request.clone(),
            context.clone(),
        );
        let response = {
            let _running = InFlight::enter(&self.in_flight);
            self.run_cancellable(&tool, tcc, context.ct.cancelled())
                .await
        };
        let (result_kind, confirmation) = match &response {
            Some(Ok(rmcp::model::CallToolResponse::Complete(r))) => outcome_of(r),
            Some(Ok(rmcp::model::CallToolResponse::InputRequired(_))) => (
                "confirmation_required".to_owned(),
                Some("elicitation: asked (multi-round-trip)".to_owned()),
            ),
            Some(Ok(_)) => ("incomplete".to_owned(), None),
            Some(Err(e)) => (format!("protocol error {}", e.code.0), None),
            None => ("cancelled".to_owned(), None),
        };
        self.settings
            .metrics
            .record_call(&tool, &result_kind, started.elapsed());
        let finished = record(
            "finished",
            confirmation,
            Some(result_kind),
            Some(started.elapsed().as_millis()),
        );
        if let Err(e) = self.settings.audit.write(&finished) {
            tracing::error!(error = %e, tool = %tool, "audit log write failed");
            self.settings.metrics.audit_failed();
        }
        // rmcp drops the answer to a cancelled request; this error only fills the slot.
        response.unwrap_or_else(|| {
            Err(ErrorData::new(
                rmcp::model::ErrorCode::INTERNAL_ERROR,
                "the client cancelled the call",
                None,
            ))
        })
    }

    /// Runs a tool call until it finishes or the client cancels it (`None`).
    ///
    /// A call that has not changed anything yet (every read, and a change still being planned or
    /// confirmed) stops at once: its Talos RPCs are dropped. A change that has started
    /// ([`commit`]) runs to completion, so the audit log records what really happened.
    async fn run_cancellable(
        &self,
        tool: &str,
        call: rmcp::handler::server::tool::ToolCallContext<'_, Self>,
        cancelled: impl Future<Output = ()>,
    ) -> Option<Result<rmcp::model::CallToolResponse, ErrorData>> {
        use futures_util::FutureExt as _;
        let committed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // A panic inside a tool ends that call only: it becomes an `Internal` error result (the
        // payload is never shown or logged: it could quote arguments) and the server keeps
        // serving.
        let caught = std::panic::AssertUnwindSafe(self.tool_router.call(call))
            .catch_unwind()
            .map(move |ran| {
                ran.unwrap_or_else(|_| {
                    tracing::error!(tool, "the tool panicked; the call failed with an Internal error (this is a bug)");
                    let mut result = output::failure(&ToolError::Internal(format!(
                        "{tool} stopped on a bug in the server (a panic); nothing more is known about what it did. The server keeps serving; report this to the operator, and check the node's state before retrying a change."
                    )));
                    output::annotate_error(&mut result, "panic", serde_json::json!(true));
                    Ok(result.into())
                })
            });
        let running = COMMITTED.scope(committed.clone(), caught);
        tokio::pin!(running);
        tokio::select! {
            result = &mut running => Some(result),
            () = cancelled => {
                if committed.load(std::sync::atomic::Ordering::SeqCst) {
                    tracing::warn!(tool, "the client cancelled a change that has started; letting it finish");
                    Some(running.await)
                } else {
                    tracing::info!(tool, "the client cancelled the call; stopped");
                    None
                }
            }
        }
    }
}

tokio::task_local! {
    /// Set once the running call has begun changing the cluster (see [`commit`]).
    static COMMITTED: Arc<std::sync::atomic::AtomicBool>;
}

/// Marks the running tool call as having begun a change: from here on a cancellation by the
/// client no longer stops it.
pub(crate) fn commit() {
    let _ = COMMITTED.try_with(|c| c.store(true, std::sync::atomic::Ordering::SeqCst));
}

/// Counts a running call for as long as it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The result kind and confirmation outcome of a tool result, for the audit log.
fn outcome_of(result: &CallToolResult) -> (String, Option<String>) {
    if let Some(error) = output::error_meta(result) {
        let field = |k: &str| error.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let kind = if error.get("panic") == Some(&serde_json::Value::Bool(true)) {
            "panic".to_owned()
        } else {
            field("kind").unwrap_or_else(|| "error".to_owned())
        };
        return (kind, field("confirmation"));
    }
    if result.is_error == Some(true) {
        return ("error".to_owned(), None);
    }
    let structured = result.structured_content.as_ref();
    let confirmation = structured
        .and_then(|s| s.get("confirmation"))
        .and_then(|c| c.as_str())
        .map(str::to_owned);
    let kind = if structured
        .and_then(|s| s.get("failed_nodes"))
        .and_then(|f| f.as_array())
        .is_some_and(|f| !f.is_empty())
    {
        "partial".to_owned()
    } else if structured
        .and_then(|s| s.get("status"))
        .and_then(|s| s.as_str())
        == Some("confirmation_required")
    {
        "confirmation_required".to_owned()
    } else {
        "ok".to_owned()
    };
    (kind, confirmation)
}

/// Keeps the human text short; the structured content carries the details.
fn clip_text(mut text: String) -> String {
    const MAX: usize = 8 * 1024;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n… (more in the structured content)");
    }
    text
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for TalosMcp {
    fn get_info(&self) -> InitializeResult {
        #[allow(deprecated)] // logging: deprecated by SEP-2577, still in the older revisions
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .enable_completions()
            .enable_logging()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("talos-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Talos Linux cluster access over the native Talos API. Read tools are always \
                 available; write and destructive tools appear only when the operator enables them, \
                 target one named node and need confirmation. Each tool takes an optional `context` (talosconfig context) and, for per-node tools, \
                 `nodes` (default: the context's nodes). Results list every node with its own \
                 result or error. Start with talos_version or talos_health; see the prompts for \
                 guided workflows.",
            )
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        self.audited_call(request, context).await
    }

    async fn complete(
        &self,
        request: rmcp::model::CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CompleteResult, ErrorData> {
        Ok(crate::completions::complete(self, &request).await)
    }

    #[allow(deprecated)] // MCP logging: deprecated by SEP-2577, still part of older revisions.
    async fn set_level(
        &self,
        request: rmcp::model::SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        crate::mcp_log::set_level(&request, &context)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(crate::resources::list(self))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(crate::resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        crate::resources::read(self, &request.uri)
            .await
            .map(Into::into)
    }
}
