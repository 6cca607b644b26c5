//! Trace context: a W3C `traceparent` in, the trace id out (into audit lines).
//!
//! The library only creates `tracing` spans. A binary that exports traces installs a
//! [`TraceHook`], which links a span to a remote parent and says which trace a span is in;
//! without one, the incoming `traceparent`'s trace id is still written into audit lines.

use std::sync::OnceLock;

/// A valid W3C `traceparent` header value (version `00` form, lower-case hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

/// The length of a version-00 `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
const TRACEPARENT_LEN: usize = 55;

impl TraceParent {
    /// Parses a `traceparent` value. Anything else (wrong length or version, upper-case or
    /// non-hex digits, an all-zero trace or span id) is `None`: an invalid value is ignored,
    /// as the W3C Trace Context specification asks. A later version's value is read as
    /// version 00 when it starts like one.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let head = text.get(..TRACEPARENT_LEN)?;
        let rest = &text[TRACEPARENT_LEN..];
        let mut parts = head.split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
            return None;
        }
        match version {
            "ff" => return None,
            "00" if !rest.is_empty() => return None,
            "00" => {}
            _ if !(rest.is_empty() || rest.starts_with('-')) => return None,
            _ => {}
        }
        if trace.bytes().all(|b| b == b'0') || span.bytes().all(|b| b == b'0') {
            return None;
        }
        Some(Self(format!("00-{trace}-{span}-{flags}")))
    }

    /// The value, in version-00 form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        &self.0[3..35]
    }
}

/// Links `tracing` spans to OpenTelemetry traces (installed by a binary that exports them).
pub trait TraceHook: Send + Sync + std::fmt::Debug {
    /// Makes `parent` (a remote span) the parent of `span`, which has not been entered yet.
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent);
    /// The `traceparent` that names `span` (`None` when it is not traced).
    fn traceparent(&self, span: &tracing::Span) -> Option<TraceParent>;
}

static HOOK: OnceLock<Box<dyn TraceHook>> = OnceLock::new();

/// Installs the process's trace hook; `false` when one was already installed.
pub fn install_hook(hook: Box<dyn TraceHook>) -> bool {
    HOOK.set(hook).is_ok()
}

/// Gives `span` its remote parent, if any, and returns the `traceparent` naming `span` (with a
/// hook) or else the parent's (without one). Its trace id is what audit lines record.
pub fn adopt(span: &tracing::Span, parent: Option<&TraceParent>) -> Option<TraceParent> {
    match HOOK.get() {
        Some(hook) => {
            if let Some(parent) = parent {
                hook.set_parent(span, parent);
            }
            hook.traceparent(span).or_else(|| parent.cloned())
        }
        None => parent.cloned(),
    }
}

/// The parent of a tool call's span: the request's `_meta.traceparent`, else the trace context
/// the HTTP transport put into the request's extensions (its request span, or the `traceparent`
/// header).
pub(crate) fn request_parent(
    meta: Option<&str>,
    extensions: &rmcp::model::Extensions,
) -> Option<TraceParent> {
    meta.and_then(TraceParent::parse).or_else(|| {
        extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<TraceParent>())
            .cloned()
    })
}

/// The server with a span per MCP request: the stdio transport serves this (rmcp's HTTP service
/// takes a `ServerHandler`; there a `tools/call` opens its span itself). Each request's span is
/// named by its method (a method the server does not know is `other`), is parented by the
/// request's `_meta.traceparent` or the HTTP transport's trace context, and is the span a
/// `tools/call` records its tool, tier, context, node count and outcome on.
#[derive(Debug, Clone)]
pub struct Traced(pub crate::TalosMcp);

/// The trace a request's span is in, handed from [`Traced`] to the handler.
#[derive(Debug, Clone)]
pub(crate) struct RequestTrace(pub(crate) Option<String>);

impl rmcp::Service<rmcp::RoleServer> for Traced {
    async fn handle_request(
        &self,
        request: rmcp::model::ClientRequest,
        mut context: rmcp::service::RequestContext<rmcp::RoleServer>,
    ) -> Result<rmcp::model::ServerResult, rmcp::ErrorData> {
        use tracing::Instrument as _;
        let method = match &request {
            rmcp::model::ClientRequest::CustomRequest(_) => "other",
            known => known.method(),
        };
        let span = crate::server::request_span(method, &self.0.settings.transport);
        let parent = request_parent(context.meta.get_traceparent(), &context.extensions);
        let traced = adopt(&span, parent.as_ref());
        context
            .extensions
            .insert(RequestTrace(traced.map(|t| t.trace_id().to_owned())));
        rmcp::Service::handle_request(&self.0, request, context)
            .instrument(span)
            .await
    }

    async fn handle_notification(
        &self,
        notification: rmcp::model::ClientNotification,
        context: rmcp::service::NotificationContext<rmcp::RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        rmcp::Service::handle_notification(&self.0, notification, context).await
    }

    fn get_info(&self) -> <rmcp::RoleServer as rmcp::service::ServiceRole>::Info {
        rmcp::Service::get_info(&self.0)
    }

    fn supported_protocol_versions(
        &self,
    ) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        rmcp::Service::supported_protocol_versions(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let p = TraceParent::parse(GOOD).unwrap();
        assert_eq!(p.as_str(), GOOD);
        assert_eq!(p.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00",
            "00-0AF7651916CD43DD8448EB211C80319C-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-extra",
            "00-0af7651916cd43dd8448eb211c80319c_00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c8031zz-00f067aa0ba902b7-01",
            "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-0é",
            "é0-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_a_later_version_as_version_00() {
        let later = "01-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01-more";
        assert_eq!(TraceParent::parse(later).unwrap().as_str(), GOOD);
        assert_eq!(
            TraceParent::parse("01-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01x"),
            None
        );
    }

    #[test]
    fn meta_wins_over_the_transport_and_invalid_meta_falls_back() {
        let mut parts = http::Request::new(()).into_parts().0;
        let header = "00-11111111111111111111111111111111-2222222222222222-01";
        parts.extensions.insert(TraceParent::parse(header).unwrap());
        let mut ext = rmcp::model::Extensions::new();
        ext.insert(parts);
        assert_eq!(request_parent(Some(GOOD), &ext).unwrap().as_str(), GOOD);
        assert_eq!(
            request_parent(Some("garbage"), &ext).unwrap().as_str(),
            header
        );
        assert_eq!(request_parent(None, &rmcp::model::Extensions::new()), None);
    }
}
