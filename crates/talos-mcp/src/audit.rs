//! The audit log: one JSON line per tool call, appended and flushed before the call returns.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// The authenticated caller of an HTTP request (the bearer token's name). Transports put it into
/// the request's extensions; audit lines record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub String);

/// The authenticated caller of a request, from the HTTP request the transport put into its
/// extensions (none on stdio).
pub(crate) fn caller(extensions: &rmcp::model::Extensions) -> Option<String> {
    extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Caller>())
        .map(|c| c.0.clone())
}

/// The transport session of a request (the HTTP `Mcp-Session-Id` header), if any.
pub(crate) fn session(extensions: &rmcp::model::Extensions) -> Option<String> {
    extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.headers.get("mcp-session-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Where audit lines go.
#[derive(Debug)]
pub enum AuditSink {
    /// Append to a file (created 0600).
    File(Mutex<File>, PathBuf),
    /// Write to stderr.
    Stderr,
    /// Keep in memory (tests).
    Memory(Mutex<Vec<String>>),
    /// Audit disabled by the operator.
    Off,
}

impl AuditSink {
    /// Opens (creating 0600, parents 0700) a file for appending.
    pub fn file(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::files::private_dir(dir)?;
        }
        Ok(Self::File(
            Mutex::new(open_append(path)?),
            path.to_path_buf(),
        ))
    }

    /// An in-memory sink (tests read it with [`AuditSink::lines`]).
    pub fn memory() -> Self {
        Self::Memory(Mutex::new(Vec::new()))
    }

    /// Lines written to a memory sink.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Memory(m) => m
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
            _ => Vec::new(),
        }
    }

    /// Appends one record and flushes it.
    pub(crate) fn write(&self, record: &AuditRecord<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_string(record).map_err(std::io::Error::other)?;
        match self {
            Self::File(file, path) => {
                let mut f = file
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // A file renamed or removed under us (log rotation, an operator's mistake) would
                // swallow lines unseen: write to the path again, or fail (and refuse changes)
                // when it cannot be opened.
                if !still_at(&f, path) {
                    *f = open_append(path)?;
                }
                // One write of the whole line, newline included: a reader never sees a record
                // without its end, and appends from elsewhere cannot land inside it.
                line.push('\n');
                f.write_all(line.as_bytes())?;
                f.flush()?;
                // The lines of a change are on disk before it is sent (and its end before it is
                // answered). A read's line is handed to the OS, not synced: a sync per read held
                // this lock, and a runtime thread, for a disk round trip on every call, which
                // serialised concurrent reads (docs/benchmarks.md).
                if record.tier == crate::safety::Tier::Read.as_str() {
                    Ok(())
                } else {
                    f.sync_data()
                }
            }
            Self::Stderr => {
                let mut err = std::io::stderr().lock();
                line.push('\n');
                err.write_all(line.as_bytes())?;
                err.flush()
            }
            Self::Memory(m) => {
                m.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
                Ok(())
            }
            Self::Off => Ok(()),
        }
    }
}

/// Opens `path` for appending (created 0600). A newly created file's directory entry is synced
/// too, so the file itself survives a crash.
fn open_append(path: &Path) -> std::io::Result<File> {
    let existed = path.exists();
    let mut options = OpenOptions::new();
    options.append(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(path)?;
    if !existed {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Best effort: some file systems cannot sync a directory.
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(file)
}

/// Whether `path` still names the open `file`.
fn still_at(file: &File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = file;
        path.exists()
    }
}

/// One audit line.
#[derive(Debug, Serialize)]
pub(crate) struct AuditRecord<'a> {
    /// RFC 3339 time.
    pub(crate) timestamp: String,
    /// `started` (written before a write/destructive call runs) or `finished`.
    pub(crate) phase: &'a str,
    pub(crate) request_id: String,
    pub(crate) transport: &'a str,
    /// The replica that served the call (`--replica`: the pod name in Kubernetes).
    pub(crate) replica: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) caller: Option<&'a str>,
    /// The W3C trace id of the call (from the client's trace context, or the server's own
    /// trace when it exports traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) trace_id: Option<&'a str>,
    pub(crate) tool: &'a str,
    pub(crate) tier: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) context: Option<String>,
    pub(crate) nodes: Vec<String>,
    /// Arguments with secrets (configs, tokens) redacted.
    pub(crate) arguments: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) confirmation: Option<String>,
    /// `ok`, `partial`, `refused`, or the error kind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration_ms: Option<u128>,
}

