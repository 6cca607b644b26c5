//! The operations engine: a long tool call (an upgrade, a reboot followed to its end) runs as an
//! *operation* detached from the request that started it, with an id, a state, timestamped
//! steps, a result and the caller who started it.
//!
//! The engine is independent of MCP: the MCP server maps operations onto the Tasks extension
//! (`tasks/get|update|cancel`) and the `talos_operations` tool; another front end can drive the
//! same engine. Records live in an [`OperationStore`] (serialisable, so a shared store can hold
//! them); what cannot be stored — the cancellation signal and the channel that brings input
//! (a confirmation answer) into a waiting operation — lives beside it in [`Operations`].
//!
//! Operations are bound to their caller, never to a transport session: only the caller that
//! started one sees it, and a caller that reconnects reads it.

mod store;
pub(crate) mod tasks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

pub use store::{InMemoryStore, OperationStore};

use crate::error::ToolError;

/// The most steps a record keeps (the oldest are dropped and counted).
pub const MAX_STEPS: usize = 200;
/// The longest step message kept, in bytes.
const MAX_STEP_MESSAGE: usize = 1024;

/// The operator's limits for operations.
#[derive(Debug, Clone, Copy)]
pub struct OperationSettings {
    /// How long a finished operation is kept (default 1 h).
    pub ttl: Duration,
    /// The most operations kept, running and finished (default 256).
    pub cap: usize,
    /// How often task clients are told to poll (default 2 s).
    pub poll_interval: Duration,
}

impl Default for OperationSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(3600),
            cap: 256,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// Where an operation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OperationState {
    /// Running.
    Working,
    /// Waiting for input (a confirmation) from its caller.
    InputRequired,
    /// Finished with a result (which may itself report an error).
    Completed,
    /// Ended by a protocol-level error.
    Failed,
    /// Stopped before it changed anything.
    Cancelled,
}

impl OperationState {
    /// Whether the operation has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }

    /// The state's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Working => "working",
            Self::InputRequired => "input_required",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One step of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Step {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened.
    pub message: String,
}

/// Everything stored about one operation. Plain data: it round-trips through JSON. Its `Debug`
/// leaves out the result, error and input requests (a plan's result carries a confirmation
/// token).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct OperationRecord {
    /// Random, unguessable (128 bits, hex).
    pub id: String,
    /// The tool.
    pub tool: String,
    /// The authenticated caller who started it (`None`: the local caller of stdio).
    pub caller: Option<String>,
    /// The context its arguments named.
    pub context: Option<String>,
    /// The nodes its arguments named.
    pub nodes: Vec<String>,
    /// Its state.
    pub state: OperationState,
    /// What is happening, in words.
    pub status_message: Option<String>,
    /// The last [`MAX_STEPS`] steps.
    pub steps: Vec<Step>,
    /// Steps dropped from the front to keep [`MAX_STEPS`].
    pub steps_dropped: u64,
    /// RFC 3339 timestamps.
    pub created_at: String,
    /// Last change.
    pub updated_at: String,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Creation time, Unix milliseconds (ordering).
    pub created_ms: u64,
    /// End time, Unix milliseconds (expiry).
    pub finished_ms: Option<u64>,
    /// It had begun changing the cluster.
    pub committed: bool,
    /// A cancellation was asked for.
    pub cancel_requested: bool,
    /// It was started as an MCP task (answered at once, followed with `tasks/get`).
    pub task: bool,
    /// The result (an MCP `CallToolResult` for a tool) when completed.
    pub result: Option<serde_json::Value>,
    /// The JSON-RPC error object when failed.
    pub error: Option<serde_json::Value>,
    /// The outstanding input requests when input is required.
    pub input_requests: Option<serde_json::Value>,
    /// The A2A context the task belongs to, when an A2A client started it (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub a2a_context: Option<String>,
}

