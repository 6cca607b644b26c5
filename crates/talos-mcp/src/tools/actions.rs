//! The machinery shared by write and destructive tools: one explicit node, a plan with
//! preflights, confirmation, execution, and a result that records how it was confirmed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use talos_client::{CallOptions, TalosApi};

use crate::call::{Call, Reply};
use crate::confirm::{Gate, Plan};
use crate::error::ToolError;
use crate::registry::{CallTarget, ToolArgs};
use crate::safety::Tier;
use crate::server::TalosMcp;
use crate::state::{Acquired, SharedState};

/// The target of a write or destructive call: exactly one node, named explicitly.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
pub struct NodeTarget {
    // No doc comments: the server's instructions say what `context`, `node` and
    // `confirmation_token` mean, once instead of in every change's schema.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub node: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmation_token: Option<String>,
}

/// The result of a write or destructive tool: either the plan awaiting confirmation, or what
/// was done.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ActionOut<T> {
    /// `done`, or `confirmation_required` (nothing was done; see `plan`).
    pub status: String,
    /// How the call was confirmed (or why not).
    pub confirmation: String,
    pub context: String,
    pub node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// What the call did (when done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<T>,
    /// What the call would do (when confirmation is required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// Token to repeat the call with (when confirmation is required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<u64>,
}

/// What `prepare` found: the effect and preflight notes, or a refusal, and what the execution
/// needs from the preparation (`resolved`: e.g. the etcd member a hostname named).
pub(crate) struct Prepared<X = ()> {
    pub(crate) effect: String,
    pub(crate) preflight: Vec<String>,
    /// A reason to refuse (unless forced).
    pub(crate) blocker: Option<String>,
    /// Exactly what will be applied, for the human (e.g. a config's hash and redacted diff).
    pub(crate) details: Option<String>,
    /// Facts the preparation found that the confirmation is bound to besides the arguments
    /// (e.g. the node's current and target versions): if they change before the confirmed call
    /// runs, its token no longer fits.
    pub(crate) binds: Option<serde_json::Value>,
    /// Handed to the execution as it is.
    pub(crate) resolved: X,
}

impl Prepared {
    /// An effect with preflight notes and nothing to refuse.
    pub(crate) fn new(effect: String, preflight: Vec<String>) -> Self {
        Self {
            effect,
            preflight,
            blocker: None,
            details: None,
            binds: None,
            resolved: (),
        }
    }
}

impl ToolArgs for NodeTarget {
    fn target(&self) -> CallTarget<'_> {
        CallTarget {
            context: self.context.as_deref(),
            nodes: vec![self.node.as_str()],
        }
    }
}

/// The arguments of a change: what its confirmation is bound to, its one node, and whether the
/// caller overrides a preflight blocker.
pub(crate) struct Change<'a, A> {
    /// The arguments the confirmation is bound to (without the token).
    pub(crate) args: &'a A,
    /// The node.
    pub(crate) target: &'a NodeTarget,
    /// Go ahead despite a preflight blocker (still confirmed).
    pub(crate) force: bool,
}

/// What a change's confirmation is bound to: its arguments and what the preparation found that
/// must not change in between (absent for most changes, so their binding is the arguments alone).
#[derive(Serialize)]
struct Bound<'a, A> {
    #[serde(flatten)]
    args: &'a A,
    #[serde(rename = "$prepared", skip_serializing_if = "Option::is_none")]
    prepared: Option<serde_json::Value>,
}

/// How often a change that waits for the lock asks again (the store may be another process's:
/// there is no wake-up to wait for).
const CHANGE_LOCK_POLL: Duration = Duration::from_millis(200);

/// A machine configuration this server staged on a node (activated by the node's next boot).
#[derive(Debug, Clone)]
pub(crate) struct StagedConfig {
    /// Hex SHA-256 of the staged configuration.
    pub(crate) sha256: String,
    /// When it was staged (RFC 3339).
    pub(crate) at: String,
}

/// State shared by every session's changes: one change at a time per context (a lock in the
/// [`SharedState`], so across replicas too), and the configurations staged per node.
#[derive(Debug)]
pub(crate) struct Changes {
    state: Arc<dyn SharedState>,
    /// This replica's name (named in the lock's holder).
    replica: String,
    /// How long a change waits for another change on the same context.
    wait: Duration,
    /// The lock's lease: renewed by the holder every third of it; a dead holder's lock lapses.
    lease: Duration,
    staged: Mutex<HashMap<(String, String), StagedConfig>>,
    /// The digests of the many-node plans whose confirmation tokens were issued, by the SHA-256
    /// of the token (newest last, at most [`REMEMBERED_PLANS`]): a token for a plan that has
    /// changed since is refused as such.
    plans: Mutex<VecDeque<(Vec<u8>, String)>>,
}

/// How many issued many-node plans [`Changes`] remembers.
const REMEMBERED_PLANS: usize = 64;

