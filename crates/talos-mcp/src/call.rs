//! The typed call pipeline: a tool reads typed arguments, runs with a per-call scope, and
//! returns `Result<Reply<Out>, ToolError>`; one adapter turns that into the MCP result and the
//! audit's outcome. Nothing about a call is recovered by parsing its result JSON.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use rmcp::ErrorData;
use rmcp::model::{
    CallToolResponse, CallToolResult, ContentBlock, InputRequiredResult, JsonObject, ProgressToken,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::confirm::Ask;
use crate::error::ToolError;
use crate::output::{self, Keep, PerNode};
use crate::safety::Tier;

/// The scope of one tool call, filled in as it runs and read by the audit afterwards.
#[derive(Debug)]
pub(crate) struct Call {
    /// The tool.
    pub(crate) tool: &'static str,
    /// The tier this call runs at.
    pub(crate) tier: Tier,
    /// How to reach the human (confirmation) and the client (progress).
    pub(crate) ask: Ask,
    /// The client's progress token, when it asked for progress.
    pub(crate) progress: Option<ProgressToken>,
    /// Set once the call has begun changing the cluster (see [`Call::commit`]).
    committed: Arc<AtomicBool>,
    /// How the call was confirmed (write and destructive calls).
    confirmation: OnceLock<Confirmation>,
    /// Steps reported so far (see [`Call::step`]).
    steps: std::sync::atomic::AtomicU32,
    /// The operation this call runs as (long-running tools).
    pub(crate) operation: Option<crate::operations::Operation>,
    /// The span of the current step: it lasts until the next step or the end of the call.
    step_span: std::sync::Mutex<Option<tracing::Span>>,
}

impl Call {
    pub(crate) fn new(
        tool: &'static str,
        tier: Tier,
        ask: Ask,
        progress: Option<ProgressToken>,
    ) -> Self {
        Self {
            tool,
            tier,
            ask,
            progress,
            committed: Arc::default(),
            confirmation: OnceLock::new(),
            steps: std::sync::atomic::AtomicU32::new(0),
            operation: None,
            step_span: std::sync::Mutex::new(None),
        }
    }

    /// The same call, running as `operation`: its steps are recorded there.
    pub(crate) fn with_operation(mut self, operation: crate::operations::Operation) -> Self {
        // One flag for both: a cancellation reads at once whether the change has begun.
        self.committed = operation.committed_flag();
        self.operation = Some(operation);
        self
    }

    /// Marks the call as having begun a change: from here on a cancellation by the client no
    /// longer stops it.
    pub(crate) fn commit(&self) {
        self.committed.store(true, Ordering::SeqCst);
    }

    /// Whether the call has begun changing the cluster.
    pub(crate) fn committed(&self) -> bool {
        self.committed.load(Ordering::SeqCst)
    }

    /// Records how the call was confirmed (the first record stands).
    pub(crate) fn confirmed(&self, how: Confirmation) {
        let _ = self.confirmation.set(how);
    }

    /// Reports one step of a long call ("node is down", "back on v1.12.0"): as a step of its
    /// operation, when it runs as one, and as a progress notification when the client asked for
    /// progress. Resolves once both are done, so every step reaches the client before the
    /// result does.
    pub(crate) async fn step(&self, message: impl Into<String>) {
        let message = message.into();
        let n = self.steps.fetch_add(1, Ordering::SeqCst) + 1;
        // A span per step, a child of the tool call's span. It carries the step's number, not its
        // message: messages name values the model chose (images, nodes).
        let span = tracing::info_span!(
            "operation.step",
            talos.step = n,
            operation.id = self.operation.as_ref().map(|op| op.id()),
            talos.committed = self.committed(),
        );
        // The previous step ends here.
        *self
            .step_span
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(span);
        if let Some(op) = &self.operation {
            op.step(&message, self.committed()).await;
        }
        if let (Some(token), Some(peer)) = (self.progress.clone(), &self.ask.peer) {
            let param = rmcp::model::ProgressNotificationParam::new(token, f64::from(n))
                .with_message(message);
            let _ = peer.notify_progress(param).await;
        }
    }

    /// How the call was confirmed, if it got that far.
    pub(crate) fn confirmation(&self) -> Option<Confirmation> {
        self.confirmation.get().copied()
    }
}

/// How a write or destructive call was confirmed, or why it was not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmation {
    /// A dry run or other call that changes nothing.
    NotRequiredReads,
    /// A write-tier call while `--confirm-writes` is off.
    NotRequiredWrite,
    /// The operator disabled confirmation (`--confirm=none`).
    Disabled,
    /// A plan and a token were returned; nothing was done.
    TokenIssued,
    /// The call carried a valid token.
    TokenRedeemed,
    /// The call carried a token that was refused.
    TokenRefused,
    /// The human is being asked through a multi-round-trip input request.
    Asked,
    /// The human accepted the form.
    Accepted,
    /// The human answered the form without ticking confirm.
    NotTicked,
    /// The human declined.
    Declined,
    /// The human cancelled.
    Cancelled,
    /// The form could not be asked.
    Failed,
    /// A round trip's state expired before the answer came.
    Expired,
    /// A round trip's state was used before.
    Replayed,
    /// The A2A caller answered the task's confirmation with `{"confirm": true}`.
    A2aConfirmed,
    /// The A2A caller answered `{"confirm": false}`.
    A2aDeclined,
}

