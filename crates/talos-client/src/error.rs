//! The client's one error type, carrying the seed's tool-execution error hierarchy.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use talos_config::ConfigError;

use crate::Code;

/// Where a call was going: the endpoint dialled and the node it targeted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Target {
    /// The endpoint dialled (`host:port`), when one was chosen.
    pub endpoint: Option<String>,
    /// The node named in the `node` metadata; `None` means the endpoint itself.
    pub node: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.node, &self.endpoint) {
            (Some(node), Some(ep)) => write!(f, "node {node} via endpoint {ep}"),
            (Some(node), None) => write!(f, "node {node}"),
            (None, Some(ep)) => write!(f, "endpoint {ep}"),
            (None, None) => f.write_str("the cluster"),
        }
    }
}

/// The family an error belongs to; stable names for callers that branch or report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The endpoint or node could not be reached (refused, DNS, unavailable, reset).
    Connection,
    /// TLS handshake or certificate failure, or the server answered `Unauthenticated`.
    Authentication,
    /// The client certificate's Talos role is too low for this call.
    PermissionDenied,
    /// No answer within this client's deadline, or the server answered `DeadlineExceeded`.
    Timeout,
    /// The thing asked for does not exist on the node.
    NotFound,
    /// The server answered with another gRPC error.
    Api,
    /// The talosconfig is missing, broken, or lacks credentials.
    InvalidConfig,
    /// The talosconfig context lacks usable credentials.
    MissingCredentials,
    /// The server's answer could not be understood.
    Protocol,
    /// A local file operation failed (for example writing a snapshot).
    Local,
}