fn token_key(token: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

impl Changes {
    /// The change machinery over `state`, for the replica named `replica`.
    pub(crate) fn new(
        state: Arc<dyn SharedState>,
        replica: &str,
        wait: Duration,
        lease: Duration,
    ) -> Self {
        Self {
            state,
            replica: replica.to_owned(),
            wait,
            lease: lease.max(Duration::from_secs(1)),
            staged: Mutex::default(),
            plans: Mutex::default(),
        }
    }

    /// Takes the change lock of `context` for `what` (the tool and node, for whoever waits):
    /// preflight, confirmation and execution of one change never interleave with another
    /// change's on the same cluster, from this replica or another. Waits up to the configured
    /// time, then refuses naming the holder.
    pub(crate) async fn lock(
        &self,
        context: &str,
        caller: Option<&str>,
        what: &str,
    ) -> Result<ChangeLock, ToolError> {
        let key = format!("change:{context}");
        let holder = format!(
            "{what} for caller {} on replica {}",
            caller.unwrap_or("local"),
            self.replica
        );
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            match self.state.acquire(&key, &holder, self.lease).await? {
                Acquired::Held { fence } => {
                    return Ok(ChangeLock::new(self.state.clone(), key, fence, self.lease));
                }
                Acquired::Busy { holder } => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(ToolError::Refused(format!(
                            "another change on context `{context}` is still running or waiting for its confirmation ({}); changes to one cluster run one at a time. Nothing was done; retry when it has finished",
                            crate::error::clip(&holder, 256)
                        )));
                    }
                }
            }
            tokio::time::sleep(CHANGE_LOCK_POLL.min(self.wait)).await;
        }
    }

    /// Remembers that `token` was issued for the many-node plan with `digest`.
    pub(crate) fn remember_plan(&self, token: &str, digest: &str) {
        let mut plans = self.plans.lock().unwrap_or_else(PoisonError::into_inner);
        if plans.len() >= REMEMBERED_PLANS {
            plans.pop_front();
        }
        plans.push_back((token_key(token), digest.to_owned()));
    }

    /// The digest of the plan `token` was issued for, if this server issued it and still
    /// remembers it.
    pub(crate) fn planned(&self, token: &str) -> Option<String> {
        let key = token_key(token);
        self.plans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, d)| d.clone())
    }

    /// The entry of `node` of `context` in the staged configurations.
    pub(crate) fn staged_slot(self: &Arc<Self>, context: &str, node: &str) -> StagedSlot {
        StagedSlot {
            changes: self.clone(),
            key: (context.to_owned(), node.to_owned()),
        }
    }
}

/// One node's entry in the configurations staged by this server: a change's preparation reads
/// it and hands it to the execution (`Prepared::resolved`), which updates it.
#[derive(Debug)]
pub(crate) struct StagedSlot {
    changes: Arc<Changes>,
    /// (context, node).
    key: (String, String),
}

impl StagedSlot {
    /// The configuration staged on the node, if still pending.
    pub(crate) fn pending(&self) -> Option<StagedConfig> {
        self.changes
            .staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&self.key)
            .cloned()
    }

    /// Records (`Some`) or forgets (`None`) a configuration staged on the node.
    pub(crate) fn set(&self, staged: Option<StagedConfig>) {
        let mut map = self
            .changes
            .staged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match staged {
            Some(s) => map.insert(self.key.clone(), s),
            None => map.remove(&self.key),
        };
    }
}

/// A held change lock. A task renews its lease; the holder checks it ([`ChangeLock::check`])
/// before it changes anything, so a holder whose lease lapsed (its replica stalled, the store
/// lost it) stops instead of acting beside the next holder. Dropping it gives the lock up.
#[derive(Debug)]
pub(crate) struct ChangeLock {
    state: Arc<dyn SharedState>,
    key: String,
    fence: u64,
    lease: Duration,
    /// Set by the renewing task when the lease could not be renewed.
    lost: Arc<std::sync::atomic::AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
}

impl ChangeLock {
    fn new(state: Arc<dyn SharedState>, key: String, fence: u64, lease: Duration) -> Self {
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renewer = tokio::spawn({
            let (state, key, lost) = (state.clone(), key.clone(), lost.clone());
            async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match state.renew(&key, fence, lease).await {
                        Ok(true) => {}
                        Ok(false) => {
                            lost.store(true, std::sync::atomic::Ordering::SeqCst);
                            tracing::warn!(
                                "the change lock's lease lapsed; the change stops before its next step"
                            );
                            return;
                        }
                        // The store is unreachable for now: the next renewal may succeed
                        // within the lease; `check` asks the store itself.
                        Err(e) => tracing::warn!(error = %e, "could not renew the change lock"),
                    }
                }
            }
        });
        Self {
            state,
            key,
            fence,
            lease,
            lost,
            renewer,
        }
    }

    /// The fencing number of this holding.
    pub(crate) fn fence(&self) -> u64 {
        self.fence
    }

    /// Confirms with the store that this holding is still the current one (and extends it);
    /// an error if its lease lapsed: the caller must not change anything then.
    pub(crate) async fn check(&self) -> Result<(), ToolError> {
        let held = !self.lost.load(std::sync::atomic::Ordering::SeqCst)
            && self.state.renew(&self.key, self.fence, self.lease).await?;
        if held {
            Ok(())
        } else {
            self.lost.store(true, std::sync::atomic::Ordering::SeqCst);
            Err(ToolError::Refused(format!(
                "this change lost the change lock (its lease of {} s lapsed, fence {}); it stopped before changing anything more. Check the node, then retry",
                self.lease.as_secs(),
                self.fence
            )))
        }
    }
}

