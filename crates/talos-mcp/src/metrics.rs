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
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    /// Records one finished tool call.
    pub fn record_call(&self, tool: &str, outcome: &str, took: Duration) {
        *lock(&self.calls)
            .entry((tool.to_owned(), outcome.to_owned()))
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

    /// A transport session started.
    pub fn session_started(&self) {
        self.sessions.fetch_add(1, Ordering::Relaxed);
    }

    /// Total calls recorded for a tool and outcome.
    pub fn calls(&self, tool: &str, outcome: &str) -> u64 {
        lock(&self.calls)
            .get(&(tool.to_owned(), outcome.to_owned()))
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
            let tool = escape(tool);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "talos_mcp_tool_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "talos_mcp_tool_call_duration_seconds_bucket{{tool=\"{tool}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "talos_mcp_tool_call_duration_seconds_sum{{tool=\"{tool}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "talos_mcp_tool_call_duration_seconds_count{{tool=\"{tool}\"}} {}",
                h.count
            );
        }
        let _ = write!(
            out,
            "# HELP talos_mcp_audit_failures_total Audit lines that could not be written.\n# TYPE talos_mcp_audit_failures_total counter\ntalos_mcp_audit_failures_total {}\n\
             # HELP talos_mcp_sessions_total MCP sessions started.\n# TYPE talos_mcp_sessions_total counter\ntalos_mcp_sessions_total {}\n",
            self.audit_failures.load(Ordering::Relaxed),
            self.sessions.load(Ordering::Relaxed)
        );
        out
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
        let text = m.render();
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
        assert_eq!(m.calls("talos_version", "ok"), 2);
    }
}