impl ErrorKind {
    /// The kind's stable name (`Connection`, `Timeout`, …), the leading word of every message.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connection => "Connection",
            Self::Authentication => "Authentication",
            Self::PermissionDenied => "PermissionDenied",
            Self::Timeout => "Timeout",
            Self::NotFound => "NotFound",
            Self::Api => "Api",
            Self::InvalidConfig => "InvalidConfig",
            Self::MissingCredentials => "MissingCredentials",
            Self::Protocol => "Protocol",
            Self::Local => "Local",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything a Talos call can fail with. Messages name the node and endpoint and say what to do
/// next; they never contain key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TalosError {
    /// The endpoint or node could not be reached.
    #[error(
        "Connection: cannot reach {target}: {message}; check that the address is right and apid (port 50000) is reachable from here"
    )]
    Connection {
        /// Where the call was going.
        target: Target,
        /// What failed.
        message: String,
    },
    /// The TLS handshake failed (certificates, CA, protocol version).
    #[error(
        "Authentication: TLS with {target} failed: {message}; check that the talosconfig's ca matches the cluster and its client certificate is valid and not expired"
    )]
    Authentication {
        /// Where the call was going.
        target: Target,
        /// What failed.
        message: String,
    },
    /// The TLS session was established, but the server answered `Unauthenticated`: it (the node,
    /// or apid relaying the call to it) did not accept the credentials.
    #[error(
        "Authentication: {target} refused the credentials (Unauthenticated): {message}; the TLS handshake succeeded, but the server (the node, or the apid relaying to it) did not accept the client certificate — check that the talosconfig belongs to this cluster and that its certificate has not been revoked or replaced"
    )]
    Unauthenticated {
        /// Where the call was going.
        target: Target,
        /// The server's message.
        message: String,
    },
    /// The role in the client certificate does not allow this call.
    #[error(
        "PermissionDenied: {target} refused the call: {message}; the talosconfig's role (os:reader < os:operator < os:admin) is too low for it"
    )]
    PermissionDenied {
        /// Where the call was going.
        target: Target,
        /// The server's message.
        message: String,
    },
    /// This client's deadline passed without an answer.
    #[error(
        "Timeout: {target} did not answer within {after:?}; the node may be busy, rebooting or unreachable — retry later or raise the timeout"
    )]
    Timeout {
        /// Where the call was going.
        target: Target,
        /// The deadline that passed.
        after: Duration,
    },
    /// The server answered `DeadlineExceeded`: the node, or apid relaying the call to it, gave up
    /// waiting. This client's own deadline had not passed.
    #[error(
        "Timeout: {target} answered DeadlineExceeded: {message}; the node (or the apid relaying to it) gave up before the call completed, not this client's deadline — the node may be busy, rebooting or unreachable from the endpoint; retry later"
    )]
    DeadlineExceeded {
        /// Where the call was going.
        target: Target,
        /// The server's message.
        message: String,
    },
    /// Not found on the node.
    #[error("NotFound: {target}: {message}")]
    NotFound {
        /// Where the call was going.
        target: Target,
        /// The server's message.
        message: String,
    },
    /// Any other gRPC error from the server.
    #[error("Api: {target} answered {code}: {message}")]
    Api {
        /// Where the call was going.
        target: Target,
        /// The gRPC status code the server answered (e.g. [`Code::FailedPrecondition`]).
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be decoded or was incomplete.
    #[error("Protocol: unexpected answer from {target}: {message}")]
    Protocol {
        /// Where the call was going.
        target: Target,
        /// What was wrong.
        message: String,
    },
    /// A local operation failed.
    #[error("Local: {message}")]
    Local {
        /// What failed.
        message: String,
    },
    /// The talosconfig could not be used.
    #[error("{kind}: {0}", kind = .0.kind())]
    Config(#[from] ConfigError),
}

impl TalosError {
    /// The error's family.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Connection { .. } => ErrorKind::Connection,
            Self::Authentication { .. } | Self::Unauthenticated { .. } => ErrorKind::Authentication,
            Self::PermissionDenied { .. } => ErrorKind::PermissionDenied,
            Self::Timeout { .. } | Self::DeadlineExceeded { .. } => ErrorKind::Timeout,
            Self::NotFound { .. } => ErrorKind::NotFound,
            Self::Api { .. } => ErrorKind::Api,
            Self::Protocol { .. } => ErrorKind::Protocol,
            Self::Local { .. } => ErrorKind::Local,
            Self::Config(e) => match e.kind() {
                talos_config::ConfigErrorKind::MissingCredentials => ErrorKind::MissingCredentials,
                _ => ErrorKind::InvalidConfig,
            },
        }
    }

    /// Where the call was going, when the error concerns a call.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Self::Connection { target, .. }
            | Self::Authentication { target, .. }
            | Self::Unauthenticated { target, .. }
            | Self::PermissionDenied { target, .. }
            | Self::Timeout { target, .. }
            | Self::DeadlineExceeded { target, .. }
            | Self::NotFound { target, .. }
            | Self::Api { target, .. }
            | Self::Protocol { target, .. } => Some(target),
            Self::Local { .. } | Self::Config(_) => None,
        }
    }

    /// Whether the node does not offer the called service or method (gRPC `Unimplemented`): an
    /// older Talos, where the caller should use the older API instead.
    pub fn is_unimplemented(&self) -> bool {
        matches!(
            self,
            Self::Api {
                code: crate::Code::Unimplemented,
                ..
            }
        )
    }

    /// Whether retrying an idempotent read might succeed: the connection failed before the server
    /// could act (unavailable, reset, refused). Timeouts are not retried: the deadline is spent.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Connection { .. })
    }

    /// Maps a gRPC status into an error for `target`; `timeout` is the deadline the call had.
    ///
    /// A failed TLS handshake and this client's own deadline (tonic's `grpc-timeout` enforcement)
    /// are recognised from the status's source chain, whatever its code. A status the server sent
    /// is mapped by its code: `Unauthenticated` and `DeadlineExceeded` become
    /// [`TalosError::Unauthenticated`] and [`TalosError::DeadlineExceeded`] (the server refused or
    /// gave up: no handshake failed, our deadline did not pass).
    pub fn from_status(status: &tonic::Status, target: Target, timeout: Duration) -> Self {
        use tonic::Code;
        if let Some(tls) = find_tls_error(status) {
            return Self::Authentication {
                target,
                message: tls,
            };
        }
        if is_deadline(status) {
            return Self::Timeout {
                target,
                after: timeout,
            };
        }
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable => Self::Connection {
                target,
                message: describe_transport(status),
            },
            // Transport failures (resets, broken pipes) surface as these codes with a local cause.
            Code::Unknown | Code::Internal | Code::Cancelled if is_local_transport(status) => {
                Self::Connection {
                    target,
                    message: describe_transport(status),
                }
            }
            // Raised by our own transport rather than sent by the server: keep the TLS wording
            // and our deadline.
            Code::Unauthenticated if is_local_transport(status) => {
                Self::Authentication { target, message }
            }
            Code::DeadlineExceeded if is_local_transport(status) => Self::Timeout {
                target,
                after: timeout,
            },
            Code::Unauthenticated => Self::Unauthenticated { target, message },
            Code::DeadlineExceeded => Self::DeadlineExceeded { target, message },
            Code::PermissionDenied => Self::PermissionDenied { target, message },
            Code::NotFound => Self::NotFound { target, message },
            code => Self::Api {
                target,
                code: code.into(),
                message,
            },
        }
    }
}