impl Drop for ChangeLock {
    fn drop(&mut self) {
        self.renewer.abort();
        let (state, key, fence) = (self.state.clone(), self.key.clone(), self.fence);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = state.release(&key, fence).await {
                    // The lease lapses by itself.
                    tracing::warn!(error = %e, "could not release the change lock");
                }
            });
        }
    }
}

/// The preflight note of a configuration staged on the node: the next boot activates it.
pub(crate) fn staged_note(staged: Option<StagedConfig>) -> Option<String> {
    staged.map(|s| {
        format!(
            "a machine configuration staged by this server at {} (SHA-256 {}) is pending: the node's next boot activates it",
            s.at, s.sha256
        )
    })
}

impl TalosMcp {
    /// Runs one write/destructive call: resolve the node, prepare the plan, confirm, execute
    /// with what the preparation resolved.
    pub(crate) async fn action<A, P, PF, X, R, RF, T>(
        &self,
        call: &Call,
        change: Change<'_, A>,
        prepare: P,
        run: R,
        summary: impl Fn(&T) -> String,
    ) -> Result<Reply<ActionOut<T>>, ToolError>
    where
        A: Serialize,
        P: FnOnce(Arc<dyn TalosApi>, CallOptions) -> PF,
        PF: Future<Output = Result<Prepared<X>, ToolError>>,
        R: FnOnce(Arc<dyn TalosApi>, CallOptions, X) -> RF,
        RF: Future<Output = Result<T, ToolError>>,
        T: Serialize,
    {
        let Change {
            args,
            target,
            force,
        } = change;
        let tool = call.tool;
        let (entry, node) = self
            .clusters
            .single(target.context.as_deref(), Some(target.node.as_str()))
            .await?;
        let opts = CallOptions::node(node.clone());
        // One change at a time per cluster, from preflight to the end of the execution: two
        // changes that are each safe alone (stopping etcd on two of three members) cannot both
        // pass their preflights. Calls that change nothing (dry runs) do not wait.
        let change_lock = if call.tier == Tier::Read {
            None
        } else {
            Some(
                self.changes
                    .lock(
                        &entry.name,
                        call.ask.caller.as_deref(),
                        &format!("{tool} on {node}"),
                    )
                    .await?,
            )
        };
        let targets = crate::clusters::Targets {
            entry,
            nodes: vec![node.clone()],
        };
        self.learn_hostnames(&targets).await;
        let entry = targets.entry;
        let hostname = entry.hostname(&node);
        let prepared = prepare(entry.api.clone(), opts.clone()).await?;
        let mut preflight = prepared.preflight;
        if let Some(blocker) = prepared.blocker {
            if !force {
                return Err(ToolError::Preflight(format!(
                    "{blocker}. Nothing was done. Fix the cluster first, or repeat with force=true (which needs its own confirmation) if you accept the risk."
                )));
            }
            preflight.push(format!("FORCED despite: {blocker}"));
        }
        let plan = Plan {
            tool: tool.to_owned(),
            tier: call.tier,
            context: entry.name.clone(),
            node: node.clone(),
            hostname: hostname.clone(),
            effect: prepared.effect,
            preflight,
            details: prepared.details,
            steps: None,
        };
        match self
            .confirm(
                call,
                &plan,
                &Bound {
                    args,
                    prepared: prepared.binds,
                },
                target.confirmation_token.as_deref(),
            )
            .await
        {
            Gate::Proceed => {}
            Gate::Plan(value, text) => return Ok(Reply::plan(value, text)),
            Gate::Ask(input) => return Ok(Reply::input(*input)),
            Gate::Refuse(e) => return Err(e),
        }
        let confirmation = call
            .confirmation()
            .map_or("", crate::call::Confirmation::as_str)
            .to_owned();
        // Fencing: a holder whose lease lapsed while it prepared or waited for the human does
        // not act beside the next holder.
        if let Some(lock) = &change_lock {
            lock.check().await?;
        }
        // From here on the call changes the cluster: a cancellation no longer stops it.
        call.commit();
        let fence = change_lock.as_ref().map(ChangeLock::fence);
        tracing::info!(tool, node = %node, context = %entry.name, confirmation = %confirmation, fence, "running a state-changing call");
        let outcome = run(entry.api.clone(), opts, prepared.resolved).await?;
        let text = format!(
            "{tool} on {}: {}",
            hostname.as_deref().unwrap_or(&node),
            summary(&outcome)
        );
        let out = ActionOut {
            status: "done".into(),
            confirmation,
            context: entry.name.clone(),
            node,
            hostname,
            outcome: Some(outcome),
            plan: None,
            confirmation_token: None,
            expires_in_seconds: None,
        };
        Ok(Reply::small(&out, text))
    }
}
