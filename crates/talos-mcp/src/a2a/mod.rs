//! The Agent2Agent protocol, version 1.0, JSON-RPC binding: the agent card and a dispatcher
//! that turns A2A requests into tool calls on the operations engine, independent of the HTTP
//! server that carries them (the binary mounts it at `/a2a`).
//!
//! A message with a data part `{"tool": <name>, "arguments": {...}}` runs that tool as an
//! operation, which is the A2A task (same id). The tool goes through the same registry,
//! tiers, node allowlist, confirmation and audit as an MCP call; the audit names the transport
//! `a2a` and the bearer token's name as the caller. Tasks are bound to their caller like
//! operations: another caller's task id is not found.
//!
//! A change that needs confirmation stops in `TASK_STATE_INPUT_REQUIRED` before anything
//! reaches a node, with the plan as text and data; the caller answers on the same task with
//! `{"confirm": true|false}`. The operation holds the exact arguments meanwhile, so the answer
//! can only run what was planned, once.

mod card;
pub mod types;

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::mpsc;

pub use card::{CardSettings, agent_card};
use types::{
    Artifact, ListTasksRequest, ListTasksResponse, Message, Part, Role, SendMessageRequest,
    StreamResponse, Task, TaskArtifactUpdateEvent, TaskIdRequest, TaskState, TaskStatus,
    TaskStatusUpdateEvent, code,
};

use crate::operations::{OperationRecord, OperationState, Operations};
use crate::server::TalosMcp;

/// The longest JSON-RPC id (string) accepted; it is echoed in every answer.
const MAX_ID: usize = 128;
/// The longest client-set name (method, tool) quoted back.
const MAX_ECHO: usize = 64;
/// Events buffered for a slow stream reader before the producer waits.
const STREAM_BUFFER: usize = 32;
/// The most tasks one ListTasks answers with.
const MAX_PAGE: usize = 100;
/// How long CancelTask waits for a task that stops to record its end.
const CANCEL_SETTLE: std::time::Duration = std::time::Duration::from_secs(5);

/// What a request is answered with.
#[derive(Debug)]
pub enum Answer {
    /// One JSON-RPC response (`application/json`).
    Json(Value),
    /// JSON-RPC responses, one per event (`text/event-stream`); the stream ends with the task's
    /// end or when it stops for input.
    Stream(mpsc::Receiver<Value>),
}

/// The events of a streamed answer as server-sent events: one `data:` line (a JSON-RPC
/// response) per event.
pub fn sse(
    mut events: mpsc::Receiver<Value>,
) -> impl futures_util::Stream<Item = Result<String, std::convert::Infallible>> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| {
        events
            .poll_recv(cx)
            .map(|event| event.map(|v| Ok(format!("data: {v}\n\n"))))
    })
}

/// A JSON-RPC error answer.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

fn error_response(id: &Value, e: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": e.code, "message": e.message}})
}

fn ok_response(id: &Value, result: &impl serde::Serialize) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn echo(text: &str) -> String {
    crate::error::clip(text, MAX_ECHO)
}

/// The A2A front end of a server.
#[derive(Debug, Clone)]
pub struct A2a {
    server: TalosMcp,
    /// The trace of the HTTP request being served (its `traceparent`), parent of its calls.
    trace: Option<crate::trace::TraceParent>,
}

impl A2a {
    /// The A2A front end of `server` (its tools, tiers, operations, audit and metrics).
    pub fn new(server: TalosMcp) -> Self {
        Self {
            server,
            trace: None,
        }
    }

    /// This front end for one request in trace `parent` (the HTTP request's trace context): the
    /// tool calls it starts are spans of that trace, and their audit lines name it.
    #[must_use]
    pub fn traced(mut self, parent: Option<crate::trace::TraceParent>) -> Self {
        self.trace = parent;
        self
    }

    fn ops(&self) -> &Arc<Operations> {
        &self.server.operations
    }