/// tonic enforces the deadline a request carries (`grpc-timeout`) itself and ends the call with
/// `Cancelled: Timeout expired`: that is the call's deadline passing on a live connection, not a
/// broken one (and, unlike a connection failure, not worth a retry).
fn is_deadline(status: &tonic::Status) -> bool {
    error_chain(status).any(|e| e.is::<tonic::TimeoutExpired>())
        || (status.code() == tonic::Code::Cancelled
            && status.message() == tonic::TimeoutExpired(()).to_string())
}

/// The status came from the client's transport rather than from the server.
fn is_local_transport(status: &tonic::Status) -> bool {
    status.source().is_some()
}

/// A short description of a transport failure: the status message plus its innermost cause.
fn describe_transport(status: &tonic::Status) -> String {
    match error_chain(status).last().map(|e| e.to_string()) {
        Some(cause) if !status.message().contains(&cause) => {
            format!("{} ({cause})", status.message())
        }
        _ => status.message().to_owned(),
    }
}

/// Finds a TLS failure anywhere in the status's source chain: a typed rustls error first, else
/// the text some layers (h2) keep instead of a `source()`.
fn find_tls_error(status: &tonic::Status) -> Option<String> {
    let chain = || error_chain(status);
    for err in chain() {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(describe_rustls(tls));
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(describe_rustls(tls));
        }
    }
    for err in chain() {
        let text = err.to_string();
        if let Some(pos) = text.find("received fatal alert: ") {
            let alert = text[pos + "received fatal alert: ".len()..]
                .split(|c: char| !c.is_ascii_alphanumeric())
                .next()
                .unwrap_or_default();
            return Some(describe_alert(alert));
        }
        if text.contains("invalid peer certificate") {
            return Some(text);
        }
    }
    None
}

/// The status's source errors, outermost first.
pub(crate) fn error_chain<'a>(
    status: &'a tonic::Status,
) -> impl Iterator<Item = &'a (dyn StdError + 'static)> {
    std::iter::successors(status.source(), |err: &&'a (dyn StdError + 'static)| {
        (*err).source()
    })
}

/// Explains a TLS alert the server sent about our client certificate.
fn describe_alert(alert: &str) -> String {
    match alert {
        "CertificateExpired" => {
            "the server rejected the client certificate: it has expired; generate a new talosconfig"
                .to_owned()
        }
        "UnknownCA" | "BadCertificate" | "CertificateUnknown" => {
            "the server rejected the client certificate: it is not signed by this cluster's CA"
                .to_owned()
        }
        "ProtocolVersion" => "the server does not speak TLS 1.3".to_owned(),
        other => format!(
            "the server ended the TLS session ({other}); the client certificate may be invalid for this cluster"
        ),
    }
}

fn describe_rustls(err: &rustls::Error) -> String {
    match err {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
        | rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext { .. }) => {
            "the server certificate has expired".to_owned()
        }
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer) => {
            "the server certificate is not signed by the talosconfig's CA".to_owned()
        }
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. },
        ) => "the server certificate does not cover this endpoint's address".to_owned(),
        rustls::Error::PeerIncompatible(_) => {
            format!("the server does not speak TLS 1.3 with the required settings ({err})")
        }
        rustls::Error::AlertReceived(alert) => format!(
            "the server rejected the handshake ({alert:?}); the client certificate may be expired or signed by another CA"
        ),
        other => other.to_string(),
    }
}

