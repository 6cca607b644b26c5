//! The MCP server: settings, toolsets, the shared per-node machinery, and the rmcp handler.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::model::{
    Implementation, InitializeResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams, ReadResourceResponse,
    ServerCapabilities, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, prompt_handler};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, TalosApi, TalosError, fan_out};

use crate::audit::{AuditRecord, AuditSink};
use crate::call::{Call, Outcome, Reply};
use crate::clusters::{Clusters, Targets};
use crate::error::ToolError;
use crate::output::{self, ErrorInfo, Keep, NodeOutcome, PerNode};
use crate::registry::{Registry, ToolDef, Toolset};
use crate::safety::{SafetySettings, Tier};

/// Operator settings of the MCP server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Largest structured output of one tool call, in bytes of JSON (default 64 KiB).
    pub output_cap: usize,
    /// Path prefixes `talos_list_files`/`talos_read_file` may touch.
    pub file_allowlist: Vec<String>,
    /// Where secret-bearing artifacts (kubeconfigs, etcd snapshots, machine-config backups) are
    /// written: directory 0700, files 0600.
    pub artifact_dir: PathBuf,
    /// etcd snapshots kept per context (and configuration backups per node); older ones this
    /// server wrote are deleted after each new one (default 5).
    pub snapshot_retention: usize,
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
    /// Limits of long-running operations (kept time, cap, poll interval).
    pub operations: crate::operations::OperationSettings,
    /// Where operation records are kept (`None`: in memory, bounded by `operations`).
    pub operation_store: Option<Arc<dyn crate::operations::OperationStore>>,
    /// State shared with the other replicas: single use of confirmations, the change lock, the
    /// rate limit (default: this process's memory).
    pub state: Arc<dyn crate::state::SharedState>,
    /// This replica's name (audit lines and change-lock holders carry it).
    pub replica: String,
    /// How long a change waits for the change lock held by another change (default 30 s).
    pub change_lock_wait: std::time::Duration,
    /// The change lock's lease, renewed by its holder (default 15 s): a dead replica's lock
    /// lapses after it.
    pub lock_lease: std::time::Duration,
    /// Served without transport sessions (stateless HTTP): confirmations never use a
    /// server-to-client request, which would have to come back to the same replica.
    pub stateless: bool,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            output_cap: 64 * 1024,
            file_allowlist: vec!["/proc".into(), "/sys".into(), "/var/log".into()],
            artifact_dir: state_dir(),
            snapshot_retention: 5,
            toolsets: None,
            tools: None,
            fan_out_limit: talos_client::DEFAULT_FAN_OUT_LIMIT,
            safety: Arc::new(SafetySettings::default()),
            audit: Arc::new(AuditSink::Off),
            metrics: Arc::default(),
            transport: "in-process".into(),
            max_wait: std::time::Duration::from_secs(600),
            config_allowlist: Vec::new(),
            operations: crate::operations::OperationSettings::default(),
            operation_store: None,
            state: Arc::new(crate::state::MemoryState::default()),
            replica: default_replica(),
            change_lock_wait: std::time::Duration::from_secs(30),
            lock_lease: std::time::Duration::from_secs(15),
            stateless: false,
        }
    }
}