impl std::fmt::Debug for OperationRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperationRecord")
            .field("id", &self.id)
            .field("tool", &self.tool)
            .field("caller", &self.caller)
            .field("state", &self.state)
            .field("status_message", &self.status_message)
            .field("steps", &self.steps.len())
            .field("committed", &self.committed)
            .field("cancel_requested", &self.cancel_requested)
            .field("has_result", &self.result.is_some())
            .field("has_error", &self.error.is_some())
            .finish_non_exhaustive()
    }
}

impl OperationRecord {
    /// A new, working record.
    pub fn new(
        id: String,
        tool: &str,
        caller: Option<String>,
        context: Option<String>,
        nodes: Vec<String>,
        task: bool,
    ) -> Self {
        let now = SystemTime::now();
        let at = crate::tools::rfc3339(now);
        Self {
            id,
            tool: tool.to_owned(),
            caller,
            context,
            nodes,
            state: OperationState::Working,
            status_message: Some("working".into()),
            steps: Vec::new(),
            steps_dropped: 0,
            created_at: at.clone(),
            updated_at: at,
            finished_at: None,
            created_ms: unix_ms(now),
            finished_ms: None,
            committed: false,
            cancel_requested: false,
            task,
            result: None,
            error: None,
            input_requests: None,
            a2a_context: None,
        }
    }

    /// Ends a record whose replica stopped while it ran (a shared store saw its lease lapse):
    /// failed, saying whether its change had begun. Never left `working` forever.
    pub fn mark_replica_lost(&mut self) {
        let now = SystemTime::now();
        let what = if self.committed {
            "it had begun its change: check the node before acting again"
        } else {
            "it had not begun its change; nothing was done"
        };
        self.state = OperationState::Failed;
        self.finished_at = Some(crate::tools::rfc3339(now));
        self.finished_ms = Some(unix_ms(now));
        self.updated_at = crate::tools::rfc3339(now);
        self.input_requests = None;
        self.status_message = Some(format!(
            "the replica running it stopped (its lease lapsed); {what}"
        ));
        self.error = Some(serde_json::json!({
            "code": -32603,
            "message": format!("the replica running this operation stopped before it ended; {what}"),
        }));
    }

