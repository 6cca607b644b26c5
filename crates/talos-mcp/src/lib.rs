//! MCP tools, prompts and resources for Talos Linux, on `rmcp`.
//!
//! [`TalosMcp`] is an rmcp `ServerHandler`. Every tool takes an optional `context` (a talosconfig
//! context; several clusters are served at once) and, for fan-out tools, optional `nodes`
//! (default: the context's nodes). Nodes are checked against an allowlist before any call goes
//! out ([`clusters`]). Results carry a short text plus structured content that matches the
//! declared output schema; multi-node results list every node with its own result or error
//! ([`output`]). Output is capped; tool failures are `isError` results naming the error kind
//! ([`error`]).
//!
//! Tools live one function each in domain modules (`tools::info`, `tools::workloads`,
//! `tools::logs`, `tools::etcd`, `tools::cluster`, `tools::kubernetes`), grouped into toolsets
//! the operator can enable by name.

pub mod a2a;
pub mod artifacts;
pub mod audit;
mod call;
pub mod clusters;
mod completions;
mod confirm;
mod docs;
pub mod error;
mod files;
pub mod mcp_log;
pub mod metrics;
pub mod operations;
pub mod output;
mod paths;
mod prompts;
mod redact;
pub mod registry;
mod resources;
pub mod safety;
mod schema;
mod server;
pub mod snapshot;
pub mod state;
mod subscriptions;
pub mod tools;
pub mod trace;
pub mod watch;

pub use clusters::{ApiFactory, Cidr, Clusters, grpc_factory};
pub use docs::{listed_bytes, tools_markdown};
pub use error::{ErrorKind, ToolError};
pub use registry::{Registry, ToolDef, Toolset};
pub use server::{ServerSettings, TalosMcp, TargetArgs, default_replica, state_dir};
pub use trace::Traced;

/// Entry points for fuzzing and property tests: path normalisation and the redaction functions
/// exactly as the tools use them. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::paths::{check_path, normalise_path, refusal};
    pub use crate::redact::{
        is_secret_key, redact_apply_summary, redact_file, redact_machine_config, redact_text,
        redact_value, redact_yaml,
    };
    pub use crate::snapshot::verify_bytes as verify_snapshot;
}

/// Log filter directives for `level` that are safe at any verbosity.
///
/// rmcp logs whole JSON-RPC messages at debug and trace, and tool arguments can carry secrets
/// (an inline machine config for `talos_apply_config`, confirmation tokens). Those targets are
/// therefore capped at `info` (or at a quieter default level: `warn`, `error`, `off`), and the
/// cap cannot be outranked: every operator directive that could match an rmcp event more
/// specifically than the cap is dropped — a directive for an rmcp sub-target
/// (`rmcp::service=trace`) and a span-filtered directive whose target could be rmcp's
/// (`rmcp[serve_inner]=trace`, `[serve_inner]=trace`). Use with `tracing_subscriber::EnvFilter`.
pub fn log_directives(level: &str) -> String {
    let default = level
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.contains('='))
        .unwrap_or("info")
        .to_ascii_lowercase();
    let cap = match default.as_str() {
        "off" | "error" | "warn" => default.as_str(),
        _ => "info",
    };
    let kept: Vec<&str> = level
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty() && !could_outrank_a_clamp(d))
        .collect();
    let clamps: Vec<String> = LOG_CLAMPS.iter().map(|t| format!("{t}={cap}")).collect();
    let mut all = kept.join(",");
    if !all.is_empty() {
        all.push(',');
    }
    all.push_str(&clamps.join(","));
    all
}

