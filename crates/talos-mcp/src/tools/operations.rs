//! `talos_operations`: the caller's long-running operations (reboots followed to their end,
//! upgrades): what they did, step by step, and how they ended. Listed only when some
//! long-running tool is enabled.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::call::{Call, Reply};
use crate::error::ToolError;
use crate::operations::{OperationRecord, OperationState, Step};
use crate::output::Keep;
use crate::registry::{CallTarget, ToolArgs, ToolDef, Toolset, tool};
use crate::server::TalosMcp;

/// Most operations one call lists.
const MAX_LIST: u32 = 100;
/// Operations listed when `limit` is not given.
const DEFAULT_LIST: u32 = 20;
/// Longest `id` accepted (ids are 32 hex digits).
const MAX_ID: usize = 64;

/// Arguments of `talos_operations`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OperationsArgs {
    /// Show this operation in full (steps, result); omit to list yours, newest first.
    #[serde(default)]
    pub id: Option<String>,
    /// Only operations on this context.
    #[serde(default)]
    pub context: Option<String>,
    /// Most operations listed (default 20, at most 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

impl ToolArgs for OperationsArgs {
    fn target(&self) -> CallTarget<'_> {
        CallTarget {
            context: self.context.as_deref(),
            nodes: Vec::new(),
        }
    }
}

/// Operations, newest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OperationsOut {
    /// The operations (one, in full, when `id` was given).
    pub operations: Vec<OperationView>,
}

/// One operation.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OperationView {
    /// Its id (the MCP task id when it ran as a task).
    pub id: String,
    /// The tool.
    pub tool: String,
    /// working, input_required, completed, failed or cancelled.
    pub state: OperationState,
    /// What is happening (its latest step) or how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The context named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// The nodes named.
    pub nodes: Vec<String>,
    /// When it started, last changed and ended (RFC 3339).
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// When it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// It had begun changing the cluster.
    pub committed: bool,
    /// A cancellation was asked for.
    pub cancel_requested: bool,
    /// Steps so far (with `id`; the oldest may be dropped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<Step>>,
    /// Steps dropped from the front.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps_dropped: Option<u64>,
    /// The tool's result (with `id`, when completed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The protocol error (with `id`, when failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

impl OperationView {
    fn of(r: OperationRecord, full: bool) -> Self {
        Self {
            id: r.id,
            tool: r.tool,
            state: r.state,
            status: r.status_message,
            context: r.context,
            nodes: r.nodes,
            created_at: r.created_at,
            updated_at: r.updated_at,
            finished_at: r.finished_at,
            committed: r.committed,
            cancel_requested: r.cancel_requested,
            steps_dropped: (full && r.steps_dropped > 0).then_some(r.steps_dropped),
            steps: full.then_some(r.steps),
            result: if full { r.result } else { None },
            error: if full { r.error } else { None },
        }
    }

    fn line(&self) -> String {
        format!(
            "{} {} {} ({}){}",
            self.id,
            self.tool,
            self.state.as_str(),
            self.created_at,
            self.status
                .as_deref()
                .map(|s| format!(": {s}"))
                .unwrap_or_default()
        )
    }
}

pub(crate) fn tools() -> Vec<ToolDef> {
    vec![
        tool(
            Toolset::Lifecycle,
            "talos_operations",
            "Operations",
            "Lists your long-running operations (reboots with wait, upgrades), or shows one by id with its steps and result.",
        )
        .run(TalosMcp::talos_operations)
        .build(),
    ]
}

impl TalosMcp {
    /// The caller's operations, or one of them.
    pub(crate) async fn talos_operations(
        &self,
        call: &Call,
        args: OperationsArgs,
    ) -> Result<Reply<OperationsOut>, ToolError> {
        let caller = call.ask.caller.as_deref();
        if let Some(id) = &args.id {
            if id.len() > MAX_ID {
                return Err(ToolError::InvalidArgument {
                    field: "id".into(),
                    message: format!(
                        "is longer than {MAX_ID} characters; operation ids are 32 hex digits"
                    ),
                });
            }
            let view = OperationView::of(self.operations.get(id, caller).await?, true);
            let text = view.line();
            let out = OperationsOut {
                operations: vec![view],
            };
            return Ok(Reply::new(
                &out,
                text,
                Keep::Last,
                "the result is shown in part; the tool's own answer had it whole",
            ));
        }
        let limit = args.limit.unwrap_or(DEFAULT_LIST).clamp(1, MAX_LIST) as usize;
        // The context filter applies after the per-caller limit would cut: ask the store for
        // the most, then filter and cut.
        let mut records = self
            .operations
            .list(
                caller,
                if args.context.is_some() {
                    MAX_LIST as usize
                } else {
                    limit
                },
            )
            .await?;
        if let Some(ctx) = &args.context {
            records.retain(|r| r.context.as_deref() == Some(ctx.as_str()));
        }
        records.truncate(limit);
        let views: Vec<OperationView> = records
            .into_iter()
            .map(|r| OperationView::of(r, false))
            .collect();
        let mut text = format!("{} operation(s), newest first", views.len());
        for v in &views {
            text.push_str("\n- ");
            text.push_str(&v.line());
        }
        Ok(Reply::new(
            &OperationsOut { operations: views },
            text,
            Keep::First,
            "ask for fewer with limit, or one with id",
        ))
    }
}