pub(crate) fn now() -> String {
    crate::tools::rfc3339(SystemTime::now())
}

/// Argument names whose values are never written to the audit log.
const SECRET_ARGS: &[&str] = &["config", "confirmation_token"];

/// The most list items (or object fields) of a model-set value an audit line keeps.
const MAX_AUDIT_ITEMS: usize = 64;
/// The most characters of one model-set string an audit line keeps.
const MAX_AUDIT_STRING: usize = 256;
/// The deepest nesting of a model-set value an audit line keeps.
const MAX_AUDIT_DEPTH: usize = 8;

/// The call's arguments with secret values replaced, bounded like every model-set value.
pub(crate) fn redact_arguments(
    args: Option<&serde_json::Map<String, serde_json::Value>>,
) -> serde_json::Value {
    let mut map = args.cloned().unwrap_or_default();
    for key in SECRET_ARGS {
        if let Some(v) = map.get_mut(*key) {
            *v = serde_json::Value::String(crate::redact::REDACTED.into());
        }
    }
    bounded(serde_json::Value::Object(map), 0)
}

/// A model-set string as an audit line keeps it (clipped, with its original size).
pub(crate) fn bounded_str(text: &str) -> String {
    crate::error::clip(text, MAX_AUDIT_STRING)
}

/// A model-set list of strings as an audit line keeps it: at most [`MAX_AUDIT_ITEMS`] items, each
/// clipped, and a last item saying how many were left out.
pub(crate) fn bounded_list(items: impl ExactSizeIterator<Item = String>) -> Vec<String> {
    let total = items.len();
    let mut out: Vec<String> = items
        .take(MAX_AUDIT_ITEMS)
        .map(|i| bounded_str(&i))
        .collect();
    if total > MAX_AUDIT_ITEMS {
        out.push(format!("… and {} more", total - MAX_AUDIT_ITEMS));
    }
    out
}

/// `value` cut down so that one audit line stays small whatever a client sends: strings clipped,
/// lists and objects cut to their first items (with a note of how many were left out), nesting cut.
fn bounded(value: serde_json::Value, depth: usize) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(bounded_str(&s)),
        Value::Array(_) | Value::Object(_) if depth >= MAX_AUDIT_DEPTH => {
            Value::String("[nested too deep]".into())
        }
        Value::Array(items) => {
            let total = items.len();
            let mut out: Vec<Value> = items
                .into_iter()
                .take(MAX_AUDIT_ITEMS)
                .map(|v| bounded(v, depth + 1))
                .collect();
            if total > MAX_AUDIT_ITEMS {
                out.push(Value::String(format!(
                    "… and {} more",
                    total - MAX_AUDIT_ITEMS
                )));
            }
            Value::Array(out)
        }
        Value::Object(map) => {
            let total = map.len();
            let mut out: serde_json::Map<String, Value> = map
                .into_iter()
                .take(MAX_AUDIT_ITEMS)
                .map(|(k, v)| (bounded_str(&k), bounded(v, depth + 1)))
                .collect();
            if total > MAX_AUDIT_ITEMS {
                out.insert(
                    "…".into(),
                    Value::String(format!("{} more fields", total - MAX_AUDIT_ITEMS)),
                );
            }
            Value::Object(out)
        }
        other => other,
    }
}
