//! Shaping tool results: per-node outcomes, a short human summary, structured content matching
//! the declared output schema, and a hard size cap.

use rmcp::model::{CallToolResult, ContentBlock};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use crate::error::ToolError;

/// Why a node's call failed. Its schema is just "an object": the server's instructions
/// describe the per-node envelope once, rather than every tool's schema repeating it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorInfo {
    /// Error kind: Connection, Authentication, PermissionDenied, Timeout, NotFound, Api, ….
    pub kind: String,
    /// What happened and what to do next.
    pub message: String,
}

impl JsonSchema for ErrorInfo {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ErrorInfo".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "object" })
    }
}

/// One node's outcome.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct NodeOutcome<T> {
    /// The node as addressed.
    pub node: String,
    /// Its hostname, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Whether the call succeeded on this node.
    pub ok: bool,
    /// The node's result (when ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<T>,
    /// The node's error (when not ok).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
}

/// The structured content of every multi-node tool.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct PerNode<T> {
    /// The talosconfig context used.
    pub context: String,
    /// One entry per targeted node, in the order asked.
    pub nodes: Vec<NodeOutcome<T>>,
    /// Nodes whose call failed (a partial failure is still a normal result).
    pub failed_nodes: Vec<String>,
    /// Whether lists were cut to fit the output cap.
    pub truncated: bool,
    /// How to narrow the query when truncated (sent then; the instructions describe it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(skip)]
    pub note: Option<String>,
}

impl<T> PerNode<T> {
    /// Builds from per-node results.
    pub(crate) fn new(context: &str, nodes: Vec<NodeOutcome<T>>) -> Self {
        let failed_nodes = nodes
            .iter()
            .filter(|n| !n.ok)
            .map(|n| n.node.clone())
            .collect();
        Self {
            context: context.to_owned(),
            nodes,
            failed_nodes,
            truncated: false,
            note: None,
        }
    }

    /// The same outcomes with each answering node's result mapped.
    pub(crate) fn map<U>(self, f: impl Fn(T) -> U) -> PerNode<U> {
        PerNode {
            context: self.context,
            nodes: self
                .nodes
                .into_iter()
                .map(|n| NodeOutcome {
                    node: n.node,
                    hostname: n.hostname,
                    ok: n.ok,
                    result: n.result.map(&f),
                    error: n.error,
                })
                .collect(),
            failed_nodes: self.failed_nodes,
            truncated: self.truncated,
            note: self.note,
        }
    }
}

impl<T, E> PerNode<Result<T, E>> {
    /// The first node result that is an `Err`: a verdict of this server that ends the whole call.
    pub(crate) fn first_err(&self) -> Option<&E> {
        self.nodes
            .iter()
            .find_map(|n| n.result.as_ref().and_then(|r| r.as_ref().err()))
    }
}

/// The smallest per-node byte budget [`node_share`] gives.
pub(crate) const MIN_NODE_SHARE: usize = 4 * 1024;

/// Each node's share of the output cap when `nodes` nodes answer one call: what a tool keeps
/// per node while gathering (at least [`MIN_NODE_SHARE`]), so a call holds about
/// `max(cap, nodes × MIN_NODE_SHARE)` bytes of results before the cap cuts them.
pub(crate) fn node_share(cap: usize, nodes: usize) -> usize {
    (cap / nodes.max(1)).max(MIN_NODE_SHARE)
}

/// Which end of a list to keep when cutting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Keep the first items (listings).
    First,
    /// Keep the last items (logs: newest lines).
    Last,
}

/// Turns a structured value into a tool result: `summary` as text, the value as structured
/// content, cut to `cap` bytes of JSON by shortening its longest lists.
pub(crate) fn finish<T: Serialize>(
    value: &T,
    summary: String,
    cap: usize,
    keep: Keep,
    narrow_hint: &str,
) -> CallToolResult {
    let mut json = serde_json::to_value(value).unwrap_or(Value::Null);
    let truncated = cap_value(&mut json, cap, keep);
    let mut text = summary;
    if truncated {
        if let Value::Object(map) = &mut json {
            map.insert("truncated".into(), Value::Bool(true));
            map.insert(
                "note".into(),
                Value::String(format!("Output was cut to fit {cap} bytes. {narrow_hint}")),
            );
        }
        text.push_str(&format!(
            "\n(truncated to fit the {cap}-byte output cap; {narrow_hint})"
        ));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(json);
    result
}

/// The `_meta` key of an error result's machine-readable details (`kind`, `message`, and for
/// a refused change `confirmation`).
pub const ERROR_META: &str = "talos-mcp/error";

/// A tool-level failure as an `isError` result: the kind leads the text, and `_meta` repeats it
/// for programs. There is no structured content: it would have to match the tool's output
/// schema, which describes a success (clients such as the Inspector validate error results too).
pub(crate) fn failure(err: &ToolError) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(err.to_string())]);
    let mut meta = rmcp::model::MetaObject::new();
    meta.insert(
        ERROR_META.into(),
        serde_json::json!({ "kind": err.kind().to_string(), "message": err.to_string() }),
    );
    result.meta = Some(meta);
    result
}

