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

pub mod audit;
pub mod clusters;
mod confirm;
mod docs;
pub mod error;
mod files;
pub mod metrics;
pub mod output;
mod paths;
mod prompts;
mod redact;
mod resources;
pub mod safety;
mod schema;
mod server;
pub mod tools;

pub use clusters::{ApiFactory, Cidr, Clusters, grpc_factory};
pub use docs::tools_markdown;
pub use error::ToolError;
pub use server::{ServerSettings, TOOLSETS, TalosMcp, TargetArgs, state_dir};

/// Entry points for fuzzing and property tests: path normalisation and the redaction functions
/// exactly as the tools use them. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::paths::{check_path, normalise_path, refusal};
    pub use crate::redact::{
        is_secret_key, redact_apply_summary, redact_file, redact_machine_config, redact_text,
        redact_value, redact_yaml,
    };
}

/// Log filter directives for `level` that are safe at any verbosity.
///
/// rmcp logs whole JSON-RPC messages at debug and trace, and tool arguments can carry secrets
/// (an inline machine config for `talos_apply_config`). Those targets are therefore capped at
/// `info`, after whatever the operator asked for; a quieter default level (`warn`, `error`,
/// `off`) quiets them too. Use with `tracing_subscriber::EnvFilter`.
pub fn log_directives(level: &str) -> String {
    let default = level
        .split(',')
        .map(str::trim)
        .find(|d| !d.contains('='))
        .unwrap_or("info")
        .to_ascii_lowercase();
    let cap = match default.as_str() {
        "off" | "error" | "warn" => default.as_str(),
        _ => "info",
    };
    let clamps: Vec<String> = LOG_CLAMPS.iter().map(|t| format!("{t}={cap}")).collect();
    format!("{level},{}", clamps.join(","))
}

/// Targets capped by [`log_directives`] because they log message contents.
pub const LOG_CLAMPS: &[&str] = &["rmcp"];

#[cfg(test)]
mod tests {
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
    }
}