/// This replica's name: `$POD_NAME` (set from the Kubernetes downward API), else `$HOSTNAME`,
/// else `local`.
pub fn default_replica() -> String {
    ["POD_NAME", "HOSTNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty() && v.len() <= 253)
        .unwrap_or_else(|| "local".to_owned())
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
    // No doc comments: a description here would be repeated in every tool's schema; the server's
    // instructions say what `context` and `nodes` mean.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

/// The Talos MCP server.
#[derive(Clone)]
pub struct TalosMcp {
    pub(crate) clusters: Arc<Clusters>,
    pub(crate) settings: Arc<ServerSettings>,
    /// The enabled tools, in listing order.
    enabled: Arc<Vec<&'static ToolDef>>,
    pub(crate) prompt_router: PromptRouter<Self>,
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Change locks per context and configurations staged per node (shared by every session).
    pub(crate) changes: Arc<crate::tools::actions::Changes>,
    /// Held by the server instance of one transport session (see [`TalosMcp::for_session`]).
    session: Option<Arc<crate::metrics::SessionGuard>>,
    /// The session's resource subscriptions; they end when the last copy of it goes away.
    pub(crate) subscriptions: Arc<crate::subscriptions::Subscriptions>,
    /// Long-running calls (shared by every session).
    pub(crate) operations: Arc<crate::operations::Operations>,
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
    /// Builds the server; fails on unknown toolset or tool names. Tools of disabled tiers are
    /// not listed.
    pub fn new(clusters: Clusters, settings: ServerSettings) -> Result<Self, String> {
        let mut toolsets = Vec::new();
        if let Some(wanted) = &settings.toolsets {
            for name in wanted {
                match Toolset::parse(name) {
                    Some(set) => toolsets.push(set),
                    None => {
                        return Err(format!(
                            "unknown toolset `{name}`; available: {}",
                            Toolset::ALL
                                .iter()
                                .map(|t| t.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ));
                    }
                }
            }
        }
        let mut enabled: Vec<&'static ToolDef> = Registry::get()
            .all()
            .iter()
            .filter(|t| {
                (settings.toolsets.is_none() || toolsets.contains(&t.toolset))
                    && settings.safety.enabled(t.tier)
            })
            .collect();
        // Operations are listed only where something runs as one: the read-only list stays as
        // it was.
        if !enabled.iter().any(|t| t.long_running) {
            enabled.retain(|t| t.name != OPERATIONS_TOOL);
        }
        if let Some(tools) = &settings.tools {
            for t in tools {
                if !enabled.iter().any(|d| d.name == t) {
                    return Err(format!(
                        "unknown or disabled tool `{t}`; enabled tools: {}",
                        enabled
                            .iter()
                            .map(|d| d.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            enabled.retain(|d| tools.iter().any(|t| t == d.name));
        }
        let operations = match &settings.operation_store {
            Some(store) => crate::operations::Operations::new(store.clone(), settings.operations),
            None => crate::operations::Operations::in_memory(settings.operations),
        };
        let changes = Arc::new(crate::tools::actions::Changes::new(
            settings.state.clone(),
            &settings.replica,
            settings.change_lock_wait,
            settings.lock_lease,
        ));
        Ok(Self {
            clusters: Arc::new(clusters),
            settings: Arc::new(settings),
            enabled: Arc::new(enabled),
            prompt_router: Self::prompt_router(),
            in_flight: Arc::default(),
            changes,
            session: None,
            subscriptions: Arc::default(),
            operations: Arc::new(operations),
        })
    }

    /// A copy of the server for one transport session: the session counts as open in the
    /// metrics until the transport drops this copy (and its clones).
    pub fn for_session(&self) -> Self {
        let mut s = self.clone();
        s.session = Some(Arc::new(self.settings.metrics.open_session()));
        s.subscriptions = Arc::default();
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

    /// The state shared with other replicas (the rate limit and readiness of the transport).
    pub fn shared_state(&self) -> Arc<dyn crate::state::SharedState> {
        self.settings.state.clone()
    }

    /// Whether HTTP is served without transport sessions (`--stateless`).
    pub fn stateless(&self) -> bool {
        self.settings.stateless
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
    pub fn tools(&self) -> Vec<Tool> {
        self.enabled.iter().map(|t| t.listing.clone()).collect()
    }

    /// The enabled tools' names, toolsets and tiers, in listing order.
    pub fn enabled_tools(&self) -> Vec<(&'static str, Toolset, Tier)> {
        self.enabled
            .iter()
            .map(|t| (t.name, t.toolset, t.tier))
            .collect()
    }

    /// Every tool the server knows, enabled or not, with its tier.
    pub fn all_tools() -> Vec<(Tool, Tier)> {
        Registry::get()
            .all()
            .iter()
            .map(|t| (t.listing.clone(), t.tier))
            .collect()
    }

    /// The toolset a tool belongs to.
    pub fn toolset_of(tool: &str) -> Option<&'static str> {
        Registry::get().find(tool).map(|t| t.toolset.as_str())
    }

    /// The tier of a tool.
    pub fn tier_of(tool: &str) -> Option<Tier> {
        Registry::get().find(tool).map(|t| t.tier)
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
        narrow_hint: &'static str,
    ) -> Result<Reply<PerNode<R>>, ToolError> {
        result.map(|per_node| Reply::per_node(tool, &per_node, line, keep, narrow_hint))
    }

    /// Renders a single (not per-node) result and its summary.
    pub(crate) fn respond_one<R: Serialize>(
        &self,
        result: Result<(R, String), ToolError>,
        keep: Keep,
        narrow_hint: &'static str,
    ) -> Result<Reply<R>, ToolError> {
        result.map(|(value, summary)| Reply::new(&value, summary, keep, narrow_hint))
    }
}

impl TalosMcp {
    /// The tool of this name if this server serves it: an enabled tool, or one of a tier the
    /// operator left off (refused with the flag that enables it).
    fn served(&self, name: &str) -> Option<&'static ToolDef> {
        Registry::get().find(name).filter(|def| {
            self.enabled.iter().any(|d| d.name == def.name)
                || !self.settings.safety.enabled(def.tier)
        })
    }

    /// Enforces a served tool's tier and reads its arguments (MCP and A2A alike). A refusal is
    /// audited here; the caller only answers it.
    fn admit(
        &self,
        def: &'static ToolDef,
        arguments: rmcp::model::JsonObject,
        audit: &CallAudit,
    ) -> Result<crate::registry::Invocation, ToolError> {
        let tool = def.name;
        let parsed = def.invocation(arguments);
        if !self.settings.safety.enabled(def.tier) {
            let (tier, target) = match &parsed {
                Ok(i) => (i.tier, (i.context.clone(), i.nodes.clone())),
                Err(_) => (def.tier, (None, Vec::new())),
            };
            audit.finish(tool, tier.as_str(), target, &Outcome::Refused, None);
            return Err(ToolError::TierDisabled {
                tool: tool.to_owned(),
                tier: def.tier,
            });
        }
        parsed.inspect_err(|e| {
            audit.finish(
                tool,
                def.tier.as_str(),
                (None, Vec::new()),
                &Outcome::Failed(e.kind()),
                None,
            );
        })
    }

    /// Runs a tool call: find the tool, read its arguments, enforce its tier, write the audit
    /// lines around it, run it (cancellable until it commits a change) and shape its answer.
    /// A long-running tool runs as an operation (see [`Self::run_operation`]).
    async fn audited_call(
        &self,
        mut request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
        span: tracing::Span,
        trace_id: Option<String>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let audit = CallAudit {
            span,
            trace_id,
            settings: self.settings.clone(),
            started: std::time::Instant::now(),
            request_id: crate::audit::bounded_str(&context.id.to_string()),
            caller: crate::audit::caller(&context.extensions),
            // Redacted once for every audit line; the arguments themselves go to the tool.
            arguments: crate::audit::redact_arguments(request.arguments.as_ref()),
            transport: self.settings.transport.clone(),
        };
        // Only enabled tools are callable; a tool of a disabled tier is refused with the flag that
        // enables it, any other name is a protocol error.
        let def = match self.served(&request.name) {
            Some(def) => def,
            None => {
                let err = ErrorData::invalid_params(
                    format!(
                        "tool `{}` is not served here",
                        crate::error::echo(&request.name)
                    ),
                    None,
                );
                audit.finish(
                    &crate::audit::bounded_str(&request.name),
                    "unknown",
                    (None, Vec::new()),
                    &Outcome::Protocol(err.code.0),
                    None,
                );
                return Err(err);
            }
        };
        let tool = def.name;
        // Only a name the registry matched reaches the span.
        audit.span.record("gen_ai.tool.name", tool);
        let invocation = match self.admit(def, request.arguments.take().unwrap_or_default(), &audit)
        {
            Ok(i) => i,
            Err(e) => return Ok(crate::output::failure(&e).into()),
        };
        let target = (invocation.context.clone(), invocation.nodes.clone());
        if let Err(e) = audit.started(def, &invocation) {
            return Ok(crate::output::failure(&e).into());
        }
        let ask = crate::confirm::Ask::new(&request, &context);
        if def.long_running {
            return self
                .run_operation(def, invocation, ask, audit, &context)
                .await;
        }
        let progress = context.meta.get_progress_token();
        let call = Call::new(tool, invocation.tier, ask, progress);
        let ran = {
            let _running = InFlight::enter(self.in_flight.clone());
            self.run_cancellable(&call, invocation.run, context.ct.cancelled())
                .await
        };
        let (response, outcome) = shape(tool, ran, &call, self.settings.output_cap);
        record_nodes(&audit.span, &target.1, &response);
        let confirmation = call.confirmation().map(|c| c.as_str().to_owned());
        audit.finish(
            tool,
            invocation.tier.as_str(),
            target,
            &outcome,
            confirmation,
        );
        response
    }

    /// Runs a long-running tool as an operation, detached from the request: the tool runs in a
    /// task of its own that writes the `finished` audit line and the operation's end. A client
    /// that declared the Tasks extension is answered at once with the task; any other client
    /// waits for the result as before (its cancellation or disconnect asks the operation to
    /// stop, under the usual rule), and the result names the operation.
    async fn run_operation(
        &self,
        def: &'static ToolDef,
        invocation: crate::registry::Invocation,
        ask: crate::confirm::Ask,
        audit: CallAudit,
        context: &RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let tool = def.name;
        let tier = invocation.tier;
        let target = (invocation.context.clone(), invocation.nodes.clone());
        let as_task = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        let op = match self
            .operations
            .start(
                tool,
                audit.caller.clone(),
                target.0.clone(),
                target.1.clone(),
                as_task,
            )
            .await
        {
            Ok(op) => op,
            Err(e) => {
                audit.finish(tool, tier.as_str(), target, &Outcome::Refused, None);
                return Ok(crate::output::failure(&e).into());
            }
        };
        audit.span.record("operation.id", op.id());
        // A task's request is answered at once: its steps go to the operation, not to a
        // progress token of a request that has ended.
        let progress = if as_task {
            None
        } else {
            context.meta.get_progress_token()
        };
        let call = Call::new(tool, tier, ask, progress).with_operation(op.clone());
        // The task's seed state is taken before it starts: it is `working`, however fast the
        // tool then runs.
        let seed = op.record().await;
        let answer = self.launch(call, invocation.run, op.clone(), audit, target);
        if as_task {
            let task = crate::operations::tasks::task(&seed, self.operations.settings());
            return Ok(rmcp::model::CallToolResponse::Task(
                rmcp::model::CreateTaskResult::new(task),
            ));
        }
        // A synchronous client: its cancellation, or the request going away, asks the operation
        // to stop (nothing committed: it stops; committed: it runs to its end, recorded).
        let cancel_on_drop = CancelOnDrop(Some(op.clone()));
        let answer = tokio::select! {
            answer = answer => answer,
            () = context.ct.cancelled() => {
                op.request_cancel().await;
                cancel_on_drop.defuse();
                return Err(ErrorData::new(
                    rmcp::model::ErrorCode::INTERNAL_ERROR,
                    "the client cancelled the call",
                    None,
                ));
            }
        };
        cancel_on_drop.defuse();
        answer.unwrap_or_else(|_| {
            Err(ErrorData::internal_error(
                "the operation ended without an answer",
                None,
            ))
        })
    }

    /// Runs `call` as operation `op` in a task of its own, which writes the `finished` audit
    /// line and the operation's end; the receiver gets the MCP answer (a waiting MCP request
    /// reads it, a task or A2A client reads the record).
    fn launch(
        &self,
        call: Call,
        run: crate::registry::Run,
        op: crate::operations::Operation,
        audit: CallAudit,
        target: (Option<String>, Vec<String>),
    ) -> tokio::sync::oneshot::Receiver<Result<rmcp::model::CallToolResponse, ErrorData>> {
        let (tool, tier) = (call.tool, call.tier);
        let server = self.clone();
        let running = InFlight::enter(self.in_flight.clone());
        let (done, answer) = tokio::sync::oneshot::channel();
        use tracing::Instrument as _;
        // The tool call's span lasts as long as the operation.
        let span = audit.span.clone();
        tokio::spawn(async move {
            let _running = running;
            let ran = server.run_cancellable(&call, run, op.cancelled()).await;
            let cancelled = ran.is_none();
            let (mut response, outcome) = shape(tool, ran, &call, server.settings.output_cap);
            record_nodes(&audit.span, &target.1, &response);
            let confirmation = call.confirmation().map(|c| c.as_str().to_owned());
            audit.finish(tool, tier.as_str(), target, &outcome, confirmation);
            let end = match &mut response {
                _ if cancelled => crate::operations::End::Cancelled,
                Ok(rmcp::model::CallToolResponse::Complete(result)) => {
                    name_operation(result, op.id());
                    crate::operations::End::Completed(
                        serde_json::to_value(&*result).unwrap_or_default(),
                    )
                }
                // A synchronous call that asked for the human's input (the multi-round-trip
                // flow) ended there; its sealed requestState stays out of the record.
                Ok(rmcp::model::CallToolResponse::InputRequired(_)) => {
                    crate::operations::End::Completed(serde_json::json!({
                        "resultType": "input_required",
                        "note": "the call asked for the human's confirmation; the client repeats it with the answer, which is a new operation",
                    }))
                }
                Ok(rmcp::model::CallToolResponse::Task(task)) => crate::operations::End::Completed(
                    serde_json::to_value(&*task).unwrap_or_default(),
                ),
                Ok(_) => crate::operations::End::Completed(serde_json::Value::Null),
                Err(e) => {
                    crate::operations::End::Failed(serde_json::to_value(&*e).unwrap_or_default())
                }
            };
            op.finish(end, call.committed()).await;
            // The waiting request, if any, gets the answer; a task client reads the record.
            let _ = done.send(response);
        }
        .instrument(span));
        answer
    }

    /// Runs a tool call from an A2A client (the token's name as `caller`, `request_id` its
    /// JSON-RPC id) as an operation, with the same lookup, tiers, argument checks, node
    /// allowlist, confirmation and audit as an MCP call; the audit names the transport `a2a`.
    /// A call refused before it runs (an unknown tool, a disabled tier, bad arguments, a full
    /// store) is still an operation, ended at once with the refusal as its result, so that the
    /// task can be read back like any other.
    pub(crate) async fn a2a_call(
        &self,
        caller: Option<String>,
        request_id: &str,
        tool_name: &str,
        arguments: Option<rmcp::model::JsonObject>,
        context_id: Option<&str>,
        parent: Option<&crate::trace::TraceParent>,
    ) -> Result<crate::operations::Operation, ToolError> {
        // The call's span is a child of the A2A request's (the HTTP layer's) span; the audit
        // names the trace, also when traces are not exported (the caller's `traceparent`).
        let span = request_span("tools/call", "a2a");
        let trace_id = crate::trace::adopt(&span, parent).map(|t| t.trace_id().to_owned());
        let audit = CallAudit {
            span,
            trace_id,
            settings: self.settings.clone(),
            started: std::time::Instant::now(),
            request_id: crate::audit::bounded_str(request_id),
            caller: caller.clone(),
            arguments: crate::audit::redact_arguments(arguments.as_ref()),
            transport: "a2a".to_owned(),
        };
        self.settings.metrics.a2a_call();
        // A refused call's task ends with the refusal as its result.
        let refused = |err: &ToolError| {
            crate::operations::End::Completed(
                serde_json::to_value(crate::output::failure(err)).unwrap_or_default(),
            )
        };
        let def = match self.served(tool_name) {
            Some(def) => Ok(def),
            None => Err(ToolError::Refused(format!(
                "tool `{}` is not served here; the agent card lists the tools served",
                crate::error::echo(tool_name)
            ))),
        };
        let recorded_name = def.as_ref().map_or_else(
            |_| crate::audit::bounded_str(tool_name),
            |d| d.name.to_owned(),
        );
        let op = self
            .operations
            .start(&recorded_name, caller.clone(), None, Vec::new(), false)
            .await;
        let op = match op {
            Ok(op) => op,
            Err(e) => {
                let tier = def.as_ref().map_or("unknown", |d| d.tier.as_str());
                audit.finish(
                    &recorded_name,
                    tier,
                    (None, Vec::new()),
                    &Outcome::Refused,
                    None,
                );
                return Err(e);
            }
        };
        if let Some(context) = context_id {
            op.set_a2a_context(context).await;
        }
        let def = match def {
            Ok(def) => def,
            Err(err) => {
                audit.finish(
                    &recorded_name,
                    "unknown",
                    (None, Vec::new()),
                    &Outcome::Refused,
                    None,
                );
                op.finish(refused(&err), false).await;
                return Ok(op);
            }
        };
        let tool = def.name;
        // Refusals from here on are audited by `admit` and `started`.
        let invocation = match self.admit(def, arguments.unwrap_or_default(), &audit) {
            Ok(i) => i,
            Err(e) => {
                op.finish(refused(&e), false).await;
                return Ok(op);
            }
        };
        let target = (invocation.context.clone(), invocation.nodes.clone());
        op.set_target(target.0.clone(), target.1.clone()).await;
        if let Err(e) = audit.started(def, &invocation) {
            op.finish(refused(&e), false).await;
            return Ok(op);
        }
        let call = Call::new(
            tool,
            invocation.tier,
            crate::confirm::Ask::a2a(caller),
            None,
        )
        .with_operation(op.clone());
        drop(self.launch(call, invocation.run, op.clone(), audit, target));
        Ok(op)
    }

    /// Asks every running operation to stop (shutdown, or the stdio session ended): those that
    /// changed nothing stop at once, the others run on to their end within the grace period.
    pub async fn cancel_operations(&self) {
        self.operations.cancel_all().await;
    }

    /// Runs a tool call until it finishes or the client cancels it (`None`).
    ///
    /// A call that has not changed anything yet (every read, and a change still being planned or
    /// confirmed) stops at once: its Talos RPCs are dropped. A change that has started
    /// ([`Call::commit`]) runs to completion, so the audit log records what really happened. A
    /// panic inside a tool ends that call only (the payload is never shown or logged: it could
    /// quote arguments) and the server keeps serving.
    async fn run_cancellable(
        &self,
        call: &Call,
        run: crate::registry::Run,
        cancelled: impl Future<Output = ()>,
    ) -> Option<Result<Result<Reply, ToolError>, Panicked>> {
        use futures_util::FutureExt as _;
        let tool = call.tool;
        let running = std::panic::AssertUnwindSafe(run(self, call))
            .catch_unwind()
            .map(move |ran| {
                ran.map_err(|_| {
                    tracing::error!(
                        tool,
                        "the tool panicked; the call failed with an Internal error (this is a bug)"
                    );
                    Panicked
                })
            });
        tokio::pin!(running);
        tokio::select! {
            result = &mut running => Some(result),
            () = cancelled => {
                if call.committed() {
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

/// A tool call ended in a panic.
struct Panicked;

/// Records on a tool call's span how many nodes it targeted: those named, or else those that
/// answered (a call without `nodes` goes to the context's default nodes).
fn record_nodes(
    span: &tracing::Span,
    named: &[String],
    response: &Result<rmcp::model::CallToolResponse, ErrorData>,
) {
    let answered = match response {
        Ok(rmcp::model::CallToolResponse::Complete(result)) => result
            .structured_content
            .as_ref()
            .and_then(|v| v.get("nodes"))
            .and_then(serde_json::Value::as_array)
            .map(Vec::len),
        _ => None,
    };
    let count = if named.is_empty() {
        answered.unwrap_or(0)
    } else {
        named.len()
    };
    span.record("talos.nodes", count);
}

/// The span of one MCP request, named by its method (one the server knows); a `tools/call`
/// fills in the tool (once the registry matched it), tier, context, node count and outcome.
pub(crate) fn request_span(method: &str, transport: &str) -> tracing::Span {
    tracing::info_span!(
        "mcp.request",
        otel.name = method,
        otel.kind = "server",
        mcp.method.name = method,
        mcp.transport = transport,
        gen_ai.tool.name = tracing::field::Empty,
        talos.tier = tracing::field::Empty,
        talos.context = tracing::field::Empty,
        talos.nodes = tracing::field::Empty,
        talos.outcome = tracing::field::Empty,
        operation.id = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    )
}

/// What the audit lines of one call say, owned so that an operation's background task can
/// write its `finished` line.
struct CallAudit {
    /// The call's `tools/call` span: the end of the call records its target and outcome there.
    span: tracing::Span,
    /// The trace the call is in (audit lines name it).
    trace_id: Option<String>,
    settings: Arc<ServerSettings>,
    started: std::time::Instant,
    request_id: String,
    caller: Option<String>,
    arguments: serde_json::Value,
    /// The transport named in its lines (the server's, or `a2a`).
    transport: String,
}

impl CallAudit {
    /// Writes the `started` line of a call that may change something (its tool's tier or its
    /// arguments' is above read). Writes fail closed: when the line cannot be written, the call
    /// is refused (no action without an audit line) and only the metrics say so.
    fn started(
        &self,
        def: &ToolDef,
        invocation: &crate::registry::Invocation,
    ) -> Result<(), ToolError> {
        if def.tier == Tier::Read && invocation.tier == Tier::Read {
            return Ok(());
        }
        let tool = def.name;
        let target = (invocation.context.clone(), invocation.nodes.clone());
        let tier = invocation.tier.as_str();
        self.write_line(tool, "started", tier, target, None, None)
            .map_err(|e| {
                tracing::error!(error = %e, tool, "audit log write failed; refusing the call");
                self.settings.metrics.audit_failed();
                self.settings
                    .metrics
                    .record_call(tool, "audit_failed", self.started.elapsed());
                ToolError::Local(format!(
                    "the audit log cannot be written ({e}); write and destructive calls are refused until it works"
                ))
            })
    }

    /// Writes one audit line. Every model-set value in it is bounded: a client cannot make one
    /// call write megabytes (a huge tool name or context, or a list of 70,000 nodes).
    fn write_line(
        &self,
        tool: &str,
        phase: &str,
        tier: &str,
        target: (Option<String>, Vec<String>),
        result: Option<String>,
        confirmation: Option<String>,
    ) -> std::io::Result<()> {
        self.settings.audit.write(&AuditRecord {
            timestamp: crate::audit::now(),
            phase,
            request_id: self.request_id.clone(),
            transport: &self.transport,
            replica: &self.settings.replica,
            caller: self.caller.as_deref(),
            trace_id: self.trace_id.as_deref(),
            tool,
            tier,
            context: target.0,
            nodes: target.1,
            arguments: self.arguments.clone(),
            confirmation,
            result,
            // Only the `finished` line says how long the call took.
            duration_ms: (phase == "finished").then(|| self.started.elapsed().as_millis()),
        })
    }

    /// The end of a call: its metric and its `finished` audit line.
    fn finish(
        &self,
        tool: &str,
        tier: &str,
        target: (Option<String>, Vec<String>),
        outcome: &Outcome,
        confirmation: Option<String>,
    ) {
        let label = outcome.label();
        // Counts and names the server checked: the context (bounded) and how many nodes, never
        // the arguments.
        self.span.record("talos.tier", tier);
        if let Some(context) = &target.0 {
            self.span
                .record("talos.context", crate::audit::bounded_str(context).as_str());
        }
        self.span.record("talos.outcome", label.as_str());
        if !matches!(
            outcome,
            Outcome::Ok | Outcome::Partial | Outcome::ConfirmationRequired
        ) {
            self.span.record("otel.status_code", "ERROR");
        }
        self.settings
            .metrics
            .record_call(tool, &label, self.started.elapsed());
        if let Err(e) = self.write_line(tool, "finished", tier, target, Some(label), confirmation) {
            tracing::error!(error = %e, tool, "audit log write failed");
            self.settings.metrics.audit_failed();
        }
    }
}

/// Turns what a call's run gave into its MCP answer and its outcome (`None`: cancelled).
fn shape(
    tool: &str,
    ran: Option<Result<Result<Reply, ToolError>, Panicked>>,
    call: &Call,
    cap: usize,
) -> (Result<rmcp::model::CallToolResponse, ErrorData>, Outcome) {
    match ran {
        // rmcp drops the answer to a cancelled request; this error only fills the slot.
        None => (
            Err(ErrorData::new(
                rmcp::model::ErrorCode::INTERNAL_ERROR,
                "the client cancelled the call",
                None,
            )),
            Outcome::Cancelled,
        ),
        Some(Ok(result)) => crate::call::respond(result, Some(call), cap),
        Some(Err(Panicked)) => {
            let mut result = crate::output::failure(&ToolError::Internal(format!(
                "{tool} stopped on a bug in the server (a panic); nothing more is known about what it did. The server keeps serving; report this to the operator, and check the node's state before retrying a change."
            )));
            crate::output::annotate_error(&mut result, "panic", serde_json::json!(true));
            (Ok(result.into()), Outcome::Panic)
        }
    }
}

/// The tool that shows operations.
pub(crate) const OPERATIONS_TOOL: &str = "talos_operations";

/// The `_meta` key naming the operation a result belongs to.
pub(crate) const OPERATION_META: &str = "talos-mcp/operation";

/// Names the operation in a result: in `_meta` and at the end of the text, so that a client
/// that loses the answer can read it again with `talos_operations`.
fn name_operation(result: &mut rmcp::model::CallToolResult, id: &str) {
    let meta = result.meta.get_or_insert_with(Default::default);
    meta.0
        .insert(OPERATION_META.to_owned(), serde_json::json!(id));
    let line = format!("\n(operation {id}: talos_operations shows it again)");
    match result.content.iter_mut().find_map(|c| match c {
        rmcp::model::ContentBlock::Text(text) => Some(text),
        _ => None,
    }) {
        Some(text) => text.text.push_str(&line),
        None => result.content.push(rmcp::model::ContentBlock::text(
            line.trim_start().to_owned(),
        )),
    }
}

/// Asks an operation to stop if the request that waits for it is dropped before it ends.
struct CancelOnDrop(Option<crate::operations::Operation>);

impl CancelOnDrop {
    fn defuse(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(op) = self.0.take() {
            tokio::spawn(async move { op.request_cancel().await });
        }
    }
}

/// Counts a running call for as long as it lives.
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn enter(counter: Arc<std::sync::atomic::AtomicUsize>) -> Self {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for TalosMcp {
    fn get_info(&self) -> InitializeResult {
        #[allow(deprecated)] // logging: deprecated by SEP-2577, still in the older revisions
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_completions()
            .enable_logging()
            .enable_tasks()
            .build();
        InitializeResult::new(capabilities)
            .with_server_info(Implementation::new("talos-mcp", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Talos Linux cluster access over the native Talos API. Read tools are always \
                 available; write and destructive tools appear only when the operator enables them, \
                 target one named `node` (address or hostname) and need confirmation (repeat the \
                 call with the `confirmation_token` its plan returned). Each tool takes an optional `context` (talosconfig context; \
                 several clusters may be served, name one per call) and, for per-node tools, \
                 `nodes` (default: the context's nodes; nodes outside the context are refused). \
                 Per-node results are {context, nodes: [{node, hostname, ok, result | error {kind, message}}], \
                 failed_nodes, truncated, note (how to narrow a truncated query)}; a failed call is an \
                 isError result whose text starts with the error kind. Start with talos_version or talos_health; see the prompts for \
                 guided workflows.",
            )
    }

    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        use tracing::Instrument as _;
        // Served through `trace::Traced`, the request's span is the call's; served directly
        // (in-process clients), the call opens one of its own.
        let (span, trace_id) = match context.extensions.get::<crate::trace::RequestTrace>() {
            Some(trace) => (tracing::Span::current(), trace.0.clone()),
            None => {
                let span = request_span("tools/call", &self.settings.transport);
                let parent = crate::trace::request_parent(
                    context.meta.get_traceparent(),
                    &context.extensions,
                );
                let traced = crate::trace::adopt(&span, parent.as_ref());
                (span, traced.map(|t| t.trace_id().to_owned()))
            }
        };
        self.audited_call(request, context, span.clone(), trace_id)
            .instrument(span)
            .await
    }

    async fn get_task(
        &self,
        request: rmcp::model::GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::GetTaskResult, ErrorData> {
        let caller = crate::audit::caller(&context.extensions);
        let record = self
            .operations
            .get(&request.task_id, caller.as_deref())
            .await
            .map_err(crate::operations::tasks::protocol_error)?;
        Ok(rmcp::model::GetTaskResult::new(
            crate::operations::tasks::detailed(&record, self.operations.settings()),
        ))
    }

    async fn update_task(
        &self,
        request: rmcp::model::UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = crate::audit::caller(&context.extensions);
        self.operations
            .provide_input(
                &request.task_id,
                caller.as_deref(),
                request.input_responses.into_iter().collect(),
            )
            .await
            .map_err(crate::operations::tasks::protocol_error)
    }

    async fn cancel_task(
        &self,
        request: rmcp::model::CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let caller = crate::audit::caller(&context.extensions);
        self.operations
            .cancel(&request.task_id, caller.as_deref())
            .await
            .map(|_| ())
            .map_err(crate::operations::tasks::protocol_error)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.enabled
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.listing.clone())
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

    #[allow(deprecated)] // resources/subscribe: the handshake-era revisions, which clients use today.
    async fn subscribe(
        &self,
        request: rmcp::model::SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        crate::subscriptions::subscribe(self, &request.uri, context.peer).await
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: rmcp::model::UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.subscriptions.remove(&request.uri);
        Ok(())
    }
}
