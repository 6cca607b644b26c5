//! The A2A 1.0 types this server reads and writes, in the protobuf JSON mapping the
//! specification uses: lowerCamelCase field names, enums by their full names
//! (`TASK_STATE_COMPLETED`, `ROLE_USER`), absent optional fields left out. Fields a client may
//! send that the server has no use for (extensions, tenant, reference task ids) are ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version served.
pub const PROTOCOL_VERSION: &str = "1.0";

/// JSON-RPC and A2A error codes (A2A 1.0, JSON-RPC binding).
pub mod code {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a JSON-RPC 2.0 request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server failed.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The task does not exist (or is not the caller's).
    pub const TASK_NOT_FOUND: i64 = -32001;
    /// The task cannot be canceled (it has ended, or its change has begun).
    pub const TASK_NOT_CANCELABLE: i64 = -32002;
    /// Push notifications are not offered.
    pub const PUSH_NOTIFICATION_NOT_SUPPORTED: i64 = -32003;
    /// The operation is not supported (for instance on a task that has ended).
    pub const UNSUPPORTED_OPERATION: i64 = -32004;
    /// A part's content type is not accepted.
    pub const CONTENT_TYPE_NOT_SUPPORTED: i64 = -32005;
    /// No extended agent card is configured.
    pub const EXTENDED_CARD_NOT_CONFIGURED: i64 = -32007;
    /// The requested protocol version is not served.
    pub const VERSION_NOT_SUPPORTED: i64 = -32009;
}

/// Who sent a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Not set.
    #[serde(rename = "ROLE_UNSPECIFIED")]
    Unspecified,
    /// The client.
    #[serde(rename = "ROLE_USER")]
    User,
    /// The agent (this server).
    #[serde(rename = "ROLE_AGENT")]
    Agent,
}

/// One piece of a message or artifact: exactly one of `text`, `raw`, `url`, `data`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// Text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Bytes (base64 in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    /// A link to the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Extra data about the part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    /// A file name for the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// The content's media type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
}

impl Part {
    /// A text part.
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// A data part.
    pub fn data(data: Value) -> Self {
        Self {
            data: Some(data),
            ..Self::default()
        }
    }
}

/// A message between client and agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// Set by the sender.
    pub message_id: String,
    /// The context (conversation) it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// The task it continues.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<String>,
    /// Who sent it.
    pub role: Role,
    /// Its content.
    #[serde(default)]
    pub parts: Vec<Part>,
    /// Extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// Where a task is in its life. The last four are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Not set.
    #[serde(rename = "TASK_STATE_UNSPECIFIED")]
    Unspecified,
    /// Accepted, not started.
    #[serde(rename = "TASK_STATE_SUBMITTED")]
    Submitted,
    /// Running.
    #[serde(rename = "TASK_STATE_WORKING")]
    Working,
    /// Waiting for the client's answer.
    #[serde(rename = "TASK_STATE_INPUT_REQUIRED")]
    InputRequired,
    /// Waiting for authentication.
    #[serde(rename = "TASK_STATE_AUTH_REQUIRED")]
    AuthRequired,
    /// Done.
    #[serde(rename = "TASK_STATE_COMPLETED")]
    Completed,
    /// Failed.
    #[serde(rename = "TASK_STATE_FAILED")]
    Failed,
    /// Canceled; nothing was done.
    #[serde(rename = "TASK_STATE_CANCELED")]
    Canceled,
    /// Refused by the agent.
    #[serde(rename = "TASK_STATE_REJECTED")]
    Rejected,
}

impl TaskState {
    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Canceled | Self::Rejected
        )
    }

    /// Whether the task waits for the client (a stream ends there).
    pub fn is_interrupted(self) -> bool {
        matches!(self, Self::InputRequired | Self::AuthRequired)
    }
}

/// A task's state, with an optional message saying why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// The state.
    pub state: TaskState,
    /// What is happening, or what is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// When it reached this state (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
}