    /// Answers one JSON-RPC request body from `caller` (the bearer token's name), sent with
    /// the `A2A-Version` header `version`.
    pub async fn handle(
        &self,
        caller: Option<String>,
        version: Option<&str>,
        body: &[u8],
    ) -> Answer {
        let request: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => {
                return Answer::Json(error_response(
                    &Value::Null,
                    &RpcError::new(code::PARSE_ERROR, "the body is not JSON"),
                ));
            }
        };
        let (id, method, params) = match envelope(&request) {
            Ok(parts) => parts,
            Err(e) => return Answer::Json(error_response(&Value::Null, &e)),
        };
        self.server.settings.metrics.a2a_request(method);
        if let Err(e) = check_version(version) {
            return Answer::Json(error_response(&id, &e));
        }
        match self.dispatch(caller, &id, method, params).await {
            Ok(answer) => answer,
            Err(e) => Answer::Json(error_response(&id, &e)),
        }
    }

    async fn dispatch(
        &self,
        caller: Option<String>,
        id: &Value,
        method: &str,
        params: Value,
    ) -> Result<Answer, RpcError> {
        let caller = caller.as_deref();
        match method {
            "SendMessage" | "SendStreamingMessage" => {
                let request: SendMessageRequest = read_params(params)?;
                self.send(caller, id, request, method == "SendStreamingMessage")
                    .await
            }
            "GetTask" => {
                let request: TaskIdRequest = read_params(params)?;
                let record = self.record(&request.id, caller).await?;
                Ok(Answer::Json(ok_response(id, &task_of(&record))))
            }
            "ListTasks" => {
                let request: ListTasksRequest = read_params(params)?;
                self.list(caller, id, &request).await
            }
            "CancelTask" => {
                let request: TaskIdRequest = read_params(params)?;
                self.cancel(caller, id, &request.id).await
            }
            "SubscribeToTask" => {
                let request: TaskIdRequest = read_params(params)?;
                let record = self.record(&request.id, caller).await?;
                let state = state_of(&record);
                if state.is_terminal() {
                    return Err(RpcError::new(
                        code::UNSUPPORTED_OPERATION,
                        format!(
                            "task {} has ended ({}); GetTask reads it",
                            echo(&request.id),
                            state_name(state)
                        ),
                    ));
                }
                Ok(Answer::Stream(self.follow(id.clone(), record, caller)))
            }
            "CreateTaskPushNotificationConfig"
            | "GetTaskPushNotificationConfig"
            | "ListTaskPushNotificationConfigs"
            | "DeleteTaskPushNotificationConfig" => Err(RpcError::new(
                code::PUSH_NOTIFICATION_NOT_SUPPORTED,
                "push notifications are not supported; follow a task with SubscribeToTask or GetTask",
            )),
            "GetExtendedAgentCard" => Err(RpcError::new(
                code::EXTENDED_CARD_NOT_CONFIGURED,
                "there is no extended agent card; the public card at /.well-known/agent-card.json is complete",
            )),
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!(
                    "method `{}` is not an A2A 1.0 method served here; served: SendMessage, SendStreamingMessage, GetTask, ListTasks, CancelTask, SubscribeToTask",
                    echo(other)
                ),
            )),
        }
    }

    /// The caller's record of task `id`; any other task id is not found (the same words for
    /// an unknown, expired or another caller's task).
    async fn record(&self, id: &str, caller: Option<&str>) -> Result<OperationRecord, RpcError> {
        self.ops().get(id, caller).await.map_err(|_| {
            RpcError::new(code::TASK_NOT_FOUND, format!("task {} not found", echo(id)))
        })
    }

    async fn send(
        &self,
        caller: Option<&str>,
        id: &Value,
        request: SendMessageRequest,
        stream: bool,
    ) -> Result<Answer, RpcError> {
        let message = request.message;
        let immediately = request
            .configuration
            .as_ref()
            .is_some_and(|c| c.return_immediately);
        if message.message_id.is_empty() {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "message.messageId is required",
            ));
        }
        let data = message.parts.iter().find_map(|p| p.data.as_ref());
        if let Some(task_id) = &message.task_id {
            return self
                .answer(caller, id, task_id, data, stream, immediately)
                .await;
        }
        let Some(data) = data else {
            if message.parts.iter().any(|p| p.text.is_some()) {
                let reply = self.usage(message.context_id.as_deref());
                let event = StreamResponse::Message(reply);
                return Ok(if stream {
                    let (tx, rx) = mpsc::channel(1);
                    let _ = tx.try_send(ok_response(id, &event));
                    Answer::Stream(rx)
                } else {
                    Answer::Json(ok_response(id, &event))
                });
            }
            return Err(RpcError::new(
                code::CONTENT_TYPE_NOT_SUPPORTED,
                "only data parts {\"tool\": <name>, \"arguments\": {...}} (and text, for a usage reply) are understood",
            ));
        };
        let Some(tool) = data.get("tool").and_then(Value::as_str) else {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "the data part needs `tool` (a tool name, as a string) and optionally `arguments` (an object)",
            ));
        };
        let arguments = match data.get("arguments") {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => {
                let mut arguments = Value::Object(map.clone());
                whole_numbers_as_integers(&mut arguments);
                match arguments {
                    Value::Object(map) => Some(map),
                    _ => None,
                }
            }
            Some(_) => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "`arguments` in the data part must be an object",
                ));
            }
        };
        let request_id = match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let op = self
            .server
            .a2a_call(
                caller.map(str::to_owned),
                &request_id,
                tool,
                arguments,
                message.context_id.as_deref(),
                self.trace.as_ref(),
            )
            .await
            .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?;
        let seed = op.record().await;
        drop(op);
        if stream {
            return Ok(Answer::Stream(self.follow(id.clone(), seed, caller)));
        }
        let record = if immediately {
            seed
        } else {
            self.settle(&seed.id, caller).await?
        };
        Ok(Answer::Json(ok_response(
            id,
            &StreamResponse::Task(task_of(&record)),
        )))
    }

    /// A message on an existing task: the answer to its confirmation.
    async fn answer(
        &self,
        caller: Option<&str>,
        id: &Value,
        task_id: &str,
        data: Option<&Value>,
        stream: bool,
        immediately: bool,
    ) -> Result<Answer, RpcError> {
        let record = self.record(task_id, caller).await?;
        let state = state_of(&record);
        if state.is_terminal() {
            return Err(RpcError::new(
                code::UNSUPPORTED_OPERATION,
                format!(
                    "task {} has ended ({}); a message to it changes nothing. Send a new message without taskId to start another.",
                    echo(task_id),
                    state_name(state)
                ),
            ));
        }
        let Some(confirm) = data.and_then(|d| d.get("confirm")).and_then(Value::as_bool) else {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "a message on a task answers its confirmation: a data part {\"confirm\": true} or {\"confirm\": false}",
            ));
        };
        if record.state != OperationState::InputRequired {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                format!(
                    "task {} is not waiting for an answer ({})",
                    echo(task_id),
                    state_name(state)
                ),
            ));
        }
        let mut answer = serde_json::Map::new();
        answer.insert("confirm".into(), Value::Bool(confirm));
        self.ops()
            .provide_input(task_id, caller, answer)
            .await
            .map_err(|e| RpcError::new(code::INVALID_PARAMS, e.to_string()))?;
        // The stream and the answer start from the task resumed, not from the question.
        let resumed = self.resumed(task_id, caller).await?;
        if stream {
            return Ok(Answer::Stream(self.follow(id.clone(), resumed, caller)));
        }
        let record = if immediately {
            resumed
        } else {
            self.settle(task_id, caller).await?
        };
        Ok(Answer::Json(ok_response(
            id,
            &StreamResponse::Task(task_of(&record)),
        )))
    }

    /// Waits until task `id` has taken the answer it was waiting for (it no longer waits for
    /// input) and returns its record.
    async fn resumed(&self, id: &str, caller: Option<&str>) -> Result<OperationRecord, RpcError> {
        let mut changes = self.ops().follow(id);
        loop {
            let record = self.record(id, caller).await?;
            if record.state != OperationState::InputRequired {
                return Ok(record);
            }
            let Some(rx) = changes.as_mut() else {
                return Ok(record);
            };
            if rx.changed().await.is_err() {
                changes = None;
            }
        }
    }

    /// Waits until task `id` ends or stops for input, and returns its record.
    async fn settle(&self, id: &str, caller: Option<&str>) -> Result<OperationRecord, RpcError> {
        let mut changes = self.ops().follow(id);
        loop {
            let record = self.record(id, caller).await?;
            if record.state.is_terminal() || record.state == OperationState::InputRequired {
                return Ok(record);
            }
            let Some(rx) = changes.as_mut() else {
                // Not running here (another replica runs it): what the store says.
                return Ok(record);
            };
            if rx.changed().await.is_err() {
                changes = None;
            }
        }
    }

    /// Streams task `seed`'s events: the task first, then each step as a `WORKING` status
    /// update, each change of state, the artifact, until it ends or stops for input.
    fn follow(
        &self,
        id: Value,
        seed: OperationRecord,
        caller: Option<&str>,
    ) -> mpsc::Receiver<Value> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let ops = self.ops().clone();
        let caller = caller.map(str::to_owned);
        tokio::spawn(async move {
            let mut changes = ops.follow(&seed.id);
            let first = StreamResponse::Task(task_of(&seed));
            if tx.send(ok_response(&id, &first)).await.is_err() {
                return;
            }
            let mut seen = steps_total(&seed);
            let mut last = state_of(&seed);
            let mut record = seed;
            // The first pass reads at once: the record may have moved on since the seed was
            // read (or ended before the follower was set up).
            let mut wait = false;
            loop {
                let state = state_of(&record);
                if state.is_terminal() || state.is_interrupted() {
                    return;
                }
                if wait {
                    // Once the live side is gone (the end is stored), one more read shows the
                    // end; a second time, there is nothing more to follow here.
                    let Some(rx) = changes.as_mut() else {
                        return;
                    };
                    if rx.changed().await.is_err() {
                        changes = None;
                    }
                }
                wait = true;
                let Ok(now) = ops.get(&record.id, caller.as_deref()).await else {
                    return;
                };
                record = now;
                let context = context_of(&record);
                // New steps, in order, as WORKING updates.
                let total = steps_total(&record);
                let first_kept = record.steps_dropped;
                for n in seen.max(first_kept)..total {
                    let Some(step) = usize::try_from(n - first_kept)
                        .ok()
                        .and_then(|i| record.steps.get(i))
                    else {
                        continue;
                    };
                    let event = StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
                        task_id: record.id.clone(),
                        context_id: context.clone(),
                        status: TaskStatus {
                            state: TaskState::Working,
                            message: Some(agent_message(
                                &record,
                                &format!("step-{n}"),
                                vec![Part::text(step.message.clone())],
                            )),
                            timestamp: Some(step.at.clone()),
                        },
                    });
                    if tx.send(ok_response(&id, &event)).await.is_err() {
                        return;
                    }
                }
                seen = total;
                let state = state_of(&record);
                if state != last || state.is_terminal() || state.is_interrupted() {
                    if state == TaskState::Completed {
                        for artifact in artifacts_of(&record) {
                            let event = StreamResponse::ArtifactUpdate(TaskArtifactUpdateEvent {
                                task_id: record.id.clone(),
                                context_id: context.clone(),
                                artifact,
                                append: false,
                                last_chunk: true,
                            });
                            if tx.send(ok_response(&id, &event)).await.is_err() {
                                return;
                            }
                        }
                    }
                    if state != last {
                        let event = StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
                            task_id: record.id.clone(),
                            context_id: context.clone(),
                            status: status_of(&record),
                        });
                        if tx.send(ok_response(&id, &event)).await.is_err() {
                            return;
                        }
                    }
                    last = state;
                }
            }
        });
        rx
    }

    async fn list(
        &self,
        caller: Option<&str>,
        id: &Value,
        request: &ListTasksRequest,
    ) -> Result<Answer, RpcError> {
        if request.page_token.as_deref().is_some_and(|t| !t.is_empty()) {
            return Err(RpcError::new(
                code::INVALID_PARAMS,
                "pageToken: only the first page is served (the newest tasks); narrow with status or contextId",
            ));
        }
        let size = match request.page_size {
            None | Some(0) => 50,
            Some(n) if n < 0 => {
                return Err(RpcError::new(
                    code::INVALID_PARAMS,
                    "pageSize must be between 1 and 100",
                ));
            }
            Some(n) => usize::try_from(n).unwrap_or(MAX_PAGE).min(MAX_PAGE),
        };
        let cap = self.ops().settings().cap;
        let records = self
            .ops()
            .list(caller, cap)
            .await
            .map_err(|e| RpcError::new(code::INTERNAL_ERROR, e.to_string()))?;
        let matching: Vec<Task> = records
            .iter()
            .filter(|r| request.status.is_none_or(|s| state_of(r) == s))
            .filter(|r| {
                request
                    .context_id
                    .as_deref()
                    .is_none_or(|c| context_of(r) == c)
            })
            .map(|r| {
                let mut task = task_of(r);
                if request.include_artifacts != Some(true) {
                    task.artifacts.clear();
                }
                task
            })
            .collect();
        let total = matching.len();
        let tasks: Vec<Task> = matching.into_iter().take(size).collect();
        let response = ListTasksResponse {
            tasks,
            next_page_token: String::new(),
            page_size: i32::try_from(size).unwrap_or(i32::MAX),
            total_size: i32::try_from(total).unwrap_or(i32::MAX),
        };
        Ok(Answer::Json(ok_response(id, &response)))
    }

    /// CancelTask under the engine's rule: a task that has changed nothing stops (canceled);
    /// one whose change has begun cannot be canceled, runs to its end, and its record says so.
    async fn cancel(
        &self,
        caller: Option<&str>,
        id: &Value,
        task_id: &str,
    ) -> Result<Answer, RpcError> {
        let record = self.record(task_id, caller).await?;
        let state = state_of(&record);
        if state.is_terminal() {
            return Err(RpcError::new(
                code::TASK_NOT_CANCELABLE,
                format!(
                    "task {} has already ended ({})",
                    echo(task_id),
                    state_name(state)
                ),
            ));
        }
        let mut changes = self.ops().follow(task_id);
        let after = self
            .ops()
            .cancel(task_id, caller)
            .await
            .map_err(|e| RpcError::new(code::TASK_NOT_CANCELABLE, e.to_string()))?;
        if after.committed {
            return Err(RpcError::new(
                code::TASK_NOT_CANCELABLE,
                format!(
                    "task {}'s change has begun; it runs to its end and its record says so (GetTask)",
                    echo(task_id)
                ),
            ));
        }
        // It stops at once; wait (bounded) for its end to be recorded.
        let wait = async {
            loop {
                match self.record(task_id, caller).await {
                    Ok(r) if !r.state.is_terminal() => {}
                    _ => return,
                }
                match changes.as_mut() {
                    Some(rx) => {
                        if rx.changed().await.is_err() {
                            changes = None;
                        }
                    }
                    // Running on another replica: its end shows in the shared store.
                    None => tokio::time::sleep(crate::operations::SHARED_POLL).await,
                }
            }
        };
        let _ = tokio::time::timeout(CANCEL_SETTLE, wait).await;
        let record = self.record(task_id, caller).await?;
        Ok(Answer::Json(ok_response(id, &task_of(&record))))
    }

    /// The reply to a message without a tool call: how to call one, and the skills.
    fn usage(&self, context: Option<&str>) -> Message {
        let mut text = String::from(
            "This agent runs Talos tools; there is no language model behind it. Send a message with a data part {\"tool\": \"<name>\", \"arguments\": {...}}, for example {\"tool\": \"talos_version\", \"arguments\": {}}. Write and destructive tools stop in TASK_STATE_INPUT_REQUIRED with their plan; answer on the same task (taskId) with a data part {\"confirm\": true} to run it or {\"confirm\": false} to cancel it.\nTools:",
        );
        let tools = self.server.enabled_tools();
        for (name, set, tier) in &tools {
            text.push_str(&format!("\n- {name} ({}, {})", set.as_str(), tier.as_str()));
        }
        Message {
            message_id: random_id(),
            context_id: context.map(|c| crate::error::clip(c, MAX_ID)),
            task_id: None,
            role: Role::Agent,
            parts: vec![Part::text(text)],
            metadata: None,
        }
    }
}

