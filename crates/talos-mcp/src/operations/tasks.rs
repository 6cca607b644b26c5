//! Operations as MCP tasks (the `io.modelcontextprotocol/tasks` extension): the task a record
//! is, and the protocol error a refused `tasks/*` request gets.

use rmcp::ErrorData;
use rmcp::model::{DetailedTask, InputRequests, Task, TaskPayload, TaskStatus};

use super::{OperationRecord, OperationSettings, OperationState};
use crate::error::ToolError;

/// The task a record is, without its payload. `ttlMs` counts from creation: the time it ran
/// (so far) plus the time a finished operation is kept, a lower bound on how long it stays.
pub(crate) fn task(record: &OperationRecord, settings: &OperationSettings) -> Task {
    let status = match record.state {
        OperationState::Working => TaskStatus::Working,
        OperationState::InputRequired => TaskStatus::InputRequired,
        OperationState::Completed => TaskStatus::Completed,
        OperationState::Failed => TaskStatus::Failed,
        OperationState::Cancelled => TaskStatus::Cancelled,
    };
    let end = record
        .finished_ms
        .unwrap_or_else(|| super::unix_ms(std::time::SystemTime::now()));
    let ran = end.saturating_sub(record.created_ms);
    let kept = u64::try_from(settings.ttl.as_millis()).unwrap_or(u64::MAX);
    let poll = u64::try_from(settings.poll_interval.as_millis()).unwrap_or(u64::MAX);
    let mut task = Task::new(
        record.id.clone(),
        status,
        record.created_at.clone(),
        record.updated_at.clone(),
    )
    .with_ttl_ms(ran.saturating_add(kept))
    .with_poll_interval_ms(poll);
    task.status_message = record.status_message.clone();
    task
}

/// The task a record is, with its state's payload (`tasks/get`).
pub(crate) fn detailed(record: &OperationRecord, settings: &OperationSettings) -> DetailedTask {
    let object = |v: &Option<serde_json::Value>| match v {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let payload = match record.state {
        OperationState::Working => TaskPayload::Working,
        OperationState::InputRequired => TaskPayload::InputRequired {
            input_requests: record
                .input_requests
                .clone()
                .and_then(|v| serde_json::from_value::<InputRequests>(v).ok())
                .unwrap_or_default(),
        },
        OperationState::Completed => TaskPayload::Completed {
            result: object(&record.result),
        },
        OperationState::Failed => TaskPayload::Failed {
            error: object(&record.error),
        },
        OperationState::Cancelled => TaskPayload::Cancelled,
    };
    DetailedTask::new(task(record, settings), payload)
}

/// A refused `tasks/*` request: invalid params, with the engine's words.
pub(crate) fn protocol_error(e: ToolError) -> ErrorData {
    ErrorData::invalid_params(e.to_string(), None)
}