impl Confirmation {
    /// The words the audit log and the results use.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::NotRequiredReads => "not required (changes nothing)",
            Self::NotRequiredWrite => "not required (write tier)",
            Self::Disabled => "none (confirmation disabled by the operator)",
            Self::TokenIssued => "token: issued",
            Self::TokenRedeemed => "token: redeemed",
            Self::TokenRefused => "token: refused",
            Self::Asked => "elicitation: asked (multi-round-trip)",
            Self::Accepted => "elicitation: accepted",
            Self::NotTicked => "elicitation: not confirmed",
            Self::Declined => "elicitation: declined",
            Self::Cancelled => "elicitation: cancelled",
            Self::Failed => "elicitation: failed",
            Self::Expired => "elicitation: expired",
            Self::Replayed => "elicitation: replayed",
            Self::A2aConfirmed => "a2a: confirmed",
            Self::A2aDeclined => "a2a: declined",
        }
    }
}

/// The erased output type of a [`Reply`] once its schema is no longer needed.
#[derive(Debug)]
pub(crate) enum Erased {}

/// What a tool answers when it does not fail: a result whose structured content has type `O`
/// (the type the output schema is derived from), a plan awaiting confirmation, or a request
/// for the human's input.
#[derive(Debug)]
pub(crate) struct Reply<O = Erased> {
    body: Body,
    _out: PhantomData<fn() -> O>,
}

#[derive(Debug)]
enum Body {
    /// A finished call.
    Done {
        value: serde_json::Value,
        text: String,
        /// How to cut the value to the output cap (`None`: small by construction).
        cut: Option<(Keep, &'static str)>,
        /// Some nodes failed.
        partial: bool,
    },
    /// Nothing was done: the plan and a token to confirm it.
    Plan {
        value: serde_json::Value,
        text: String,
    },
    /// Ask the human; the client repeats the call with the answer.
    Input(Box<InputRequiredResult>),
}

impl<O: Serialize> Reply<O> {
    /// A finished call's value and summary, cut to the output cap when too large by shortening
    /// lists from `keep`'s end; `narrow` tells the model how to ask for less.
    pub(crate) fn new(value: &O, text: String, keep: Keep, narrow: &'static str) -> Self {
        Self::done(value, text, Some((keep, narrow)), false)
    }

    /// A finished call's small value and summary.
    pub(crate) fn small(value: &O, text: String) -> Self {
        Self::done(value, text, None, false)
    }