/// Reads the JSON-RPC envelope: id (bounded), method, params.
fn envelope(request: &Value) -> Result<(Value, &str, Value), RpcError> {
    let invalid = |why: &str| RpcError::new(code::INVALID_REQUEST, why.to_owned());
    let Some(object) = request.as_object() else {
        return Err(invalid(
            "the request must be one JSON-RPC 2.0 request object (batches are not served)",
        ));
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("`jsonrpc` must be \"2.0\""));
    }
    let id = match object.get("id") {
        None => Value::Null,
        Some(Value::String(s)) if s.chars().count() <= MAX_ID => Value::String(s.clone()),
        Some(Value::Number(n)) => Value::Number(n.clone()),
        Some(Value::Null) => Value::Null,
        Some(_) => {
            return Err(invalid(
                "`id` must be a string of at most 128 characters, a number or null",
            ));
        }
    };
    let Some(method) = object.get("method").and_then(Value::as_str) else {
        return Err(invalid("`method` must be a string"));
    };
    let params = object.get("params").cloned().unwrap_or_else(|| json!({}));
    Ok((id, method, params))
}

/// The `A2A-Version` header: 1.0 is served. A request without it is a 0.3 request, which is
/// not served.
fn check_version(version: Option<&str>) -> Result<(), RpcError> {
    let Some(version) = version.map(str::trim) else {
        return Err(RpcError::new(
            code::VERSION_NOT_SUPPORTED,
            "a request without the A2A-Version header is an A2A 0.3 request, which is not served; send A2A-Version: 1.0",
        ));
    };
    let mut parts = version.split('.');
    let served = parts.next() == Some("1")
        && parts.next().is_none_or(|minor| minor == "0")
        && parts.all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if served {
        Ok(())
    } else {
        Err(RpcError::new(
            code::VERSION_NOT_SUPPORTED,
            format!(
                "A2A version {} is not served; this agent serves 1.0 (A2A-Version: 1.0)",
                echo(version)
            ),
        ))
    }
}