/// An output of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Unique within the task.
    pub artifact_id: String,
    /// A name for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its content.
    pub parts: Vec<Part>,
}

/// A unit of work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    /// Set by the server.
    pub id: String,
    /// The context it belongs to.
    pub context_id: String,
    /// Its state.
    pub status: TaskStatus,
    /// Its outputs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Messages exchanged on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Message>,
    /// Extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// A change of a task's state (a streamed event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatusUpdateEvent {
    /// The task.
    pub task_id: String,
    /// Its context.
    pub context_id: String,
    /// The new status.
    pub status: TaskStatus,
}

/// A new or extended artifact (a streamed event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskArtifactUpdateEvent {
    /// The task.
    pub task_id: String,
    /// Its context.
    pub context_id: String,
    /// The artifact.
    pub artifact: Artifact,
    /// Appends to an artifact of the same id.
    #[serde(default)]
    pub append: bool,
    /// The artifact's last chunk.
    #[serde(default)]
    pub last_chunk: bool,
}

/// The answer of `SendMessage`, and each event of a stream: exactly one member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamResponse {
    /// A task.
    Task(Task),
    /// A message (no task).
    Message(Message),
    /// A task's state changed.
    StatusUpdate(TaskStatusUpdateEvent),
    /// A task's artifact.
    ArtifactUpdate(TaskArtifactUpdateEvent),
}

/// How the client wants `SendMessage` answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageConfiguration {
    /// Output media types the client accepts.
    #[serde(default)]
    pub accepted_output_modes: Vec<String>,
    /// How much history to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i32>,
    /// Answer at once with the task instead of waiting for it to end or stop for input.
    #[serde(default)]
    pub return_immediately: bool,
}

/// `SendMessage` and `SendStreamingMessage` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessageRequest {
    /// The message.
    pub message: Message,
    /// How to answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<SendMessageConfiguration>,
    /// Extra data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `GetTask`, `CancelTask` and `SubscribeToTask` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskIdRequest {
    /// The task.
    pub id: String,
    /// How much history to return (`GetTask`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i32>,
}

/// `ListTasks` params.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksRequest {
    /// Only tasks of this context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Only tasks in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TaskState>,
    /// At most this many (1–100, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<i32>,
    /// The page to return (only the first page is served: empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
    /// How much history to return.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_length: Option<i32>,
    /// Include artifacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_artifacts: Option<bool>,
}

/// `ListTasks` result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListTasksResponse {
    /// The tasks, newest first.
    pub tasks: Vec<Task>,
    /// The next page (empty: none).
    pub next_page_token: String,
    /// The page size used.
    pub page_size: i32,
    /// How many tasks matched.
    pub total_size: i32,
}

/// The agent card served at `/.well-known/agent-card.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCard {
    /// The agent's name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Where and how it is reached.
    pub supported_interfaces: Vec<AgentInterface>,
    /// Its version.
    pub version: String,
    /// What the protocol features it offers.
    pub capabilities: AgentCapabilities,
    /// How clients authenticate (scheme name → scheme).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub security_schemes: serde_json::Map<String, Value>,
    /// Which schemes a client must satisfy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_requirements: Vec<Value>,
    /// Media types accepted.
    pub default_input_modes: Vec<String>,
    /// Media types produced.
    pub default_output_modes: Vec<String>,
    /// What it can do.
    pub skills: Vec<AgentSkill>,
}

/// An endpoint of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentInterface {
    /// Its URL.
    pub url: String,
    /// `JSONRPC`, `GRPC` or `HTTP+JSON`.
    pub protocol_binding: String,
    /// The A2A version it speaks.
    pub protocol_version: String,
}

/// Optional protocol features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentCapabilities {
    /// `SendStreamingMessage` and `SubscribeToTask`.
    pub streaming: bool,
    /// Push notifications.
    pub push_notifications: bool,
    /// An extended card for authenticated clients.
    pub extended_agent_card: bool,
}