    /// A small value and summary of a call that did part of its work and then stopped (the
    /// value says where and why); audited as partial.
    pub(crate) fn stopped(value: &O, text: String) -> Self {
        Self::done(value, text, None, true)
    }

    fn done(value: &O, text: String, cut: Option<(Keep, &'static str)>, partial: bool) -> Self {
        let mut value = serde_json::to_value(value).unwrap_or_default();
        drop_nulls(&mut value);
        Self {
            body: Body::Done {
                value,
                text,
                cut,
                partial,
            },
            _out: PhantomData,
        }
    }
}

impl<R: Serialize> Reply<PerNode<R>> {
    /// A per-node result: a line per node in text, everything in structured content; partial
    /// when some nodes failed.
    pub(crate) fn per_node(
        tool: &str,
        per_node: &PerNode<R>,
        line: impl Fn(&R) -> String,
        keep: Keep,
        narrow: &'static str,
    ) -> Self {
        let ok = per_node.nodes.iter().filter(|n| n.ok).count();
        let mut text = format!(
            "{tool}: {ok}/{} node(s) answered (context {})",
            per_node.nodes.len(),
            per_node.context
        );
        if !per_node.failed_nodes.is_empty() {
            text.push_str(&format!("; failed: {}", per_node.failed_nodes.join(", ")));
        }
        for n in &per_node.nodes {
            let who = match &n.hostname {
                Some(h) => format!("{} ({h})", n.node),
                None => n.node.clone(),
            };
            let body = match (&n.result, &n.error) {
                (Some(r), _) => line(r),
                (None, Some(e)) => format!("ERROR {}", e.message),
                (None, None) => String::new(),
            };
            text.push_str(&format!("\n- {who}: {body}"));
        }
        Self::done(
            per_node,
            text,
            Some((keep, narrow)),
            !per_node.failed_nodes.is_empty(),
        )
    }
}

impl<O> Reply<O> {
    /// A plan awaiting confirmation; `value` has the tool's output shape.
    pub(crate) fn plan(mut value: serde_json::Value, text: String) -> Self {
        drop_nulls(&mut value);
        Self {
            body: Body::Plan { value, text },
            _out: PhantomData,
        }
    }

    /// A request for the human's input (multi-round-trip confirmation).
    pub(crate) fn input(request: InputRequiredResult) -> Self {
        Self {
            body: Body::Input(Box::new(request)),
            _out: PhantomData,
        }
    }