    /// Appends a step, keeping the last [`MAX_STEPS`].
    fn push_step(&mut self, message: &str) {
        self.steps.push(Step {
            at: crate::audit::now(),
            message: crate::error::clip(message, MAX_STEP_MESSAGE),
        });
        if self.steps.len() > MAX_STEPS {
            let excess = self.steps.len() - MAX_STEPS;
            self.steps.drain(..excess);
            self.steps_dropped += excess as u64;
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A random, unguessable operation id: 128 bits as hex.
fn new_id() -> Result<String, ToolError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| ToolError::Local("no randomness for an operation id".into()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// How often the engine renews the leases of its operations in a shared store and looks for
/// cancellations asked on other replicas.
pub const SHARED_POLL: Duration = Duration::from_millis(500);

/// How an operation ended.
#[derive(Debug)]
pub enum End {
    /// With a result (JSON).
    Completed(serde_json::Value),
    /// With a protocol-level error (a JSON-RPC error object).
    Failed(serde_json::Value),
    /// Stopped before it changed anything.
    Cancelled,
}

/// The operations of a server: the store, and the live side of running operations.
#[derive(Debug)]
pub struct Operations {
    store: Arc<dyn OperationStore>,
    settings: OperationSettings,
    live: Mutex<HashMap<String, Arc<Live>>>,
}

/// The live side of a running operation (never stored).
#[derive(Debug)]
struct Live {
    /// The authoritative record while it runs; every change is written through to the store.
    record: tokio::sync::Mutex<OperationRecord>,
    cancel: watch::Sender<bool>,
    input: Mutex<Option<PendingInput>>,
    /// Who started it (also in the record; here to count a caller's running operations
    /// without waiting for the record's lock).
    caller: Option<String>,
    /// Set by the running code once its change has begun (shared with it, read at once by a
    /// cancellation, so the record never claims a stop that cannot happen).
    committed: Arc<std::sync::atomic::AtomicBool>,
    /// Counts the record's changes: a follower (an A2A stream) wakes on each one.
    changed: watch::Sender<u64>,
}

#[derive(Debug)]
struct PendingInput {
    keys: Vec<String>,
    reply: oneshot::Sender<serde_json::Map<String, serde_json::Value>>,
}

/// The error for an id that is unknown, expired or another caller's: the same words for all
/// three, so an id cannot be probed.
fn not_found(id: &str) -> ToolError {
    ToolError::InvalidArgument {
        field: "id".into(),
        message: format!(
            "{} is not an operation of yours (unknown, expired, or started by another caller); talos_operations lists yours",
            crate::error::echo(id)
        ),
    }
}

impl Operations {
    /// An engine over `store`.
    pub fn new(store: Arc<dyn OperationStore>, settings: OperationSettings) -> Self {
        Self {
            store,
            settings,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// An engine over an in-memory store with these limits.
    pub fn in_memory(settings: OperationSettings) -> Self {
        Self::new(
            Arc::new(InMemoryStore::new(settings.ttl, settings.cap)),
            settings,
        )
    }

    /// The operator's limits.
    pub fn settings(&self) -> &OperationSettings {
        &self.settings
    }

    /// The most operations one caller may have running: a quarter of the cap (at least one).
    fn per_caller(&self) -> usize {
        (self.settings.cap / 4).max(1)
    }

    fn live(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts an operation of `tool` for `caller`.
    pub async fn start(
        self: &Arc<Self>,
        tool: &str,
        caller: Option<String>,
        context: Option<String>,
        nodes: Vec<String>,
        task: bool,
    ) -> Result<Operation, ToolError> {
        // One caller cannot fill the store with running operations and lock the others out.
        let share = self.per_caller();
        let running = self.live().values().filter(|l| l.caller == caller).count();
        if running >= share {
            return Err(ToolError::Refused(format!(
                "you have {running} operations running, the most one caller may (a quarter of --max-operations); wait for one to finish (talos_operations lists them) or cancel one"
            )));
        }
        let record = OperationRecord::new(new_id()?, tool, caller.clone(), context, nodes, task);
        let id = record.id.clone();
        self.store.create(record.clone()).await?;
        let (cancel, _) = watch::channel(false);
        let live = Arc::new(Live {
            record: tokio::sync::Mutex::new(record),
            cancel,
            input: Mutex::new(None),
            caller,
            committed: Arc::default(),
            changed: watch::channel(0).0,
        });
        self.live().insert(id.clone(), live.clone());
        if self.store.shared() {
            self.watch_shared(&id, &live);
        }
        Ok(Operation {
            engine: self.clone(),
            id,
            live,
        })
    }

    /// The record of `id`, if `caller` started it.
    pub async fn get(&self, id: &str, caller: Option<&str>) -> Result<OperationRecord, ToolError> {
        match self.store.get(id).await? {
            Some(r) if r.caller.as_deref() == caller => Ok(r),
            _ => Err(not_found(id)),
        }
    }

    /// The caller's operations, newest first, at most `limit`.
    pub async fn list(
        &self,
        caller: Option<&str>,
        limit: usize,
    ) -> Result<Vec<OperationRecord>, ToolError> {
        self.store.list(caller, limit).await
    }

    /// Asks the caller's operation `id` to stop: one that has changed nothing stops at once
    /// (cancelled); one that has begun its change runs to its end and its record says so.
    pub async fn cancel(
        &self,
        id: &str,
        caller: Option<&str>,
    ) -> Result<OperationRecord, ToolError> {
        let record = self.get(id, caller).await?;
        if record.state.is_terminal() {
            return Err(ToolError::InvalidArgument {
                field: "id".into(),
                message: format!(
                    "operation {} has already ended ({})",
                    crate::error::echo(id),
                    record.state.as_str()
                ),
            });
        }
        let live = self.live().get(id).cloned();
        match live {
            Some(live) => {
                request_cancel(&self.store, &live).await;
                Ok(live.record.lock().await.clone())
            }
            // Running on another replica (a shared store): the request reaches it through the
            // store; its engine polls for it.
            None if self.store.request_cancel(id).await? => {
                let mut record = record;
                record.cancel_requested = true;
                record.status_message = Some(if record.committed {
                    "cancel requested after the change had started; it runs to its end".into()
                } else {
                    "cancel requested; the replica running it stops it shortly".into()
                });
                Ok(record)
            }
            None => Err(ToolError::Refused(format!(
                "operation {} is not running on this server; it cannot be cancelled from here",
                crate::error::echo(id)
            ))),
        }
    }

    /// For a store shared by replicas: while operation `id` runs, renews its lease and picks
    /// up cancellations asked on other replicas, every [`SHARED_POLL`].
    fn watch_shared(self: &Arc<Self>, id: &str, live: &Arc<Live>) {
        let engine = Arc::downgrade(self);
        let live = Arc::downgrade(live);
        let id = id.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SHARED_POLL).await;
                let (Some(engine), Some(live)) = (engine.upgrade(), live.upgrade()) else {
                    return;
                };
                if !engine.live().contains_key(&id) {
                    return;
                }
                match engine.store.renew(&id).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!("this replica's lease on a running operation lapsed");
                    }
                    Err(e) => tracing::warn!(error = %e, "could not renew an operation's lease"),
                }
                if !*live.cancel.borrow()
                    && matches!(engine.store.cancel_requested(&id).await, Ok(true))
                {
                    request_cancel(&engine.store, &live).await;
                }
            }
        });
    }

    /// Brings the caller's answers to the input operation `id` is waiting for.
    pub async fn provide_input(
        &self,
        id: &str,
        caller: Option<&str>,
        responses: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), ToolError> {
        self.get(id, caller).await?;
        let live = self.live().get(id).cloned().ok_or_else(|| no_input(id))?;
        let mut pending = live
            .input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(waiting) = pending.as_ref() else {
            return Err(no_input(id));
        };
        if let Some(unknown) = responses.keys().find(|k| !waiting.keys.contains(k)) {
            return Err(ToolError::InvalidArgument {
                field: "inputResponses".into(),
                message: format!(
                    "{} is not an outstanding input request of this operation; outstanding: {}",
                    crate::error::echo(unknown),
                    waiting.keys.join(", ")
                ),
            });
        }
        if responses.is_empty() {
            return Err(ToolError::InvalidArgument {
                field: "inputResponses".into(),
                message: format!("is empty; outstanding: {}", waiting.keys.join(", ")),
            });
        }
        if let Some(waiting) = pending.take() {
            let _ = waiting.reply.send(responses);
        }
        Ok(())
    }

    /// Asks every running operation to stop (the server is shutting down): the ones that have
    /// changed nothing stop at once; the others run on within the grace period.
    pub async fn cancel_all(&self) {
        let all: Vec<Arc<Live>> = self.live().values().cloned().collect();
        for live in all {
            request_cancel(&self.store, &live).await;
        }
    }

    /// A receiver that changes whenever the record of running operation `id` changes (`None`:
    /// not running here). It closes when the operation has ended and its end is stored.
    pub fn follow(&self, id: &str) -> Option<watch::Receiver<u64>> {
        self.live().get(id).map(|l| l.changed.subscribe())
    }

    /// Operations running now.
    pub fn running(&self) -> usize {
        self.live().len()
    }
}

fn no_input(id: &str) -> ToolError {
    ToolError::InvalidArgument {
        field: "taskId".into(),
        message: format!(
            "operation {} is not waiting for input",
            crate::error::echo(id)
        ),
    }
}

/// Records the cancellation request and signals the operation.
async fn request_cancel(store: &Arc<dyn OperationStore>, live: &Live) {
    {
        let mut record = live.record.lock().await;
        if !record.state.is_terminal() && !record.cancel_requested {
            record.cancel_requested = true;
            record.committed |= live.committed.load(std::sync::atomic::Ordering::SeqCst);
            record.status_message = Some(if record.committed {
                "cancel requested after the change had started; it runs to its end".into()
            } else {
                "cancel requested; stopping".into()
            });
            record.updated_at = crate::audit::now();
            if let Err(e) = store.put(record.clone()).await {
                tracing::warn!(error = %e, "could not store an operation record");
            }
        }
    }
    live.changed.send_modify(|n| *n = n.wrapping_add(1));
    live.cancel.send_replace(true);
}

/// A running operation, as the code that runs it sees it.
#[derive(Debug, Clone)]
pub struct Operation {
    engine: Arc<Operations>,
    id: String,
    live: Arc<Live>,
}

impl Operation {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The flag the running code sets when its change begins (see [`crate::call::Call::commit`]).
    pub(crate) fn committed_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.live.committed.clone()
    }