/// Whether an operator directive could enable events of a capped target beyond the cap: its
/// target is a capped target or one of its sub-targets, or it filters on spans (span directives
/// are consulted before target directives) with a target that could match a capped one.
fn could_outrank_a_clamp(directive: &str) -> bool {
    let head = directive.split('=').next().unwrap_or_default();
    let spans = head.contains('[') || head.contains('{');
    let target = head.split(['[', '{']).next().unwrap_or_default().trim();
    LOG_CLAMPS.iter().any(|clamp| {
        // A directive of level only (`trace`) has no target and no span filter: it is the
        // default, which the clamps outrank.
        (!target.is_empty() && target.starts_with(clamp))
            || (spans && (clamp.starts_with(target) || target.starts_with(clamp)))
    })
}

/// Replaces the process's panic hook with one that logs a panic at error level through
/// `tracing` (to stderr) with its thread and source location, but never its message: a panic
/// message can quote tool arguments (an inline machine config, a token). The server turns a
/// panicking tool call into an `Internal` error result and keeps serving; this keeps the
/// default hook from printing the message meanwhile. Call once at start-up, after logging is
/// set up.
pub fn quiet_panics() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            location = %location,
            "a thread panicked (the panic message is not logged: it could quote arguments)"
        );
    }));
}

/// Targets capped by [`log_directives`] because they log message contents.
pub const LOG_CLAMPS: &[&str] = &["rmcp"];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    #[test]
    fn message_logging_targets_are_capped_at_info_and_follow_quieter_levels() {
        assert_eq!(super::log_directives("trace"), "trace,rmcp=info");
        assert_eq!(
            super::log_directives("debug,talos_client=trace"),
            "debug,talos_client=trace,rmcp=info"
        );
        assert_eq!(super::log_directives("warn"), "warn,rmcp=warn");
        assert_eq!(
            super::log_directives("talos_mcp=debug,ERROR"),
            "talos_mcp=debug,ERROR,rmcp=error"
        );
        assert_eq!(
            super::log_directives("trace,rmcp::service=trace"),
            "trace,rmcp=info"
        );
        assert_eq!(
            super::log_directives("talos_mcp[call]=debug"),
            "talos_mcp[call]=debug,rmcp=info"
        );
    }

    /// Records the levels of the events that pass a filter.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(String, tracing::Level)>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Seen {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let m = event.metadata();
            self.0
                .lock()
                .unwrap()
                .push((m.target().to_owned(), *m.level()));
        }
    }

    /// The events rmcp-like targets get through the filter built from `level`.
    fn rmcp_events_through(level: &str) -> Vec<(String, tracing::Level)> {
        let seen = Seen::default();
        let filter = tracing_subscriber::EnvFilter::try_new(super::log_directives(level)).unwrap();
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(seen.clone());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(target: "rmcp::service", "serve_inner");
            let _in = span.enter();
            tracing::trace!(target: "rmcp::service", "message body");
            tracing::debug!(target: "rmcp::service", "message body");
            tracing::debug!(target: "rmcp", "message body");
            tracing::info!(target: "rmcp::service", "served");
            tracing::debug!(target: "talos_mcp", "own debug");
        });
        seen.0.lock().unwrap().clone()
    }

    #[test]
    fn operator_directives_cannot_lift_the_cap() {
        for level in [
            "trace,rmcp::service=trace",
            "rmcp[serve_inner]=trace",
            "trace,rmcp[serve_inner]=trace",
            "debug,[serve_inner]=trace",
            "trace,rmcp=trace",
            "rmcp::service[serve_inner{x}]=trace,trace",
        ] {
            let events = rmcp_events_through(level);
            let loud: Vec<_> = events
                .iter()
                .filter(|(t, l)| t.starts_with("rmcp") && *l > tracing::Level::INFO)
                .collect();
            assert!(loud.is_empty(), "{level}: {loud:?}");
            assert!(
                events.iter().any(|(t, _)| t == "rmcp::service"),
                "{level}: info still logged: {events:?}"
            );
        }
        // The operator's other directives still apply.
        let events = rmcp_events_through("trace,rmcp::service=trace");
        assert!(events.iter().any(|(t, _)| t == "talos_mcp"), "{events:?}");
    }
}
