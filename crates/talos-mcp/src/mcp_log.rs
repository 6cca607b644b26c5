//! MCP logging: the server's own warnings and errors, forwarded to clients that asked for them.
//!
//! A client on a session-based protocol revision (up to 2025-11-25) opts in with
//! `logging/setLevel`; from then on, WARN and ERROR events of the `talos_mcp*` crates at or above
//! the chosen level go to it as `notifications/message`. Before `setLevel` nothing is sent.
//! Protocol 2026-07-28 has no sessions and no `setLevel`: a log level rides on each request and
//! log messages may only answer that request, so this server sends its server-wide messages to
//! no client of that revision (`setLevel` there is an unknown method).
//!
//! What is sent: the event's message and a short whitelist of fields ([`SAFE_FIELDS`]), each
//! clipped. Never other fields (which can carry a node, an error text quoting input, or a tool
//! argument). Each session has a bounded queue; when it is full the message is dropped and
//! counted ([`LogHub::dropped`]), so a flood of warnings never blocks a tool call or grows memory.
#![allow(deprecated)] // MCP logging is deprecated by SEP-2577, but older revisions still have it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::{
    ErrorData, InitializeRequestParams, LoggingLevel, LoggingMessageNotificationParam,
    ProtocolVersion, SetLevelRequestParams,
};
use rmcp::service::{Peer, RequestContext, RoleServer};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Messages waiting for one client; more are dropped and counted.
pub const QUEUE_CAPACITY: usize = 64;
/// Longest message text sent, in bytes (longer is clipped).
pub const MAX_MESSAGE: usize = 512;
/// Longest field value sent, in bytes.
pub const MAX_FIELD: usize = 64;
/// Fields of an event that may go to a client, besides its message.
pub const SAFE_FIELDS: &[&str] = &["tool", "kind", "limit"];
/// The logger name clients see.
const LOGGER: &str = "talos-mcp";

fn severity(level: &LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

struct Sink {
    /// The session's handshake, which identifies it (same `Arc` for every request of it).
    session: Arc<InitializeRequestParams>,
    peer: Peer<RoleServer>,
    min: u8,
    tx: tokio::sync::mpsc::Sender<LoggingMessageNotificationParam>,
}

/// The clients that asked for log messages, with a bounded queue each.
#[derive(Default)]
pub struct LogHub {
    sinks: Mutex<Vec<Sink>>,
    /// Sinks registered (a fast path: events are ignored while nobody listens).
    listening: AtomicUsize,
    dropped: AtomicU64,
}

impl std::fmt::Debug for LogHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogHub")
            .field("listening", &self.listening())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LogHub {
    /// The process's hub: the layer installed by the binary publishes to it, `logging/setLevel`
    /// registers with it.
    pub fn global() -> Arc<LogHub> {
        static HUB: OnceLock<Arc<LogHub>> = OnceLock::new();
        HUB.get_or_init(Arc::default).clone()
    }

    /// Sessions currently receiving log messages.
    pub fn listening(&self) -> usize {
        self.listening.load(Ordering::Relaxed)
    }

    /// Messages dropped because a client's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sink>> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the level of the session `peer` belongs to, registering it on first use. A task per
    /// session drains its queue; it ends when the transport closes.
    pub fn set_level(self: &Arc<Self>, peer: &Peer<RoleServer>, level: &LoggingLevel) -> bool {
        let Some(session) = peer.peer_info() else {
            return false;
        };
        let mut sinks = self.lock();
        sinks.retain(|s| !s.peer.is_transport_closed());
        if let Some(sink) = sinks.iter_mut().find(|s| Arc::ptr_eq(&s.session, &session)) {
            sink.min = severity(level);
        } else {
            let (tx, mut rx) = tokio::sync::mpsc::channel(QUEUE_CAPACITY);
            let forward = peer.clone();
            let hub = Arc::downgrade(self);
            let key = session.clone();
            tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    if forward.notify_logging_message(message).await.is_err() {
                        break;
                    }
                }
                if let Some(hub) = hub.upgrade() {
                    hub.remove(&key);
                }
            });
            sinks.push(Sink {
                session,
                peer: peer.clone(),
                min: severity(level),
                tx,
            });
        }
        self.listening.store(sinks.len(), Ordering::Relaxed);
        true
    }

    fn remove(&self, session: &Arc<InitializeRequestParams>) {
        let mut sinks = self.lock();
        sinks.retain(|s| !Arc::ptr_eq(&s.session, session) && !s.peer.is_transport_closed());
        self.listening.store(sinks.len(), Ordering::Relaxed);
    }

    /// Queues a message for every session whose level admits it; never waits.
    pub fn publish(&self, level: LoggingLevel, data: Value) {
        if self.listening() == 0 {
            return;
        }
        let severity = severity(&level);
        let mut sinks = self.lock();
        sinks.retain(|s| !s.peer.is_transport_closed() && !s.tx.is_closed());
        for sink in sinks.iter().filter(|s| severity >= s.min) {
            let message =
                LoggingMessageNotificationParam::new(level, data.clone()).with_logger(LOGGER);
            if sink.tx.try_send(message).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.listening.store(sinks.len(), Ordering::Relaxed);
    }
}