fn read_params<T: serde::de::DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params).map_err(|e| {
        RpcError::new(
            code::INVALID_PARAMS,
            format!("params: {}", crate::error::clip(&e.to_string(), 200)),
        )
    })
}

fn random_id() -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn steps_total(record: &OperationRecord) -> u64 {
    record
        .steps_dropped
        .saturating_add(u64::try_from(record.steps.len()).unwrap_or(u64::MAX))
}

fn context_of(record: &OperationRecord) -> String {
    record
        .a2a_context
        .clone()
        .unwrap_or_else(|| record.id.clone())
}

/// The error kind of a completed record whose result is a tool error.
fn error_kind(record: &OperationRecord) -> Option<String> {
    let result = record.result.as_ref()?;
    if result.get("isError").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    Some(
        result
            .pointer("/_meta/talos-mcp~1error/kind")
            .and_then(Value::as_str)
            .unwrap_or("Internal")
            .to_owned(),
    )
}

/// The A2A state of an operation: a tool error refused before anything ran is `REJECTED`, a
/// change the caller declined (or did not confirm in time) `CANCELED`, any other tool error
/// `FAILED`.
fn state_of(record: &OperationRecord) -> TaskState {
    match record.state {
        OperationState::Working => TaskState::Working,
        OperationState::InputRequired => TaskState::InputRequired,
        OperationState::Failed => TaskState::Failed,
        OperationState::Cancelled => TaskState::Canceled,
        OperationState::Completed => match error_kind(record).as_deref() {
            None => TaskState::Completed,
            Some("NotConfirmed") => TaskState::Canceled,
            Some("Refused" | "NodeNotAllowed" | "PathNotAllowed") => TaskState::Rejected,
            Some(_) => TaskState::Failed,
        },
    }
}