    /// The same reply with its output type forgotten.
    pub(crate) fn erase(self) -> Reply {
        Reply {
            body: self.body,
            _out: PhantomData,
        }
    }
}

/// How a call ended, for the audit log and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Every node answered.
    Ok,
    /// Some nodes failed.
    Partial,
    /// A plan awaits confirmation (token or form).
    ConfirmationRequired,
    /// The call failed with this error kind.
    Failed(crate::error::ErrorKind),
    /// The tool panicked.
    Panic,
    /// The client cancelled it before it changed anything.
    Cancelled,
    /// Refused before it ran (its tier is disabled).
    Refused,
    /// A protocol error answered it.
    Protocol(i32),
}

impl Outcome {
    /// The outcome as the audit log and the metrics name it.
    pub(crate) fn label(&self) -> String {
        match self {
            Self::Ok => "ok".into(),
            Self::Partial => "partial".into(),
            Self::ConfirmationRequired => "confirmation_required".into(),
            Self::Failed(kind) => kind.to_string(),
            Self::Panic => "panic".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Refused => "refused".into(),
            Self::Protocol(code) => format!("protocol error {code}"),
        }
    }
}

/// Turns a tool's answer into the MCP response, and says how the call ended.
pub(crate) fn respond(
    result: Result<Reply, ToolError>,
    call: Option<&Call>,
    cap: usize,
) -> (Result<CallToolResponse, ErrorData>, Outcome) {
    let reply = match result {
        Ok(reply) => reply,
        Err(ToolError::RequestState(why)) => {
            return (
                Err(ErrorData::invalid_params(why, None)),
                Outcome::Protocol(rmcp::model::ErrorCode::INVALID_PARAMS.0),
            );
        }
        Err(e) => {
            let mut result = output::failure(&e);
            if let Some(how) = call.and_then(Call::confirmation) {
                output::annotate_error(&mut result, "confirmation", how.as_str().into());
            }
            return (Ok(result.into()), Outcome::Failed(e.kind()));
        }
    };
    match reply.body {
        Body::Done {
            value,
            text,
            cut,
            partial,
        } => {
            let text = clip_text(text);
            let result = match cut {
                Some((keep, narrow)) => output::finish(&value, text, cap, keep, narrow),
                None => {
                    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                    r.structured_content = Some(value);
                    r
                }
            };
            let outcome = if partial {
                Outcome::Partial
            } else {
                Outcome::Ok
            };
            (Ok(result.into()), outcome)
        }
        Body::Plan { value, text } => {
            let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
            r.structured_content = Some(value);
            (Ok(r.into()), Outcome::ConfirmationRequired)
        }
        Body::Input(request) => (
            Ok(CallToolResponse::InputRequired(*request)),
            Outcome::ConfirmationRequired,
        ),
    }
}

/// Removes every object member whose value is `null`: a result says "none" by leaving a field
/// out, which keeps the output schemas free of `null` branches.
pub(crate) fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Keeps the human text short; the structured content carries the details.
fn clip_text(mut text: String) -> String {
    const MAX: usize = 8 * 1024;
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("\n… (more in the structured content)");
    }
    text
}

/// Reads a call's arguments. A value that does not fit (a wrong type, a choice outside an
/// enum, a missing required argument) is an `InvalidArgument` naming the argument and, for a
/// closed choice, the accepted values.
pub(crate) fn arguments<A: DeserializeOwned>(args: JsonObject) -> Result<A, ToolError> {
    let value = serde_json::Value::Object(args);
    serde_path_to_error::deserialize::<_, A>(value).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            "arguments".to_owned()
        } else {
            path
        };
        ToolError::InvalidArgument {
            field: crate::error::echo(&field).into(),
            message: bounded_serde_message(&e.into_inner().to_string()),
        }
    })
}

/// serde's message with the value it quotes (between backticks or double quotes) clipped like
/// every echo of model input, so the accepted values after it (", expected one of `a`, `b`")
/// always fit in the error message.
fn bounded_serde_message(message: &str) -> String {
    let (head, tail) = match message.rfind(", expected ") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    let quoted = ['`', '"'].into_iter().find_map(|q| {
        let (a, b) = (head.find(q)?, head.rfind(q)?);
        (b > a).then(|| {
            format!(
                "{}{q}{}{q}{}",
                &head[..a],
                crate::error::echo(&head[a + 1..b]),
                &head[b + 1..]
            )
        })
    });
    let head = quoted.unwrap_or_else(|| crate::error::echo(head));
    format!(
        "{head}{}",
        crate::error::clip(tail, crate::error::MAX_MESSAGE)
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Args {
        #[serde(default)]
        sort: Option<Sort>,
        #[serde(default)]
        limit: Option<u32>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Sort {
        Cpu,
        Memory,
    }

    fn args(v: serde_json::Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    /// A huge value outside an enum is clipped, and the accepted values are still named.
    #[test]
    fn bad_values_are_clipped_and_the_accepted_values_named() {
        let huge = "x".repeat(5_000);
        let err = arguments::<Args>(args(serde_json::json!({ "sort": huge }))).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("InvalidArgument: `sort`"), "{text}");
        assert!(text.ends_with(", expected `cpu` or `memory`"), "{text}");
        assert!(text.len() < 600, "{} bytes", text.len());
        let err = arguments::<Args>(args(serde_json::json!({ "limit": "many" }))).unwrap_err();
        assert!(err.to_string().contains("`limit`"), "{err}");
    }
}