/// Results from this crate.
pub type Result<T, E = TalosError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_onto_the_error_families() {
        let target = || Target {
            endpoint: Some("127.0.0.1:50000".into()),
            node: Some("10.5.0.2".into()),
        };
        let after = Duration::from_secs(3);
        // tonic's own deadline on a live connection is a timeout, not a connection failure.
        let deadline = TalosError::from_status(
            &tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string()),
            target(),
            after,
        );
        assert_eq!(deadline.kind(), ErrorKind::Timeout);
        assert!(!deadline.is_transient(), "a spent deadline is not retried");
        let unavailable =
            TalosError::from_status(&tonic::Status::unavailable("refused"), target(), after);
        assert_eq!(unavailable.kind(), ErrorKind::Connection);
        assert!(unavailable.is_transient());
        let denied = TalosError::from_status(
            &tonic::Status::permission_denied("not authorized"),
            target(),
            after,
        );
        assert_eq!(denied.kind(), ErrorKind::PermissionDenied);
        let other = TalosError::from_status(&tonic::Status::cancelled("by peer"), target(), after);
        assert_eq!(other.kind(), ErrorKind::Api);
    }

    fn node() -> Target {
        Target {
            endpoint: Some("127.0.0.1:50000".into()),
            node: Some("10.5.0.2".into()),
        }
    }

    #[test]
    fn every_status_code_the_server_sends_maps_to_its_variant() {
        let after = Duration::from_secs(3);
        for code in Code::ALL {
            if code == Code::Ok {
                continue;
            }
            let status = tonic::Status::new(code.into(), "from the node");
            let err = TalosError::from_status(&status, node(), after);
            let kind = match code {
                Code::Unavailable => ErrorKind::Connection,
                Code::Unauthenticated => ErrorKind::Authentication,
                Code::PermissionDenied => ErrorKind::PermissionDenied,
                Code::DeadlineExceeded => ErrorKind::Timeout,
                Code::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Api,
            };
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.target(), Some(&node()), "{code}");
            assert!(
                err.to_string().starts_with(&format!("{}: ", kind.as_str())),
                "{err}"
            );
            match (code, &err) {
                (Code::Unauthenticated, TalosError::Unauthenticated { message, .. })
                | (Code::DeadlineExceeded, TalosError::DeadlineExceeded { message, .. }) => {
                    assert_eq!(message, "from the node");
                }
                (
                    _,
                    TalosError::Api {
                        code: got, message, ..
                    },
                ) => {
                    assert_eq!(*got, code);
                    assert_eq!(message, "from the node");
                    assert!(
                        err.to_string().contains(&format!("answered {code}:")),
                        "{err}"
                    );
                }
                (Code::Unavailable, TalosError::Connection { .. })
                | (Code::PermissionDenied, TalosError::PermissionDenied { .. })
                | (Code::NotFound, TalosError::NotFound { .. }) => {}
                (code, err) => panic!("{code} mapped to {err:?}"),
            }
        }
    }

    #[test]
    fn deadline_exceeded_from_the_node_is_not_reported_as_our_deadline() {
        let err = TalosError::from_status(
            &tonic::Status::deadline_exceeded("proxying to 10.5.0.3 timed out"),
            node(),
            Duration::from_secs(3),
        );
        assert_eq!(err.kind(), ErrorKind::Timeout);
        assert!(!err.is_transient());
        let text = err.to_string();
        assert!(
            text.starts_with("Timeout: node 10.5.0.2 via endpoint 127.0.0.1:50000 answered DeadlineExceeded: proxying to 10.5.0.3 timed out;"),
            "{text}"
        );
        assert!(text.contains("not this client's deadline"), "{text}");
        assert!(!text.contains("did not answer within"), "{text}");
        assert!(!text.contains("3s"), "{text}");
        // Our own deadline (tonic ends the call with `Cancelled: Timeout expired`) keeps its text.
        let ours = TalosError::from_status(
            &tonic::Status::cancelled(tonic::TimeoutExpired(()).to_string()),
            node(),
            Duration::from_secs(3),
        );
        assert!(
            matches!(ours, TalosError::Timeout { after, .. } if after == Duration::from_secs(3))
        );
        assert!(
            ours.to_string().contains("did not answer within 3s"),
            "{ours}"
        );
    }

    #[test]
    fn unauthenticated_from_the_node_is_not_reported_as_a_tls_failure() {
        let err = TalosError::from_status(
            &tonic::Status::unauthenticated("certificate not accepted"),
            node(),
            Duration::from_secs(3),
        );
        assert_eq!(err.kind(), ErrorKind::Authentication);
        let text = err.to_string();
        assert!(
            text.starts_with("Authentication: node 10.5.0.2 via endpoint 127.0.0.1:50000 refused the credentials (Unauthenticated): certificate not accepted;"),
            "{text}"
        );
        assert!(text.contains("the TLS handshake succeeded"), "{text}");
        assert!(!text.contains("TLS with"), "{text}");
        // A real handshake failure keeps the TLS wording.
        let alert = TalosError::from_status(
            &tonic::Status::from_error(Box::new(std::io::Error::other(
                "received fatal alert: UnknownCA",
            ))),
            node(),
            Duration::from_secs(3),
        );
        assert!(
            matches!(alert, TalosError::Authentication { .. }),
            "{alert:?}"
        );
        assert!(
            alert.to_string().contains("TLS with node 10.5.0.2"),
            "{alert}"
        );
    }

    #[test]
    fn error_kind_names_are_stable() {
        let names = [
            (ErrorKind::Connection, "Connection"),
            (ErrorKind::Authentication, "Authentication"),
            (ErrorKind::PermissionDenied, "PermissionDenied"),
            (ErrorKind::Timeout, "Timeout"),
            (ErrorKind::NotFound, "NotFound"),
            (ErrorKind::Api, "Api"),
            (ErrorKind::InvalidConfig, "InvalidConfig"),
            (ErrorKind::MissingCredentials, "MissingCredentials"),
            (ErrorKind::Protocol, "Protocol"),
            (ErrorKind::Local, "Local"),
        ];
        for (kind, name) in names {
            assert_eq!(kind.as_str(), name);
            assert_eq!(kind.to_string(), name);
        }
    }
}