fn state_name(state: TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn agent_message(record: &OperationRecord, suffix: &str, parts: Vec<Part>) -> Message {
    Message {
        message_id: format!("{}-{suffix}", record.id),
        context_id: Some(context_of(record)),
        task_id: Some(record.id.clone()),
        role: Role::Agent,
        parts,
        metadata: None,
    }
}

/// The text of a tool result (its first text block).
fn result_text(result: &Value) -> Option<String> {
    result
        .get("content")
        .and_then(Value::as_array)?
        .iter()
        .find_map(|c| c.get("text").and_then(Value::as_str))
        .map(str::to_owned)
}

/// The status of an operation: its state, and a message saying why — the plan and how to
/// answer it (with the plan as data) while it waits, the tool's own words when it failed.
fn status_of(record: &OperationRecord) -> TaskStatus {
    let state = state_of(record);
    let parts = match (record.state, state) {
        (OperationState::InputRequired, _) => {
            let asked = record
                .input_requests
                .as_ref()
                .and_then(|r| r.get("confirm"));
            let text = asked
                .and_then(|a| a.get("text"))
                .and_then(Value::as_str)
                .unwrap_or("waiting for the caller's input")
                .to_owned();
            let mut parts = vec![Part::text(text)];
            if let Some(plan) = asked.and_then(|a| a.get("plan")) {
                parts.push(Part::data(json!({"plan": plan})));
            }
            parts
        }
        (OperationState::Completed, TaskState::Completed) => {
            vec![Part::text(
                record
                    .status_message
                    .clone()
                    .unwrap_or_else(|| "completed".into()),
            )]
        }
        (OperationState::Completed, _) => vec![Part::text(
            record
                .result
                .as_ref()
                .and_then(result_text)
                .unwrap_or_else(|| "the tool failed".into()),
        )],
        (OperationState::Failed, _) => vec![Part::text(
            record
                .error
                .as_ref()
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("failed")
                .to_owned(),
        )],
        _ => vec![Part::text(
            record
                .status_message
                .clone()
                .unwrap_or_else(|| "working".into()),
        )],
    };
    TaskStatus {
        state,
        message: Some(agent_message(
            record,
            &format!("status-{}", steps_total(record)),
            parts,
        )),
        timestamp: Some(record.updated_at.clone()),
    }
}

/// The artifact of a completed tool: its structured result as data, its summary as text.
fn artifacts_of(record: &OperationRecord) -> Vec<Artifact> {
    if state_of(record) != TaskState::Completed {
        return Vec::new();
    }
    let Some(result) = &record.result else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    if let Some(structured) = result.get("structuredContent") {
        parts.push(Part::data(structured.clone()));
    }
    if let Some(text) = result_text(result) {
        parts.push(Part::text(text));
    }
    if parts.is_empty() {
        return Vec::new();
    }
    vec![Artifact {
        artifact_id: "result".into(),
        name: Some(record.tool.clone()),
        parts,
    }]
}

/// The A2A task an operation is.
fn task_of(record: &OperationRecord) -> Task {
    Task {
        id: record.id.clone(),
        context_id: context_of(record),
        status: status_of(record),
        artifacts: artifacts_of(record),
        history: Vec::new(),
        metadata: Some(json!({"tool": record.tool})),
    }
}

/// A data part is a protobuf `Struct`, whose numbers are doubles: the A2A SDKs send `3` as `3.0`.
/// Whole numbers that a double holds exactly (|n| ≤ 2^53) become integers again, so integer
/// arguments read as they do on MCP; anything else is left as sent (and a tool expecting an
/// integer refuses `3.5` as before). serde_json's nesting limit bounds the recursion.
fn whole_numbers_as_integers(value: &mut Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
                && f.abs() <= EXACT
            {
                #[allow(clippy::cast_possible_truncation)] // whole and within ±2^53: exact
                let i = f as i64;
                *value = if i < 0 {
                    Value::from(i)
                } else {
                    Value::from(i.unsigned_abs())
                };
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers_as_integers),
        Value::Object(map) => map.values_mut().for_each(whole_numbers_as_integers),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn whole_doubles_from_a_data_part_are_integers_again() {
        let mut v = serde_json::json!({
            "tail": 3.0, "neg": -2.0, "half": 3.5, "big": 1e300, "n": [1.0, {"x": 60.0}], "s": "3.0"
        });
        whole_numbers_as_integers(&mut v);
        assert_eq!(
            v,
            serde_json::json!({
                "tail": 3, "neg": -2, "half": 3.5, "big": 1e300, "n": [1, {"x": 60}], "s": "3.0"
            })
        );
        assert!(v["tail"].is_u64() && v["neg"].is_i64());
    }

    /// 1.0 (and its patch versions) is served; no header (0.3 by the spec), other versions and
    /// junk get -32009, with the echoed value bounded.
    #[test]
    fn only_version_1_0_is_served() {
        for ok in ["1.0", "1.0.0", " 1.0 ", "1"] {
            assert!(check_version(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            None,
            Some("0.3"),
            Some("2.0"),
            Some("1.1"),
            Some("1.0.x"),
            Some(""),
            Some("1.."),
        ] {
            let e = check_version(bad).unwrap_err();
            assert_eq!(e.code, code::VERSION_NOT_SUPPORTED, "{bad:?}");
        }
        let long = "9".repeat(10_000);
        let e = check_version(Some(&long)).unwrap_err();
        assert!(e.message.len() < 300, "{}", e.message.len());
    }

    /// The envelope: one JSON-RPC 2.0 request object with a string method and a bounded id.
    #[test]
    fn the_envelope_is_checked_and_ids_are_bounded() {
        let good = json!({"jsonrpc": "2.0", "id": 7, "method": "GetTask"});
        let (id, method, params) = envelope(&good).unwrap();
        assert_eq!((id, method, params), (json!(7), "GetTask", json!({})));
        for bad in [
            json!([{"jsonrpc": "2.0", "id": 1, "method": "GetTask"}]),
            json!({"id": 1, "method": "GetTask"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 5}),
            json!({"jsonrpc": "2.0", "id": {"a": 1}, "method": "GetTask"}),
            json!({"jsonrpc": "2.0", "id": "x".repeat(MAX_ID + 1), "method": "GetTask"}),
        ] {
            assert_eq!(
                envelope(&bad).unwrap_err().code,
                code::INVALID_REQUEST,
                "{bad}"
            );
        }
    }

    /// A server over a mock API that is never called.
    fn a2a() -> A2a {
        let ca = talos_sim::pki::CertificateAuthority::generate("mock").unwrap();
        let client = ca
            .client_cert("os:admin", talos_sim::pki::Validity::Current)
            .unwrap();
        let yaml = talos_sim::pki::render_talosconfig(
            "mock",
            &[talos_sim::pki::TalosconfigContext {
                name: "mock",
                endpoints: vec!["10.5.0.2".into()],
                nodes: vec!["10.5.0.2".into()],
                ca_pem: ca.cert_pem(),
                client: &client,
            }],
        );
        let ctx = talos_config::TalosConfig::from_yaml(&yaml, "<mock>")
            .unwrap()
            .context(None)
            .unwrap();
        let api: Arc<dyn talos_client::TalosApi> = Arc::new(talos_client::MockTalosApi::new());
        let factory: crate::ApiFactory = Arc::new(move |_| Ok(api.clone()));
        let clusters = crate::Clusters::from_context(ctx, factory);
        A2a::new(TalosMcp::new(clusters, crate::ServerSettings::default()).unwrap())
    }

    /// Every event a stream sends, until it ends (bounded: a stream that does not end fails).
    async fn drain(mut events: mpsc::Receiver<Value>) -> Vec<Value> {
        let mut out = Vec::new();
        let read = async {
            while let Some(e) = events.recv().await {
                out.push(e);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read)
            .await
            .expect("the stream ends");
        out
    }

    /// A stream set up after its task ended (the seed is older than the end) still sends the
    /// end: the artifact and the final state.
    #[tokio::test]
    async fn a_stream_started_late_still_sends_the_end() {
        let a2a = a2a();
        let op = a2a
            .ops()
            .start("talos_version", Some("alice".into()), None, vec![], false)
            .await
            .unwrap();
        let seed = op.record().await;
        let result = json!({"isError": false, "structuredContent": {"a": 1},
                            "content": [{"type": "text", "text": "done"}]});
        op.finish(crate::operations::End::Completed(result), false)
            .await;
        drop(op);
        let events = drain(a2a.follow(json!(1), seed, Some("alice"))).await;
        assert_eq!(
            events[0]["result"]["task"]["status"]["state"],
            "TASK_STATE_WORKING"
        );
        let artifact = &events[1]["result"]["artifactUpdate"]["artifact"];
        assert_eq!(artifact["parts"][0]["data"], json!({"a": 1}), "{events:?}");
        let last = &events[events.len() - 1]["result"]["statusUpdate"]["status"];
        assert_eq!(last["state"], "TASK_STATE_COMPLETED", "{events:?}");
    }

    /// A task that stopped for input between the seed and the follower's start is reported
    /// as waiting, and the stream ends there (it does not wait for a change that never comes).
    #[tokio::test]
    async fn a_stream_reports_input_required_reached_before_it_started() {
        let a2a = a2a();
        let op = a2a
            .ops()
            .start("talos_reboot", Some("alice".into()), None, vec![], false)
            .await
            .unwrap();
        let seed = op.record().await;
        let asking = {
            let op = op.clone();
            tokio::spawn(async move {
                let requests = json!({"confirm": {"text": "Plan: reboot n1"}});
                let Value::Object(requests) = requests else {
                    unreachable!()
                };
                op.input(requests, std::time::Duration::from_secs(60)).await
            })
        };
        for _ in 0..1000 {
            if op.record().await.state == OperationState::InputRequired {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let events = drain(a2a.follow(json!(1), seed, Some("alice"))).await;
        let last = &events[events.len() - 1]["result"]["statusUpdate"]["status"];
        assert_eq!(last["state"], "TASK_STATE_INPUT_REQUIRED", "{events:?}");
        assert_eq!(last["message"]["parts"][0]["text"], "Plan: reboot n1");
        asking.abort();
    }

    fn completed(result: Value) -> OperationRecord {
        let mut r = OperationRecord::new("op1".into(), "talos_reboot", None, None, vec![], false);
        r.state = OperationState::Completed;
        r.result = Some(result);
        r
    }

    fn failure(kind: &str) -> Value {
        json!({"isError": true, "content": [{"type": "text", "text": format!("{kind}: why")}],
               "_meta": {"talos-mcp/error": {"kind": kind, "message": "why"}}})
    }

    /// Operation ends map onto A2A states: a result is COMPLETED with an artifact, a refusal
    /// REJECTED, a declined confirmation CANCELED, any other tool error FAILED with its words.
    #[test]
    fn operation_ends_map_onto_task_states() {
        let ok = completed(json!({"isError": false, "structuredContent": {"a": 1},
                                  "content": [{"type": "text", "text": "done"}]}));
        assert_eq!(state_of(&ok), TaskState::Completed);
        let task = task_of(&ok);
        assert_eq!(task.artifacts[0].parts[0].data, Some(json!({"a": 1})));
        assert_eq!(task.artifacts[0].parts[1].text.as_deref(), Some("done"));
        for (kind, state) in [
            ("Refused", TaskState::Rejected),
            ("NodeNotAllowed", TaskState::Rejected),
            ("NotConfirmed", TaskState::Canceled),
            ("InvalidArgument", TaskState::Failed),
            ("Connection", TaskState::Failed),
        ] {
            let r = completed(failure(kind));
            assert_eq!(state_of(&r), state, "{kind}");
            let task = task_of(&r);
            assert!(task.artifacts.is_empty(), "{kind}");
            let text = task.status.message.unwrap().parts[0].text.clone().unwrap();
            assert_eq!(text, format!("{kind}: why"));
        }
        // A result with nothing to show (an MCP round trip's note) has no empty artifact.
        let note = completed(json!({"resultType": "input_required", "note": "asked"}));
        assert_eq!(state_of(&note), TaskState::Completed);
        assert!(task_of(&note).artifacts.is_empty());
        let mut waiting = completed(Value::Null);
        waiting.state = OperationState::InputRequired;
        waiting.input_requests =
            Some(json!({"confirm": {"text": "Plan: reboot", "plan": {"node": "n1"}}}));
        let status = status_of(&waiting);
        assert_eq!(status.state, TaskState::InputRequired);
        let parts = status.message.unwrap().parts;
        assert_eq!(parts[0].text.as_deref(), Some("Plan: reboot"));
        assert_eq!(parts[1].data, Some(json!({"plan": {"node": "n1"}})));
    }
}
