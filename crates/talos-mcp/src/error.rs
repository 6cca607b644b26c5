//! The crate's one error type: why a tool call failed, in words a model can act on.

use talos_client::TalosError;
use talos_config::ConfigError;

/// A tool-level failure. It becomes an `isError: true` tool result whose text starts with the
/// error kind and ends with what to do next; it is never a protocol error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ToolError {
    /// An argument is malformed or out of range.
    #[error("InvalidArgument: `{field}` {}", clip(.message, MAX_MESSAGE))]
    InvalidArgument {
        /// The argument (a path such as `nodes[2]` when it is inside a list).
        field: std::borrow::Cow<'static, str>,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// A node outside the allowed set was named.
    #[error(
        "NodeNotAllowed: `nodes` contains {}, which is not a node of context `{}`; allowed: {}. \
         Use one of these, or ask the operator to allow it (--allow-node-cidr)",
        echo(.node), echo(.context), echo_list(.allowed)
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
    #[error("InvalidConfig: `context` {} is not in the talosconfig or not served; available contexts: {}", echo(.name), echo_list(.available))]
    UnknownContext {
        /// The name asked for.
        name: String,
        /// The contexts that exist.
        available: Vec<String>,
    },
    /// A path outside the operator's allowlist was named.
    #[error("PathNotAllowed: `path` {} is outside the allowed paths ({}); choose a path under one of them", echo(.path), echo_list(.allowed))]
    PathNotAllowed {
        /// The path asked for.
        path: String,
        /// The allowlist.
        allowed: Vec<String>,
    },
    /// The tool's tier is disabled by the operator.
    #[error("Refused: {} is in the {tier} tier, which the operator has not enabled; it is enabled with {flag}", echo(.tool), tier = .tier.as_str(), flag = .tier.flag())]
    TierDisabled {
        /// The tool.
        tool: String,
        /// Its tier.
        tier: crate::safety::Tier,
    },
    /// The human or the confirmation rules did not allow the call.
    #[error("NotConfirmed: {}", clip(.0, MAX_MESSAGE))]
    NotConfirmed(String),
    /// A preflight check refused the call.
    #[error("PreflightFailed: {}", clip(.0, MAX_MESSAGE))]
    Preflight(String),
    /// The data asked for is secret and never shown.
    #[error("Refused: {}", clip(.0, MAX_MESSAGE))]
    Refused(String),
    /// The talosconfig cannot be used.
    #[error("{kind}: {}", clip(&.0.to_string(), MAX_MESSAGE), kind = .0.kind())]
    Config(#[from] ConfigError),
    /// The Talos API call failed.
    #[error("{}", clip(&.0.to_string(), MAX_MESSAGE))]
    Talos(#[from] TalosError),
    /// A local operation (writing an artifact) failed.
    #[error("Local: {}", clip(.0, MAX_MESSAGE))]
    Local(String),
    /// A bug in the server stopped the call (a panic); the server keeps serving.
    #[error("Internal: {0}")]
    Internal(String),
    /// A multi-round-trip retry carries state that is not this server's or not for this call:
    /// a protocol error (JSON-RPC invalid params), not a tool result.
    #[error("InvalidParams: {}", clip(.0, MAX_MESSAGE))]
    RequestState(String),
    /// The state shared with other replicas (`--state-url`) could not be reached or answered
    /// something unreadable; nothing that needed it was done.
    #[error("Unavailable: {}", clip(.0, MAX_MESSAGE))]
    State(String),
}

/// The kind of a [`ToolError`]: the word its message starts with, and the audit's and the
/// metrics' outcome of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument is malformed or out of range.
    InvalidArgument,
    /// A node outside the context was named.
    NodeNotAllowed,
    /// A path outside the allowlist was named.
    PathNotAllowed,
    /// Refused: a disabled tier, secret data, a busy cluster.
    Refused,
    /// The human or the confirmation rules did not allow the call.
    NotConfirmed,
    /// A preflight check refused the call.
    PreflightFailed,
    /// A local operation failed.
    Local,
    /// A bug in the server.
    Internal,
    /// A multi-round-trip retry with state that is not for this call.
    InvalidParams,
    /// The shared state store did not answer.
    Unavailable,
    /// The talosconfig cannot be used (an unknown context is `InvalidConfig`).
    Config(talos_config::ConfigErrorKind),
    /// The Talos API call failed.
    Talos(talos_client::ErrorKind),
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(k) => k.fmt(f),
            Self::Talos(k) => k.fmt(f),
            other => f.write_str(match other {
                Self::InvalidArgument => "InvalidArgument",
                Self::NodeNotAllowed => "NodeNotAllowed",
                Self::PathNotAllowed => "PathNotAllowed",
                Self::Refused => "Refused",
                Self::NotConfirmed => "NotConfirmed",
                Self::PreflightFailed => "PreflightFailed",
                Self::Local => "Local",
                Self::Internal => "Internal",
                Self::Unavailable => "Unavailable",
                _ => "InvalidParams",
            }),
        }
    }
}