/// `logging/setLevel`: registers the session with the global hub. On protocol 2026-07-28 or
/// later the method does not exist (the level is per request there).
pub(crate) fn set_level(
    request: &SetLevelRequestParams,
    context: &RequestContext<RoleServer>,
) -> Result<(), ErrorData> {
    let modern = context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
    if modern || !LogHub::global().set_level(&context.peer, &request.level) {
        return Err(ErrorData::new(
            rmcp::model::ErrorCode::METHOD_NOT_FOUND,
            "logging/setLevel is not part of protocol 2026-07-28; this server sends no \
             request-scoped log messages",
            None,
        ));
    }
    Ok(())
}

/// Clips `text` to at most `max` bytes on a character boundary.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[derive(Default)]
struct SafeVisitor {
    message: Option<String>,
    fields: Map<String, Value>,
}

impl SafeVisitor {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = Some(clip(&value, MAX_MESSAGE));
        } else if SAFE_FIELDS.contains(&field.name()) {
            self.fields.insert(
                field.name().to_owned(),
                Value::String(clip(&value, MAX_FIELD)),
            );
        }
    }
}

impl Visit for SafeVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // Only format what may be sent: other fields are never rendered at all.
        if field.name() == "message" || SAFE_FIELDS.contains(&field.name()) {
            self.record(field, format!("{value:?}"));
        }
    }
}

/// A tracing layer that forwards WARN and ERROR events of the `talos_mcp*` targets to the
/// clients registered with a [`LogHub`].
#[derive(Debug, Clone)]
pub struct McpLogLayer {
    hub: Arc<LogHub>,
}

impl McpLogLayer {
    /// A layer publishing to `hub` (the binary uses [`LogHub::global`]).
    pub fn new(hub: Arc<LogHub>) -> Self {
        Self { hub }
    }
}

/// Whether an event may be forwarded at all: WARN and ERROR of the `talos_mcp*` targets. Used as
/// the layer's own filter, so the layer never makes other callsites interesting.
pub fn forwarded(meta: &tracing::Metadata<'_>) -> bool {
    *meta.level() <= tracing::Level::WARN && meta.target().starts_with("talos_mcp")
}

impl McpLogLayer {
    /// The layer with its [`forwarded`] filter, ready to add to a registry next to others.
    pub fn filtered<S>(self) -> impl tracing_subscriber::Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        use tracing_subscriber::Layer as _;
        self.with_filter(tracing_subscriber::filter::filter_fn(forwarded))
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for McpLogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = match *meta.level() {
            tracing::Level::ERROR => LoggingLevel::Error,
            tracing::Level::WARN => LoggingLevel::Warning,
            _ => return,
        };
        if !forwarded(meta) || self.hub.listening() == 0 {
            return;
        }
        let mut visitor = SafeVisitor::default();
        event.record(&mut visitor);
        let mut data = visitor.fields;
        data.insert(
            "message".into(),
            Value::String(visitor.message.unwrap_or_default()),
        );
        self.hub.publish(level, Value::Object(data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("aé", 2), "a…");
        assert_eq!(
            clip(&"x".repeat(600), MAX_MESSAGE).len(),
            MAX_MESSAGE + '…'.len_utf8()
        );
    }

    #[test]
    fn severity_orders_levels() {
        assert!(severity(&LoggingLevel::Error) > severity(&LoggingLevel::Warning));
        assert!(severity(&LoggingLevel::Warning) > severity(&LoggingLevel::Info));
        assert!(severity(&LoggingLevel::Emergency) > severity(&LoggingLevel::Error));
    }
}