/// Adds a note to the error details of a [`failure`] result.
pub(crate) fn annotate_error(result: &mut CallToolResult, key: &str, value: Value) {
    if let Some(Value::Object(details)) = result.meta.as_mut().and_then(|m| m.get_mut(ERROR_META)) {
        details.insert(key.into(), value);
    }
}

/// Cuts the longest arrays in `value` until its JSON fits in `cap` bytes. Returns whether it cut.
pub(crate) fn cap_value(value: &mut Value, cap: usize, keep: Keep) -> bool {
    let mut cut = false;
    // Each round removes a share of the longest array; bounded so it always terminates.
    for _ in 0..10_000 {
        let size = serde_json::to_string(value).map_or(0, |s| s.len());
        if size <= cap {
            return cut;
        }
        let Some(longest) = longest_array(value) else {
            break;
        };
        let len = longest.len();
        if len == 0 {
            break;
        }
        // Remove proportionally to the overshoot (at least one item).
        let excess_share = (size - cap) as f64 / size as f64;
        let remove = ((len as f64 * excess_share).ceil() as usize).clamp(1, len);
        match keep {
            Keep::First => longest.truncate(len - remove),
            Keep::Last => {
                longest.drain(..remove);
            }
        }
        cut = true;
    }
    // Still too large without lists to cut (one huge string): shorten strings.
    if serde_json::to_string(value).map_or(0, |s| s.len()) > cap {
        shorten_strings(value, cap / 2);
        cut = true;
    }
    cut
}

/// A step from a JSON value into one of its children.
#[derive(Debug, Clone)]
enum Step {
    Key(String),
    Index(usize),
}

/// The longest (by JSON size) array with more than one item, as a path from the root.
fn longest_array(value: &mut Value) -> Option<&mut Vec<Value>> {
    fn visit(v: &Value, path: &mut Vec<Step>, best: &mut Option<(usize, Vec<Step>)>) {
        match v {
            Value::Array(items) => {
                let weight = serde_json::to_string(items).map_or(0, |s| s.len());
                if items.len() > 1 && best.as_ref().is_none_or(|(w, _)| weight > *w) {
                    *best = Some((weight, path.clone()));
                }
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    visit(item, path, best);
                    path.pop();
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    path.push(Step::Key(k.clone()));
                    visit(item, path, best);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    visit(value, &mut Vec::new(), &mut best);
    let (_, path) = best?;
    let mut current = value;
    for step in &path {
        current = match step {
            Step::Key(k) => current.get_mut(k.as_str())?,
            Step::Index(i) => current.get_mut(*i)?,
        };
    }
    current.as_array_mut()
}

fn shorten_strings(value: &mut Value, max: usize) {
    match value {
        Value::String(s) if s.len() > max => {
            let mut end = max;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            s.push_str(" …[cut]");
        }
        Value::Array(items) => items.iter_mut().for_each(|i| shorten_strings(i, max)),
        Value::Object(map) => map.values_mut().for_each(|i| shorten_strings(i, max)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cuts_the_longest_list_and_keeps_the_chosen_end() {
        let mut v = json!({"a": [1, 2], "lines": (0..1000).map(|i| format!("line {i}")).collect::<Vec<_>>()});
        assert!(cap_value(&mut v, 2000, Keep::Last));
        assert!(serde_json::to_string(&v).unwrap().len() <= 2000);
        let lines = v["lines"].as_array().unwrap();
        assert_eq!(lines.last().unwrap(), "line 999", "newest kept");
        assert_eq!(v["a"], json!([1, 2]));

        let mut v = json!({"items": (0..1000).collect::<Vec<_>>()});
        assert!(cap_value(&mut v, 500, Keep::First));
        assert_eq!(v["items"][0], 0);
    }

    #[test]
    fn small_values_are_untouched() {
        let mut v = json!({"x": [1, 2, 3]});
        assert!(!cap_value(&mut v, 1000, Keep::First));
        assert_eq!(v, json!({"x": [1, 2, 3]}));
    }

    #[test]
    fn a_single_huge_string_is_shortened() {
        let mut v = json!({"content": "x".repeat(10_000)});
        assert!(cap_value(&mut v, 1000, Keep::First));
        assert!(serde_json::to_string(&v).unwrap().len() <= 1000);
    }

    #[test]
    fn finish_marks_truncation_in_text_and_structure() {
        let value = json!({"nodes": (0..500).map(|i| json!({"n": i})).collect::<Vec<_>>(), "truncated": false});
        let r = finish(&value, "summary".into(), 1000, Keep::First, "use `limit`");
        let s = r.structured_content.unwrap();
        assert_eq!(s["truncated"], true);
        assert!(s["note"].as_str().unwrap().contains("use `limit`"));
        assert!(r.content[0].as_text().unwrap().text.contains("truncated"));
    }
}
