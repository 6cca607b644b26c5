//! The crate's one error type: why a tool call failed, in words a model can act on.

use talos_client::TalosError;
use talos_config::ConfigError;

/// A tool-level failure. It becomes an `isError: true` tool result whose text starts with the
/// error kind and ends with what to do next; it is never a protocol error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// An argument is malformed or out of range.
    #[error("InvalidArgument: `{field}` {message}")]
    InvalidArgument {
        /// The argument.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A node outside the allowed set was named.
    #[error(
        "NodeNotAllowed: `nodes` contains {node}, which is not a node of context `{context}`; allowed: {}. \
         Use one of these, or ask the operator to allow it (--allow-node-cidr)",
        .allowed.join(", ")
    )]
    NodeNotAllowed {
        /// The refused node.
        node: String,
        /// The context.
        context: String,
        /// The allowed nodes (addresses and names known so far).
        allowed: Vec<String>,
    },
    /// The named context does not exist.
    #[error("InvalidConfig: `context` {name} is not in the talosconfig; available contexts: {}", .available.join(", "))]
    UnknownContext {
        /// The name asked for.
        name: String,
        /// The contexts that exist.
        available: Vec<String>,
    },
    /// A path outside the operator's allowlist was named.
    #[error("PathNotAllowed: `path` {path} is outside the allowed paths ({}); choose a path under one of them", .allowed.join(", "))]
    PathNotAllowed {
        /// The path asked for.
        path: String,
        /// The allowlist.
        allowed: Vec<String>,
    },
    /// The tool's tier is disabled by the operator.
    #[error("Refused: {tool} is in the {tier} tier, which the operator has not enabled; it is enabled with {flag}", tier = .tier.as_str(), flag = .tier.flag())]
    TierDisabled {
        /// The tool.
        tool: String,
        /// Its tier.
        tier: crate::safety::Tier,
    },
    /// The human or the confirmation rules did not allow the call.
    #[error("NotConfirmed: {0}")]
    NotConfirmed(String),
    /// A preflight check refused the call.
    #[error("PreflightFailed: {0}")]
    Preflight(String),
    /// The data asked for is secret and never shown.
    #[error("Refused: {0}")]
    Refused(String),
    /// The talosconfig cannot be used.
    #[error("{kind}: {0}", kind = .0.kind())]
    Config(#[from] ConfigError),
    /// The Talos API call failed.
    #[error("{0}")]
    Talos(#[from] TalosError),
    /// A local operation (writing an artifact) failed.
    #[error("Local: {0}")]
    Local(String),
    /// A bug in the server stopped the call (a panic); the server keeps serving.
    #[error("Internal: {0}")]
    Internal(String),
}

impl ToolError {
    /// The error kind as shown to the model.
    pub fn kind(&self) -> String {
        match self {
            Self::InvalidArgument { .. } => "InvalidArgument".into(),
            Self::NodeNotAllowed { .. } => "NodeNotAllowed".into(),
            Self::UnknownContext { .. } => "InvalidConfig".into(),
            Self::PathNotAllowed { .. } => "PathNotAllowed".into(),
            Self::Refused(_) | Self::TierDisabled { .. } => "Refused".into(),
            Self::NotConfirmed(_) => "NotConfirmed".into(),
            Self::Preflight(_) => "PreflightFailed".into(),
            Self::Config(e) => e.kind().to_string(),
            Self::Talos(e) => e.kind().to_string(),
            Self::Local(_) => "Local".into(),
            Self::Internal(_) => "Internal".into(),
        }
    }

    /// Shorthand for an invalid argument.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field,
            message: message.into(),
        }
    }
}
