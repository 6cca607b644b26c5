//! Counters and histograms of tool calls, rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the call-duration histogram buckets.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Process-wide metrics of the MCP server.
#[derive(Debug, Default)]
pub struct Metrics {
    calls: Mutex<BTreeMap<(String, String), u64>>,
    durations: Mutex<BTreeMap<String, Histogram>>,
    audit_failures: AtomicU64,
    sessions: AtomicU64,
    active_sessions: AtomicU64,
    rpc: Mutex<Histogram>,
    rpc_errors: Mutex<BTreeMap<String, u64>>,
    a2a_requests: Mutex<BTreeMap<&'static str, u64>>,
    a2a_calls: AtomicU64,
}

/// The A2A methods counted by name; any other method is counted as `unknown`.
const A2A_METHODS: [&str; 11] = [
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
];

impl Histogram {
    fn record(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {}", braces(labels), self.sum);
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count);
    }
}

impl talos_client::RpcObserver for Metrics {
    fn observe(&self, took: Duration, error: Option<talos_client::ErrorKind>) {
        lock(&self.rpc).record(took);
        if let Some(kind) = error {
            *lock(&self.rpc_errors).entry(kind.to_string()).or_default() += 1;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every value the `outcome` label can take: call statuses, then the error kinds of
/// [`crate::ToolError::kind`] (its own kinds and those of the Talos client and talosconfig
/// errors). Anything else is recorded as `other`, so label sets stay bounded whatever a client
/// sends. A new outcome or error kind must be added here.
pub const OUTCOMES: &[&str] = &[
    "ok",
    "partial",
    "confirmation_required",
    "refused",
    "audit_failed",
    "cancelled",
    "incomplete",
    "error",
    "protocol_error",
    "panic",
    "other",
    // ToolError
    "InvalidArgument",
    "NodeNotAllowed",
    "InvalidConfig",
    "PathNotAllowed",
    "Refused",
    "NotConfirmed",
    "PreflightFailed",
    "Local",
    "Internal",
    // talos_client::ErrorKind and talos_config::ConfigErrorKind
    "Connection",
    "Authentication",
    "PermissionDenied",
    "Timeout",
    "NotFound",
    "Api",
    "MissingCredentials",
    "Protocol",
];

/// The `tool` label of a call: the tool's name if this server has such a tool, else `unknown`
/// (a client can send any name; each distinct label would be kept forever).
fn tool_label(tool: &str) -> &str {
    static KNOWN: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        crate::TalosMcp::all_tools()
            .into_iter()
            .map(|(t, _)| t.name.to_string())
            .collect()
    });
    if known.contains(tool) {
        tool
    } else {
        "unknown"
    }
}

/// The `outcome` label of a call: one of [`OUTCOMES`].
fn outcome_label(outcome: &str) -> &'static str {
    if outcome.starts_with("protocol error") {
        return "protocol_error";
    }
    OUTCOMES
        .iter()
        .find(|o| **o == outcome)
        .copied()
        .unwrap_or("other")
}