    /// Whether it runs as an MCP task.
    pub async fn is_task(&self) -> bool {
        self.live.record.lock().await.task
    }

    /// Its record now.
    pub async fn record(&self) -> OperationRecord {
        self.live.record.lock().await.clone()
    }

    /// Changes the record and writes it through to the store.
    async fn update(&self, change: impl FnOnce(&mut OperationRecord)) {
        let mut record = self.live.record.lock().await;
        change(&mut record);
        record.updated_at = crate::audit::now();
        if let Err(e) = self.engine.store.put(record.clone()).await {
            tracing::warn!(error = %e, "could not store an operation record");
        }
        drop(record);
        self.live.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Records where the call goes, once its arguments are read.
    pub(crate) async fn set_target(&self, context: Option<String>, nodes: Vec<String>) {
        self.update(|r| {
            r.context = context;
            r.nodes = nodes;
        })
        .await;
    }

    /// Names the A2A context the task belongs to (bounded).
    pub(crate) async fn set_a2a_context(&self, context: &str) {
        let context = crate::error::clip(context, 128);
        self.update(|r| r.a2a_context = Some(context)).await;
    }

    /// Records a step; `committed` says whether the change has begun.
    pub async fn step(&self, message: &str, committed: bool) {
        self.update(|r| {
            r.push_step(message);
            r.committed |= committed;
            if !r.cancel_requested {
                r.status_message = Some(crate::error::clip(message, MAX_STEP_MESSAGE));
            }
        })
        .await;
    }

    /// Resolves once a cancellation has been asked for.
    pub async fn cancelled(&self) {
        let mut rx = self.live.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
        // The sender lives as long as the operation: never reached otherwise.
    }

    /// Asks for a cancellation (the request that waits for this operation went away).
    pub async fn request_cancel(&self) {
        request_cancel(&self.engine.store, &self.live).await;
    }

    /// Whether a cancellation was asked for.
    pub fn cancel_requested(&self) -> bool {
        *self.live.cancel.borrow()
    }

    /// Waits up to `timeout` for the caller's answers to `requests` (a JSON object of input
    /// requests keyed by name); the state is `input_required` meanwhile. `None`: no answer in
    /// time (or the operation was cancelled).
    pub async fn input(
        &self,
        requests: serde_json::Map<String, serde_json::Value>,
        timeout: Duration,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let (reply, answer) = oneshot::channel();
        *self
            .live
            .input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(PendingInput {
            keys: requests.keys().cloned().collect(),
            reply,
        });
        self.update(|r| {
            r.state = OperationState::InputRequired;
            r.status_message = Some("waiting for the caller's input".into());
            r.input_requests = Some(serde_json::Value::Object(requests));
        })
        .await;
        let got = tokio::time::timeout(timeout, answer)
            .await
            .ok()
            .and_then(Result::ok);
        self.live
            .input
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        self.update(|r| {
            r.state = OperationState::Working;
            r.input_requests = None;
            r.status_message = Some(
                if got.is_some() {
                    "input received"
                } else {
                    "no input in time"
                }
                .into(),
            );
        })
        .await;
        got
    }

    /// Records how it ended and forgets its live side.
    pub async fn finish(&self, end: End, committed: bool) {
        self.update(|r| {
            let now = SystemTime::now();
            r.committed |= committed;
            r.finished_at = Some(crate::tools::rfc3339(now));
            r.finished_ms = Some(unix_ms(now));
            r.input_requests = None;
            let cancel_noted = r.cancel_requested && r.committed;
            match end {
                End::Completed(result) => {
                    r.state = OperationState::Completed;
                    let failed =
                        result.get("isError").and_then(serde_json::Value::as_bool) == Some(true);
                    r.result = Some(result);
                    r.status_message = Some(
                        match (cancel_noted, failed) {
                            (true, _) => {
                                "cancel requested after the change had started; ran to completion"
                            }
                            (false, true) => "completed with an error result",
                            (false, false) => "completed",
                        }
                        .into(),
                    );
                }
                End::Failed(error) => {
                    r.state = OperationState::Failed;
                    r.error = Some(error);
                    r.status_message = Some("failed".into());
                }
                End::Cancelled => {
                    r.state = OperationState::Cancelled;
                    r.status_message =
                        Some("cancelled before it changed anything; nothing was done".into());
                }
            }
        })
        .await;
        self.engine.live().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A record, in every state it can be in, survives a JSON round trip unchanged (a shared
    /// store keeps records as JSON).
    #[test]
    fn records_round_trip_through_json() {
        let mut r = OperationRecord::new(
            new_id().unwrap(),
            "talos_reboot",
            Some("alice".into()),
            Some("prod".into()),
            vec!["10.5.0.2".into()],
            true,
        );
        r.push_step("node is down");
        r.state = OperationState::InputRequired;
        r.input_requests = Some(serde_json::json!({"confirm": {"method": "elicitation/create"}}));
        r.result = Some(serde_json::json!({"content": [], "isError": false}));
        r.error = Some(serde_json::json!({"code": -32602, "message": "x"}));
        r.finished_ms = Some(7);
        let text = serde_json::to_string(&r).unwrap();
        let back: OperationRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(text.contains("\"state\":\"input_required\""), "{text}");
        // A plan's token never shows in Debug.
        r.result =
            Some(serde_json::json!({"structuredContent": {"confirmation_token": "tok-SECRET"}}));
        assert!(!format!("{r:?}").contains("tok-SECRET"));
    }

    /// Ids are 128-bit hex and differ.
    #[test]
    fn ids_are_random_128_bit_hex() {
        let a = new_id().unwrap();
        let b = new_id().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// Steps are capped; the dropped ones are counted.
    #[test]
    fn steps_are_capped_and_counted() {
        let mut r = OperationRecord::new("x".into(), "t", None, None, vec![], false);
        for i in 0..(MAX_STEPS + 5) {
            r.push_step(&format!("step {i}"));
        }
        assert_eq!(r.steps.len(), MAX_STEPS);
        assert_eq!(r.steps_dropped, 5);
        assert_eq!(r.steps[0].message, "step 5");
    }

    /// Another caller's id and an unknown id answer the same error; cancellation before a
    /// commit is recorded as asked, and input goes only to an operation that waits for it.
    #[tokio::test]
    async fn ids_are_bound_to_their_caller_without_an_oracle() {
        let ops = Arc::new(Operations::in_memory(OperationSettings::default()));
        let op = ops
            .start("talos_reboot", Some("alice".into()), None, vec![], true)
            .await
            .unwrap();
        assert!(ops.get(op.id(), Some("alice")).await.is_ok());
        let theirs = ops.get(op.id(), Some("bob")).await.unwrap_err().to_string();
        let unknown = ops
            .get("0".repeat(32).as_str(), Some("bob"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            theirs.replace(op.id(), "ID"),
            unknown.replace(&"0".repeat(32), "ID")
        );
        assert!(ops.get(op.id(), None).await.is_err());
        assert!(ops.cancel(op.id(), Some("bob")).await.is_err());
        assert!(
            ops.provide_input(op.id(), Some("alice"), serde_json::Map::new())
                .await
                .is_err()
        );
        let record = ops.cancel(op.id(), Some("alice")).await.unwrap();
        assert!(record.cancel_requested);
        assert!(op.cancel_requested());
        op.finish(End::Cancelled, false).await;
        let record = ops.get(op.id(), Some("alice")).await.unwrap();
        assert_eq!(record.state, OperationState::Cancelled);
        assert_eq!(ops.running(), 0);
    }

    /// A cancellation of an operation whose change has begun says so at once, and its end
    /// says it ran to completion.
    #[tokio::test]
    async fn a_cancel_after_the_commit_is_recorded_truthfully() {
        let ops = Arc::new(Operations::in_memory(OperationSettings::default()));
        let op = ops
            .start("talos_reboot", None, None, vec![], true)
            .await
            .unwrap();
        op.committed_flag()
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let record = ops.cancel(op.id(), None).await.unwrap();
        assert!(record.committed && record.cancel_requested);
        assert!(
            record
                .status_message
                .as_deref()
                .unwrap()
                .contains("runs to its end"),
            "{record:?}"
        );
        op.finish(End::Completed(serde_json::json!({"isError": false})), true)
            .await;
        let record = ops.get(op.id(), None).await.unwrap();
        assert_eq!(record.state, OperationState::Completed);
        assert_eq!(
            record.status_message.as_deref(),
            Some("cancel requested after the change had started; ran to completion")
        );
    }

    /// Waiting for input is bounded: with no answer in time the operation works on (and the
    /// caller's code decides that nothing is done); an answer in time is handed over.
    #[tokio::test]
    async fn input_waits_are_bounded_and_answers_are_handed_over() {
        let ops = Arc::new(Operations::in_memory(OperationSettings::default()));
        let op = ops
            .start("talos_reboot", None, None, vec![], true)
            .await
            .unwrap();
        let requests = serde_json::json!({"confirm": {"method": "elicitation/create"}});
        let requests = requests.as_object().unwrap().clone();
        assert!(
            op.input(requests.clone(), Duration::from_millis(50))
                .await
                .is_none()
        );
        let record = ops.get(op.id(), None).await.unwrap();
        assert_eq!(record.state, OperationState::Working);
        assert!(record.input_requests.is_none());

        let waiting = {
            let op = op.clone();
            tokio::spawn(async move { op.input(requests, Duration::from_secs(30)).await })
        };
        for _ in 0..1000 {
            if ops.get(op.id(), None).await.unwrap().state == OperationState::InputRequired {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let answer = serde_json::json!({"confirm": {"action": "accept"}});
        ops.provide_input(op.id(), None, answer.as_object().unwrap().clone())
            .await
            .unwrap();
        let got = waiting.await.unwrap().unwrap();
        assert_eq!(got["confirm"]["action"], "accept");
    }

    /// One caller may have at most a quarter of the cap running; others still can start theirs,
    /// and a finished operation frees its place.
    #[tokio::test]
    async fn one_caller_cannot_take_every_place() {
        let ops = Arc::new(Operations::in_memory(OperationSettings {
            cap: 8,
            ..OperationSettings::default()
        }));
        let start = |who: &str| {
            let ops = ops.clone();
            let who = who.to_owned();
            async move {
                ops.start("talos_reboot", Some(who), None, vec![], true)
                    .await
            }
        };
        let first = start("alice").await.unwrap();
        start("alice").await.unwrap();
        let refused = start("alice").await.unwrap_err().to_string();
        assert!(
            refused.starts_with("Refused:") && refused.contains("2 operations running"),
            "{refused}"
        );
        start("bob").await.unwrap();
        first.finish(End::Cancelled, false).await;
        start("alice").await.unwrap();
    }
}