impl ToolError {
    /// The error kind as shown to the model.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::NodeNotAllowed { .. } => ErrorKind::NodeNotAllowed,
            Self::UnknownContext { .. } => {
                ErrorKind::Config(talos_config::ConfigErrorKind::InvalidConfig)
            }
            Self::PathNotAllowed { .. } => ErrorKind::PathNotAllowed,
            Self::Refused(_) | Self::TierDisabled { .. } => ErrorKind::Refused,
            Self::NotConfirmed(_) => ErrorKind::NotConfirmed,
            Self::Preflight(_) => ErrorKind::PreflightFailed,
            Self::Config(e) => ErrorKind::Config(e.kind()),
            Self::Talos(e) => ErrorKind::Talos(e.kind()),
            Self::Local(_) => ErrorKind::Local,
            Self::Internal(_) => ErrorKind::Internal,
            Self::RequestState(_) => ErrorKind::InvalidParams,
            Self::State(_) => ErrorKind::Unavailable,
        }
    }

    /// Shorthand for an invalid argument.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Longest echo of one input (a node, context, path or tool name) in an error message, in
/// characters.
pub const MAX_ECHO: usize = 128;

/// Longest free-text part of an error message, in characters: long enough for any guidance this
/// server writes, short enough that inputs echoed inside it cannot blow it up.
pub(crate) const MAX_MESSAGE: usize = 2048;

/// Most list items (allowed nodes, contexts, paths) an error message names.
const MAX_LIST: usize = 64;

/// An input as it may appear in an error message: at most [`MAX_ECHO`] characters, with an
/// ellipsis and the full length when cut. Every echo of a model-supplied value goes through this.
pub fn echo(input: &str) -> String {
    clip(input, MAX_ECHO)
}

/// `text` cut to `max` characters, ending in an ellipsis and the original size when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()),
    }
}

/// A list for an error message: each item echoed, at most [`MAX_LIST`] items.
fn echo_list(items: &[String]) -> String {
    let mut out: Vec<String> = items.iter().take(MAX_LIST).map(|i| echo(i)).collect();
    if items.len() > MAX_LIST {
        out.push(format!("… and {} more", items.len() - MAX_LIST));
    }
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_are_clipped() {
        assert_eq!(echo("cp-1"), "cp-1");
        let long = "é".repeat(100_000);
        let e = echo(&long);
        assert!(e.chars().count() < MAX_ECHO + 20, "{e}");
        assert!(e.ends_with("… (200000 bytes)"), "{e}");
        let err = ToolError::UnknownContext {
            name: "x".repeat(200_000),
            available: vec!["a".into(); 1000],
        };
        assert!(err.to_string().len() < 1024, "{}", err.to_string().len());
        assert!(err.to_string().contains("and 936 more"));
    }
}