impl Metrics {
    /// Records one finished tool call. Unknown tool names are counted as `unknown` and outcomes
    /// outside [`OUTCOMES`] as `other`.
    pub fn record_call(&self, tool: &str, outcome: &str, took: Duration) {
        let tool = tool_label(tool);
        *lock(&self.calls)
            .entry((tool.to_owned(), outcome_label(outcome).to_owned()))
            .or_default() += 1;
        let secs = took.as_secs_f64();
        let mut durations = lock(&self.durations);
        let h = durations.entry(tool.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Records an audit write that failed.
    pub fn audit_failed(&self) {
        self.audit_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records one A2A JSON-RPC request by method (a method outside the A2A set is `unknown`).
    pub fn a2a_request(&self, method: &str) {
        let label = A2A_METHODS
            .iter()
            .find(|m| **m == method)
            .copied()
            .unwrap_or("unknown");
        *lock(&self.a2a_requests).entry(label).or_default() += 1;
    }

    /// Records one tool call started by an A2A client (its outcome is counted with every call's).
    pub fn a2a_call(&self) {
        self.a2a_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Tool calls started by A2A clients so far.
    pub fn a2a_calls(&self) -> u64 {
        self.a2a_calls.load(Ordering::Relaxed)
    }

    /// A transport session started.
    pub fn session_started(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// A session is open for as long as the returned guard lives.
    pub fn open_session(self: &std::sync::Arc<Self>) -> SessionGuard {
        self.session_started();
        self.active_sessions.fetch_add(1, Ordering::Relaxed);
        SessionGuard(self.clone())
    }

    /// Total calls recorded for a tool and outcome (as labelled: see [`Self::record_call`]).
    pub fn calls(&self, tool: &str, outcome: &str) -> u64 {
        lock(&self.calls)
            .get(&(
                tool_label(tool).to_owned(),
                outcome_label(outcome).to_owned(),
            ))
            .copied()
            .unwrap_or(0)
    }

    /// The Prometheus text exposition of everything recorded.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP talos_mcp_tool_calls_total Tool calls by tool and outcome.\n# TYPE talos_mcp_tool_calls_total counter\n");
        for ((tool, outcome), n) in lock(&self.calls).iter() {
            let _ = writeln!(
                out,
                "talos_mcp_tool_calls_total{{tool=\"{}\",outcome=\"{}\"}} {n}",
                escape(tool),
                escape(outcome)
            );
        }
        out.push_str("# HELP talos_mcp_tool_call_duration_seconds Tool call durations.\n# TYPE talos_mcp_tool_call_duration_seconds histogram\n");
        for (tool, h) in lock(&self.durations).iter() {
            h.render(
                &mut out,
                "talos_mcp_tool_call_duration_seconds",
                &format!("tool=\"{}\"", escape(tool)),
            );
        }
        out.push_str("# HELP talos_mcp_talos_rpc_duration_seconds Talos API call durations (each attempt).\n# TYPE talos_mcp_talos_rpc_duration_seconds histogram\n");
        lock(&self.rpc).render(&mut out, "talos_mcp_talos_rpc_duration_seconds", "");
        out.push_str("# HELP talos_mcp_talos_rpc_errors_total Failed Talos API calls by error kind.\n# TYPE talos_mcp_talos_rpc_errors_total counter\n");
        for (kind, n) in lock(&self.rpc_errors).iter() {
            let _ = writeln!(
                out,
                "talos_mcp_talos_rpc_errors_total{{kind=\"{}\"}} {n}",
                escape(kind)
            );
        }
        out.push_str("# HELP talos_mcp_a2a_requests_total A2A JSON-RPC requests by method.\n# TYPE talos_mcp_a2a_requests_total counter\n");
        for (method, n) in lock(&self.a2a_requests).iter() {
            let _ = writeln!(
                out,
                "talos_mcp_a2a_requests_total{{method=\"{method}\"}} {n}"
            );
        }
        let _ = write!(
            out,
            "# HELP talos_mcp_a2a_tool_calls_total Tool calls started by A2A clients.\n# TYPE talos_mcp_a2a_tool_calls_total counter\ntalos_mcp_a2a_tool_calls_total {}\n",
            self.a2a_calls.load(Ordering::Relaxed)
        );
        let _ = write!(
            out,
            "# HELP talos_mcp_audit_failures_total Audit lines that could not be written.\n# TYPE talos_mcp_audit_failures_total counter\ntalos_mcp_audit_failures_total {}\n\
             # HELP talos_mcp_sessions_total MCP sessions started.\n# TYPE talos_mcp_sessions_total counter\ntalos_mcp_sessions_total {}\n\
             # HELP talos_mcp_active_sessions MCP sessions open now.\n# TYPE talos_mcp_active_sessions gauge\ntalos_mcp_active_sessions {}\n",
            self.audit_failures.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed),
            self.active_sessions.load(Ordering::Relaxed)
        );
        out
    }
}

/// Marks a session open until dropped (see [`Metrics::open_session`]).
#[derive(Debug)]
pub struct SessionGuard(std::sync::Arc<Metrics>);

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let _ = self
            .0
            .active_sessions
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

fn escape(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.record_call("talos_version", "ok", Duration::from_millis(20));
        m.record_call("talos_version", "ok", Duration::from_millis(300));
        m.record_call("talos_version", "Timeout", Duration::from_secs(30));
        m.audit_failed();
        m.session_started();
        use talos_client::RpcObserver as _;
        m.observe(Duration::from_millis(5), None);
        m.observe(
            Duration::from_secs(3),
            Some(talos_client::ErrorKind::Connection),
        );
        let text = m.render();
        assert!(
            text.contains("talos_mcp_talos_rpc_duration_seconds_count 2"),
            "{text}"
        );
        assert!(
            text.contains("talos_mcp_talos_rpc_duration_seconds_bucket{le=\"0.01\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("talos_mcp_talos_rpc_errors_total{kind=\"Connection\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("talos_mcp_tool_calls_total{tool=\"talos_version\",outcome=\"ok\"} 2")
        );
        assert!(
            text.contains(
                "talos_mcp_tool_calls_total{tool=\"talos_version\",outcome=\"Timeout\"} 1"
            )
        );
        assert!(text.contains("le=\"0.025\"} 1\n"));
        assert!(text.contains("le=\"0.5\"} 2\n"));
        assert!(text.contains("le=\"+Inf\"} 3\n"));
        assert!(text.contains("talos_mcp_audit_failures_total 1"));
        assert!(text.contains("talos_mcp_sessions_total 1"));
        let m = std::sync::Arc::new(m);
        let guard = m.open_session();
        assert!(m.render().contains("talos_mcp_active_sessions 1"));
        drop(guard);
        assert!(m.render().contains("talos_mcp_active_sessions 0"));
        assert!(m.render().contains("talos_mcp_sessions_total 2"));
        assert_eq!(m.calls("talos_version", "ok"), 2);
    }

    #[test]
    fn labels_come_from_closed_sets() {
        let m = Metrics::default();
        for i in 0..90 {
            let name = format!("{}{i}", "x".repeat(10_000));
            m.record_call(&name, &format!("weird {name}"), Duration::from_millis(1));
        }
        m.record_call("talos_version", "protocol error -32602", Duration::ZERO);
        m.record_call("talos_version", "Timeout", Duration::ZERO);
        let text = m.render();
        assert!(text.len() < 8 * 1024, "{} bytes", text.len());
        assert!(
            text.contains("talos_mcp_tool_calls_total{tool=\"unknown\",outcome=\"other\"} 90"),
            "{text}"
        );
        assert!(text.contains("tool=\"talos_version\",outcome=\"protocol_error\"} 1"));
        assert!(text.contains("tool=\"talos_version\",outcome=\"Timeout\"} 1"));
        assert!(!text.contains("xxxx"));
        assert_eq!(lock(&m.calls).len(), 3);
        assert_eq!(lock(&m.durations).len(), 2);
    }

    #[test]
    fn every_error_kind_is_an_outcome() {
        use crate::ToolError;
        let errors = [
            ToolError::invalid("x", "y"),
            ToolError::NodeNotAllowed {
                node: String::new(),
                context: String::new(),
                allowed: vec![],
            },
            ToolError::UnknownContext {
                name: String::new(),
                available: vec![],
            },
            ToolError::PathNotAllowed {
                path: String::new(),
                allowed: vec![],
            },
            ToolError::Refused(String::new()),
            ToolError::NotConfirmed(String::new()),
            ToolError::Preflight(String::new()),
            ToolError::Local(String::new()),
            ToolError::Internal(String::new()),
        ];
        for e in errors {
            assert!(
                OUTCOMES.contains(&e.kind().to_string().as_str()),
                "{}",
                e.kind()
            );
        }
        use talos_client::ErrorKind as K;
        for k in [
            K::Connection,
            K::Authentication,
            K::PermissionDenied,
            K::Timeout,
            K::NotFound,
            K::Api,
            K::InvalidConfig,
            K::MissingCredentials,
            K::Protocol,
            K::Local,
        ] {
            assert!(OUTCOMES.contains(&k.to_string().as_str()), "{k}");
        }
        // The audit outcome of a call whose tool panicked.
        assert_eq!(outcome_label("panic"), "panic");
    }
}