/// One skill of the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSkill {
    /// Unique within the card.
    pub id: String,
    /// Its name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// Keywords.
    pub tags: Vec<String>,
    /// Example requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;

    /// A `SendMessage` request as a 1.0 client sends it reads, and unknown members are ignored.
    #[test]
    fn a_send_message_request_reads() {
        let params = json!({
            "message": {
                "messageId": "m1",
                "role": "ROLE_USER",
                "parts": [{"data": {"tool": "talos_version", "arguments": {}}, "mediaType": "application/json"}],
                "contextId": "c1",
                "extensions": []
            },
            "configuration": {"returnImmediately": true, "acceptedOutputModes": ["text/plain"], "historyLength": 0},
            "tenant": ""
        });
        let r: SendMessageRequest = serde_json::from_value(params).unwrap();
        assert_eq!(r.message.role, Role::User);
        assert_eq!(r.message.context_id.as_deref(), Some("c1"));
        assert_eq!(
            r.message.parts[0].data.as_ref().unwrap()["tool"],
            "talos_version"
        );
        assert!(r.configuration.unwrap().return_immediately);
        // 0.3 role names are not 1.0 names.
        let old = json!({"message": {"messageId": "m", "role": "user", "parts": []}});
        assert!(serde_json::from_value::<SendMessageRequest>(old).is_err());
    }

    /// A task serialises with the 1.0 names: camelCase members, full enum names, a single
    /// member naming each stream event, absent optionals left out.
    #[test]
    fn a_task_and_its_events_have_the_1_0_shape() {
        let task = Task {
            id: "t1".into(),
            context_id: "c1".into(),
            status: TaskStatus {
                state: TaskState::InputRequired,
                message: Some(Message {
                    message_id: "s1".into(),
                    context_id: None,
                    task_id: Some("t1".into()),
                    role: Role::Agent,
                    parts: vec![Part::text("confirm?"), Part::data(json!({"node": "n"}))],
                    metadata: None,
                }),
                timestamp: Some("2026-01-01T00:00:00Z".into()),
            },
            artifacts: vec![],
            history: vec![],
            metadata: None,
        };
        let v = serde_json::to_value(StreamResponse::Task(task.clone())).unwrap();
        assert_eq!(
            v,
            json!({"task": {
                "id": "t1",
                "contextId": "c1",
                "status": {
                    "state": "TASK_STATE_INPUT_REQUIRED",
                    "message": {"messageId": "s1", "taskId": "t1", "role": "ROLE_AGENT",
                                "parts": [{"text": "confirm?"}, {"data": {"node": "n"}}]},
                    "timestamp": "2026-01-01T00:00:00Z"
                }
            }})
        );
        let back: StreamResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, StreamResponse::Task(task));
        let event = StreamResponse::StatusUpdate(TaskStatusUpdateEvent {
            task_id: "t1".into(),
            context_id: "c1".into(),
            status: TaskStatus {
                state: TaskState::Working,
                message: None,
                timestamp: None,
            },
        });
        assert_eq!(
            serde_json::to_value(event).unwrap(),
            json!({"statusUpdate": {"taskId": "t1", "contextId": "c1", "status": {"state": "TASK_STATE_WORKING"}}})
        );
        for (state, name) in [
            (TaskState::Completed, "TASK_STATE_COMPLETED"),
            (TaskState::Canceled, "TASK_STATE_CANCELED"),
            (TaskState::Rejected, "TASK_STATE_REJECTED"),
            (TaskState::Failed, "TASK_STATE_FAILED"),
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), json!(name));
            assert!(state.is_terminal());
        }
        assert!(!TaskState::InputRequired.is_terminal());
    }

    /// ListTasks params and a filter by state read.
    #[test]
    fn list_tasks_params_read() {
        let r: ListTasksRequest =
            serde_json::from_value(json!({"status": "TASK_STATE_COMPLETED", "pageSize": 10}))
                .unwrap();
        assert_eq!(r.status, Some(TaskState::Completed));
        assert_eq!(r.page_size, Some(10));
    }
}
